"""Object detection and instance segmentation: boxes, labels, scores and COCO RLE masks.

`detect` and `segment-instance` share this backend; the task decides whether masks are kept.
Boxes and masks are in the pixels of the decoded image (EXIF orientation applied), which is
what torchvision's detectors return for the un-resized input they are given.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cvtool.annotate import ArtifactWriter
from cvtool.coco import encode_mask
from cvtool.device import autocast
from cvtool.models.classification import LoadedModel
from cvtool.models.detection import load_detector
from cvtool.pipeline import BatchLoop, Prepared
from cvtool.status import UsageError
from cvtool.writers import BackgroundWrites

MASK_THRESHOLD = 0.5  # a pixel belongs to the object where the mask probability reaches this


@dataclass
class DetectOptions:
    task: str  # "detect" or "segment-instance"
    model: str
    weights: str = "default"
    conf: float = 0.5
    classes: Sequence[str] = ()
    precision: str = "fp32"
    batch_size: int = 4
    workers: int = 2
    fail_fast: bool = False
    max_pixels: int | None = None
    output: Path | None = None
    save_crops: bool = False


class Detector:
    """Runs one detector and turns its raw outputs into records' payloads (and artifacts)."""

    def __init__(self, loaded: LoadedModel, device: torch.device, options: DetectOptions,
                 artifacts: ArtifactWriter | None) -> None:
        self.loaded, self.device, self.options = loaded, device, options
        self.masks = options.task == "segment-instance"
        self.wanted = class_ids(options.classes, loaded.categories)
        self.artifacts = artifacts
        loaded.module.to(device).eval()

    def prepare(self, image: Any) -> tuple[torch.Tensor, Any]:
        # The decoded image rides along only when it is drawn on or cropped from.
        return self.loaded.transforms(image), image if self.artifacts else None

    @torch.inference_mode()
    def infer(self, inputs: list[tuple[torch.Tensor, Any]], items: list[Prepared]) -> list[dict]:
        batch = [tensor.to(self.device, non_blocking=True) for tensor, _ in inputs]
        with autocast(self.device, self.options.precision):
            outputs = self.loaded.module(batch)
        payloads = [{"detections": self._detections(output)} for output in outputs]
        if self.artifacts is not None:
            for (_, image), item, payload in zip(inputs, items, payloads):
                self.artifacts.save(item.path, image, payload["detections"])
        return payloads

    def _detections(self, output: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        return detections_of(output, self.loaded.categories, self.options.conf, self.wanted,
                             self.masks)


def detections_of(output: dict[str, torch.Tensor], categories: Sequence[str], conf: float,
                  wanted: set[int] | None, masks: bool) -> list[dict[str, Any]]:
    """A torchvision detector's output for one image as the records' `detections` list."""
    keep = output["scores"] >= conf
    if wanted is not None:
        keep &= torch.isin(output["labels"], torch.tensor(sorted(wanted), device=keep.device))
    scores = output["scores"][keep].double().cpu().tolist()
    labels = output["labels"][keep].cpu().tolist()
    boxes = output["boxes"][keep].double().cpu().tolist()
    detections = [{"index": i, "label": _label(categories, i), "score": s, "box": b}
                  for i, s, b in zip(labels, scores, boxes)]
    if masks:
        planes = (output["masks"][keep, 0] >= MASK_THRESHOLD).cpu().numpy()
        for detection, plane in zip(detections, planes):
            detection["mask"], detection["area"] = encode_mask(plane)
    return detections


def _label(categories: Sequence[str], index: int) -> str:
    return categories[index] if 0 <= index < len(categories) else f"class_{index}"


def class_ids(classes: Sequence[str], categories: Sequence[str]) -> set[int] | None:
    """`--classes` as label ids: each entry a label (case-insensitive) or an id; None: all."""
    if not classes:
        return None
    by_label = {label.lower(): index for index, label in enumerate(categories)}
    wanted: set[int] = set()
    for entry in (part.strip() for value in classes for part in value.split(",")):
        if entry.isdigit() and int(entry) < len(categories):
            wanted.add(int(entry))
        elif entry.lower() in by_label:
            wanted.add(by_label[entry.lower()])
        else:
            known = ", ".join(c for c in categories if c not in ("__background__", "N/A"))
            raise UsageError(f"unknown class {entry!r} in --classes; give labels or ids "
                             f"0-{len(categories) - 1}: {known}")
    return wanted


def build(options: DetectOptions, device: torch.device, offline: bool,
          warn: Callable[[str], None]) -> tuple[BatchLoop, LoadedModel]:
    if not 0.0 <= options.conf <= 1.0:
        raise UsageError(f"invalid --conf {options.conf}; expected a score in [0, 1]")
    loaded = load_detector(options.model, options.weights, options.task, offline, warn)
    writes = BackgroundWrites() if options.output is not None else None
    artifacts = (ArtifactWriter(options.output, options.save_crops, writes)
                 if writes is not None else None)
    detector = Detector(loaded, device, options, artifacts)
    loop = BatchLoop(task=options.task, model_name=loaded.name, prepare=detector.prepare,
                     infer=detector.infer, batch_size=options.batch_size,
                     workers=options.workers, max_pixels=options.max_pixels,
                     fail_fast=options.fail_fast, writes=writes)
    return loop, loaded
