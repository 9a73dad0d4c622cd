"""`cvtool train ... --nproc-per-node N`: launching torchrun on this machine, and what a
train command asks of the torchrun it may be running under (its rank, whether it was restarted).
"""

from __future__ import annotations

import os

from cvtool.core.context import Environment


def rank() -> int:
    """This process's RANK under torchrun (any launcher that sets WORLD_SIZE > 1), else -1."""
    from cvtool.train.world import from_environment

    world = from_environment()
    return world.rank if world.distributed else -1


def restarted() -> bool:
    from cvtool.train.world import from_environment

    world = from_environment()
    return world.distributed and world.restarts > 0


def launch(env: Environment, processes: int) -> int:
    """`torchrun --standalone --nproc_per_node N -m cvtool ARGS` (a free port on this machine),
    ARGS being this command's own without --nproc-per-node; its exit status is ours."""
    import subprocess
    import sys

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={processes}", "-m", "cvtool", *without_nproc(env.argv)]
    env.log(f"launching {processes} ranks: torchrun --standalone --nproc_per_node={processes} "
            "-m cvtool ...")
    # torchrun would set 1 (and say so); CPU ranks share the machine's cores instead.
    threads = str(max(1, (os.cpu_count() or 1) // processes))
    environment = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", threads)}
    return subprocess.run(command, stdin=subprocess.DEVNULL, env=environment).returncode


def without_nproc(args: list[str]) -> list[str]:
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--nproc-per-node":
            skip = True
        elif not arg.startswith("--nproc-per-node="):
            kept.append(arg)
    return kept
