"""Eager PyTorch against ONNX Runtime and OpenVINO exports, fp32 and bf16, through cvtool itself.

For each model (resnet50 with random weights from a file, digits-cnn, shapes-maskrcnn,
shapes-unet) and each variant (eager fp32, eager bf16 = cvtool's channels_last + autocast path,
ONNX Runtime fp32, OpenVINO fp32, OpenVINO bf16):
- in-loop: images/s of `Predictor.predict` over the inputs, in this process, after a warm-up
  pass; variants alternated, median of the repeats;
- whole-process: images/s of one `python -m cvtool TASK ... -m MODEL` run (start-up, model load,
  runtime compile included), alternated likewise;
- agreement with eager fp32 beside each: top-1 (classify), detections matched with boxes within
  0.5 px and mask IoU >= 0.99 (segment-instance), pixels (segment-semantic).
Ratios: each variant's in-loop throughput over cvtool's best eager path at the same precision.
The goal for resnet50 (on an AMX CPU): the fastest runtime at least 1.5x that. Needs the onnx and
openvino extras.

    python bench/export_runtimes.py [--repeats 3] [--models resnet50,digits-cnn,...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, machine_line, shapes_scenes

import cvtool

VARIANTS = [("eager", "fp32"), ("eager", "bf16"), ("onnx", "fp32"), ("openvino", "fp32"),
            ("openvino", "bf16")]
TASKS = {"resnet50": "classify", "digits-cnn": "classify", "shapes-maskrcnn": "segment-instance",
         "shapes-unet": "segment-semantic"}
PREDICTORS = {"classify": cvtool.Classifier, "segment-instance": cvtool.InstanceSegmenter,
              "segment-semantic": cvtool.SemanticSegmenter}
BATCH = {"resnet50": 16, "digits-cnn": 64, "shapes-maskrcnn": 4, "shapes-unet": 8}


def inputs_for(model: str, work: Path) -> list[str]:
    if model == "resnet50":
        photos = sorted((ROOT / "sample_images" / "photos").glob("*.jpg"))
        return [str(path) for path in photos] * 4  # 32 images
    if model == "digits-cnn":
        return [str(p) for p in sorted((ROOT / "sample_images" / "digits").glob("*.png"))] * 25
    scenes = work / "shapes"
    if not scenes.exists():  # made once, for both shapes models
        shapes_scenes(scenes, 32)
    return [str(path) for path in sorted((scenes / "images").rglob("*.png"))]


def prepare(model: str, work: Path) -> dict[str, list[str]]:
    """The `-m` (and `--weights`) arguments of each runtime for `model`, exports made here."""
    weights: list[str] = []
    if model == "resnet50":
        import torch
        import torchvision

        torch.manual_seed(0)
        path = work / "resnet50.pth"
        torch.save(torchvision.models.resnet50().state_dict(), path)
        weights = ["--weights", str(path)]
    made = {"eager": ["-m", model, *weights]}
    for fmt, name in (("onnx", "model.onnx"), ("openvino", "model.xml")):
        output = work / f"{model}-{name}"
        extra = ["--dynamic-batch"] if TASKS[model] == "classify" else []
        done = subprocess.run([sys.executable, "-m", "cvtool", "export", model, "-o",
                               str(output), *weights, *extra, "-q"], cwd=ROOT,
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"export {model} {fmt} failed: {done.stderr[-600:]}")
        made[fmt] = ["-m", str(output)]
    return made


def predictor(model: str, args: list[str], precision: str) -> cvtool.Classifier:
    options = {"model": args[1], "device": "cpu", "precision": precision,
               "batch_size": BATCH[model], "weights": args[3] if len(args) > 2 else "default"}
    return PREDICTORS[TASKS[model]](**options)


def agreement(task: str, reference: list, records: list) -> float:
    if task == "classify":
        return statistics.mean(a.top.index == b.top.index for a, b in zip(reference, records))
    if task == "segment-semantic":
        return statistics.mean(float((a.mask == b.mask).mean())
                               for a, b in zip(reference, records))
    matched = total = 0
    for a, b in zip(reference, records):
        total += max(len(a.detections), len(b.detections))
        for one in a.detections:
            matched += any(one.label == other.label and
                           max(abs(x - y) for x, y in zip(one.box, other.box)) <= 0.5 and
                           _mask_iou(one, other) >= 0.99 for other in b.detections)
    return matched / total if total else 1.0


def _mask_iou(one: object, other: object) -> float:
    first, second = one.mask, other.mask  # type: ignore[attr-defined]
    union = (first | second).sum()
    return float((first & second).sum() / union) if union else 1.0


def whole_process(model: str, args: list[str], precision: str, inputs: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "cvtool", TASKS[model], *inputs, *args,
                           "--precision", precision, "--device", "cpu", "-b",
                           str(BATCH[model]), "-q", "--format", "jsonl"], cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    if done.returncode != 0:
        raise SystemExit(f"{model} {args} {precision}: {done.stderr.decode()[-500:]}")
    return len(inputs) / (time.perf_counter() - started)


def bench(model: str, repeats: int, work: Path) -> list[dict]:
    task = TASKS[model]
    inputs = inputs_for(model, work)
    made = prepare(model, work)
    predictors = {variant: predictor(model, made[variant[0]], variant[1])
                  for variant in VARIANTS}
    outputs = {variant: list(p.predict(inputs)) for variant, p in predictors.items()}  # warm-up
    loop: dict = {variant: [] for variant in VARIANTS}
    process: dict = {variant: [] for variant in VARIANTS}
    for _ in range(repeats):
        for variant, chosen in predictors.items():
            started = time.perf_counter()
            for _record in chosen.predict(inputs, keep_images=False):
                pass
            loop[variant].append(len(inputs) / (time.perf_counter() - started))
        for variant in VARIANTS:
            process[variant].append(whole_process(model, made[variant[0]], variant[1], inputs))
    reference = outputs[("eager", "fp32")]
    best_eager = {precision: statistics.median(loop[("eager", precision)])
                  for precision in ("fp32", "bf16")}
    rows = []
    for variant in VARIANTS:
        in_loop = statistics.median(loop[variant])
        rows.append({"model": model, "runtime": variant[0], "precision": variant[1],
                     "images": len(inputs), "in_loop_img_s": round(in_loop, 2),
                     "process_img_s": round(statistics.median(process[variant]), 2),
                     "vs_eager_same_precision": round(in_loop / best_eager[variant[1]], 3),
                     "agreement": round(agreement(task, reference, outputs[variant]), 4)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default=",".join(TASKS))
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    print(machine_line())
    import onnxruntime
    import openvino
    import torch

    print(f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, openvino "
          f"{openvino.__version__}, threads {torch.get_num_threads()}")
    work = Path(tempfile.mkdtemp(prefix="cvtool-export-bench-"))
    rows: list[dict] = []
    try:
        for model in args.models.split(","):
            rows += bench(model, args.repeats, work)
            for row in rows[-len(VARIANTS):]:
                print(f"{row['model']:<16} {row['runtime']:<9} {row['precision']:<5} "
                      f"in-loop {row['in_loop_img_s']:>8.2f} img/s  process "
                      f"{row['process_img_s']:>8.2f} img/s  x{row['vs_eager_same_precision']:.2f}"
                      f" vs eager {row['precision']}  agreement {row['agreement']:.4f}",
                      flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
