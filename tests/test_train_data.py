"""The classification data layer (digits, image folders, bad folders) and `cvtool data digits`."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms._presets import ImageClassification

from cvtool.core.status import UsageError
from cvtool.data.classification import ClassificationData, digits_split, load_classification_data
from cvtool.io.decode import load_image
from tests.clirun import cvtool


@pytest.fixture(scope="module")
def digits() -> ClassificationData:
    return load_classification_data("digits")


def eval_transform(preprocessing: dict) -> ImageClassification:
    return ImageClassification(
        crop_size=preprocessing["crop_size"], resize_size=preprocessing["resize_size"],
        mean=preprocessing["mean"], std=preprocessing["std"],
        interpolation=InterpolationMode(preprocessing["interpolation"]))


def write_image(path: Path, size: tuple[int, int] = (32, 32), seed: int = 0) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def make_folder(root: Path, splits: tuple[str, ...] = ("train", "val"),
                per_class: int = 5, classes: tuple[str, ...] = ("cat", "dog")) -> Path:
    for split in splits:
        for label in classes:
            for index in range(per_class):
                name = f"{split}/{label}/{index}.png"
                write_image(root / name, seed=zlib.crc32(name.encode()))
    return root


def test_digits_split_is_stratified_seeded_and_sized(digits: ClassificationData) -> None:
    assert digits.classes == [str(d) for d in range(10)]
    assert (len(digits.train), len(digits.val)) == (1437, 360)
    train_counts, val_counts = digits.description["counts"]["train"], \
        digits.description["counts"]["val"]
    assert all(abs(val_counts[c] / (train_counts[c] + val_counts[c]) - 0.2) < 0.01
               for c in digits.classes)
    again = load_classification_data("digits")
    assert torch.equal(again.val.inputs, digits.val.inputs)
    other = digits_split(seed=1)[1]
    assert {e.name for e in other} != {e.name for e in digits_split(seed=0)[1]}


def test_digits_tensors_and_preprocessing(digits: ClassificationData) -> None:
    inputs, label = digits.train[0]
    assert inputs.shape == (3, 8, 8) and inputs.dtype == torch.float32
    assert isinstance(label, int) and digits.input_shape == (3, 8, 8)
    assert digits.preprocessing["resize_size"] == digits.preprocessing["crop_size"] == 8
    # Normalised on the train split's own statistics: zero mean, unit std there.
    assert abs(float(digits.train.inputs.mean())) < 1e-4
    assert abs(float(digits.train.inputs.std()) - 1) < 1e-3
    json.dumps(digits.preprocessing)
    json.dumps(digits.description)


def test_digit_val_item_equals_classify_preprocessing_of_its_png(
        digits: ClassificationData, tmp_path: Path) -> None:
    example = digits_split()[1][7]
    example.load().convert("L").save(tmp_path / "digit.png")
    expected = eval_transform(digits.preprocessing)(load_image(str(tmp_path / "digit.png")))
    assert torch.equal(digits.val[7][0], expected)
    assert digits.val[7][1] == example.label


def test_train_and_val_folders(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "pets")
    write_image(root / "train" / "cat" / "wide.png", size=(40, 30))
    data = load_classification_data(str(root))
    assert data.classes == ["cat", "dog"]
    assert (len(data.train), len(data.val)) == (11, 10)
    assert data.input_shape == (3, 32, 32) and data.train[5][0].shape == (3, 32, 32)
    assert data.description["split"] == "folders"
    path = root / "val" / "dog" / "3.png"
    assert torch.equal(data.val[8][0], eval_transform(data.preprocessing)(load_image(str(path))))
    assert data.val[8][1] == 1


def test_augmented_train_items_vary_and_keep_shape(tmp_path: Path) -> None:
    data = load_classification_data(str(make_folder(tmp_path / "pets")), augment=True)
    torch.manual_seed(0)
    first, second = data.train[0][0], data.train[0][0]
    assert first.shape == (3, 32, 32) and not torch.equal(first, second)


@pytest.mark.parametrize("layout", ["train_only", "classes_only"])
def test_val_split_layouts(tmp_path: Path, layout: str) -> None:
    root = make_folder(tmp_path / "pets", splits=("train",), per_class=10)
    if layout == "classes_only":
        root = root / "train"
    data = load_classification_data(str(root), val_split=0.2, seed=3)
    assert data.description["counts"]["val"] == {"cat": 2, "dog": 2}
    assert data.description["split"] == "stratified" and len(data.train) == 16


def break_no_train(root: Path) -> None:
    make_folder(root, splits=("val",))


def break_empty_class(root: Path) -> None:
    make_folder(root)
    (root / "train" / "bird").mkdir()


def break_one_class(root: Path) -> None:
    make_folder(root, classes=("cat",))


def break_corrupt(root: Path) -> None:
    make_folder(root)
    (root / "train" / "dog" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")


def break_val_classes(root: Path) -> None:
    make_folder(root)
    make_folder(root, splits=("val",), classes=("cow",))


def break_no_classes(root: Path) -> None:
    write_image(root / "train" / "loose.png")


@pytest.mark.parametrize("breaker, message", [
    (break_no_train, "has a val folder but no train folder"),
    (break_no_classes, "has no class folders"),
    (break_empty_class, "class 'bird' in"),
    (break_one_class, "has only one class ('cat')"),
    (break_corrupt, "bad.png"),
    (break_val_classes, "missing none; not in train cow"),
])
def test_bad_folders_are_one_line_usage_errors(tmp_path: Path, breaker, message: str) -> None:
    breaker(tmp_path / "data")
    with pytest.raises(UsageError) as caught:
        load_classification_data(str(tmp_path / "data"))
    assert message in caught.value.message and "\n" not in caught.value.message


def test_missing_folder_and_bad_val_split(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="is not a directory"):
        load_classification_data(str(tmp_path / "absent"))
    with pytest.raises(UsageError, match="--val-split"):
        load_classification_data("digits", val_split=1.5)


def test_data_digits_writes_the_training_split(tmp_path: Path) -> None:
    result = cvtool("data", "digits", tmp_path / "out", "--quiet")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["train"] == 1437
    written = {split: {p.stem for p in (tmp_path / "out" / split).rglob("*.png")}
               for split in ("train", "val")}
    train, val, _ = digits_split()
    assert written == {"train": {e.name for e in train}, "val": {e.name for e in val}}
    example = val[0]
    path = tmp_path / "out" / "val" / str(example.label) / f"{example.name}.png"
    assert np.array_equal(np.asarray(load_image(str(path))), np.asarray(example.load()))


def test_data_digits_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("keep me")
    refused = cvtool("data", "digits", tmp_path)
    assert refused.code == 2 and "not empty" in refused.stderr and not refused.stdout
    forced = cvtool("data", "digits", tmp_path, "--force", "--seed", "1", "--quiet")
    assert forced.code == 0 and json.loads(forced.stdout)["seed"] == 1
    assert (tmp_path / "notes.txt").read_text() == "keep me"
