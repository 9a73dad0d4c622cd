"""Semantic segmentation: a class for every pixel, per-class pixel counts, masks and mIoU.

Each image goes through its model's own preprocessing and is padded at the bottom and right to
what the architecture needs; the logits are cropped back to the unpadded region, resized
bilinearly to the decoded image's size (EXIF orientation applied) and argmaxed there, so a mask
always has the input's displayed size. A one-channel (binary) model predicts class 1 where its
logit is positive. Images of the same preprocessed size share a forward pass.
"""

from __future__ import annotations

import base64
import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
import torch.nn.functional as F

from cvtool.core.confusion import ConfusionMatrix
from cvtool.core.context import Warn
from cvtool.core.device import autocast
from cvtool.core.options import SegmentOptions
from cvtool.core.results import InputError, InputFailure, shown
from cvtool.core.status import UsageError
from cvtool.inference.pipeline import BatchLoop, Output, Prepared
from cvtool.inference.records import SemanticRecord
from cvtool.io.masks import GroundTruthMasks, MaskWriter, read_ground_truth
from cvtool.io.palette import MAX_CLASSES
from cvtool.io.writers import BackgroundWrites
from cvtool.models.fold import fold_for_inference
from cvtool.models.preprocess import grey_picture
from cvtool.models.segmentation import TASK, LoadedSegmenter, load_segmenter


@dataclass
class SegmentationInput:
    tensor: torch.Tensor  # (3, h, w) after preprocessing and padding
    valid: tuple[int, int]  # (h, w) before padding


WORST_CASES = 12  # the lowest per-image mIoU kept for the report's gallery
WORST_SIDE = 256  # their masks kept at most this large (nearest), for the thumbnails


@dataclass
class WorstImage:
    iou: float
    path: str
    truth: np.ndarray  # (h, w) at most WORST_SIDE a side
    prediction: np.ndarray


class Evaluation:
    """Ground truth found per input, checked, and added to one confusion matrix; the images
    of lowest mIoU kept (small) for the report's worst cases."""

    def __init__(self, masks: GroundTruthMasks, categories: list[str], ignore_index: int,
                 warn: Warn) -> None:
        self.masks, self.categories, self.ignore_index = masks, categories, ignore_index
        self.matrix = ConfusionMatrix(len(categories))
        self.warn, self.images = warn, 0
        self.worst: list[WorstImage] = []

    def add(self, path: str, prediction: np.ndarray) -> InputError | None:
        found = self.masks.find(path)
        if found is None:
            self.warn(f"{path} has no mask in --gt-masks {self.masks.root}; it is left out of "
                      "the metrics")
            return None
        try:
            truth = read_ground_truth(found, prediction.shape, len(self.categories),
                                      self.ignore_index)
        except InputFailure as failure:
            return failure.error
        image = ConfusionMatrix(len(self.categories))
        image.update(truth, prediction, self.ignore_index)
        self.matrix.counts += image.counts
        self.images += 1
        iou = image.miou()
        if iou is not None:
            self._keep(WorstImage(iou, path, _small(truth), _small(prediction)))
        return None

    def _keep(self, worst: WorstImage) -> None:
        self.worst.append(worst)
        self.worst.sort(key=lambda item: item.iou)
        del self.worst[WORST_CASES:]

    def worst_cases(self) -> list[WorstImage]:
        return list(self.worst)

    def take(self) -> dict[str, Any]:
        """What was added since the last take, as plain data, and reset (a Ray actor's
        share of the evaluation, for the driver's `absorb`)."""
        taken = {"images": self.images, "counts": self.matrix.counts.tolist(),
                 "worst": [(w.iou, w.path, _packed(w.truth), _packed(w.prediction))
                           for w in self.worst]}
        self.matrix = ConfusionMatrix(len(self.categories))
        self.images, self.worst = 0, []
        return taken

    def absorb(self, taken: dict[str, Any]) -> None:
        self.matrix.counts += np.asarray(taken["counts"], dtype=np.int64)
        self.images += int(taken["images"])
        for iou, path, truth, prediction in taken.get("worst", []):
            self._keep(WorstImage(float(iou), str(path), _unpacked(truth),
                                  _unpacked(prediction)))

    def report(self, stream: IO[str]) -> dict[str, Any]:
        """The metrics for run.json, also printed to `stream` as a small table."""
        metrics = {"images": self.images, "ignore_index": self.ignore_index,
                   **self.matrix.summary(self.categories)}
        if not self.images:
            self.warn("no input was matched to a --gt-masks mask: there are no metrics")
        print(f"mIoU {_figure(metrics['miou'])}  pixel accuracy "
              f"{_figure(metrics['pixel_accuracy'])}  ({self.images} images, "
              f"{metrics['pixels']} pixels, ignore index {self.ignore_index})", file=stream)
        for row in metrics["per_class"]:
            if row["true_pixels"] or row["predicted_pixels"]:
                label = shown(row["label"])
                print(f"  {row['index']:>3} {label:<24} IoU {_figure(row['iou'])}  "
                      f"true {row['true_pixels']}  predicted {row['predicted_pixels']}",
                      file=stream)
        stream.flush()
        return metrics


