"""cvtool segment-semantic against a plain smp + torchvision loop on the same checkpoint.

Each run is a whole process (imports, model load, decoding, forward, argmax, output), as users
pay it. Images: fresh 128x128 shapes scenes (seed 99, never used for training). Prints images/s
end to end and for the loop alone (the summary line's seconds / the baseline's own timer), the
ratios, and whether both found the same pixels of every class. `--output`: both also save each
mask and an overlay as PNG (cvtool `-o DIR`, which also writes records.jsonl and run.json).

    python bench/segment_throughput.py [--output] [--model shapes-unet|RUN_DIR] [--images 200]
                                       [--batch-size 4] [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

from common import alternated, print_ratios, scene_arguments, timed
from detect_throughput import checkpoint_of, make_images

ROOT = Path(__file__).resolve().parents[1]


def run_plain(args, images: Path, checkpoint: Path) -> tuple[float, float, list, int]:
    with tempfile.TemporaryDirectory() as out_dir:
        wall, out, err = timed([sys.executable, str(ROOT / "bench" / "plain_segment.py"),
                                str(checkpoint), str(images), str(args.batch_size),
                                *([out_dir] if args.output else [])], args.threads)
        drawn = len(list(Path(out_dir).rglob("*.png")))
    found = [row["pixels"] for row in map(json.loads, out.splitlines())]
    return wall, float(err.strip().splitlines()[-1]), found, drawn


def run_cvtool(args, images: Path, classes: int) -> tuple[float, float, list, int]:
    with tempfile.TemporaryDirectory() as out_dir:
        wall, out, err = timed([sys.executable, "-m", "cvtool", "segment-semantic", str(images),
                                "-m", args.model, "-b", str(args.batch_size), "--device", "cpu",
                                "--format", "jsonl", *(["-o", out_dir] if args.output else []),
                                *(["--threads", str(args.threads)] if args.threads else [])],
                               args.threads)
        drawn = len(list(Path(out_dir).rglob("*.png")))
    summary = next(line for line in err.splitlines() if " inputs, " in line)
    loop = float(re.search(r"([0-9.]+) s", summary).group(1))
    found = []
    for record in map(json.loads, out.splitlines()):
        pixels = [0] * classes
        for row in record["classes"]:
            pixels[row["index"]] = row["pixels"]
        found.append(pixels)
    return wall, loop, found, drawn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    scene_arguments(parser, "shapes-unet", 4, "both save every mask and overlay (cvtool: -o DIR)")
    args = parser.parse_args()
    checkpoint = checkpoint_of(args.model)
    classes = len(json.loads(checkpoint.with_suffix(".json").read_text())["classes"])
    with tempfile.TemporaryDirectory() as tmp:
        images = Path(tmp)
        make_images(images, args.images)
        runs = alternated({"plain smp": lambda: run_plain(args, images, checkpoint),
                           "cvtool": lambda: run_cvtool(args, images, classes)}, args.repeats)
    n, base = args.images, "plain smp"
    agree = sum(a == b for a, b in zip(runs["cvtool"][0][2], runs[base][0][2])) / n
    print_ratios(f"segment-semantic {args.model}, {n} images 128x128, batch {args.batch_size}, "
                 f"{'masks and overlays to PNG' if args.output else 'records only'}, median of "
                 f"{args.repeats} alternating processes each", runs, n, base)
    print(f"images with the same pixel count for every class: {agree:.1%}; PNGs written: "
          + ", ".join(f"{name} {rs[0][3]}" for name, rs in runs.items()))


if __name__ == "__main__":
    main()
