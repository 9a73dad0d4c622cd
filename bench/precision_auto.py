"""`--precision auto` against fp32 and plain bf16, on a model with real weights.

Inputs: the sample photos and `--images` photo-sized JPEGs cut from them (crops, flips and
rescales: `classify_throughput.make_images`), classified by efficientnet_lite0 (real ImageNet
weights, installed with cvtool) in whole `cvtool classify` processes, alternated fp32 / bf16 /
auto, median of `--repeats`. Prints images/s (the loop, from run.json, and the process), the
top-1 agreement of each with fp32, and how many inputs auto re-ran in fp32 (bf16 top-2 within
`cvtool.inference.classify.RECHECK_MARGIN`). On a CPU without native bf16 auto is fp32.

    python bench/precision_auto.py [--images 96] [--repeats 3] [--model efficientnet_lite0]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from classify_throughput import PHOTOS, make_images
from common import alternated, machine_line, timed

PRECISIONS = ("fp32", "bf16", "auto")


def run(images: Path, model: str, precision: str) -> tuple[float, float, list[int], int]:
    with tempfile.TemporaryDirectory() as out:
        wall, stdout, _ = timed([sys.executable, "-m", "cvtool", "classify", str(images), "-q",
                                 "-m", model, "--precision", precision, "--device", "cpu",
                                 "--format", "jsonl", "-o", out], None)
        info = json.loads((Path(out) / "run.json").read_text())
    top1 = [json.loads(line)["predictions"][0]["index"] for line in stdout.splitlines()]
    return wall, info["counts"]["seconds"], top1, info.get("rechecked_in_fp32", 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="efficientnet_lite0")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        images = Path(tmp)
        make_images(images, args.images)
        for photo in sorted(PHOTOS.glob("*.jpg")):
            shutil.copy(photo, images / photo.name)
        runs = alternated({p: lambda p=p: run(images, args.model, p) for p in PRECISIONS},
                          args.repeats)
    count = args.images + len(list(PHOTOS.glob("*.jpg")))
    base = runs["fp32"][0][2]
    print(f"{args.model}, {count} JPEGs (the sample photos and {args.images} cut from them), "
          f"median of {args.repeats} alternated processes each; {machine_line()}")
    print(f"{'precision':<10}{'img/s (loop)':>14}{'img/s (process)':>17}{'x fp32 (loop)':>15}"
          f"{'top-1 = fp32':>14}{'re-run in fp32':>16}")
    loop_fp32 = statistics.median(r[1] for r in runs["fp32"])
    for name, rs in runs.items():
        loop, wall = statistics.median(r[1] for r in rs), statistics.median(r[0] for r in rs)
        agree = sum(a == b for a, b in zip(rs[0][2], base))
        print(f"{name:<10}{count / loop:>14.2f}{count / wall:>17.2f}{loop_fp32 / loop:>15.2f}"
              f"{f'{agree}/{count}':>14}{rs[0][3]:>16}")


if __name__ == "__main__":
    main()