def _small(mask: np.ndarray) -> np.ndarray:
    """`mask` at most WORST_SIDE a side, every kept pixel an original one (nearest)."""
    step = max(1, math.ceil(max(mask.shape) / WORST_SIDE))
    return np.ascontiguousarray(mask[::step, ::step]).astype(np.uint8 if mask.max(
        initial=0) < 256 else np.int64)


def _packed(mask: np.ndarray) -> dict[str, Any]:
    """A kept mask as JSON carries it from a Ray actor: compressed bytes, shape, dtype."""
    return {"shape": list(mask.shape), "dtype": str(mask.dtype),
            "data": base64.b64encode(zlib.compress(mask.tobytes())).decode("ascii")}


def _unpacked(packed: dict[str, Any]) -> np.ndarray:
    dtype = np.dtype(packed["dtype"])
    return np.frombuffer(zlib.decompress(base64.b64decode(packed["data"])),
                         dtype=dtype).reshape(packed["shape"])


class Segmenter:
    """Runs one model; each payload gets class pixel counts (and a mask file, and evaluation)."""

    def __init__(self, loaded: LoadedSegmenter, device: torch.device, precision: str,
                 masks: MaskWriter | None, evaluation: Evaluation | None) -> None:
        self.loaded, self.device, self.precision = loaded, device, precision
        self.masks, self.evaluation = masks, evaluation
        loaded.module.to(device).eval()
        loaded.folded_batch_norms = fold_for_inference(
            loaded.module, lambda _module: self.predict([self.prepare(grey_picture())], [(8, 8)]))

    def prepare(self, image: Any) -> SegmentationInput:
        tensor = self.loaded.transforms(image)
        height, width = tensor.shape[-2:]
        padded = pad_to(tensor, self.loaded.input_multiple, self.loaded.min_input_side)
        return SegmentationInput(padded, (height, width))

    @torch.inference_mode()
    def infer(self, inputs: list[SegmentationInput], items: list[Prepared]) -> list[np.ndarray]:
        return self.predict(inputs, [(item.height, item.width) for item in items])

    def finish(self, masks: list[np.ndarray], items: list[Prepared]) -> list[Output | InputError]:
        """In input order: the first input to claim a mask's file name keeps it."""
        return [self._payload(item.path, item.image, mask) for item, mask in zip(items, masks)]

    def predict(self, inputs: list[SegmentationInput],
                sizes: list[tuple[int, int]]) -> list[np.ndarray]:
        """Class-index masks of the given (H, W) sizes."""
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for number, given in enumerate(inputs):
            by_shape.setdefault(tuple(given.tensor.shape), []).append(number)
        masks: list[np.ndarray] = [np.empty(0)] * len(inputs)
        for numbers in by_shape.values():
            batch = torch.stack([inputs[n].tensor for n in numbers])
            logits = self._logits(batch.to(self.device, non_blocking=True))
            for row, number in enumerate(numbers):
                masks[number] = class_indices(logits[row], inputs[number].valid, sizes[number])
        return masks

    def _logits(self, batch: torch.Tensor) -> torch.Tensor:
        with autocast(self.device, self.precision):
            output = self.loaded.module(batch)
        return output["out"] if isinstance(output, Mapping) else output

    def _payload(self, path: str, image: Any, mask: np.ndarray) -> Output | InputError:
        if self.evaluation is not None and (error := self.evaluation.add(path, mask)):
            return error
        classes = class_pixels(mask, self.loaded.categories)
        labels = {row["index"]: row["label"] for row in classes}
        mask_path = (self.masks.save(path, image, mask, labels) if self.masks is not None
                     else None)
        if isinstance(mask_path, InputError):
            return mask_path
        payload = {"mask_path": mask_path, "classes": classes}
        return Output(payload, {"mask": mask})


