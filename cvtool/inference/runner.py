"""Drive a task's records to a writer: progress on stderr, counts, `run.json`, the exit status.

Shared by every inference command, so streaming, interruption and artifacts behave the same.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cvtool import __version__
from cvtool.core.context import Environment
from cvtool.core.results import Record, counted
from cvtool.core.status import ExitStatus
from cvtool.core.versions import versions
from cvtool.io.writers import RecordWriter, write_json

PROGRESS_SECONDS = 10.0  # between plain progress lines on a non-terminal stderr


@dataclass
class Tally:
    total: int = 0
    failed: int = 0
    started: float = field(default_factory=time.perf_counter)

    @property
    def ok(self) -> int:
        return self.total - self.failed

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def status(self) -> ExitStatus:
        return ExitStatus.PARTIAL if self.failed else ExitStatus.SUCCESS

    def to_dict(self) -> dict[str, Any]:
        seconds = self.seconds
        return {"inputs": self.total, "ok": self.ok, "failed": self.failed,
                "seconds": round(seconds, 4),
                "inputs_per_second": round(self.total / seconds, 3) if seconds else None}


def stream_records(env: Environment, records: Iterable[Record], writer: RecordWriter,
                   tally: Tally, max_failures: int | None = None) -> bool:
    """Write each record as it finishes; the table writer prints what it has even on Ctrl-C.
    Returns whether `max_failures` stopped the run early."""
    try:
        for record in _with_progress(env, records, tally):
            tally.total += 1
            tally.failed += not record.ok
            writer.write(record)
            if max_failures is not None and tally.failed >= max_failures:
                return True
        return False
    finally:
        close = getattr(records, "close", None)
        if close is not None:
            close()  # stops the batch loop (and its writes) before the writer closes
        writer.close()


def _with_progress(env: Environment, records: Iterable[Record],
                   tally: Tally) -> Iterator[Record]:
    progress = env.progress_bar(rate=True)
    if progress is None:
        yield from (records if env.quiet else _with_lines(env, records, tally))
        return
    try:
        task = progress.add_task("images", total=None, rate="")
        started = time.perf_counter()
        for count, record in enumerate(records, start=1):
            rate = f"{count / max(time.perf_counter() - started, 1e-9):.1f} img/s"
            progress.update(task, advance=1, rate=rate)
            yield record
    finally:
        progress.stop()


def _with_lines(env: Environment, records: Iterable[Record], tally: Tally) -> Iterator[Record]:
    """Where stderr is a log (CI), a plain line every PROGRESS_SECONDS instead of a bar."""
    interval = float(os.environ.get("CVTOOL_PROGRESS_SECONDS", PROGRESS_SECONDS))
    shown = time.perf_counter()
    for record in records:
        yield record
        now = time.perf_counter()
        if now - shown >= interval:
            shown = now
            env.log(f"progress: {counted(tally.total, 'input')}, {tally.failed} failed, "
                    f"{tally.total / max(tally.seconds, 1e-9):.1f}/s")


def run_info(command: str, models: list[dict[str, Any]], settings: dict[str, Any],
             tally: Tally) -> dict[str, Any]:
    """What `run.json` records: enough to reproduce and audit the run."""
    return {"cvtool_version": __version__, "command": command_line(),
            "task": command, "versions": versions(), "models": models, **settings,
            "counts": tally.to_dict()}


def command_line() -> list[str]:
    """This process's command as run.json records it."""
    return [Path(sys.argv[0]).name, *sys.argv[1:]]


def write_run_json(output: Path, info: dict[str, Any]) -> None:
    write_json(Path(output) / "run.json", info)
