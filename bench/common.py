"""What every bench script shares: the machine line it prints, and timing whole processes.

Runs are whole `python -m cvtool` processes, alternated between the variants compared, so drift
on a shared machine hits all of them; the median of the repeats is reported.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
sys.path.insert(0, str(ROOT))


def machine_line() -> str:
    """CPU model, usable cores and the ISA flags that change kernels (from /proc/cpuinfo)."""
    from cvtool.devicebench.peaks import read_cpuinfo

    cpu = read_cpuinfo()
    flags = " ".join(flag for flag in ISA_FLAGS if flag in cpu.flags) or "none of " + \
        "/".join(ISA_FLAGS)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpu.model}, {cores} cores, flags: {flags}; {time.strftime('%Y-%m-%d')}"


def shapes_scenes(root: Path, count: int, seed: int = 99, train: int = 0) -> Path:
    """`count` fresh shapes scenes (a seed training never used) under ROOT, COCO val split,
    and `train` more in the train split."""
    subprocess.run([sys.executable, "-m", "cvtool", "data", "shapes", str(root), "--num",
                    str(train), "--val-num", str(count), "--seed", str(seed), "-q"], check=True,
                   stdout=subprocess.DEVNULL, cwd=ROOT)
    return root


def cvtool_seconds(*args: str, stdout: int | None = subprocess.DEVNULL) -> float:
    """Wall time of one `python -m cvtool ARGS` process; raises if it fails."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "cvtool", *args], stdout=stdout,
                          stderr=subprocess.PIPE, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    if done.returncode not in (0, 1):
        raise SystemExit(f"cvtool {' '.join(args)} failed: {done.stderr.decode()[-500:]}")
    return time.perf_counter() - started


def timed(command: list[str], threads: int | None) -> tuple[float, str, str]:
    """(wall seconds, stdout, stderr) of one process; `threads` sets OMP_NUM_THREADS."""
    env = {**os.environ, "PYTHONPATH": str(ROOT),
           **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    return time.perf_counter() - started, done.stdout, done.stderr


def alternated(runners: dict[str, Any], repeats: int) -> dict[str, list]:
    """Each runner's results over `repeats` rounds, run in turn within each round so drift
    on a shared machine hits all of them alike."""
    runs: dict[str, list] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, runner in runners.items():
            runs[name].append(runner())
    return runs


def print_ratios(title: str, runs: dict[str, list], images: int, base: str) -> None:
    """The table every throughput bench prints: images/s for the whole process and the loop
    alone, and each as a ratio to `base`. `runs[name]`: one (wall s, loop s, ...) per repeat;
    the medians are compared."""
    import statistics

    wall = {name: statistics.median(r[0] for r in rs) for name, rs in runs.items()}
    loop = {name: statistics.median(r[1] for r in rs) for name, rs in runs.items()}
    print(f"{title}; {machine_line()}")
    print(f"{'run':<18}{'img/s (process)':>16}{'img/s (loop)':>14}{'ratio':>8}"
          f"{'ratio (loop)':>14}")
    for name in runs:
        print(f"{name:<18}{images / wall[name]:>16.2f}{images / loop[name]:>14.2f}"
              f"{wall[base] / wall[name]:>8.2f}{loop[base] / loop[name]:>14.2f}")


def scene_arguments(parser: Any, model: str, batch_size: int, output_help: str) -> None:
    """The options of the benches that run a house model over fresh shapes scenes."""
    parser.add_argument("--output", action="store_true", help=output_help)
    parser.add_argument("--model", default=model)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch CPU threads for both")
