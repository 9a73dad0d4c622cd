"""Image-folder training at size: memory does not grow with the folder, and cvtool trains as fast
as the plain torchvision loop a user would write.

Makes folders of 64x64 JPEGs (10 classes, 10% of each in val/), then
1. peak RSS of `cvtool train classify` (one epoch) on 2,000 and on 20,000 images: target ratio
   at most 1.2 (before streaming, the folder was decoded into one tensor: 10x the images, 10x it);
2. training throughput against `ImageFolder` + `DataLoader` with the same model (cvtool's cnn,
   the same kwargs and init), optimizer, batch size and workers: images per second of the epoch
   (train and val, as both loops run them), alternated processes, median; target at least 1.0.

    python bench/train_streaming.py [--small 2000] [--large 20000] [--repeats 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from common import ROOT, machine_line
from PIL import Image

CLASSES = 10
MODEL = ["--model", "cnn", "--width", "16", "--depth", "2"]
PLAIN = Path(__file__).with_name("plain_train_classify.py")


def make_folder(root: Path, count: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for index in range(count):
        label = index % CLASSES
        split = "val" if (index // CLASSES) % 10 == 9 else "train"
        folder = root / split / f"class_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        base = rng.normal(25 * label, 30, (64, 64, 3))
        Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).save(
            folder / f"{index:06d}.jpg", quality=90)


def peak_rss_mb(command: list[str]) -> float:
    """Peak RSS (MB) of the largest process `command` ran (the trainer or one of its workers)."""
    probe = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
             "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    done = subprocess.run([sys.executable, "-c", probe, *command], capture_output=True,
                          text=True, check=True, cwd=ROOT)
    return int(done.stdout) / 1024


def cvtool_train(data: Path, run: Path, workers: int) -> list[str]:
    return [sys.executable, "-m", "cvtool", "train", "classify", "--data", str(data), *MODEL,
            "--epochs", "1", "--batch-size", "64", "--workers", str(workers), "--device", "cpu",
            "-q", "--force", "-o", str(run)]


def cvtool_images_per_second(data: Path, run: Path, workers: int, images: int) -> float:
    subprocess.run(cvtool_train(data, run, workers), check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    return images / row["seconds"]


def plain_images_per_second(data: Path, workers: int, images: int) -> float:
    done = subprocess.run([sys.executable, str(PLAIN), str(data), "--workers", str(workers)],
                          check=True, cwd=ROOT, capture_output=True, text=True)
    return images / float(done.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=2000)
    parser.add_argument("--large", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        small, large = Path(tmp) / "small", Path(tmp) / "large"
        make_folder(small, args.small)
        make_folder(large, args.large)
        rss = {name: peak_rss_mb(cvtool_train(folder, Path(tmp) / f"run-{name}", args.workers))
               for name, folder in (("small", small), ("large", large))}
        speeds: dict[str, list[float]] = {"plain": [], "cvtool": []}
        for _ in range(args.repeats):
            speeds["plain"].append(plain_images_per_second(small, args.workers, args.small))
            speeds["cvtool"].append(cvtool_images_per_second(small, Path(tmp) / "run-speed",
                                                             args.workers, args.small))
    print(f"train classify streaming, {machine_line()}")
    print(f"  peak RSS, one epoch: {args.small} images {rss['small']:.0f} MB, {args.large} "
          f"images {rss['large']:.0f} MB, ratio {rss['large'] / rss['small']:.3f} (target <= 1.2)")
    plain = statistics.median(speeds["plain"])
    for name, values in speeds.items():
        median = statistics.median(values)
        print(f"  {name:>6}: {median:7.1f} img/s per epoch (runs "
              f"{', '.join(f'{v:.1f}' for v in values)}), ratio {median / plain:.3f}")
    print(f"  ({args.small} images, batch 64, {args.workers} workers, cnn width 16 depth 2, adam)")


if __name__ == "__main__":
    main()
