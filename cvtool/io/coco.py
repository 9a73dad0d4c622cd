"""COCO interop: RLE masks, results lists, ground truth matched by file name, and COCOeval.

A record's detection `index` is the model's label id, which for torchvision's COCO weights IS the
COCO category id (their category lists keep `N/A` placeholders at the unused ids), so results use
`category_id = index` unchanged. pycocotools prints progress on stdout; here it goes to stderr.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path, PurePath
from typing import IO, Any

import numpy as np

from cvtool.core import jsonfile
from cvtool.core.context import Warn
from cvtool.core.results import Record, shown
from cvtool.core.status import UsageError
from cvtool.io.coco_confusion import DEFAULT_IOU, confusion
from cvtool.io.matching import TailIndex

MAX_COCO_BYTES = 4 << 30  # COCO 2017 train instances: 448 MB
MAX_CATEGORY_ID = 100_000

STAT_NAMES = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large",
              "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large")


def encode_mask(mask: np.ndarray) -> tuple[dict[str, Any], int]:
    """A boolean (H, W) mask as COCO RLE with a JSON-ready `counts` string, and its area."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(n) for n in rle["size"]], "counts": rle["counts"].decode("ascii")}, \
        int(mask_utils.area(rle))


def decode_mask(rle: dict[str, Any]) -> np.ndarray:
    from pycocotools import mask as mask_utils

    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")}) > 0


def load_ground_truth(path: Path, warn: Warn, evaluating: bool = True) -> dict[str, Any]:
    """A COCO instances file, checked: fatal problems are one-line UsageErrors, while unusable
    annotations (unknown image, bad box) are skipped with one warning saying how many."""
    try:
        data = jsonfile.read(path, MAX_COCO_BYTES)
    except (OSError, jsonfile.UntrustedJSON) as error:
        raise UsageError(f"cannot read --gt {path}: {' '.join(str(error).split())}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise UsageError(f"{path} is not a COCO file: no \"images\" list")
    images = {_image_key(image, path): image for image in data["images"]}
    if len(images) != len(data["images"]):
        raise UsageError(f"{path}: image ids are not unique")
    given = data.get("annotations") or []
    if not isinstance(given, list):
        raise UsageError(f"{path}: \"annotations\" is not a list")
    categories = _checked_categories(data.get("categories"), path)
    known = {category["id"] for category in categories} if categories else None
    checked = (_checked_annotation(a, images, n, known) for n, a in enumerate(given, start=1))
    annotations = [annotation for annotation in checked if annotation is not None]
    if skipped := len(given) - len(annotations):
        warn(f"{path}: skipped {skipped} annotations with no valid image_id, category_id "
             "(one of the categories), bbox inside the image or segmentation")
    if not annotations and evaluating:
        warn(f"{path} has no usable annotations: every metric will be -1")
    categories = categories or _categories_from(annotations)
    return {"images": list(images.values()), "annotations": annotations,
            "categories": categories}


def _image_key(image: Any, path: Path) -> int:
    if not isinstance(image, dict) or not isinstance(image.get("id"), int) \
            or not isinstance(image.get("file_name"), str):
        raise UsageError(f"{path}: every image needs an integer \"id\" and a \"file_name\"; "
                         f"found {json.dumps(image)[:120]}")
    return image["id"]


def _checked_categories(categories: Any, path: Path) -> list[dict[str, Any]]:
    """The file's categories; ids are integers from 1 to MAX_CATEGORY_ID (a label table that
    size is what a model gets), so a stray id of 10^9 is an error, not a 1 TB allocation."""
    if not categories:
        return []
    if not isinstance(categories, list) or not all(
            isinstance(c, dict) and isinstance(c.get("id"), int) and not isinstance(c["id"], bool)
            for c in categories):
        raise UsageError(f"{path}: \"categories\" must be a list of objects with an "
                         "integer \"id\"")
    if wrong := [c["id"] for c in categories if not 1 <= c["id"] <= MAX_CATEGORY_ID]:
        raise UsageError(f"{path}: category id {wrong[0]} is outside 1-{MAX_CATEGORY_ID}")
    return categories


def _checked_annotation(annotation: Any, images: dict[int, dict], number: int,
                        categories: set[int] | None) -> dict | None:
    if not isinstance(annotation, dict) or annotation.get("image_id") not in images \
            or not isinstance(annotation.get("category_id"), int) \
            or isinstance(annotation["category_id"], bool):
        return None
    if not (1 <= annotation["category_id"] <= MAX_CATEGORY_ID) or (
            categories is not None and annotation["category_id"] not in categories):
        return None
    box = annotation.get("bbox")
    if not (isinstance(box, list) and len(box) == 4
            and all(isinstance(v, (int, float)) and math.isfinite(v) for v in box)):
        return None
    x, y, w, h = box
    image = images[annotation["image_id"]]
    width, height = image.get("width", math.inf), image.get("height", math.inf)
    if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > width + 1 or y + h > height + 1:
        return None
    if "segmentation" in annotation and not valid_segmentation(annotation["segmentation"],
                                                              image):
        return None
    # COCOeval reads these; a hand-made file often leaves them out.
    return {"id": number, "iscrowd": 0, "area": w * h, **annotation}


