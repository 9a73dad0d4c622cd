"""Plain records for each task's output. No torch here: writers and the CLI use these."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class InputError:
    """Why one input could not be processed: `type` is a short class name, `message` one line."""

    type: str
    message: str


@dataclass(frozen=True)
class Prediction:
    index: int
    label: str
    score: float


@dataclass
class Record:
    """One input's outcome. `error` set means failed; `payload` holds the task's fields."""

    path: str
    task: str
    model: str
    width: int | None = None
    height: int | None = None
    error: InputError | None = None
    payload: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        if self.error is not None:
            return {
                "path": self.path,
                "ok": False,
                "task": self.task,
                "model": self.model,
                "width": self.width,
                "height": self.height,
                "error": {"type": self.error.type, "message": self.error.message},
            }
        return {
            "path": self.path,
            "ok": True,
            "task": self.task,
            "model": self.model,
            "width": self.width,
            "height": self.height,
            **self.payload,
        }


class InputFailure(Exception):
    """Raised while reading or decoding one input; the batch loop turns it into an error record."""

    def __init__(self, type: str, message: str) -> None:
        super().__init__(message)
        self.error = InputError(type=type, message=message)


def one_line(error: BaseException, limit: int = 300) -> str:
    """An exception's message folded onto one line, for error records and messages."""
    return " ".join(str(error).split())[:limit] or type(error).__name__
