"""Batch runs at 10,000 inputs: shards + merge against one run, a resume after kill -9 at 50%
against an uninterrupted run, and peak RSS at 10,000 against 1,000 inputs.

Inputs: copies of sample_images/digits (32x32 PNGs) classified by digits-cnn with `-o DIR`
(records.jsonl), whole processes. Targets: merged shards equal the single run (paths in order,
scores within 1e-6); killed + resumed total time <= 1.1x uninterrupted; RSS ratio <= 1.1.

    python bench/batch_runs.py [--inputs 10000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, machine_line

BASE = [sys.executable, "-m", "cvtool", "classify", "-m", "digits-cnn", "--device", "cpu",
        "-q", "--format", "jsonl"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def make_inputs(folder: Path, count: int) -> Path:
    digits = sorted((ROOT / "sample_images" / "digits").glob("*.png"))
    folder.mkdir(parents=True)
    for number in range(count):
        os.link(digits[number % len(digits)], folder / f"{number // 1000:02d}_{number:05d}.png")
    return folder


def run(*args: str) -> float:
    started = time.perf_counter()
    subprocess.run([*BASE, *args], env=ENV, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def killed_then_resumed(folder: Path, out: Path, half_size: int) -> float:
    """Kill -9 once records.jsonl reaches `half_size` bytes (half the finished file: watched
    by size, so the watching costs no CPU the run needs), then --resume."""
    started = time.perf_counter()
    process = subprocess.Popen([*BASE, str(folder), "-o", str(out)], env=ENV,
                               stdout=subprocess.DEVNULL)
    records = out / "records.jsonl"
    while process.poll() is None:
        if records.exists() and records.stat().st_size >= half_size:
            os.kill(process.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    process.wait()
    subprocess.run([*BASE, str(folder), "-o", str(out), "--resume"], env=ENV, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def kill_point(out: Path) -> int:
    """How many records the killed run had written (its resume's run.json says)."""
    counts = json.loads((out / "run.json").read_text())["counts"]
    return counts["inputs"] - counts.get("this_run", counts)["inputs"]


def peak_rss_mb(*args: str) -> float:
    code = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
            "stdout=subprocess.DEVNULL); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    done = subprocess.run([sys.executable, "-c", code, *BASE, *args], env=ENV, check=True,
                          capture_output=True, text=True)
    return int(done.stdout.strip()) / 1024


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        folder = make_inputs(tmp_path / "inputs", args.inputs)
        small = make_inputs(tmp_path / "small", args.inputs // 10)
        run(str(folder), "-o", str(tmp_path / "single"))
        for index in range(1, 5):
            run(str(folder), "--shard", f"{index}/4", "-o", str(tmp_path / f"shard{index}"))
        subprocess.run([sys.executable, "-m", "cvtool", "merge",
                        *(str(tmp_path / f"shard{i}") for i in range(1, 5)),
                        "-o", str(tmp_path / "merged"), "-q"], env=ENV, check=True,
                       stdout=subprocess.DEVNULL)
        single, merged = lines(tmp_path / "single" / "records.jsonl"), lines(
            tmp_path / "merged" / "records.jsonl")
        same_order = [r["path"] for r in single] == [r["path"] for r in merged]
        worst = max(abs(a["predictions"][0]["score"] - b["predictions"][0]["score"])
                    for a, b in zip(single, merged))
        same_labels = all(a["predictions"][0]["label"] == b["predictions"][0]["label"]
                          for a, b in zip(single, merged))
        shard_sizes = [len(lines(tmp_path / f"shard{i}" / "records.jsonl")) for i in range(1, 5)]

        plain, resumed, killed_at = [], [], []
        for repeat in range(args.repeats):  # alternated
            out = tmp_path / f"plain{repeat}"
            plain.append(run(str(folder), "-o", str(out)))
            resumed.append(killed_then_resumed(folder, tmp_path / f"resumed{repeat}",
                                               (out / "records.jsonl").stat().st_size // 2))
            killed_at.append(kill_point(tmp_path / f"resumed{repeat}"))
            assert len(lines(tmp_path / f"resumed{repeat}" / "records.jsonl")) == args.inputs
        rss_small = statistics.median(peak_rss_mb(str(small), "-o", str(tmp_path / f"rs{i}"))
                                      for i in range(args.repeats))
        rss_large = statistics.median(peak_rss_mb(str(folder), "-o", str(tmp_path / f"rl{i}"))
                                      for i in range(args.repeats))
    print(f"batch runs: {args.inputs} inputs (digits-cnn, 32x32 PNGs), {machine_line()}")
    print(f"  shards 1/4..4/4 + merge vs one run: {shard_sizes} inputs per shard, same order "
          f"{same_order}, same labels {same_labels}, largest score difference {worst:.2e} "
          f"(target: equal, within 1e-6)")
    ratio = statistics.median(resumed) / statistics.median(plain)
    print(f"  killed after {killed_at} records + --resume: {statistics.median(resumed):.2f} s "
          f"vs uninterrupted {statistics.median(plain):.2f} s, ratio {ratio:.3f} "
          "(target <= 1.1)")
    print(f"  peak RSS: {args.inputs} inputs {rss_large:.0f} MB vs {args.inputs // 10} inputs "
          f"{rss_small:.0f} MB, ratio {rss_large / rss_small:.3f} (target <= 1.1)")
    if not (same_order and same_labels and worst <= 1e-6) or math.isnan(ratio):
        sys.exit(1)


if __name__ == "__main__":
    main()
