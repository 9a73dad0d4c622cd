"""The data every classification trainer uses: digits or an image folder, split and preprocessed.

Images are decoded by `cvtool.io.decode.load_image` and preprocessed for evaluation by the same
`ImageClassification` that `cvtool classify` rebuilds from a checkpoint's meta. So classifying the
val folder with a trained RUN_DIR sees exactly the tensors training measured its val accuracy on.
Layouts: `digits` (scikit-learn's 8x8 digits), `DIR/train/<class>/*` with `DIR/val/<class>/*`,
or `DIR/train/<class>/*` / `DIR/<class>/*` alone, split into train and val by class.

The digits (1,797 tiny images) are preprocessed once and kept in memory; an image folder is
streamed: only the paths are listed up front (each file's header checked), and every access
decodes its image, so memory does not grow with the folder (DataLoader workers do the decoding).

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

from cvtool.core.files import open_regular
from cvtool.core.results import InputFailure, one_line
from cvtool.core.status import UsageError
from cvtool.io.decode import load_image
from cvtool.io.sources import Source, walk_directory
from cvtool.models.classification import classification_transforms

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
    """One image: `name` is its file path, or `digit_<index>` for the digits, whose pixels are
    held in `image`; a file is decoded by `load()` each time it is used."""

    name: str
    label: int
    image: Image.Image | None = None  # RGB, as load_image returns it

    def load(self) -> Image.Image:
        return self.image if self.image is not None else decode(self.name)


class ImageDataset(Protocol):
    """Map-style: item `index` is (float32 tensor C,H,W, class index)."""

    def __len__(self) -> int: ...
    def __getitem__(self, index: int) -> tuple[Tensor, int]: ...


class TensorImages:
    """Images preprocessed once: eval preprocessing is deterministic, so every epoch reuses it."""

    in_memory = True  # nothing to decode: loader workers would only add start-up time

    def __init__(self, inputs: Tensor, labels: list[int]) -> None:
        self.inputs = inputs  # (N, C, H, W) float32
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.inputs[index], self.labels[index]


class StreamedImages:
    """Images decoded and transformed at every access: evaluation preprocessing, or random
    crops and flips drawn from torch's global RNG (a loader worker's own, seeded per epoch)."""

    in_memory = False

    def __init__(self, examples: list[Example], transform: Callable[[Image.Image], Tensor]) -> None:
        self.examples = examples
        self.labels = [example.label for example in examples]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        example = self.examples[index]
        return self.transform(example.load()), example.label


@dataclass
class ClassificationData:
    classes: list[str]
    train: ImageDataset  # augmented when asked for and the images are natural
    val: ImageDataset  # eval preprocessing only
    preprocessing: dict[str, Any]  # ImageClassification kwargs, as checkpoint meta stores them
    input_shape: tuple[int, int, int]  # (C, H, W) the model sees
    description: dict[str, Any]  # for config.json


def load_classification_data(data: str, *, val_split: float = 0.2, seed: int = 0,
                             image_size: int | None = None, augment: bool = False,
                             preprocessing: dict[str, Any] | None = None) -> ClassificationData:
    """`data` is `digits` or an image folder; raises UsageError naming what is wrong with it.

    `preprocessing` (ImageClassification kwargs: a pretrained model's own) replaces the data's
    default, the images' size with ImageNet's statistics (the digits': their own)."""
    if data == DIGITS:
        train, val, classes = digits_split(seed, val_split)
        split = "stratified"
    else:
        train, val, classes, split = read_image_folder(Path(data), val_split, seed)
    preprocessing = preprocessing or _default_preprocessing(data, train, image_size)
    size = preprocessing["crop_size"]
    evaluate = classification_transforms(preprocessing)
    augment = augment and data != DIGITS  # flipped or cropped digits are other digits
    if data == DIGITS:
        train_set, val_set = preprocess(train, evaluate), preprocess(val, evaluate)
    else:
        train_set = StreamedImages(train, augmentation(preprocessing) if augment else evaluate)
        val_set = StreamedImages(val, evaluate)
    description = {"data": data, "split": split, "val_split": val_split if split == "stratified"
                   else None, "seed": seed, "image_size": size, "augment": augment,
                   "counts": {"train": class_counts(train, classes),
                              "val": class_counts(val, classes)}}
    return ClassificationData(classes, train_set, val_set, preprocessing, (3, size, size),
                              description)


def _default_preprocessing(data: str, train: list[Example],
                           image_size: int | None) -> dict[str, Any]:
    size = image_size or max(train[0].load().size)
    # Digits are not photos: ImageNet's statistics would leave them far from zero mean, unit std.
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if data != DIGITS else channel_statistics(train)
    # Digits at their own 8x8 are unchanged by either resize; nearest also maps an enlarged copy
    # (sample_images/digits: 32x32 blocks) back to its exact pixels, where bilinear blurs them.
    interpolation = "nearest" if data == DIGITS else INTERPOLATION
    return {"resize_size": size, "crop_size": size, "mean": mean, "std": std,
            "interpolation": interpolation}


def digits_split(seed: int = 0,
                 val_split: float = 0.2) -> tuple[list[Example], list[Example], list[str]]:
    """scikit-learn's 8x8 digits as RGB images, split by class: (train, val, classes)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    labels = [int(label) for label in digits.target]
    train_indices, val_indices = stratified_split(labels, val_split, seed)

    def example(index: int) -> Example:
        return Example(f"digit_{index}", labels[index], digit_image(digits.data[index]))

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
    """Every image under directory/<class>/ (recursively, sorted), labelled by class; each
    file's header is checked now, its pixels decoded only when it is used."""
    examples = []
    for label, name in enumerate(classes):
        paths = [readable(source) for source in walk_directory(str(directory / name))]
        if not paths:
            raise UsageError(f"class {name!r} in {directory} has no images")
        examples.extend(Example(check_header(path), label) for path in paths)
    return examples


def check_header(path: str) -> str:
    """`path`, once its header names an image Pillow can decode (no pixel is read)."""
    try:
        with open_regular(path) as file, Image.open(file):
            return path
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise UsageError(f"cannot read training image {path}: {one_line(error)}") from None


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
    pixels = np.stack([np.asarray(example.load()) for example in examples]) / 255.0
    return ([float(value) for value in pixels.mean(axis=(0, 1, 2))],
            [float(value) for value in pixels.std(axis=(0, 1, 2))])


def preprocess(examples: list[Example], transform: Callable[[Image.Image], Tensor]) -> TensorImages:
    import torch

    inputs = torch.stack([transform(example.load()) for example in examples])
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
