"""Object detection and instance segmentation: boxes, labels, scores and COCO RLE masks.

`detect` and `segment-instance` share this backend; the task decides whether masks are kept.
Boxes and masks are in the pixels of the decoded image (EXIF orientation applied), which is
what torchvision's detectors return for the un-resized input they are given.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from cvtool.core.context import Warn
from cvtool.core.device import autocast
from cvtool.core.options import DetectOptions
from cvtool.core.results import InputError, is_finite
from cvtool.core.status import UsageError
from cvtool.inference.pipeline import BatchLoop, Prepared
from cvtool.inference.records import DetectionRecord
from cvtool.io.annotate import ArtifactWriter
from cvtool.io.writers import BackgroundWrites
from cvtool.models.detection import detections_of, load_detector
from cvtool.models.fold import fold_for_inference
from cvtool.models.loading import LoadedModel
from cvtool.models.preprocess import grey_picture


class Detector:
    """Runs one detector and turns its raw outputs into records' payloads (and artifacts)."""

    def __init__(self, loaded: LoadedModel, device: torch.device, options: DetectOptions,
                 artifacts: ArtifactWriter | None) -> None:
        self.loaded, self.device, self.options = loaded, device, options
        self.masks = options.task == "segment-instance"
        self.wanted = class_ids(options.classes, loaded.categories)
        self.artifacts = artifacts
        loaded.module.to(device).eval()
        loaded.folded_batch_norms = fold_for_inference(
            loaded.module, lambda _module: self.infer([self.prepare(grey_picture())], []))

    def prepare(self, image: Any) -> torch.Tensor:
        return self.loaded.transforms(image)

    @torch.inference_mode()
    def infer(self, inputs: list[torch.Tensor], _items: list[Prepared]) -> list[dict]:
        batch = [tensor.to(self.device, non_blocking=True) for tensor in inputs]
        with autocast(self.device, self.options.precision):
            outputs = self.loaded.module(batch)
        # An export's impossible outputs for one image are that image's error (runtimes.py).
        return [output if isinstance(output, InputError)
                else {"detections": self._detections(output)} for output in outputs]

    def finish(self, payloads: list[Any], items: list[Prepared]) -> list[Any]:
        """Artifacts, queued in input order from the thread that yields the records."""
        if self.artifacts is not None:
            for item, payload in zip(items, payloads):
                if isinstance(payload, dict) and is_finite(payload):
                    self.artifacts.save(item.path, item.image, payload["detections"])
        return payloads

    def _detections(self, output: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        return detections_of(output, self.loaded.categories, self.options.conf, self.wanted,
                             self.masks)


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
          warn: Warn) -> tuple[BatchLoop, LoadedModel]:
    if not 0.0 <= options.conf <= 1.0:
        raise UsageError(f"invalid --conf {options.conf}; expected a score in [0, 1]")
    loaded = load_detector(options.model, options.weights, options.task, offline, warn)
    writes = BackgroundWrites() if options.output is not None else None
    artifacts = (ArtifactWriter(options.output_dir, options.save_crops, writes)
                 if writes is not None else None)
    detector = Detector(loaded, device, options, artifacts)
    loop = BatchLoop.for_options(options, task=options.task, model_name=loaded.name,
                                 prepare=detector.prepare, infer=detector.infer,
                                 finish=detector.finish, writes=writes,
                                 record_type=DetectionRecord)
    return loop, loaded
