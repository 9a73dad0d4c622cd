"""COCO-format training data for `train detect` and `train segment-instance`.

Layout (the contract): `DIR/annotations/{train,val}.json`, images under `DIR/images/` at each
image's `file_name`. Both files are checked by the same `coco.load_ground_truth` that `--gt` uses,
so an annotation that `--eval` would skip is skipped here too, with one warning. Images that are
missing, unreadable or of another size than their entry says are skipped with one warning per
split; a file with no usable image is an error.

Labels are COCO category ids unchanged (`classes[id]` names them, "N/A" fills unused ids, 0 is
the background), the convention of torchvision's COCO weights: a trained model's record `index`
is the category id and its results go to pycocotools as they are.

Augmentation (train only) moves boxes and masks with the pixels, through torchvision's v2
transforms on tv_tensors: horizontal flip, vertical flip with `vflip`, and photometric jitter.
All randomness comes from torch's global generator, which the run state saves for resume.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cvtool.core.context import Warn
from cvtool.core.files import open_regular
from cvtool.core.results import InputFailure, one_line
from cvtool.core.status import UsageError
from cvtool.io.coco import MAX_CATEGORY_ID, load_ground_truth
from cvtool.io.decode import load_image

SPLITS = ("train", "val")
BACKGROUND = "__background__"
UNUSED = "N/A"



@dataclass
class Sample:
    image_id: int
    path: Path
    annotations: list[dict[str, Any]]  # crowd regions left out


@dataclass
class CocoSplit:
    ground_truth: dict[str, Any]  # checked COCO dict, what COCOeval compares against
    samples: list[Sample]


@dataclass
class DetectionData:
    classes: list[str]  # index = category id
    train: CocoSplit
    val: CocoSplit
    description: dict[str, Any]


def load_detection_data(data: str, masks: bool, warn: Warn) -> DetectionData:
    root = Path(data)
    if not (root / "annotations").is_dir():
        raise UsageError(f"--data {data}: expected a COCO layout, DIR/annotations/"
                         "{train,val}.json with images under DIR/images/")
    splits = {name: _load_split(root, name, masks, warn) for name in SPLITS}
    classes = _classes(splits["train"].ground_truth["categories"]
                       + splits["val"].ground_truth["categories"])
    description = {"root": str(root), "classes": classes,
                   **{f"{name}_images": len(split.samples) for name, split in splits.items()}}
    return DetectionData(classes, splits["train"], splits["val"], description)


def _load_split(root: Path, name: str, masks: bool, warn: Warn) -> CocoSplit:
    path = root / "annotations" / f"{name}.json"
    if not path.is_file():
        raise UsageError(f"--data {root}: {path} does not exist; training needs both "
                         "annotations/train.json and annotations/val.json")
    ground_truth = load_ground_truth(path, warn, evaluating=False)
    if masks and not all(_has_segmentation(a) for a in ground_truth["annotations"]):
        raise UsageError(f"{path}: some annotations have no \"segmentation\"; "
                         "segment-instance needs masks (train detect needs only boxes)")
    by_image: dict[int, list[dict[str, Any]]] = {}
    for annotation in ground_truth["annotations"]:
        if not annotation.get("iscrowd"):
            by_image.setdefault(annotation["image_id"], []).append(annotation)
    samples, problems = [], []
    for image in ground_truth["images"]:
        file = root / "images" / image["file_name"]
        if problem := _escape_problem(root / "images", image["file_name"]) \
                or _image_problem(file, image):
            problems.append(problem)
            continue
        samples.append(Sample(image["id"], file, by_image.get(image["id"], [])))
    if problems:
        warn(f"{path}: skipped {len(problems)} images: {problems[0]}"
             + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
    if not samples:
        raise UsageError(f"{path}: none of its images could be read under {root / 'images'}")
    if name == "train" and not any(sample.annotations for sample in samples):
        raise UsageError(f"{path}: no usable annotation on any readable image; there is "
                         "nothing to train on")
    kept = {sample.image_id for sample in samples}
    ground_truth = {**ground_truth,
                    "images": [i for i in ground_truth["images"] if i["id"] in kept],
                    "annotations": [a for a in ground_truth["annotations"]
                                    if a["image_id"] in kept]}
    return CocoSplit(ground_truth, samples)


def _has_segmentation(annotation: dict[str, Any]) -> bool:
    segmentation = annotation.get("segmentation")
    return isinstance(segmentation, (list, dict)) and bool(segmentation)


def _escape_problem(images: Path, file_name: str) -> str | None:
    """A file_name must name a file under images/: no absolute path, no way out through `..`."""
    joined = os.path.normpath(images / file_name)
    if Path(file_name).is_absolute() or not joined.startswith(os.path.normpath(images) + os.sep):
        return f"file_name {file_name!r} points outside {images}"
    return None


def _image_problem(file: Path, image: dict[str, Any]) -> str | None:
    """Why `file` cannot be used for `image` (missing, unreadable, other size), or None."""
    if not file.is_file():
        return f"{file} does not exist"
    try:
        from PIL import Image

        with open_regular(file) as handle, Image.open(handle) as opened:
            size = opened.size
    except (OSError, SyntaxError, ValueError) as error:
        return f"{file}: {one_line(error)}"
    expected = (image.get("width", size[0]), image.get("height", size[1]))
    if size != expected and size[::-1] != expected:
        return f"{file} is {size[0]}x{size[1]}, its entry says {expected[0]}x{expected[1]}"
    return None


def _classes(categories: list[dict[str, Any]]) -> list[str]:
    names: dict[int, str] = {}
    for category in categories:
        if isinstance(category, dict) and isinstance(category.get("id"), int) \
                and category["id"] > 0:
            names.setdefault(category["id"], str(category.get("name", category["id"])))
    if not names:
        raise UsageError("the annotations define no categories with positive ids")
    if max(names) > MAX_CATEGORY_ID:  # load_ground_truth bounds them; hand-made dicts too
        raise UsageError(f"category id {max(names)} is above {MAX_CATEGORY_ID}")
    return [BACKGROUND] + [names.get(i, UNUSED) for i in range(1, max(names) + 1)]


def annotation_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """A COCO segmentation (polygons, RLE or uncompressed RLE) as a uint8 (H, W) mask."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        counts = segmentation["counts"]
        rle = {"size": segmentation["size"],
               "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return mask_utils.decode(rle)


class CocoDataset:
    """Item: (float image tensor 3xHxW in [0, 1], target dict for torchvision's detectors)."""

    def __init__(self, split: CocoSplit, masks: bool, augment: bool, vflip: bool) -> None:
        self.samples, self.masks = split.samples, masks
        self.transforms = _augmentation(vflip) if augment else None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        from torchvision import tv_tensors
        from torchvision.transforms.v2 import functional as F

        sample = self.samples[index]
        try:
            image = F.to_dtype(F.to_image(load_image(str(sample.path))), torch.float32, scale=True)
        except InputFailure as error:
            raise UsageError(f"{sample.path}: {error.message}") from None
        height, width = image.shape[-2:]
        boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in
                              (a["bbox"] for a in sample.annotations)], dtype=torch.float32)
        target: dict[str, Any] = {
            "boxes": tv_tensors.BoundingBoxes(boxes.reshape(-1, 4), format="XYXY",
                                              canvas_size=(height, width)),
            "labels": torch.tensor([a["category_id"] for a in sample.annotations],
                                   dtype=torch.int64)}
        if self.masks:
            planes = [annotation_mask(a["segmentation"], height, width)
                      for a in sample.annotations]
            stacked = np.stack(planes) if planes else np.zeros((0, height, width), np.uint8)
            target["masks"] = tv_tensors.Mask(torch.from_numpy(stacked))
        if self.transforms is not None:
            image, target = self.transforms(tv_tensors.Image(image), target)
        return image.as_subclass(torch.Tensor), {
            key: value.as_subclass(torch.Tensor) for key, value in target.items()}


def _augmentation(vflip: bool) -> Callable:
    from torchvision.transforms import v2

    steps = [v2.RandomHorizontalFlip()]
    if vflip:
        steps.append(v2.RandomVerticalFlip())
    steps += [v2.RandomPhotometricDistort(p=0.5), v2.ClampBoundingBoxes(),
              v2.SanitizeBoundingBoxes(min_size=1)]
    return v2.Compose(steps)


def collate(batch: list[tuple[torch.Tensor, dict]]) -> tuple[list, list]:
    """Detectors take lists: images may differ in size."""
    images, targets = zip(*batch)
    return list(images), list(targets)
