"""cvtool detect / segment-instance against a plain torchvision loop on the same checkpoint.

Each run is a whole process (imports, model load, decoding, forward, masks to RLE, output), as
users pay it. Images: fresh 128x128 shapes scenes (seed 99, never used for training). Prints
images/s end to end and for the loop alone (the summary line's seconds / the baseline's own
timer), the ratios, and whether both found the same labels and boxes (to 1e-3 px) and
identical masks. `--output`: both also draw every image and save it as PNG (cvtool `-o DIR`,
which also writes records.jsonl and run.json; the baseline with torchvision's drawing utils).

    python bench/detect_throughput.py [--task segment-instance|detect] [--output]
                                      [--model shapes-maskrcnn|RUN_DIR] [--images 200]
                                      [--batch-size 8] [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

from common import alternated, print_ratios, scene_arguments, timed

ROOT = Path(__file__).resolve().parents[1]


def checkpoint_of(model: str) -> Path:
    sys.path.insert(0, str(ROOT))
    from cvtool.models.checkpoint import resolve_checkpoint
    from cvtool.models.registry import get_spec

    path = Path(model)
    return resolve_checkpoint(path if path.exists() else get_spec(model).checkpoint_path)


def make_images(out: Path, count: int) -> None:
    sys.path.insert(0, str(ROOT))
    from PIL import Image

    from cvtool.data.shapes import render

    for index in range(count):
        Image.fromarray(render(99, "val", index).pixels).save(out / f"{index:06d}.png")


def run_plain(args, images: Path, checkpoint: Path) -> tuple[float, float, list]:
    with tempfile.TemporaryDirectory() as out_dir:
        wall, out, err = timed([sys.executable, str(ROOT / "bench" / "plain_detect.py"),
                                str(checkpoint), str(images), str(args.batch_size),
                                "masks" if args.task == "segment-instance" else "boxes",
                                *([out_dir] if args.output else [])], args.threads)
        drawn = len(list(Path(out_dir).rglob("*.png")))
    found = [(row["labels"], row["boxes"], row.get("counts", []))
             for row in map(json.loads, out.splitlines())]
    return wall, float(err.strip().splitlines()[-1]), found, drawn


def run_cvtool(args, images: Path) -> tuple[float, float, list]:
    # The loop's seconds come from the summary line on stderr ("N inputs, 0 failed, S s ...").
    with tempfile.TemporaryDirectory() as out_dir:
        wall, out, err = timed([sys.executable, "-m", "cvtool", args.task, str(images),
                                "-m", args.model, "-b", str(args.batch_size), "--conf", "0.5",
                                "--device", "cpu", "--format", "jsonl",
                                *(["-o", out_dir] if args.output else []),
                                *(["--threads", str(args.threads)] if args.threads else [])],
                               args.threads)
        drawn = len(list(Path(out_dir).rglob("*.png")))
    summary = next(line for line in err.splitlines() if " inputs, " in line)
    loop = float(re.search(r"([0-9.]+) s", summary).group(1))
    found = []
    for record in map(json.loads, out.splitlines()):
        detections = record["detections"]
        found.append(([d["index"] for d in detections], [d["box"] for d in detections],
                      [d["mask"]["counts"] for d in detections if "mask" in d]))
    return wall, loop, found, drawn


def same(a: tuple, b: tuple) -> bool:
    labels, boxes, masks = a
    return (labels == b[0] and masks == b[2] and len(boxes) == len(b[1])
            and all(abs(x - y) < 1e-3 for p, q in zip(boxes, b[1]) for x, y in zip(p, q)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=("segment-instance", "detect"),
                        default="segment-instance")
    scene_arguments(parser, "shapes-maskrcnn", 8, "both draw and save every image (cvtool: -o DIR)")
    args = parser.parse_args()
    checkpoint = checkpoint_of(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        images = Path(tmp)
        make_images(images, args.images)
        runs = alternated({"plain torchvision": lambda: run_plain(args, images, checkpoint),
                           "cvtool": lambda: run_cvtool(args, images)}, args.repeats)
    n, base = args.images, "plain torchvision"
    agree = sum(same(a, b) for a, b in zip(runs["cvtool"][0][2], runs[base][0][2])) / n
    drawn = {name: rs[0][3] for name, rs in runs.items()}
    print_ratios(f"{args.task} {args.model}, {n} images 128x128, batch {args.batch_size}, "
                 f"{'drawn to PNG' if args.output else 'records only'}, median of "
                 f"{args.repeats} alternating processes each", runs, n, base)
    print(f"images with identical labels, boxes and masks: {agree:.1%}; PNGs drawn: "
          + ", ".join(f"{name} {count}" for name, count in drawn.items()))


if __name__ == "__main__":
    main()
