"""`cvtool train segment-semantic` through the real entry point: run outputs, inference from the
run reproducing training's mIoU, losses honouring the ignore index, augmentation moving the mask
with the pixels, and bad data / options as one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cvtool.data.semantic import SemanticDataset, load_semantic_data
from cvtool.train.semantic_run import semantic_loss
from tests.clirun import cvtool

SMALL = ("--encoder", "tu-resnet10t", "--encoder-depth", "3", "--decoder-channels", "16,8,8",
         "--batch-size", "4", "--warmup", "2", "--device", "cpu", "-q")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("semantic") / "data"
    result = cvtool("data", "shapes", root, "--num", "12", "--val-num", "4", "--seed", "5", "-q")
    assert result.code == 0, result.stderr
    return root


@pytest.fixture(scope="module")
def run(shapes, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("runs") / "unet"
    result = cvtool("train", "segment-semantic", "--data", shapes, "--epochs", "2", *SMALL,
                    "-o", out)
    return out, _summary(result)


def _summary(result) -> dict:
    assert result.code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    return json.loads(lines[0])


def test_run_writes_every_output(run):
    out, summary = run
    for name in ("config.json", "metrics.jsonl", "metrics.json", "curves.png",
                 "best.safetensors", "best.json", "last.safetensors", "last.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / "metrics.json").read_text()) == summary
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2]
    best = rows[summary["best_epoch"] - 1]
    assert summary["miou"] == max(row["miou"] for row in rows) == best["miou"]
    assert set(summary["per_class_iou"]) == {"background", "circle", "square", "triangle"}
    meta = json.loads((out / "best.json").read_text())
    assert meta["task"] == "segment-semantic"
    assert meta["architecture"] == {"builder": "segmentation_models_pytorch:Unet", "kwargs": {
        "encoder_name": "tu-resnet10t", "encoder_weights": None, "encoder_depth": 3,
        "classes": 4, "decoder_channels": [16, 8, 8]}}
    assert meta["preprocessing"]["resize_size"] is None


def test_inference_from_the_run_reproduces_training_miou(run, shapes):
    out, summary = run
    evaluated = out.parent / "eval"
    result = cvtool("segment-semantic", shapes / "val" / "images", "--model", out, "--gt-masks",
                    shapes / "val" / "masks", "--eval", "--device", "cpu", "-o", evaluated,
                    "--format", "jsonl")
    assert result.code == 0, result.stderr
    metrics = json.loads((evaluated / "run.json").read_text())["metrics"]
    assert metrics["miou"] == pytest.approx(summary["miou"], abs=1e-12)
    assert metrics["pixel_accuracy"] == pytest.approx(summary["pixel_accuracy"], abs=1e-12)


def test_resized_training_records_its_size_and_masks_come_back_full_size(shapes, tmp_path):
    out = tmp_path / "resized"
    _summary(cvtool("train", "segment-semantic", "--data", shapes, "--epochs", "1",
                    "--image-size", "64", *SMALL, "-o", out))
    assert json.loads((out / "best.json").read_text())["preprocessing"]["resize_size"] == [64, 64]
    result = cvtool("segment-semantic", shapes / "val" / "images" / "000000.png", "--model", out,
                    "--device", "cpu", "-o", tmp_path / "masks")
    assert result.code == 0, result.stderr
    masks = list((tmp_path / "masks" / "masks").rglob("*.png"))  # not the overlays
    assert masks and all(Image.open(p).size == (128, 128) for p in masks)


def test_losses_leave_ignored_pixels_out():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 8, 8)
    masks = torch.randint(0, 4, (2, 8, 8))
    masks[:, :3] = 255
    changed = logits.clone()
    changed[:, :, :3] = torch.randn(2, 4, 3, 8) * 10
    for name in ("ce", "dice", "focal", "ce+dice", "focal+dice"):
        loss = semantic_loss(name)
        expected = loss(changed, masks).item()
        assert loss(logits, masks).item() == pytest.approx(expected, rel=1e-5), name
    total = semantic_loss("ce+dice")(logits, masks)
    parts = semantic_loss("ce")(logits, masks) + semantic_loss("dice")(logits, masks)
    assert total.item() == pytest.approx(parts.item(), rel=1e-6)


def test_augmentation_moves_the_mask_with_the_pixels(shapes):
    from torchvision.transforms import v2

    data = load_semantic_data(str(shapes), None, pytest.fail)
    plain = SemanticDataset(data.train, data.size, [0.0] * 3, [1.0] * 3, False, False)
    flipped = SemanticDataset(data.train, data.size, [0.0] * 3, [1.0] * 3, True, True)
    assert flipped.augment is not None
    flipped.augment = v2.Compose(flipped.augment.transforms[:2])  # the flips, without jitter
    torch.manual_seed(1)
    seen = set()
    for index in range(len(plain)):
        image, mask = plain[index]
        for _ in range(4):
            moved_image, moved_mask = flipped[index]
            matches = [dims for dims in ([], [-1], [-2], [-2, -1])
                       if torch.equal(moved_image, image.flip(dims))]
            assert matches and torch.equal(moved_mask, mask.flip(matches[0]))
            seen.add(tuple(matches[0]))
    assert len(seen) == 4


def test_bad_data_gives_clear_errors(shapes, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(shapes, broken)
    (broken / "classes.txt").unlink()
    result = cvtool("train", "segment-semantic", "--data", broken, *SMALL, "-o", tmp_path / "a")
    assert result.code == 2 and "classes.txt" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1

    shutil.copy(shapes / "classes.txt", broken / "classes.txt")
    mask = broken / "train" / "masks" / "000003.png"
    values = np.array(Image.open(mask))
    values[0, 0] = 7
    Image.fromarray(values).save(mask)
    result = cvtool("train", "segment-semantic", "--data", broken, *SMALL, "-o", tmp_path / "b")
    assert result.code == 2 and "000003.png" in result.stderr and "value 7" in result.stderr

    values[0, 0] = 255  # the ignore index is allowed
    Image.fromarray(values).save(mask)
    (broken / "train" / "masks" / "000004.png").unlink()
    Image.new("L", (64, 64)).save(broken / "train" / "masks" / "000005.png")
    warnings: list[str] = []
    data = load_semantic_data(str(broken), None, warnings.append)
    assert len(data.train) == 10
    assert len(warnings) == 1 and "skipped 2 images" in warnings[0]

    Image.new("RGB", (128, 128)).save(broken / "train" / "masks" / "000006.png")
    result = cvtool("train", "segment-semantic", "--data", broken, *SMALL, "-o", tmp_path / "c")
    assert result.code == 2 and "single-channel" in result.stderr

    Image.new("RGB", (100, 90)).save(broken / "val" / "images" / "000000.png")
    Image.new("L", (100, 90)).save(broken / "val" / "masks" / "000000.png")
    (broken / "train" / "masks" / "000006.png").unlink()
    result = cvtool("train", "segment-semantic", "--data", broken, *SMALL, "-o", tmp_path / "d")
    assert result.code == 2 and "--image-size" in result.stderr


@pytest.mark.parametrize(("args", "message"), [
    (("--loss", "ce+bce"), "--loss"),
    (("--encoder-depth", "6"), "--encoder-depth"),
    (("--decoder-channels", "16,8"), "--decoder-channels"),
    (("--decoder-channels", "a,b,c"), "--decoder-channels"),
    (("--model", "resnet18"), "classify model"),
    (("--encoder", "resnet1"), "unknown encoder"),
])
def test_bad_options_are_usage_errors(shapes, tmp_path, args, message):
    result = cvtool("train", "segment-semantic", "--data", shapes, *SMALL, *args, "-o",
                    tmp_path / "x")
    assert result.code == 2 and message in result.stderr, result.stderr