def valid_segmentation(segmentation: Any, image: dict[str, Any]) -> bool:
    """Polygons of at least three finite points, or an RLE (compressed or not) of the image's
    size whose runs add up to its pixels. pycocotools' C decoder trusts its input (a run too
    long writes past the mask), so nothing reaches it unchecked."""
    if isinstance(segmentation, list):
        return bool(segmentation) and all(
            isinstance(polygon, list) and len(polygon) >= 6 and len(polygon) % 2 == 0
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                    for v in polygon) for polygon in segmentation)
    if not isinstance(segmentation, dict):
        return False
    size = segmentation.get("size")
    if not (isinstance(size, list) and len(size) == 2 and all(
            isinstance(side, int) and not isinstance(side, bool) and 0 < side <= 1 << 16
            for side in size)) or size != [image.get("height", size[0]),
                                           image.get("width", size[1])]:
        return False
    counts = segmentation.get("counts")
    try:
        runs = rle_runs(counts) if isinstance(counts, str) else counts
    except ValueError:
        return False
    return isinstance(runs, list) and all(
        isinstance(run, int) and not isinstance(run, bool) and run >= 0 for run in runs) \
        and sum(runs) == size[0] * size[1]


def rle_runs(counts: str) -> list[int]:
    """The run lengths of a compressed COCO RLE string (pycocotools' rleFrString, in Python)."""
    runs: list[int] = []
    position = 0
    while position < len(counts):
        value = shift = 0
        more = True
        while more:
            if position >= len(counts) or shift > 6:
                raise ValueError("truncated or over-long RLE run")
            code = ord(counts[position]) - 48
            if not 0 <= code < 64:
                raise ValueError(f"character {counts[position]!r} is not RLE")
            value |= (code & 0x1F) << 5 * shift
            more = bool(code & 0x20)
            position += 1
            shift += 1
            if not more and code & 0x10:
                value |= -1 << 5 * shift
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


def _categories_from(annotations: list[dict]) -> list[dict[str, Any]]:
    ids = sorted({annotation["category_id"] for annotation in annotations})
    return [{"id": i, "name": str(i)} for i in ids]


class ResultCollector:
    """Collects records as a COCO results list; with ground truth, `image_id`s come from it,
    matched by file name (the longest trailing run of path components), else they count inputs
    from 1 and each result carries the input's `file_name`."""

    def __init__(self, ground_truth: dict[str, Any] | None, warn: Warn) -> None:
        self.ground_truth, self.warn = ground_truth, warn
        self.index: TailIndex[int] = TailIndex()
        for image in (ground_truth or {}).get("images", []):
            self.index.add(PurePath(image["file_name"]).parts, image["id"])
        self.results: list[dict[str, Any]] = []
        self.image_ids: list[int] = []  # inputs matched to the ground truth, in order
        self.paths: dict[int, str] = {}  # each matched image's input path
        self.inputs = 0

    def write(self, record: Record) -> None:
        self.inputs += 1
        if not record.ok:
            return
        image_id = self.inputs if self.ground_truth is None else self._matched_id(record.path)
        if image_id is None:
            return
        self.image_ids.append(image_id)
        self.paths[image_id] = record.path
        extra = {} if self.ground_truth else {"file_name": record.path}
        self.results.extend(as_result(d, image_id, extra) for d in record.payload["detections"])

    def close(self) -> None:
        """Nothing to flush: whoever needs the results reads `results`."""

    def _matched_id(self, path: str) -> int | None:
        image_id = self.index.find(PurePath(path).parts)
        if image_id is None:
            self.warn(f"{path} is not in --gt; its detections are left out")
        return image_id


def as_result(detection: dict[str, Any], image_id: int, extra: dict[str, Any]) -> dict[str, Any]:
    x1, y1, x2, y2 = detection["box"]
    result = {"image_id": image_id, "category_id": detection["index"],
              "bbox": [x1, y1, x2 - x1, y2 - y1], "score": detection["score"], **extra}
    if "mask" in detection:
        result["segmentation"] = detection["mask"]
    return result


