"""One confusion matrix over every evaluated pixel; mIoU, per-class IoU and pixel accuracy all
come from it. numpy only, so inference (`--eval`) and training share it.

IoU of class c = TP / (TP + FP + FN) summed over all images (not averaged per image). A class that
is neither in the ground truth nor predicted has no IoU (None) and is left out of the mean, as
mmsegmentation's nanmean does. Pixel accuracy = correct pixels / pixels not ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


class ConfusionMatrix:
    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.counts = np.zeros((num_classes, num_classes), dtype=np.int64)  # [true, predicted]

    def update(self, truth: np.ndarray, prediction: np.ndarray,
               ignore_index: int | None = None) -> None:
        """Add one image (or batch); `truth` values are classes or `ignore_index`."""
        truth, prediction = np.asarray(truth).ravel(), np.asarray(prediction).ravel()
        if ignore_index is not None:
            keep = truth != ignore_index
            truth, prediction = truth[keep], prediction[keep]
        n = self.num_classes
        pairs = truth.astype(np.int64) * n + prediction.astype(np.int64)
        self.counts += np.bincount(pairs, minlength=n * n).reshape(n, n)

    def iou(self) -> np.ndarray:
        """Per class; NaN where the class is neither true nor predicted anywhere."""
        true_positives = np.diag(self.counts).astype(np.float64)
        union = self.counts.sum(0) + self.counts.sum(1) - true_positives
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(union > 0, true_positives / union, np.nan)

    def miou(self) -> float | None:
        iou = self.iou()
        return float(np.nanmean(iou)) if not np.isnan(iou).all() else None

    def pixel_accuracy(self) -> float | None:
        total = int(self.counts.sum())
        return float(np.trace(self.counts)) / total if total else None

    def summary(self, labels: Sequence[str]) -> dict[str, Any]:
        """What run.json's `metrics` holds."""
        per_class = [{"index": index, "label": label, "iou": _number(iou),
                      "true_pixels": int(true), "predicted_pixels": int(predicted)}
                     for index, (label, iou, true, predicted) in enumerate(zip(
                         labels, self.iou(), self.counts.sum(1), self.counts.sum(0)))]
        return {"miou": self.miou(), "pixel_accuracy": self.pixel_accuracy(),
                "pixels": int(self.counts.sum()), "per_class": per_class}


def _number(value: float) -> float | None:
    return None if np.isnan(value) else float(value)
