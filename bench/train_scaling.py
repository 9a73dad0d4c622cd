"""Training throughput from 1 to N ranks under torchrun (`cvtool train ... --nproc-per-node R`):
the shapes Mask R-CNN and a ResNet-50 fine-tune, images/s and scaling efficiency.

Weak scaling, as DDP is used: each rank keeps the same batch (`--per-rank-batch`), so the global
batch is R times larger, over the same training images. images/s is the training images over
the median epoch time after the first (warm-up) epoch, from the run's metrics.jsonl; each
epoch's time includes rank 0's validation of a small val set (8 images), the same for every R.
On CUDA each rank has its own GPU and efficiency = images/s at R ranks / (R x images/s at 1
rank). On a CPU the ranks share its cores (torchrun's launcher gives each rank cores / R
threads), so the ideal is 1 rank's images/s and efficiency = images/s at R / images/s at 1: what
DDP's processes cost against one process's intra-op threads on the same cores.

    python bench/train_scaling.py [--device cpu|cuda] [--ranks 1,2] [--models maskrcnn,resnet50]
                                  [--epochs 3] [--per-rank-batch 4] [--images 64]
                                  [--image-size 96]
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

from classify_throughput import make_weights
from common import ROOT, machine_line, shapes_scenes

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
VAL_IMAGES = 8


def photo_folder(root: Path, images: int) -> Path:
    """train/<photo>/ and val/<photo>/: crops and flips of each sample photo, one class each."""
    from PIL import Image, ImageOps

    rng = random.Random(0)
    photos = sorted((ROOT / "sample_images" / "photos").glob("*.jpg"))
    for split, count in (("train", images), ("val", VAL_IMAGES)):
        for index in range(count):
            path = photos[index % len(photos)]
            photo = Image.open(path).convert("RGB")
            w, h = photo.size
            box = (rng.randint(0, w // 4), rng.randint(0, h // 4), w - rng.randint(0, w // 4),
                   h - rng.randint(0, h // 4))
            crop = photo.crop(box)
            crop = ImageOps.mirror(crop) if rng.random() < 0.5 else crop
            folder = root / split / path.stem
            folder.mkdir(parents=True, exist_ok=True)
            crop.save(folder / f"{index:04d}.jpg", quality=90)
    return root


def train_args(model: str, data: Path, weights: Path | None, args) -> list[str]:
    common = ["--epochs", str(args.epochs), "--device", args.device, "--workers", "2", "-q"]
    if model == "maskrcnn":
        return ["segment-instance", "--data", str(data), "--width", "16", "--no-augment",
                "--warmup", "1", *common]
    return ["classify", "--data", str(data), "--model", "resnet50", "--weights", str(weights),
            "--image-size", str(args.image_size), "--optimizer", "momentum", "--lr", "0.001",
            "--no-augment", *common]


def images_per_second(model: str, ranks: int, data: Path, weights: Path | None,
                      args) -> float:
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "cvtool", "train", *train_args(model, data, weights, args),
                   "--batch-size", str(args.per_rank_batch * ranks), "-o", str(Path(out) / "run"),
                   *(["--nproc-per-node", str(ranks)] if ranks > 1 else [])]
        done = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
        rows = [json.loads(line) for line in
                (Path(out) / "run" / "metrics.jsonl").read_text().splitlines()]
    return args.images / statistics.median(row["seconds"] for row in rows[1:] or rows)


def gpu_line(device: str) -> str:
    if device == "cpu":
        return ""
    import torch

    return f"; {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu | cuda (each rank its own GPU)")
    parser.add_argument("--ranks", help="comma-separated rank counts [cpu: 1,2; cuda: 1..GPUs]")
    parser.add_argument("--models", default="maskrcnn,resnet50")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--per-rank-batch", type=int, default=4)
    parser.add_argument("--images", type=int, default=64, help="training images per epoch")
    parser.add_argument("--image-size", type=int, default=96, help="resnet50's input side")
    args = parser.parse_args()
    if args.ranks:
        ranks = [int(r) for r in args.ranks.split(",")]
    elif args.device == "cpu":
        ranks = [1, 2]
    else:
        import torch

        ranks = list(range(1, torch.cuda.device_count() + 1))
    print(f"train scaling, {args.images} training images, {args.per_rank_batch} per rank per "
          f"step, {args.epochs} epochs (the first not timed), device {args.device}; "
          f"{machine_line()}{gpu_line(args.device)}")
    print(f"{'model':<10}{'ranks':>6}{'img/s':>10}{'x 1 rank':>10}{'efficiency':>12}")
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            if model == "maskrcnn":
                data = shapes_scenes(Path(tmp) / "shapes", VAL_IMAGES, seed=5, train=args.images)
                weights = None
            elif model == "resnet50":
                data = photo_folder(Path(tmp) / "photos", args.images)
                weights = Path(tmp) / "resnet50.pth"
                make_weights("resnet50", weights)
            else:
                raise SystemExit(f"unknown model {model}: maskrcnn | resnet50")
            base = None
            for count in ranks:
                started = time.perf_counter()
                speed = images_per_second(model, count, data, weights, args)
                base = base or speed
                ideal = base * (count if args.device != "cpu" else 1)
                print(f"{model:<10}{count:>6}{speed:>10.2f}{speed / base:>10.2f}"
                      f"{speed / ideal:>12.1%}   ({time.perf_counter() - started:.0f} s)",
                      flush=True)


if __name__ == "__main__":
    main()
