"""The process's environment: streams, whether each is a terminal, colour and debug settings.

Commands receive one `Environment` instead of reaching for `sys.stdout` themselves, so tests
can run them against in-memory streams.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from functools import cached_property
from typing import IO

from rich.console import Console


@dataclass
class Environment:
    stdin: IO[bytes] = field(default_factory=lambda: sys.stdin.buffer)
    stdout: IO[str] = field(default_factory=lambda: sys.stdout)
    stderr: IO[str] = field(default_factory=lambda: sys.stderr)
    quiet: bool = False
    debug: bool = False

    @property
    def stdout_isatty(self) -> bool:
        return _isatty(self.stdout)

    @property
    def stderr_isatty(self) -> bool:
        return _isatty(self.stderr)

    @property
    def no_color(self) -> bool:
        return "NO_COLOR" in os.environ

    @property
    def offline(self) -> bool:
        return os.environ.get("CVTOOL_OFFLINE", "") not in ("", "0")

    @cached_property
    def console(self) -> Console:
        """Rich console on stderr: logs, warnings and progress never touch stdout."""
        return Console(file=self.stderr, no_color=self.no_color, highlight=False,
                       force_terminal=None, soft_wrap=True)

    def log(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message, markup=False)

    def warn(self, message: str) -> None:
        self.console.print(f"warning: {message}", markup=False, style="yellow")


def _isatty(stream: IO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
