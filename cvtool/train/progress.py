"""The rich progress bar of a training run, on stderr and only when stderr is a terminal."""

from __future__ import annotations

import math
from types import TracebackType
from typing import Any

from cvtool.core.context import Environment


class EpochProgress:
    """Counts batches over the whole run; the description names the current epoch."""

    def __init__(self, env: Environment, epochs: int, done: int, examples: int,
                 batch_size: int) -> None:
        self.batches = math.ceil(examples / batch_size)
        self.epochs, self.done = epochs, done
        self.shown = not env.quiet and env.stderr_isatty
        self.env = env
        self.progress: Any = None

    def __enter__(self) -> EpochProgress:
        self.progress = self.env.progress_bar() if self.shown else None
        if self.progress is not None:
            self.task = self.progress.add_task(
                self._description(), total=self.epochs * self.batches,
                completed=self.done * self.batches)
        return self

    def advance(self) -> None:
        if self.progress is not None:
            completed = self.progress.tasks[0].completed + 1
            self.progress.update(self.task, completed=completed,
                                 description=self._description(int(completed // self.batches)))

    def _description(self, finished: int | None = None) -> str:
        epoch = min(self.epochs, (self.done if finished is None else finished) + 1)
        return f"epoch {epoch}/{self.epochs}"

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self.progress is not None:
            self.progress.stop()
