"""Does cvtool's CPU matmul median agree with torch.utils.benchmark's? (within 10%)

Both time the same tensors in one process, in alternating rounds so that load from other
processes hits both alike; each round's medians are compared, and the median ratio reported.

    python bench/matmul_vs_torch_benchmark.py [--size 256] [--threads 1] [--rounds 5]

Exit status 0 when the median ratio is within the tolerance, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cvtool.devicebench.cases import Case, MatmulShape  # noqa: E402
from cvtool.devicebench.timing import CpuTimer, Plan, Series, measure, median_iqr  # noqa: E402
from cvtool.devicebench.workloads import make_workload  # noqa: E402

TOLERANCE = 0.10


def cvtool_median_ms(call: object, threads: int, min_run_time: float) -> float:
    plan = Plan(warmup=3, repeats=15, block_ms=1000 * min_run_time / 15,
                max_time_s=min_run_time)
    series = Series(CpuTimer(threads), call)
    measure([series], plan)
    return median_iqr(series.samples_ms)[0]


def torch_median_ms(a: object, b: object, threads: int, min_run_time: float) -> float:
    from torch.utils.benchmark import Timer

    timer = Timer("torch.matmul(a, b)", globals={"a": a, "b": b}, num_threads=threads)
    return timer.blocked_autorange(min_run_time=min_run_time).median * 1e3


def compare(size: int = 256, threads: int = 1, rounds: int = 5,
            min_run_time: float = 0.3) -> dict[str, float]:
    """Median over rounds of each method's median, and their ratio (cvtool / torch)."""
    import torch

    saved = torch.get_num_threads()
    workload = make_workload(Case(f"square_{size}", MatmulShape(size, size, size)),
                             "float32", "cpu", seed=0)
    ours, theirs = [], []
    try:
        for _ in range(rounds):
            ours.append(cvtool_median_ms(workload.call, threads, min_run_time))
            theirs.append(torch_median_ms(*workload.inputs, threads, min_run_time))
    finally:
        torch.set_num_threads(saved)
    ratios = [o / t for o, t in zip(ours, theirs)]
    return {"size": size, "threads": threads, "cvtool_ms": statistics.median(ours),
            "torch_utils_benchmark_ms": statistics.median(theirs),
            "ratio": statistics.median(ratios)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--min-run-time", type=float, default=0.3)
    args = parser.parse_args()
    report = compare(args.size, args.threads, args.rounds, args.min_run_time)
    report["within_tolerance"] = abs(report["ratio"] - 1) <= TOLERANCE
    print(json.dumps(report, indent=2))
    return 0 if report["within_tolerance"] else 1


if __name__ == "__main__":
    sys.exit(main())
