"""The process's environment: streams, whether each is a terminal, colour and debug settings.

Commands receive one `Environment` instead of reaching for `sys.stdout` themselves, so tests
can run them against in-memory streams.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn

from cvtool.core.results import shown

if TYPE_CHECKING:
    from rich.console import Console

Warn = Callable[[str], None]  # where one-line warnings go: Environment.warn, or a caller's own


@dataclass
class Environment:
    stdin: IO[bytes] = field(default_factory=lambda: sys.stdin.buffer)
    stdout: IO[str] = field(default_factory=lambda: sys.stdout)
    stderr: IO[str] = field(default_factory=lambda: sys.stderr)
    quiet: bool = False
    mute_warnings: bool = False  # a training rank other than 0: rank 0 says it once
    argv: list[str] = field(default_factory=list)  # the command line's arguments, as run
    debug: bool = False
    # What the run holds until it ends (output directory locks), released by `activated`.
    resources: ExitStack = field(default_factory=ExitStack)
    last_error: str | None = None  # the one-line error the run ended with, if any
    lost_peers: bool = False  # a training rank that stopped because another rank failed

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
        return offline_from_environment()

    @cached_property
    def console(self) -> Console:
        """Rich console on stderr: logs, warnings and progress never touch stdout."""
        from rich.console import Console

        return Console(file=self.stderr, no_color=self.no_color, highlight=False,
                       force_terminal=None, soft_wrap=True)

    def log(self, message: str) -> None:
        if not self.quiet:
            self.console.print(shown(message, newlines=True), markup=False, highlight=False)

    def warn(self, message: str) -> None:
        """A warning on stderr; `--quiet` keeps stderr for errors alone."""
        if self.mute_warnings or self.quiet:
            return
        self.console.print(f"warning: {shown(message)}", markup=False, highlight=False,
                           style="yellow")

    def own_directory(self, path: Path, what: str) -> None:
        """Create `path` if needed and hold it against other processes until the run ends."""
        from cvtool.core.ownership import claim_directory

        self.resources.enter_context(claim_directory(path, what))

    def progress_bar(self, rate: bool = False) -> Any:
        """The one progress bar: started, transient, rich, on stderr (description, bar,
        done/total, then time left, or with `rate` a spinner and the task's `rate` field for
        open-ended streams), or None under --quiet or when stderr is not a terminal. The caller
        stops it."""
        if self.quiet or not self.stderr_isatty:
            return None
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeRemainingColumn,
        )

        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
        if rate:
            columns = [SpinnerColumn(), *columns, TextColumn("{task.fields[rate]}")]
        else:
            columns.append(TimeRemainingColumn())
        progress = Progress(*columns, console=self.console, transient=True)
        progress.start()
        return progress


OFFLINE_FALSE = frozenset({"", "0", "false", "no", "off", "n", "f"})


def offline_from_environment() -> bool:
    """CVTOOL_OFFLINE=1: never download weights. Unset, empty, or one of the usual spellings
    of false (`0`, `false`, `no`, `off`, any case, spaces around) means online; any other
    value offline, the safe reading of a value cvtool does not know."""
    return os.environ.get("CVTOOL_OFFLINE", "").strip().lower() not in OFFLINE_FALSE


def offline_reason() -> str:
    """What the offline messages say forbade the download, with the value as read."""
    if not offline_from_environment():  # the Python API's offline=True
        return "offline=True forbids downloading"
    value = os.environ["CVTOOL_OFFLINE"]
    shown_value = value if value.strip() == value else repr(value)
    return f"CVTOOL_OFFLINE={shown_value} forbids downloading"


_active: list[Environment] = []  # the Environment of each run in progress, innermost last


@contextmanager
def activated(env: Environment) -> Iterator[Environment]:
    """Make `env` the one commands see through `current()` for the duration of a run."""
    _active.append(env)
    try:
        with env.resources:
            yield env
    finally:
        _active.pop()


def current(quiet: bool = False, debug: bool = False) -> Environment:
    """The running command's Environment (the process's own streams outside `run_cli`),
    with the command's --quiet/--debug folded in."""
    env = _active[-1] if _active else Environment()
    env.quiet, env.debug = env.quiet or quiet, env.debug or debug
    return env


class StdoutClosed(Exception):
    """The reader of stdout went away (`| head -1`)."""


def finish(body: Callable[..., int], *args: Any, **kwargs: Any) -> NoReturn:
    """Run a command's body and exit with the status it returns."""
    import typer

    try:
        with _records_only_on_stdout(current()):
            status = body(*args, **kwargs)
    except BrokenPipeError as exc:
        # Click would turn EPIPE into a bare `exit 1`; run_cli decides instead.
        raise StdoutClosed() from exc
    raise typer.Exit(int(status))


@contextmanager
def _records_only_on_stdout(env: Environment) -> Iterator[None]:
    """While a command runs, what libraries print to `sys.stdout` (Ray's raylet and worker
    messages, a stray print) goes to stderr: stdout carries the command's own data, which it
    writes through `env.stdout`, the stream sys.stdout was when the run began."""
    saved = sys.stdout
    if env.stdout is not saved or sys.stderr is None:
        yield  # a caller's own streams (tests, the Python API): nothing to keep apart
        return
    sys.stdout = sys.stderr
    try:
        yield
    finally:
        sys.stdout = saved


def _isatty(stream: IO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