def pad_to(tensor: torch.Tensor, multiple: int, min_side: int) -> torch.Tensor:
    """Zero-pad (the mean colour, after normalisation) at the bottom and right."""
    height, width = tensor.shape[-2:]
    target = [max(math.ceil(side / multiple) * multiple, math.ceil(min_side / multiple) * multiple)
              for side in (height, width)]
    if target == [height, width]:
        return tensor
    return F.pad(tensor, (0, target[1] - width, 0, target[0] - height))


def class_indices(logits: torch.Tensor, valid: tuple[int, int],
                  size: tuple[int, int]) -> np.ndarray:
    """(C, h, w) logits -> (H, W) argmax at the image's size, as uint8 (int32 past 256 classes)."""
    logits = logits[:, :valid[0], :valid[1]].float()
    if logits.shape[0] == 1:  # binary: class 1 where the logit is positive
        logits = torch.cat([torch.zeros_like(logits), logits])
    if tuple(logits.shape[-2:]) != tuple(size):
        logits = F.interpolate(logits[None], size=size, mode="bilinear", align_corners=False)[0]
    dtype = torch.uint8 if logits.shape[0] <= MAX_CLASSES else torch.int32
    return logits.argmax(0).to(dtype).cpu().numpy()


def class_pixels(mask: np.ndarray, categories: list[str]) -> list[dict[str, Any]]:
    """The classes present, most pixels first (ties: lower index first)."""
    counts = np.bincount(mask.ravel(), minlength=len(categories))
    present = sorted(np.flatnonzero(counts), key=lambda index: (-counts[index], index))
    return [{"index": int(index), "label": _label(categories, int(index)),
             "pixels": int(counts[index]), "fraction": float(counts[index] / mask.size)}
            for index in present]


def _label(categories: list[str], index: int) -> str:
    return categories[index] if index < len(categories) else f"class_{index}"


def _figure(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def build(options: SegmentOptions, device: torch.device, offline: bool,
          warn: Warn) -> tuple[BatchLoop, LoadedSegmenter, Evaluation | None]:
    ground_truth = (GroundTruthMasks(Path(options.gt_masks)) if options.gt_masks is not None
                    else None)
    loaded = load_segmenter(options.model, options.weights, options.encoder, offline, warn)
    if options.output is not None and len(loaded.categories) > MAX_CLASSES:
        raise UsageError(f"{loaded.name} has {len(loaded.categories)} classes; mask PNGs hold "
                         f"at most {MAX_CLASSES}")
    evaluation = (Evaluation(ground_truth, loaded.categories, options.ignore_index, warn)
                  if ground_truth is not None else None)
    writes = BackgroundWrites() if options.output is not None else None
    masks = MaskWriter(options.output_dir, writes) if writes is not None else None
    segmenter = Segmenter(loaded, device, options.precision, masks, evaluation)
    loop = BatchLoop.for_options(options, task=TASK, model_name=loaded.name,
                                 prepare=segmenter.prepare, infer=segmenter.infer,
                                 finish=segmenter.finish, writes=writes,
                                 record_type=SemanticRecord)
    return loop, loaded, evaluation
