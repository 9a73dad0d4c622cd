"""What scoring costs (issue 31's two figures).

1. `classify DIR --eval` against plain `classify DIR` over 10,000 labelled digits (scikit-
   learn's 1,797 8x8 digits, each copied under as many names as needed, in class folders),
   digits-cnn on the CPU: whole processes alternated, median wall time. Measured twice:
   without -o (the metrics alone) and with -o DIR (records.jsonl, and with --eval also the
   pictures and report.html). Target: --eval adds at most 5%.
2. The detection per-class tables on 2,000 images: cvtool's `coco.evaluate(per_class=True)`
   (COCOeval's evaluate + accumulate + summarize, the per-class AP/AP50/recall/tp/fp/misses
   rows and the confusion matrix with background) against pycocotools' own evaluate() +
   accumulate() on the same synthetic ground truth and detections (10 categories, 1 to 8
   objects an image, each found with jitter, some missed, some named wrongly, false
   positives), alternated, median. Target: at most 1.1x.

    python bench/eval_overhead.py [--digits 10000] [--images 2000] [--repeats 3]
                                  [--only detect|classify]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from common import cvtool_seconds, machine_line


def labelled_digits(root: Path, count: int) -> Path:
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = (digits.images * (255 / 16)).round().astype(np.uint8)
    for number in range(count):
        k = number % len(pixels)
        folder = root / str(digits.target[k])
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels[k]).save(folder / f"digit_{number:05d}.png")
    return root


def classify_overhead(tmp: Path, count: int, repeats: int) -> None:
    data = labelled_digits(tmp / "digits", count)
    base = ["classify", str(data), "-m", "digits-cnn", "--device", "cpu", "-q",
            "--format", "jsonl"]
    times: dict[tuple[bool, bool], list[float]] = {}
    for _ in range(repeats):
        for output in (False, True):
            for evaluate in (False, True):
                out = tmp / "run"
                shutil.rmtree(out, ignore_errors=True)
                args = [*base, *(["--eval"] if evaluate else []),
                        *(["-o", str(out)] if output else [])]
                times.setdefault((output, evaluate), []).append(cvtool_seconds(*args))
    print(f"classify {count:,} labelled digits, digits-cnn, median of {repeats} "
          "(whole processes):")
    for output in (False, True):
        plain = statistics.median(times[(output, False)])
        scored = statistics.median(times[(output, True)])
        where = "with -o DIR" if output else "without -o "
        print(f"  {where}: plain {plain:6.2f} s   --eval {scored:6.2f} s   "
              f"ratio {scored / plain:.3f}  (target <= 1.05)")


def synthetic_coco(images: int, categories: int = 10, seed: int = 0
                   ) -> tuple[dict, list[dict]]:
    rng = np.random.default_rng(seed)
    truth = {"images": [{"id": i, "width": 640, "height": 480} for i in range(1, images + 1)],
             "categories": [{"id": c, "name": f"class{c}"} for c in range(1, categories + 1)],
             "annotations": []}
    results = []
    for image in truth["images"]:
        for _ in range(rng.integers(1, 9)):
            w, h = rng.uniform(10, 200, 2)
            x, y = rng.uniform(0, 640 - w), rng.uniform(0, 480 - h)
            category = int(rng.integers(1, categories + 1))
            truth["annotations"].append({"id": len(truth["annotations"]) + 1,
                                         "image_id": image["id"], "category_id": category,
                                         "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
            if rng.random() < 0.85:  # found, with jitter, sometimes named wrongly
                named = category if rng.random() < 0.9 else int(rng.integers(1, categories + 1))
                jitter = rng.normal(0, 0.08, 4) * [w, h, w, h]
                results.append({"image_id": image["id"], "category_id": named,
                                "bbox": [x + jitter[0], y + jitter[1], max(2, w + jitter[2]),
                                         max(2, h + jitter[3])],
                                "score": float(rng.uniform(0.3, 1.0))})
        for _ in range(rng.integers(0, 4)):  # false positives
            w, h = rng.uniform(10, 150, 2)
            results.append({"image_id": image["id"],
                            "category_id": int(rng.integers(1, categories + 1)),
                            "bbox": [rng.uniform(0, 640 - w), rng.uniform(0, 480 - h), w, h],
                            "score": float(rng.uniform(0.05, 0.7))})
    return truth, results


def plain_pycocotools(truth: dict, results: list[dict], image_ids: list[int]) -> float:
    """What a user writes: COCO, loadRes, COCOeval(...).evaluate(); .accumulate()."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        started = time.perf_counter()
        gt = COCO()
        gt.dataset = truth
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(results), "bbox")
        evaluator.params.imgIds = image_ids
        evaluator.evaluate()
        evaluator.accumulate()
        return time.perf_counter() - started


def cvtool_tables(truth: dict, results: list[dict], image_ids: list[int]) -> float:
    from cvtool.io import coco

    with contextlib.redirect_stdout(io.StringIO()):
        started = time.perf_counter()
        metrics = coco.evaluate(truth, results, image_ids, ("bbox",), io.StringIO(),
                                per_class=True, details={})
        seconds = time.perf_counter() - started
    assert len(metrics["per_class"]["bbox"]) == len(truth["categories"])
    assert sum(map(sum, metrics["confusion"]["counts"])) > 0
    return seconds


def detection_overhead(images: int, repeats: int) -> None:
    truth, results = synthetic_coco(images)
    image_ids = [image["id"] for image in truth["images"]]
    times: dict[str, list[float]] = {"pycocotools": [], "cvtool": []}
    for _ in range(repeats):  # alternated, each after a full collection
        gc.collect()
        times["pycocotools"].append(plain_pycocotools(truth, results, image_ids))
        gc.collect()
        times["cvtool"].append(cvtool_tables(truth, results, image_ids))
    plain, ours = (statistics.median(times[k]) for k in ("pycocotools", "cvtool"))
    print(f"detection metrics, {images:,} images, {len(truth['annotations']):,} objects, "
          f"{len(results):,} detections, 10 classes, median of {repeats}:")
    print(f"  pycocotools evaluate+accumulate {plain:6.2f} s   cvtool with per-class tables "
          f"and confusion matrix {ours:6.2f} s   ratio {ours / plain:.3f}  (target <= 1.10)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--digits", type=int, default=10_000)
    parser.add_argument("--images", type=int, default=2_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=("detect", "classify"))
    args = parser.parse_args()
    print(machine_line())
    if args.only != "classify":
        detection_overhead(args.images, max(args.repeats, 5))
    if args.only != "detect":
        with tempfile.TemporaryDirectory() as tmp:
            classify_overhead(Path(tmp), args.digits, args.repeats)


if __name__ == "__main__":
    main()
