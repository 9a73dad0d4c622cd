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
import random
import statistics
import sys
import tempfile
from pathlib import Path

from common import alternated, machine_line, timed

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


def run_plain(args, images: Path, weights: Path) -> tuple[float, float, list[int]]:
    wall, out, err = timed([sys.executable, str(ROOT / "bench" / "plain_classify.py"), args.arch,
                            str(weights), str(images), str(args.batch_size)], args.threads)
    top1 = [json.loads(line)["indices"][0] for line in out.splitlines()]
    return wall, float(err.strip().splitlines()[-1]), top1


def run_cvtool(args, images: Path, weights: Path, precision: str) -> tuple[float, float, list[int]]:
    with tempfile.TemporaryDirectory() as out_dir:
        wall, out, _ = timed([sys.executable, "-m", "cvtool", "classify", str(images), "-q",
                              "-m", args.arch, "--weights", str(weights), "-b",
                              str(args.batch_size), "--precision", precision, "--device", "cpu",
                              *(["--threads", str(args.threads)] if args.threads else []),
                              "--format", "jsonl", "-o", out_dir], args.threads)
        loop = json.loads((Path(out_dir) / "run.json").read_text())["counts"]["seconds"]
    top1 = [json.loads(line)["predictions"][0]["index"] for line in out.splitlines()]
    return wall, loop, top1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--weights", type=Path, help="state dict file (default: seeded random)")
    parser.add_argument("--threads", type=int, help="torch CPU threads for both (default: torch's)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        images, weights = Path(tmp) / "images", args.weights or Path(tmp) / "weights.pth"
        images.mkdir()
        make_images(images, args.images)
        if args.weights is None:
            make_weights(args.arch, weights)
        report(args, images, weights)


def report(args, images: Path, weights: Path) -> None:
    """Runs alternate (plain, cvtool fp32, cvtool bf16, plain, ...) so drift hits all alike."""
    n = args.images
    runners = {"plain torchvision": lambda: run_plain(args, images, weights)}
    for precision in args.precisions.split(","):
        runners[f"cvtool {precision}"] = (
            lambda p=precision: run_cvtool(args, images, weights, p))
    runs = alternated(runners, args.repeats)
    wall = {name: statistics.median(r[0] for r in rs) for name, rs in runs.items()}
    loop = {name: statistics.median(r[1] for r in rs) for name, rs in runs.items()}
    base, base_top1 = "plain torchvision", runs["plain torchvision"][0][2]
    print(f"{args.arch}, {n} images, batch {args.batch_size}, median of {args.repeats} "
          f"alternating processes each; {machine_line()}")
    print(f"{'run':<18}{'img/s (process)':>16}{'img/s (loop)':>14}{'ratio':>8}"
          f"{'ratio (loop)':>14}{'top-1 = plain':>15}")
    for name, rs in runs.items():
        agree = sum(a == b for a, b in zip(rs[0][2], base_top1)) / n
        print(f"{name:<18}{n / wall[name]:>16.2f}{n / loop[name]:>14.2f}"
              f"{wall[base] / wall[name]:>8.2f}{loop[base] / loop[name]:>14.2f}{agree:>15.1%}")


if __name__ == "__main__":
    main()
