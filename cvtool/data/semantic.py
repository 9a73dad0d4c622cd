"""Image/mask folders for `train segment-semantic`.

Layout (the contract): `DIR/{train,val}/images/*` with `DIR/{train,val}/masks/<stem>.png`
(pixel = class index, 255 = ignore) and `DIR/classes.txt` (one name per line, index 0 first).
Every mask is read once up front: a mask that is not single-channel or holds a value that is
neither a class nor 255 is an error naming the file and the value; an image without a mask or
whose mask has another size is skipped with one warning per split.

Images keep their size (all of a split must share it) unless `image_size` resizes them (bilinear;
masks nearest). Augmentation (train only) moves the mask with the pixels: horizontal flip,
vertical flip with `vflip`, photometric jitter on the image alone. Images are then normalised
with the checkpoint's mean/std, the same `SemanticSegmentation` preset inference rebuilds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from cvtool.core.context import Warn
from cvtool.core.results import InputFailure
from cvtool.core.status import UsageError
from cvtool.io.decode import load_image
from cvtool.io.sources import walk_directory

IGNORE_INDEX = 255
SPLITS = ("train", "val")



@dataclass
class SemanticData:
    classes: list[str]
    train: list[tuple[Path, Path]]  # (image, mask)
    val: list[tuple[Path, Path]]
    size: tuple[int, int]  # (height, width) the model sees
    description: dict[str, Any]


def load_semantic_data(data: str, image_size: int | None, warn: Warn) -> SemanticData:
    root = Path(data)
    classes_file = root / "classes.txt"
    if not classes_file.is_file():
        raise UsageError(f"--data {data}: expected DIR/classes.txt with DIR/{{train,val}}/images "
                         "and DIR/{train,val}/masks (pixel = class index)")
    classes = [line.strip() for line in classes_file.read_text().splitlines() if line.strip()]
    if not 2 <= len(classes) <= IGNORE_INDEX:
        raise UsageError(f"{classes_file}: expected 2 to {IGNORE_INDEX} class names, "
                         f"found {len(classes)}")
    splits = {name: _pairs(root, name, len(classes), warn) for name in SPLITS}
    sizes = {size for pairs in splits.values() for _, _, size in pairs}
    if image_size is not None:
        size = (image_size, image_size)
    elif len(sizes) == 1:
        size = sizes.pop()
    else:
        shown = ", ".join(f"{w}x{h}" for h, w in sorted(sizes)[:4])
        raise UsageError(f"--data {data}: images come in {len(sizes)} sizes ({shown}, ...); "
                         "give --image-size N to train on N x N")
    description = {"root": str(root), "classes": classes, "size": list(size),
                   **{f"{name}_images": len(pairs) for name, pairs in splits.items()}}
    return SemanticData(classes, *([(image, mask) for image, mask, _ in splits[name]]
                                   for name in SPLITS), size, description)


def _pairs(root: Path, split: str, num_classes: int,
           warn: Warn) -> list[tuple[Path, Path, tuple[int, int]]]:
    images_dir, masks_dir = root / split / "images", root / split / "masks"
    if not images_dir.is_dir():
        raise UsageError(f"--data {root}: {images_dir} does not exist")
    pairs, problems = [], []
    for source in walk_directory(str(images_dir)):
        image = Path(source.path)
        mask = masks_dir / f"{image.stem}.png"
        if not mask.is_file():
            problems.append(f"{image} has no mask {mask}")
            continue
        try:
            with Image.open(image) as opened:
                size = opened.size
        except OSError as error:
            problems.append(f"{image}: {error}")
            continue
        values = read_mask(mask)
        if values.shape[::-1] != size:
            problems.append(f"{mask} is {values.shape[1]}x{values.shape[0]}, its image "
                            f"{size[0]}x{size[1]}")
            continue
        check_classes(values, num_classes, mask)
        pairs.append((image, mask, values.shape))
    if problems:
        warn(f"{root / split}: skipped {len(problems)} images: {problems[0]}"
             + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
    if not pairs:
        raise UsageError(f"--data {root}: no image in {images_dir} has a usable mask")
    return pairs


def read_mask(path: Path) -> np.ndarray:
    """A class-index PNG as a uint8 (H, W) array; palette and grey PNGs only."""
    try:
        with Image.open(path) as mask:
            if mask.mode not in ("P", "L"):
                raise UsageError(f"{path} is a {mask.mode} image; masks are single-channel "
                                 "class-index PNGs (mode P or L)")
            return np.array(mask)
    except OSError as error:
        raise UsageError(f"cannot read mask {path}: {error}") from None


def check_classes(values: np.ndarray, num_classes: int, path: Path) -> None:
    bad = values[(values >= num_classes) & (values != IGNORE_INDEX)]
    if bad.size:
        raise UsageError(f"{path} has class value {int(bad.max())}, but classes.txt names "
                         f"{num_classes} classes (0-{num_classes - 1}; {IGNORE_INDEX} = ignore)")


class SemanticDataset:
    """Item: (normalised float image 3xHxW, int64 mask HxW with 255 where ignored)."""

    def __init__(self, pairs: list[tuple[Path, Path]], size: tuple[int, int], mean: list[float],
                 std: list[float], augment: bool, vflip: bool) -> None:
        from torchvision.transforms import v2

        self.pairs, self.size, self.mean, self.std = pairs, size, mean, std
        steps = [v2.RandomHorizontalFlip()] + ([v2.RandomVerticalFlip()] if vflip else [])
        self.augment = v2.Compose([*steps, v2.RandomPhotometricDistort(p=0.5)]) \
            if augment else None

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        from torchvision import tv_tensors
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms.v2 import functional as F

        image_path, mask_path = self.pairs[index]
        try:
            image = F.to_dtype(F.to_image(load_image(str(image_path))), torch.float32, scale=True)
        except InputFailure as error:
            raise UsageError(f"{image_path}: {error.message}") from None
        mask = tv_tensors.Mask(torch.from_numpy(read_mask(mask_path)).long())
        if tuple(image.shape[-2:]) != self.size:
            image = F.resize(image, list(self.size), antialias=True)
            mask = F.resize(mask, list(self.size), InterpolationMode.NEAREST)
        if self.augment is not None:
            image, mask = self.augment(tv_tensors.Image(image), mask)
        image = F.normalize(image.as_subclass(torch.Tensor), self.mean, self.std)
        return image, mask.as_subclass(torch.Tensor)
