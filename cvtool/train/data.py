"""The data every classification trainer uses: digits or an image folder, split and preprocessed.

Each image is decoded once, by `cvtool.decode.load_image`, and preprocessed for evaluation by the
same `ImageClassification` that `cvtool classify` rebuilds from a checkpoint's meta. So classifying
the val folder with a trained RUN_DIR sees exactly the tensors training measured its val accuracy
on. Layouts: `digits` (scikit-learn's 8x8 digits), `DIR/train/<class>/*` with `DIR/val/<class>/*`,
or `DIR/train/<class>/*` / `DIR/<class>/*` alone, split into train and val by class.

The datasets are plain map-style classes (`len`, `[index]`), which is all `DataLoader` needs; torch
is imported inside functions so that `cvtool data digits` starts without it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from PIL import Image

from cvtool.decode import load_image
from cvtool.models.classification import classification_transforms
from cvtool.results import InputFailure
from cvtool.sources import Source, walk_directory
from cvtool.status import UsageError

if TYPE_CHECKING:
    from torch import Tensor

DIGITS = "digits"
DIGIT_CLASSES = [str(digit) for digit in range(10)]
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
INTERPOLATION = "bilinear"
AUGMENT_SCALE = (0.6, 1.0)


@dataclass(frozen=True)
class Example:
    """One decoded image: `name` is its file path, or `digit_<index>` for the digits."""

    name: str
    image: Image.Image  # RGB, as load_image returns it
    label: int


class ImageDataset(Protocol):
    """Map-style: item `index` is (float32 tensor C,H,W, class index)."""

    def __len__(self) -> int: ...
    def __getitem__(self, index: int) -> tuple[Tensor, int]: ...


class TensorImages:
    """Images preprocessed once: eval preprocessing is deterministic, so every epoch reuses it."""

    def __init__(self, inputs: Tensor, labels: list[int]) -> None:
        self.inputs = inputs  # (N, C, H, W) float32
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.inputs[index], self.labels[index]


class AugmentedImages:
    """Decoded images, cropped and flipped anew at every access (torch's global RNG)."""

    def __init__(self, examples: list[Example], transform: Callable[[Image.Image], Tensor]) -> None:
        self.images = [example.image for example in examples]
        self.labels = [example.label for example in examples]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.transform(self.images[index]), self.labels[index]


@dataclass
class ClassificationData:
    classes: list[str]
    train: ImageDataset  # augmented when asked for and the images are natural
    val: TensorImages  # eval preprocessing only
    preprocessing: dict[str, Any]  # ImageClassification kwargs, as checkpoint meta stores them
    input_shape: tuple[int, int, int]  # (C, H, W) the model sees
    description: dict[str, Any]  # for config.json


def load_classification_data(data: str, *, val_split: float = 0.2, seed: int = 0,
                             image_size: int | None = None,
                             augment: bool = False) -> ClassificationData:
    """`data` is `digits` or an image folder; raises UsageError naming what is wrong with it."""
    if data == DIGITS:
        train, val, classes = digits_split(seed, val_split)
        split = "stratified"
    else:
        train, val, classes, split = read_image_folder(Path(data), val_split, seed)
    size = image_size or max(train[0].image.size)
    # Digits are not photos: ImageNet's statistics would leave them far from zero mean, unit std.
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if data != DIGITS else channel_statistics(train)
    # Digits at their own 8x8 are unchanged by either resize; nearest also maps an enlarged copy
    # (sample_images/digits: 32x32 blocks) back to its exact pixels, where bilinear blurs them.
    interpolation = "nearest" if data == DIGITS else INTERPOLATION
    preprocessing = {"resize_size": size, "crop_size": size, "mean": mean, "std": std,
                     "interpolation": interpolation}
    evaluate = classification_transforms(preprocessing)
    augment = augment and data != DIGITS  # flipped or cropped digits are other digits
    train_set = (AugmentedImages(train, augmentation(preprocessing)) if augment
                 else preprocess(train, evaluate))
    description = {"data": data, "split": split, "val_split": val_split if split == "stratified"
                   else None, "seed": seed, "image_size": size, "augment": augment,
                   "counts": {"train": class_counts(train, classes),
                              "val": class_counts(val, classes)}}
    return ClassificationData(classes, train_set, preprocess(val, evaluate), preprocessing,
                              (3, size, size), description)


def digits_split(seed: int = 0,
                 val_split: float = 0.2) -> tuple[list[Example], list[Example], list[str]]:
    """scikit-learn's 8x8 digits as RGB images, split by class: (train, val, classes)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    labels = [int(label) for label in digits.target]
    train_indices, val_indices = stratified_split(labels, val_split, seed)

    def example(index: int) -> Example:
        return Example(f"digit_{index}", digit_image(digits.data[index]), labels[index])

    return [example(i) for i in train_indices], [example(i) for i in val_indices], DIGIT_CLASSES


def digit_image(pixels: np.ndarray) -> Image.Image:
    """64 counts 0..16 -> 8x8 RGB, scaled as sample_images/make_sample_images.py scales them."""
    gray = np.rint(pixels.reshape(8, 8) * (255 / 16)).astype(np.uint8)
    return Image.fromarray(gray, "L").convert("RGB")


def stratified_split(labels: list[int], val_split: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices (train, val), each sorted, with every class in the same proportion in both."""
    from sklearn.model_selection import train_test_split

    if not 0 < val_split < 1:
        raise UsageError(f"--val-split must be between 0 and 1, not {val_split}")
    try:
        train, val = train_test_split(np.arange(len(labels)), test_size=val_split,
                                      stratify=labels, random_state=seed)
    except ValueError as error:
        raise UsageError(f"cannot split {len(labels)} images by class with --val-split "
                         f"{val_split}: {error}") from None
    return sorted(train.tolist()), sorted(val.tolist())


def read_image_folder(root: Path, val_split: float, seed: int, min_classes: int = 2
                      ) -> tuple[list[Example], list[Example], list[str], str]:
    """(train, val, classes, split) from DIR/train + DIR/val, or DIR/train or DIR split by class.
    Generative training takes a single class (`min_classes=1`); classification needs two."""
    if not root.is_dir():
        raise UsageError(f"{root} is not a directory: expected 'digits' or a folder with "
                         f"train/<class>/ image folders")
    has_train, has_val = (root / "train").is_dir(), (root / "val").is_dir()
    if has_val and not has_train:
        raise UsageError(f"{root} has a val folder but no train folder")
    train_dir = root / "train" if has_train else root
    classes = class_names(train_dir)
    if len(classes) < min_classes:
        raise UsageError(f"{train_dir} has only one class ({classes[0]!r}); "
                         f"classification needs at least two")
    train = read_classes(train_dir, classes)
    if has_val:
        require_same_classes(root / "val", classes)
        return train, read_classes(root / "val", classes), classes, "folders"
    train_indices, val_indices = stratified_split([e.label for e in train], val_split, seed)
    return ([train[i] for i in train_indices], [train[i] for i in val_indices], classes,
            "stratified")


def class_names(directory: Path) -> list[str]:
    """The sorted names of `directory`'s visible subfolders, each a class."""
    names = sorted(entry.name for entry in directory.iterdir()
                   if entry.is_dir() and not entry.name.startswith("."))
    if not names:
        raise UsageError(f"{directory} has no class folders "
                         f"(expected {directory}/<class>/<images>)")
    return names


def require_same_classes(val_dir: Path, classes: list[str]) -> None:
    found = class_names(val_dir)
    if found != classes:
        missing = ", ".join(sorted(set(classes) - set(found))) or "none"
        extra = ", ".join(sorted(set(found) - set(classes))) or "none"
        raise UsageError(f"the classes in {val_dir} differ from train's: missing {missing}; "
                         f"not in train {extra}")


def read_classes(directory: Path, classes: list[str]) -> list[Example]:
    """Every image under directory/<class>/ (recursively, sorted), decoded, labelled by class."""
    examples = []
    for label, name in enumerate(classes):
        paths = [readable(source) for source in walk_directory(str(directory / name))]
        if not paths:
            raise UsageError(f"class {name!r} in {directory} has no images")
        examples.extend(Example(path, decode(path), label) for path in paths)
    return examples


def readable(source: Source) -> str:
    if source.error is not None:
        raise UsageError(f"cannot read {source.path}: {source.error.message}")
    return source.path


def decode(path: str) -> Image.Image:
    try:
        return load_image(path)
    except InputFailure as failure:
        raise UsageError(f"cannot read training image {path}: {failure.error.message}") from None


def channel_statistics(examples: list[Example]) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the images' 0..1 values, as ImageClassification sees them."""
    pixels = np.stack([np.asarray(example.image) for example in examples]) / 255.0
    return ([float(value) for value in pixels.mean(axis=(0, 1, 2))],
            [float(value) for value in pixels.std(axis=(0, 1, 2))])


def preprocess(examples: list[Example], transform: Callable[[Image.Image], Tensor]) -> TensorImages:
    import torch

    inputs = torch.stack([transform(example.image) for example in examples])
    return TensorImages(inputs, [example.label for example in examples])


def augmentation(preprocessing: dict[str, Any]) -> Callable[[Image.Image], Tensor]:
    """A random crop and flip, then the same to-tensor and normalisation as evaluation."""
    import torch
    from torchvision import transforms

    interpolation = transforms.InterpolationMode(preprocessing["interpolation"])
    return transforms.Compose([
        transforms.RandomResizedCrop(preprocessing["crop_size"], scale=AUGMENT_SCALE,
                                     interpolation=interpolation, antialias=True),
        transforms.RandomHorizontalFlip(),
        transforms.PILToTensor(),
        transforms.ConvertImageDtype(torch.float),
        transforms.Normalize(preprocessing["mean"], preprocessing["std"]),
    ])


def class_counts(examples: list[Example], classes: list[str]) -> dict[str, int]:
    counts = Counter(example.label for example in examples)
    return {name: counts[label] for label, name in enumerate(classes)}
