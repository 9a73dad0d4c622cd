"""Which rank of which world this process is, as torchrun's environment says. No torch: the CLI
reads it before a trainer imports anything heavy (cvtool/train/distributed.py joins the world).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from cvtool.core.status import UsageError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    restarts: int = 0  # torchrun's TORCHELASTIC_RESTART_COUNT: >0 after an elastic restart

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0



def from_environment(environ: Any = os.environ) -> World:
    """The world torchrun describes (a world of one without it)."""
    def number(name: str, default: int) -> int:
        text = environ.get(name)
        try:
            return default if text in (None, "") else int(text)
        except ValueError:
            raise UsageError(f"{name}={text!r} is not a number (set by torchrun)") from None

    world = World(number("RANK", 0), number("WORLD_SIZE", 1), number("LOCAL_RANK", 0),
                  number("TORCHELASTIC_RESTART_COUNT", 0))
    if not 0 <= world.rank < world.size:
        raise UsageError(f"RANK {world.rank} is outside WORLD_SIZE {world.size}")
    return world
