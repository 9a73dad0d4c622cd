"""The one reader of the JSON cvtool is handed: checkpoint sidecars, exports' metadata,
run.json, records.jsonl lines, training configs, COCO files.

Every such file is untrusted, so the reader bounds what a parse may cost before anything looks
at the result: its size, its nesting depth (100,000 nested brackets exhaust Python's recursion
in the parser and in every walk after it) and the size of each number (a 5,000-digit integer
trips Python's int-conversion limit; 1e400 reads as infinity). What breaks a bound is
`UntrustedJSON`, a ValueError with a one-line message; the caller names the file. NaN and
Infinity are refused too: cvtool never writes them. No torch here.

The parse is json's own C parser (it stops cleanly at Python's recursion limit); one iterative
walk over the result then checks depth and numbers, which costs about half the parse again.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from cvtool.core.files import open_regular

MAX_DEPTH = 64  # cvtool's own files nest at most 6 deep, COCO files 4
MAX_INT = 1 << 128  # ids, counts and sizes are far below; a 5,000-digit number is not data
MAX_BYTES = 64 << 20  # sidecars, run.json, metadata; COCO files pass their own larger limit


class UntrustedJSON(ValueError):
    """The text is not JSON, or is JSON past one of the reader's bounds."""


def loads(text: str | bytes, max_bytes: int = MAX_BYTES) -> Any:
    """`text` parsed within the bounds, or UntrustedJSON saying which one it breaks."""
    if len(text) > max_bytes:
        raise UntrustedJSON(f"over {max_bytes:,} bytes of JSON")
    try:
        value = json.loads(text, parse_constant=_constant)
    except UntrustedJSON:
        raise
    except RecursionError:
        raise UntrustedJSON(f"nested over {MAX_DEPTH} levels deep") from None
    except ValueError as error:  # JSONDecodeError, invalid UTF-8, the int-conversion limit
        if "integer string conversion" in str(error):
            raise UntrustedJSON("an integer of over 4,300 digits") from None
        raise UntrustedJSON(f"not JSON ({' '.join(str(error).split())[:200]})") from None
    _check(value)
    return value


def read(path: str | Path, max_bytes: int = MAX_BYTES, follow: bool = True) -> Any:
    """The JSON in the regular file `path` (OSError for what cannot be opened or is no
    regular file or, without `follow`, a link; UntrustedJSON for its contents)."""
    with open_regular(path, follow=follow) as file:
        data = file.read(max_bytes + 1)
    return loads(data, max_bytes)


def _check(value: Any) -> None:
    """Depth and numbers, without recursion (the value may nest up to the parser's limit)."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        kind = type(item)
        if kind is dict:
            item = item.values()
        elif kind is not list:
            _check_number(item)
            continue
        if depth >= MAX_DEPTH:
            raise UntrustedJSON(f"nested over {MAX_DEPTH} levels deep")
        for child in item:
            kind = type(child)
            if kind is dict or kind is list:
                stack.append((child, depth + 1))
            elif kind is float or kind is int:
                _check_number(child)


def _check_number(value: Any) -> None:
    if type(value) is float and not math.isfinite(value):
        raise UntrustedJSON("a number too large for a float")
    if type(value) is int and not -MAX_INT < value < MAX_INT:
        raise UntrustedJSON(f"an integer of {len(str(value))} digits")


def _constant(name: str) -> float:
    raise UntrustedJSON(f"{name} is not JSON")
