"""cvtool classify against a plain torchvision loop: same model, weights file, batch size, images.

Each run is a whole process (imports, model load, decoding, forward, output), as users pay it.
Prints images/s end to end and for the loop alone (cvtool's run.json / the baseline's own timer),
the ratios, and the top-1 agreement of each cvtool precision with the fp32 baseline.

    python bench/classify_throughput.py [--arch resnet50] [--images 128] [--batch-size 16]
                                        [--repeats 3] [--weights FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT / "sample_images" / "photos"
SIZES = [(640, 480), (800, 600), (500, 375), (1024, 683)]  # typical camera/web photo sizes


def make_images(out: Path, count: int) -> None:
    """Photo-sized JPEGs cut from the shipped photos: crops, flips and rescales of real images."""
    from PIL import Image, ImageOps

    rng = random.Random(0)
    photos = [Image.open(p).convert("RGB") for p in sorted(PHOTOS.glob("*.jpg"))]
    for index in range(count):
        photo = photos[index % len(photos)]
        w, h = photo.size
        box = (rng.randint(0, w // 5), rng.randint(0, h // 5), w - rng.randint(0, w // 5),
               h - rng.randint(0, h // 5))
        image = photo.crop(box).resize(SIZES[index % len(SIZES)], Image.Resampling.BICUBIC)
        image = ImageOps.mirror(image) if index % 2 else image
        image.save(out / f"photo_{index:04d}.jpg", quality=90)


def make_weights(arch: str, path: Path) -> None:
    import torch
    from torchvision.models import get_model

    torch.manual_seed(0)
    torch.save(get_model(arch).state_dict(), path)


def timed(command: list[str]) -> tuple[float, str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    return time.perf_counter() - started, done.stdout, done.stderr


def run_plain(args, images: Path, weights: Path) -> tuple[float, float, list[int]]:
    wall, out, err = timed([sys.executable, str(ROOT / "bench" / "plain_classify.py"), args.arch,
                            str(weights), str(images), str(args.batch_size)])
    top1 = [json.loads(line)["indices"][0] for line in out.splitlines()]
    return wall, float(err.strip().splitlines()[-1]), top1


def run_cvtool(args, images: Path, weights: Path, precision: str) -> tuple[float, float, list[int]]:
    with tempfile.TemporaryDirectory() as out_dir:
        wall, out, _ = timed([sys.executable, "-m", "cvtool", "classify", str(images), "-q",
                              "-m", args.arch, "--weights", str(weights), "-b",
                              str(args.batch_size), "--precision", precision,
                              "--format", "jsonl", "-o", out_dir])
        loop = json.loads((Path(out_dir) / "run.json").read_text())["counts"]["seconds"]
    top1 = [json.loads(line)["predictions"][0]["index"] for line in out.splitlines()]
    return wall, loop, top1


def median_run(runner, repeats: int, *run_args) -> tuple[float, float, list[int]]:
    runs = [runner(*run_args) for _ in range(repeats)]
    return (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs),
            runs[0][2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--weights", type=Path, help="state dict file (default: seeded random)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        images, weights = Path(tmp) / "images", args.weights or Path(tmp) / "weights.pth"
        images.mkdir()
        make_images(images, args.images)
        if args.weights is None:
            make_weights(args.arch, weights)
        report(args, images, weights)


def report(args, images: Path, weights: Path) -> None:
    n = args.images
    plain_wall, plain_loop, plain_top1 = median_run(run_plain, args.repeats, args, images, weights)
    print(f"{args.arch}, {n} images, batch {args.batch_size}, median of {args.repeats} processes, "
          f"{os.cpu_count()} CPUs")
    print(f"{'run':<16}{'img/s (process)':>16}{'img/s (loop)':>14}{'ratio':>8}{'ratio (loop)':>14}"
          f"{'top-1 = plain':>15}")
    print(f"{'plain torchvision':<16}{n / plain_wall:>16.2f}{n / plain_loop:>14.2f}"
          f"{1:>8.2f}{1:>14.2f}{'':>15}")
    for precision in args.precisions.split(","):
        wall, loop, top1 = median_run(run_cvtool, args.repeats, args, images, weights, precision)
        agree = sum(a == b for a, b in zip(top1, plain_top1)) / n
        print(f"{'cvtool ' + precision:<16}{n / wall:>16.2f}{n / loop:>14.2f}"
              f"{plain_wall / wall:>8.2f}{plain_loop / loop:>14.2f}{agree:>15.1%}")


if __name__ == "__main__":
    main()
