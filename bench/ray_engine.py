"""The local engine against `--engine ray` on one machine: wall time, and peak memory at 10,000
against 1,000 inputs for each.

Inputs: hard links to sample_images/digits (32x32 PNGs), classified by digits-cnn with `-o DIR`,
whole processes, alternated (local, ray, local, ray...), median of the repeats. Ray starts a
local cluster in each run (as a user's first `--engine ray` does), so its time includes
starting Ray, its decoding workers and the actor. Memory is the peak, sampled every 0.25 s, of
the summed RSS of the run's whole process tree (for Ray: the driver, GCS, raylet, workers;
shared pages count once per process, the same at both sizes). Targets: records equal; RSS
ratio 10k/1k at most 1.1 for both engines. Needs the ray extra.

    python bench/ray_engine.py [--inputs 10000] [--repeats 3] [--actors 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from batch_runs import lines, make_inputs
from common import ROOT, machine_line

BASE = [sys.executable, "-m", "cvtool", "classify", "-m", "digits-cnn", "--device", "cpu",
        "-q", "--format", "jsonl"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def tree_rss_mb(root: int) -> float:
    """Summed VmRSS of `root` and every process below it, from /proc."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as status:
                fields = dict(line.split(":", 1) for line in status if ":" in line)
        except OSError:
            continue
        parents[int(entry)] = int(fields["PPid"])
        rss[int(entry)] = int(fields.get("VmRSS", "0 kB").split()[0])
    total = 0
    for pid in rss:
        node = pid
        while node not in (0, 1) and node != root:
            node = parents.get(node, 0)
        if node == root:
            total += rss[pid]
    return total / 1024


def timed(args: list[str]) -> tuple[float, float]:
    """Wall seconds and peak tree RSS (MB) of one run."""
    started = time.perf_counter()
    process = subprocess.Popen([*BASE, *args], env=ENV, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    peak = [0.0]

    def sample() -> None:
        while process.poll() is None:
            peak[0] = max(peak[0], tree_rss_mb(process.pid))
            time.sleep(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = process.communicate()
    sampler.join()
    if process.returncode != 0:
        raise SystemExit(f"cvtool {' '.join(args)} failed: {err.decode()[-800:]}")
    return time.perf_counter() - started, peak[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--actors", type=int, default=1)
    args = parser.parse_args()
    engines = {"local": [], "ray": ["--engine", "ray", "--actors", str(args.actors)]}
    seconds: dict[str, list[float]] = {name: [] for name in engines}
    rss: dict[tuple[str, int], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        folders = {args.inputs: make_inputs(tmp_path / "large", args.inputs),
                   args.inputs // 10: make_inputs(tmp_path / "small", args.inputs // 10)}
        for repeat in range(args.repeats):
            for size, folder in folders.items():
                for name, extra in engines.items():
                    out = tmp_path / f"{name}-{size}-{repeat}"
                    wall, peak = timed([str(folder), *extra, "-o", str(out)])
                    rss.setdefault((name, size), []).append(peak)
                    if size == args.inputs:
                        seconds[name].append(wall)
        large = {name: lines(tmp_path / f"{name}-{args.inputs}-0" / "records.jsonl")
                 for name in engines}
    same_paths = [r["path"] for r in large["local"]] == [r["path"] for r in large["ray"]]
    worst = max(abs(a["predictions"][0]["score"] - b["predictions"][0]["score"])
                for a, b in zip(large["local"], large["ray"]))
    print(f"engines: {args.inputs} inputs (digits-cnn, 32x32 PNGs), ray with {args.actors} "
          f"actor(s), {machine_line()}")
    print(f"  records: same paths in the same order {same_paths}, largest score difference "
          f"{worst:.2e}")
    local, ray = (statistics.median(seconds[name]) for name in ("local", "ray"))
    print(f"  wall time: local {local:.2f} s, ray {ray:.2f} s, ray/local {ray / local:.2f}x "
          f"({args.inputs / local:.0f} vs {args.inputs / ray:.0f} inputs/s)")
    for name in engines:
        big, small = (statistics.median(rss[(name, size)]) for size in folders)
        print(f"  peak RSS {name}: {args.inputs} inputs {big:.0f} MB vs {args.inputs // 10} "
              f"inputs {small:.0f} MB, ratio {big / small:.3f} (target <= 1.1)")
    if not same_paths or worst > 1e-6:
        sys.exit(1)


if __name__ == "__main__":
    main()
