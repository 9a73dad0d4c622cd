"""An export's outputs against eager PyTorch's, per task, with the tolerances it must meet.

Compared on the same preprocessed inputs: classify logits and softmax probabilities (top-1 must
agree on every image), semantic logits and class masks (per-class IoU of the two masks),
detections matched one to one by label and IoU (box corners, scores, mask IoU; the counts must
agree), and generated images. Each comparison returns its largest differences and the failures
beyond tolerance, which the export's summary reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from cvtool.models.detection import MASK_THRESHOLD

PROBABILITY_TOLERANCE = 1e-3  # softmax probabilities, fp32
BOX_TOLERANCE = 0.5  # pixels, per corner coordinate
SCORE_TOLERANCE = 1e-3
MASK_IOU = 0.99  # instance masks and semantic class masks
SEMANTIC_MIN_PIXELS = 64  # classes this small in both masks are left out of the IoU check
PIXEL_TOLERANCE = 1e-3  # generated images in [0, 1]


@dataclass
class Comparison:
    """The largest differences seen, and what went beyond tolerance (one line each)."""

    figures: dict[str, float | int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def worst(self, key: str, value: float, larger_is_worse: bool = True) -> None:
        old = self.figures.get(key)
        if old is None or (value > old if larger_is_worse else value < old):
            self.figures[key] = float(value)

    def count(self, key: str, by: int = 1) -> None:
        self.figures[key] = int(self.figures.get(key, 0)) + by

    def summary(self) -> dict[str, Any]:
        return {**self.figures, "passed": not self.failures, "failures": self.failures[:20]}


def compare_classify(names: Sequence[str], eager: torch.Tensor, runtime: torch.Tensor,
                     result: Comparison) -> None:
    eager, runtime = eager.double(), runtime.double()
    result.worst("max_abs_logit_diff", (eager - runtime).abs().max().item())
    probabilities = (eager.softmax(1) - runtime.softmax(1)).abs().amax(1)
    result.worst("max_probability_diff", probabilities.max().item())
    agree = eager.argmax(1) == runtime.argmax(1)
    result.count("images", len(names))
    result.count("top1_agreements", int(agree.sum()))
    for name, same, difference in zip(names, agree.tolist(), probabilities.tolist()):
        if not same:
            result.failures.append(f"{name}: top-1 differs")
        elif difference > PROBABILITY_TOLERANCE:
            result.failures.append(f"{name}: probabilities differ by {difference:.2e}")


def compare_semantic(name: str, eager: torch.Tensor, runtime: torch.Tensor,
                     result: Comparison) -> None:
    """(N, C, H, W) logits of one image (N = 1) or of a batch of it."""
    result.count("images")
    result.worst("max_abs_logit_diff", (eager.double() - runtime.double()).abs().max().item())
    masks = [_class_mask(logits) for logits in (eager, runtime)]
    result.worst("pixel_agreement", (masks[0] == masks[1]).double().mean().item(), False)
    for label in torch.unique(torch.cat([masks[0].flatten(), masks[1].flatten()])).tolist():
        first, second = masks[0] == label, masks[1] == label
        if max(int(first.sum()), int(second.sum())) < SEMANTIC_MIN_PIXELS:
            continue
        iou = _iou(first, second)
        result.worst("min_class_iou", iou, False)
        if iou < MASK_IOU:
            result.failures.append(f"{name}: class {label} masks IoU {iou:.4f}")


def _class_mask(logits: torch.Tensor) -> torch.Tensor:
    return (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(1)


def compare_detections(name: str, eager: dict[str, torch.Tensor],
                       runtime: dict[str, torch.Tensor], result: Comparison) -> None:
    result.count("images")
    result.count("detections", len(eager["scores"]))
    if not len(eager["scores"]):
        result.count("images_without_detections")
    if len(eager["scores"]) != len(runtime["scores"]):
        result.failures.append(f"{name}: {len(runtime['scores'])} detections, eager PyTorch "
                               f"finds {len(eager['scores'])}")
        return
    taken: set[int] = set()
    for index in range(len(eager["scores"])):
        match = _best_match(eager, runtime, index, taken)
        if match is None:
            result.failures.append(f"{name}: detection {index} has no counterpart")
            continue
        taken.add(match)
        box = (eager["boxes"][index] - runtime["boxes"][match]).abs().max().item()
        score = abs(eager["scores"][index].item() - runtime["scores"][match].item())
        result.worst("max_box_diff_px", box)
        result.worst("max_score_diff", score)
        if box > BOX_TOLERANCE or score > SCORE_TOLERANCE:
            result.failures.append(f"{name}: detection {index} box differs by {box:.3f} px, "
                                   f"score by {score:.2e}")
        if "masks" in eager:
            iou = _iou(eager["masks"][index, 0] >= MASK_THRESHOLD,
                       runtime["masks"][match, 0] >= MASK_THRESHOLD)
            result.worst("min_mask_iou", iou, False)
            if iou < MASK_IOU:
                result.failures.append(f"{name}: detection {index} mask IoU {iou:.4f}")


def _best_match(eager: dict[str, torch.Tensor], runtime: dict[str, torch.Tensor], index: int,
                taken: set[int]) -> int | None:
    from torchvision.ops import box_iou

    same_label = (runtime["labels"] == eager["labels"][index]).nonzero().flatten().tolist()
    candidates = [k for k in same_label if k not in taken]
    if not candidates:
        return None
    overlaps = box_iou(eager["boxes"][index:index + 1].double(),
                       runtime["boxes"][candidates].double())[0]
    return candidates[int(overlaps.argmax())]


def compare_images(name: str, eager: torch.Tensor, runtime: torch.Tensor,
                   result: Comparison) -> None:
    result.count("batches")
    difference = (eager.double() - runtime.double()).abs().max().item()
    result.worst("max_abs_pixel_diff", difference)
    if difference > PIXEL_TOLERANCE:
        result.failures.append(f"{name}: pixels differ by {difference:.2e}")


def _iou(first: torch.Tensor, second: torch.Tensor) -> float:
    union = int((first | second).sum())
    return 1.0 if union == 0 else int((first & second).sum()) / union

