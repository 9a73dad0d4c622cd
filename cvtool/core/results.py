"""Plain records for each task's output. No torch here: writers and the CLI use these."""

from __future__ import annotations

import base64
import math
import os
import re
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
    # In memory only, never in `to_dict()`: the decoded input (where the predictor keeps
    # images) and results too large for JSON (a semantic mask's class-index array).
    image: Any = field(default=None, repr=False, compare=False)
    arrays: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        if self.error is not None:
            return {
                **path_fields(self.path),
                "ok": False,
                "task": self.task,
                "model": self.model,
                "width": self.width,
                "height": self.height,
                "error": {"type": self.error.type, "message": self.error.message},
            }
        return {
            **path_fields(self.path),
            "ok": True,
            "task": self.task,
            "model": self.model,
            "width": self.width,
            "height": self.height,
            **self.payload,
        }


def record_from_dict(data: dict[str, Any], record_type: type[Record] = Record) -> Record:
    """The record `Record.to_dict()` wrote (a path in `path_bytes` gets its exact bytes back)."""
    path = record_path(data)
    error = data.get("error")
    base = {"path", "path_bytes", "ok", "task", "model", "width", "height", "error"}
    return record_type(path=path, task=data["task"], model=data["model"],
                       width=data.get("width"), height=data.get("height"),
                       error=InputError(error["type"], error["message"]) if error else None,
                       payload={} if error else {k: v for k, v in data.items() if k not in base})


def record_path(data: dict[str, Any]) -> str:
    """The input path of a record as `to_dict()` wrote it: `path_bytes`' exact bytes where the
    path is not UTF-8, else `path`."""
    if "path_bytes" in data:
        return os.fsdecode(base64.b64decode(data["path_bytes"]))
    return data["path"]


def path_fields(path: str) -> dict[str, str]:
    """`path` as strict UTF-8; a path whose bytes are not UTF-8 (Python holds them as lone
    surrogates) reads with U+FFFD in their place, and `path_bytes` keeps the exact bytes in
    base64 (RFC 4648), so the record still names the file byte for byte."""
    shown = printable(path)
    if shown == path:
        return {"path": path}
    try:
        raw = os.fsencode(path)
    except UnicodeEncodeError:  # surrogates that stand for no byte: no file has this name
        return {"path": shown}
    return {"path": shown, "path_bytes": base64.b64encode(raw).decode("ascii")}


def printable(text: str) -> str:
    """`text` with every lone surrogate (undecodable bytes) replaced by U+FFFD: encodable as
    strict UTF-8."""
    if text.isascii():
        return text
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # surrogates that stand for no byte (from JSON escapes)
        raw = text.encode("utf-8", "surrogatepass")
    return raw.decode("utf-8", "replace")


# Characters a terminal acts on instead of showing: C0 controls (ESC starts CSI/OSC sequences,
# BEL, backspace, CR), DEL, C1 controls (0x9b is a one-byte CSI) and the bidirectional overrides
# that make text read in another order than it is ("Trojan Source").
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def shown(text: str, newlines: bool = False) -> str:
    """`text` safe to print on a terminal: every control character written out visibly as an
    escape (`\\n`, `\\x1b`, `\\u202e`, as Python's repr writes them), so a
    file name or label can neither move the cursor, retitle the window nor clear the screen.
    With `newlines`, line breaks stay (a multi-line message of cvtool's own)."""
    text = printable(text)
    if not _CONTROLS.search(text):
        return text
    return _CONTROLS.sub(lambda match: _escape(match.group(), newlines), text)


def _escape(char: str, newlines: bool) -> str:
    if newlines and char == "\n":
        return char
    if char in _NAMED:
        return _NAMED[char]
    return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"


def is_finite(value: Any) -> bool:
    """No NaN or infinity anywhere in a payload of dicts, lists and numbers."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(is_finite(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return all(is_finite(item) for item in value)
    return True


class InputFailure(Exception):
    """Raised while reading or decoding one input; the batch loop turns it into an error record."""

    def __init__(self, type: str, message: str) -> None:
        super().__init__(message)
        self.error = InputError(type=type, message=message)


def counted(count: int, noun: str) -> str:
    """`1 input`, `2 inputs`: a count and its noun, in the right number (English `-s`)."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def one_line(error: BaseException, limit: int = 300) -> str:
    """An exception's message folded onto one line, for error records and messages."""
    return " ".join(str(error).split())[:limit] or type(error).__name__
