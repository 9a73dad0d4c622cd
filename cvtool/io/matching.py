"""Finding an input's ground truth by file name: the one index `--gt` and `--gt-masks` share.

A ground-truth entry is keyed by its path components (`val/0001.png` -> ("val", "0001.png"));
an input matches the entry whose key is the longest trailing run of the input's own
components. The index is a dict built once, so each lookup costs one probe per component of the
input path, however many entries the ground truth holds. No torch here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, TypeVar

V = TypeVar("V")


class TailIndex(Generic[V]):
    def __init__(self) -> None:
        self.by_key: dict[tuple[str, ...], V] = {}

    def add(self, parts: Sequence[str], value: V) -> None:
        """Index `value` under `parts`; of two entries with the same key the first is kept."""
        if parts:
            self.by_key.setdefault(tuple(parts), value)

    def find(self, parts: Sequence[str]) -> V | None:
        """The value under the longest trailing run of `parts`, or None."""
        parts = tuple(parts)
        for start in range(len(parts)):
            if (found := self.by_key.get(parts[start:])) is not None:
                return found
        return None

    def __len__(self) -> int:
        return len(self.by_key)
