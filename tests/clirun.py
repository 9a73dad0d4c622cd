"""Run cvtool the way users do: in-process through the real entry point, or as a subprocess."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from cvtool.cli.app import run_cli
from cvtool.core.context import Environment

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def records(self) -> list[dict]:
        return [json.loads(line) for line in self.stdout.splitlines()]


class _Bytes(io.BytesIO):
    def isatty(self) -> bool:
        return False


def cvtool(*args: str, stdin: bytes = b"") -> Result:
    """In-process run with captured streams (stdout is not a terminal: jsonl by default)."""
    stdout, stderr = io.StringIO(), io.StringIO()
    env = Environment(stdin=_Bytes(stdin), stdout=stdout, stderr=stderr)
    code = run_cli([str(a) for a in args], env)
    return Result(int(code), stdout.getvalue(), stderr.getvalue())


def cvtool_process(*args: str, stdin: bytes = b"", env: dict | None = None,
                   timeout: float = 300) -> Result:
    """A real `python -m cvtool` process."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    done = subprocess.run([sys.executable, "-m", "cvtool", *map(str, args)], input=stdin,
                          capture_output=True, env=full_env, timeout=timeout)
    return Result(done.returncode, done.stdout.decode(), done.stderr.decode())


def kill_after_first_epoch(args: list[str], run: Path, timeout: float = 240) -> None:
    """Start `cvtool ARGS -o RUN` as a process and kill -9 it once its first epoch's state is
    committed (the resume tests' crash)."""
    import signal
    import time

    process = subprocess.Popen([sys.executable, "-m", "cvtool", *map(str, args), "-o", str(run)],
                               env={**os.environ, "PYTHONPATH": str(ROOT)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while not list((run / "state").glob("epoch-*.json")) and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()


def same(left: object, right: object) -> bool:
    """Records equal, floats within 1e-5: float32 rounds differently per batch, and which
    inputs share a batch depends on when each is decoded."""
    import math

    if isinstance(left, float) and isinstance(right, float):
        return math.isclose(left, right, rel_tol=1e-5, abs_tol=1e-5)
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(same(left[k], right[k]) for k in left)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(map(same, left, right))
    return left == right