def evaluate(ground_truth: dict[str, Any], results: list[dict[str, Any]], image_ids: list[int],
             iou_types: tuple[str, ...], stderr: IO[str], per_class: bool = False,
             confusion_iou: float = DEFAULT_IOU, details: dict[str, Any] | None = None
             ) -> dict[str, Any]:
    """COCOeval per IoU type on the matched images; its summary goes to `stderr`. With
    `per_class`, `metrics["per_class"][iou_type]` holds each category's row (`class_rows`),
    also printed as a table, and `metrics["confusion"]` the confusion matrix with background
    at `confusion_iou` (`coco_confusion`). `details`, when given, receives what the report's
    pictures need: `pr[iou_type]` (recall points, each category's precision at IoU 0.50) and
    `errors` (each image's outcome)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    metrics: dict[str, dict[str, float]] = {}
    noise = io.StringIO()
    with contextlib.redirect_stdout(noise):
        gt = COCO()
        gt.dataset = ground_truth
        gt.createIndex()
        detections = gt.loadRes(results) if results else _empty_results(gt)
    for iou_type in iou_types:
        evaluator = COCOeval(gt, detections, iou_type)
        evaluator.params.imgIds = sorted(set(image_ids))
        with contextlib.redirect_stdout(noise):
            evaluator.evaluate()
            evaluator.accumulate()
        print(f"COCO {iou_type} metrics ({len(set(image_ids))} images):", file=stderr)
        with contextlib.redirect_stdout(stderr):
            evaluator.summarize()
        metrics[iou_type] = dict(zip(STAT_NAMES, map(float, evaluator.stats)))
        if per_class:
            rows = class_rows(evaluator, ground_truth["categories"])
            metrics.setdefault("per_class", {})[iou_type] = rows
            _print_class_rows(iou_type, rows, stderr)
            if details is not None:
                details.setdefault("pr", {})[iou_type] = _pr_points(evaluator)
    if per_class:
        metrics["confusion"], errors = confusion(ground_truth, results, image_ids, confusion_iou)
        if details is not None:
            details["errors"] = errors
    return metrics


def _pr_points(evaluator: Any) -> dict[str, Any]:
    """Each category's interpolated precision at IoU 0.50 (area all, 100 detections) over
    COCOeval's 101 recall points; -1 where undefined."""
    params = evaluator.params
    area, last = params.areaRngLbl.index("all"), len(params.maxDets) - 1
    return {"recall": params.recThrs,
            "precision": evaluator.eval["precision"][0, :, :, area, last].T.copy()}


def class_rows(evaluator: Any, categories: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per category, from the accumulated COCOeval (area all, 100 detections): AP over IoU
    0.50:0.95 and AP50 as its summarize() computes them for all categories at once (the mean of
    `eval["precision"]` where defined; -1 where there is nothing to measure), recall at 0.50:0.95,
    and at IoU 0.50 the matched detections (tp), unmatched ones (fp) and unmatched ground
    truth (misses) of the images evaluated."""
    precision, recall = evaluator.eval["precision"], evaluator.eval["recall"]
    params = evaluator.params
    area, last = params.areaRngLbl.index("all"), len(params.maxDets) - 1
    names = {category["id"]: str(category.get("name", category["id"])) for category in categories}
    counts = _match_counts(evaluator, area)
    rows = []
    for k, category_id in enumerate(params.catIds):
        def mean(values: Any) -> float:
            defined = values[values > -1]
            return float(defined.mean()) if defined.size else -1.0

        tp, fp, misses = counts.get(category_id, (0, 0, 0))
        rows.append({"id": int(category_id), "label": names.get(category_id, str(category_id)),
                     "AP": mean(precision[:, :, k, area, last]),
                     "AP50": mean(precision[0, :, k, area, last]),
                     "recall": mean(recall[:, k, area, last]),
                     "tp": tp, "fp": fp, "misses": misses})
    return rows


def _match_counts(evaluator: Any, area: int) -> dict[int, tuple[int, int, int]]:
    """(tp, fp, misses) per category at the first IoU threshold (0.50), each category's
    per-image match arrays joined once rather than counted image by image."""
    import numpy as np

    counts: dict[int, tuple[int, int, int]] = {}
    areas = len(evaluator.params.areaRng)
    images = len(evaluator.params.imgIds)
    for k, category_id in enumerate(evaluator.params.catIds):
        start = (k * areas + area) * images
        entries = [e for e in evaluator.evalImgs[start:start + images] if e is not None]
        if not entries:
            counts[category_id] = (0, 0, 0)
            continue
        matched = np.concatenate([e["dtMatches"][0] for e in entries]) > 0
        kept = ~np.concatenate([e["dtIgnore"][0] for e in entries]).astype(bool)
        found = np.concatenate([e["gtMatches"][0] for e in entries]) > 0
        truth = ~np.concatenate([np.asarray(e["gtIgnore"]) for e in entries]).astype(bool)
        counts[category_id] = (int((matched & kept).sum()), int((~matched & kept).sum()),
                               int((~found & truth).sum()))
    return counts


def _print_class_rows(iou_type: str, rows: list[dict[str, Any]], stream: IO[str]) -> None:
    print(f"per class ({iou_type}, IoU 0.50 for tp/fp/misses):", file=stream)
    for row in rows:
        label = shown(row["label"])
        print(f"  {row['id']:>5} {label:<20} AP {row['AP']:.3f}  AP50 {row['AP50']:.3f}  "
              f"recall {row['recall']:.3f}  tp {row['tp']}  fp {row['fp']}  misses "
              f"{row['misses']}", file=stream)
    stream.flush()


def has_segmentations(ground_truth: dict[str, Any]) -> bool:
    return all("segmentation" in annotation for annotation in ground_truth["annotations"])


def _empty_results(gt: Any) -> Any:
    from pycocotools.coco import COCO

    empty = COCO()
    empty.dataset = {"images": gt.dataset["images"], "categories": gt.dataset["categories"],
                     "annotations": []}
    empty.createIndex()
    return empty
