"""The detection confusion matrix: ground-truth boxes against detected boxes at one IoU, with a
background row (detections that match no object: false positives) and a background column
(objects no detection matched: misses), as Ultralytics' `yolo val` draws it.

Per image, every (object, detection) pair of box IoU >= the threshold is a candidate, whatever
the classes; candidates are taken greedily, highest IoU first, each object and each detection
once. A taken pair adds one to [object's class, detection's class] (the diagonal: right; off
it: found but named wrongly). Crowd objects (`iscrowd`) are never matched: a detection lying
over one (pycocotools' crowd IoU: the share of the detection inside it) at the threshold is
left out, as COCOeval leaves it out. Only the ground truth's categories are counted, as COCOeval
counts them. The per-image error counts pick the gallery's worst cases.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULT_IOU = 0.5


@dataclass
class ImageErrors:
    """One image's outcome at the threshold; `matches` are (object index, detection index)."""

    image_id: int
    objects: list[dict[str, Any]]
    detections: list[dict[str, Any]]
    matches: list[tuple[int, int]]
    misses: int
    false_positives: int
    confused: int

    @property
    def errors(self) -> int:
        return self.misses + self.false_positives + self.confused


def confusion(ground_truth: dict[str, Any], results: list[dict[str, Any]],
              image_ids: list[int], iou: float = DEFAULT_IOU
              ) -> tuple[dict[str, Any], list[ImageErrors]]:
    """run.json's `metrics["confusion"]` (labels: the categories then "background"; counts:
    rows true, columns predicted) and each evaluated image's errors."""
    from pycocotools import mask as coco_mask

    categories = sorted(ground_truth["categories"], key=lambda category: category["id"])
    column = {category["id"]: k for k, category in enumerate(categories)}
    background = len(categories)
    counts = np.zeros((background + 1, background + 1), dtype=np.int64)
    objects: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for annotation in ground_truth["annotations"]:
        if annotation["category_id"] in column:
            objects[annotation["image_id"]].append(annotation)
    detections: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for result in results:
        if result["category_id"] in column:
            detections[result["image_id"]].append(result)
    outcomes = []
    for image_id in sorted(set(image_ids)):
        truth, found = objects.get(image_id, []), detections.get(image_id, [])
        crowd = [bool(annotation.get("iscrowd", 0)) for annotation in truth]
        overlaps = (np.asarray(coco_mask.iou([d["bbox"] for d in found],
                                             [a["bbox"] for a in truth], crowd))
                    .reshape(len(found), len(truth)) if truth and found
                    else np.zeros((len(found), len(truth))))
        rows, cols = np.nonzero(overlaps >= iou)
        pairs = sorted(((value, g, d) for value, d, g in zip(
            overlaps[rows, cols].tolist(), rows.tolist(), cols.tolist()) if not crowd[g]),
            reverse=True)
        used_objects: set[int] = set()
        used_detections: set[int] = set()
        matches = []
        for _, g, d in pairs:
            if g not in used_objects and d not in used_detections:
                used_objects.add(g)
                used_detections.add(d)
                matches.append((int(g), int(d)))
        confused = 0
        for g, d in matches:
            true, predicted = column[truth[g]["category_id"]], column[found[d]["category_id"]]
            counts[true, predicted] += 1
            confused += true != predicted
        misses = 0
        for g, annotation in enumerate(truth):
            if g not in used_objects and not crowd[g]:
                counts[column[annotation["category_id"]], background] += 1
                misses += 1
        false_positives = 0
        crowds = [g for g, is_crowd in enumerate(crowd) if is_crowd]
        for d, detection in enumerate(found):
            over_crowd = bool(crowds) and any(overlaps[d, g] >= iou for g in crowds)
            if d not in used_detections and not over_crowd:
                counts[background, column[detection["category_id"]]] += 1
                false_positives += 1
        outcomes.append(ImageErrors(image_id, truth, found, matches, misses, false_positives,
                                    confused))
    labels = [str(category.get("name", category["id"])) for category in categories]
    return ({"iou": iou, "labels": [*labels, "background"], "counts": counts.tolist()},
            outcomes)
