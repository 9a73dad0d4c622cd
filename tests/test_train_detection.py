"""`cvtool train detect|segment-instance` through the real entry point: run outputs, inference
from the run reproducing training's pycocotools figures, augmentation moving boxes and masks with
the pixels, resume after kill -9, fine-tuning a torchvision detector from a file, bad data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from cvtool.data.detection import CocoDataset, annotation_mask, load_detection_data
from cvtool.train.optim import warmup_factor
from tests.clirun import cvtool, kill_after_first_epoch

TINY = ("--width", "8", "--batch-size", "4", "--device", "cpu", "--warmup", "4", "-q")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shapes") / "data"
    result = cvtool("data", "shapes", root, "--num", "12", "--val-num", "4", "--seed", "3", "-q")
    assert result.code == 0, result.stderr
    return root


@pytest.fixture(scope="module")
def instance_run(shapes, tmp_path_factory) -> tuple[Path, dict]:
    run = tmp_path_factory.mktemp("runs") / "instance"
    result = cvtool("train", "segment-instance", "--data", shapes, "--epochs", "2", *TINY,
                    "-o", run)
    return run, _summary(result)


def _summary(result) -> dict:
    assert result.code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1  # one JSON object on stdout, nothing else
    return json.loads(lines[0])


def _history(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{key: value for key, value in row.items() if key != "seconds"} for row in rows]


def _coco_metrics(task: str, run: Path, shapes: Path) -> dict[str, dict[str, float]]:
    out = run.parent / f"{run.name}-{task}-eval"
    result = cvtool(task, shapes / "images" / "val", "--model", run, "--gt",
                    shapes / "annotations" / "val.json", "--eval", "--conf", "0",
                    "--format", "coco", "--device", "cpu", "-o", out)
    assert result.code == 0, result.stderr
    return json.loads((out / "run.json").read_text())["metrics"]


def test_instance_run_writes_every_output(instance_run):
    run, summary = instance_run
    for name in ("config.json", "metrics.jsonl", "metrics.json", "curves.png",
                 "best.safetensors", "best.json", "last.safetensors", "last.json"):
        assert (run / name).is_file(), name
    assert (run / "curves.png").read_bytes().startswith(b"\x89PNG")
    assert json.loads((run / "metrics.json").read_text()) == summary
    for key in ("bbox_map", "bbox_map50", "segm_map", "segm_map50"):
        assert 0 <= summary[key] <= 1
    history = _history(run)
    assert [row["epoch"] for row in history] == [1, 2] and summary["epochs"] == 2
    assert {"train_loss", "loss_mask", "loss_classifier", "lr", "segm_map50"} <= set(history[0])
    best = history[summary["best_epoch"] - 1]
    assert summary["segm_map"] == best["segm_map"]
    # The best epoch has the highest mean of bbox and segm mAP.
    assert best["score"] == (best["bbox_map"] + best["segm_map"]) / 2
    assert best["score"] == max(row["score"] for row in history)
    meta = json.loads((run / "best.json").read_text())
    assert meta["task"] == "segment-instance"
    assert meta["classes"] == ["__background__", "circle", "square", "triangle"]
    assert meta["architecture"]["builder"] == "cvtool.models.small_detection:small_rcnn"
    assert meta["architecture"]["kwargs"]["masks"] is True


def test_inference_from_the_run_reproduces_training_figures(instance_run, shapes):
    run, summary = instance_run
    metrics = _coco_metrics("segment-instance", run, shapes)
    for kind in ("bbox", "segm"):
        # Not two zeros agreeing: at --conf 0 the tiny model's detections find shapes.
        assert max(metrics[kind].values()) > 0.01, metrics[kind]
        assert metrics[kind]["AP"] == pytest.approx(summary[f"{kind}_map"], abs=1e-9)
        assert metrics[kind]["AP50"] == pytest.approx(summary[f"{kind}_map50"], abs=1e-9)
    boxes_only = _coco_metrics("detect", run, shapes)  # Mask R-CNN also serves detect
    assert boxes_only["bbox"]["AP"] == pytest.approx(summary["bbox_map"], abs=1e-9)


def test_detect_run_is_a_box_detector(shapes, tmp_path):
    run = tmp_path / "boxes"
    summary = _summary(cvtool("train", "detect", "--data", shapes, "--epochs", "1", *TINY,
                              "-o", run))
    assert "bbox_map" in summary and "segm_map" not in summary
    meta = json.loads((run / "best.json").read_text())
    assert meta["task"] == "detect" and meta["architecture"]["kwargs"]["masks"] is False
    records = cvtool("detect", shapes / "images" / "val", "--model", run, "--conf", "0",
                     "--device", "cpu").records()
    assert len(records) == 4 and all("mask" not in d for r in records for d in r["detections"])
    refused = cvtool("segment-instance", shapes / "images" / "val", "--model", run)
    assert refused.code == 2 and "detect" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


def test_augmentation_moves_boxes_and_masks_with_the_pixels(shapes):
    data = load_detection_data(str(shapes), masks=True, warn=pytest.fail)
    plain = CocoDataset(data.train, masks=True, augment=False, vflip=False)
    augmented = CocoDataset(data.train, masks=True, augment=True, vflip=True)
    flips = set()
    torch.manual_seed(0)
    for index in range(len(plain)):
        _, original = plain[index]
        for _ in range(4):
            image, target = augmented[index]
            assert torch.equal(target["labels"], original["labels"])
            for box, mask in zip(target["boxes"], target["masks"]):
                ys, xs = np.nonzero(mask.numpy())
                # The box still bounds its mask exactly (COCO boxes come from the masks).
                assert box.tolist() == pytest.approx(
                    [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], abs=1e-4)
            flipped = [torch.equal(target["masks"], original["masks"].flip(dims))
                       for dims in ([], [-1], [-2], [-2, -1])]
            assert sum(flipped) >= 1  # the masks are the originals under some flip
            flips.add(flipped.index(True))
    assert flips == {0, 1, 2, 3}


def test_annotation_masks_from_polygons_and_rles_agree():
    polygon = [[2.0, 2.0, 9.0, 2.0, 9.0, 7.0, 2.0, 7.0]]
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(annotation_mask(polygon, 10, 12)))
    as_string = {"size": rle["size"], "counts": rle["counts"].decode()}
    assert annotation_mask(polygon, 10, 12).sum() == annotation_mask(as_string, 10, 12).sum() > 30
    uncompressed = {"size": [10, 12], "counts": [20, 5, 95]}
    assert annotation_mask(uncompressed, 10, 12).sum() == 5


def test_warmup_is_linear_then_flat():
    assert [warmup_factor(step, 4) for step in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert warmup_factor(0, 0) == 1.0


def test_resume_after_kill_9_loses_and_repeats_no_epoch(shapes, tmp_path):
    args = ["train", "segment-instance", "--data", str(shapes), "--epochs", "3", *TINY,
            "--threads", "1"]
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    kill_after_first_epoch(args, killed)
    # metrics.jsonl follows the committed state; a kill between the two leaves it one behind.
    assert len(_history(killed)) < 3, "the run finished before it could be killed"
    threads = torch.get_num_threads()  # --threads 1 applies to this process from here on
    try:
        resumed = _summary(cvtool("train", "segment-instance", "--resume", killed,
                                  "--device", "cpu", "--threads", "1", "-q"))
        _summary(cvtool(*args, "-o", straight))
    finally:
        torch.set_num_threads(threads)
    assert [row["epoch"] for row in _history(killed)] == [1, 2, 3] and resumed["epochs"] == 3
    assert _history(killed) == _history(straight)
    last_killed = load_file(killed / "last.safetensors")
    last_straight = load_file(straight / "last.safetensors")
    assert all(torch.equal(last_killed[key], last_straight[key]) for key in last_straight)


def test_torchvision_detector_fine_tunes_from_a_weights_file(shapes, tmp_path):
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn

    coco_like = fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None,
                                                      num_classes=91)
    weights = tmp_path / "coco.pth"
    # Like torchvision's released files: batch norms without num_batches_tracked (frozen).
    torch.save({key: value for key, value in coco_like.state_dict().items()
                if not key.endswith("num_batches_tracked")}, weights)
    run = tmp_path / "tuned"
    result = cvtool("train", "detect", "--data", shapes, "--model",
                    "fasterrcnn_mobilenet_v3_large_320_fpn", "--weights", weights,
                    "--epochs", "1", "--batch-size", "4", "--device", "cpu", "-o", run)
    summary = _summary(result)
    assert "fine-tuning from" in result.stderr and "start fresh" in result.stderr
    tuned = load_file(run / "last.safetensors")
    # The backbone starts from the file (batch norms frozen as torchvision does), the class
    # heads from scratch with 3 shape classes + background.
    key = "backbone.body.0.1.weight"
    assert torch.equal(tuned[key], coco_like.state_dict()[key])
    assert tuned["roi_heads.box_predictor.cls_score.weight"].shape[0] == 4
    assert summary["epochs"] == 1


def test_bad_data_gives_one_line_errors_or_warnings(shapes, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(shapes, broken)
    (broken / "annotations" / "val.json").unlink()
    result = cvtool("train", "detect", "--data", broken, *TINY, "-o", tmp_path / "a")
    assert result.code == 2 and "val.json" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1

    result = cvtool("train", "detect", "--data", tmp_path, *TINY, "-o", tmp_path / "b")
    assert result.code == 2 and "annotations" in result.stderr

    shutil.copy(shapes / "annotations" / "val.json", broken / "annotations" / "val.json")
    train = json.loads((broken / "annotations" / "train.json").read_text())
    (broken / "images" / train["images"][0]["file_name"]).unlink()
    train["annotations"][0]["bbox"] = [120, 120, 50, 50]  # out of the 128x128 image
    del train["annotations"][1]["segmentation"]
    (broken / "annotations" / "train.json").write_text(json.dumps(train))
    result = cvtool("train", "segment-instance", "--data", broken, *TINY, "-o", tmp_path / "c")
    assert result.code == 2 and "segmentation" in result.stderr

    warnings: list[str] = []
    data = load_detection_data(str(broken), masks=False, warn=warnings.append)
    assert any("skipped 1 annotations" in w for w in warnings)
    assert any("skipped 1 images" in w and "does not exist" in w for w in warnings)
    assert len(data.train.samples) == 11
    assert data.classes == ["__background__", "circle", "square", "triangle"]


def test_bad_options_are_usage_errors(shapes, tmp_path):
    for args, message in ((("--model", "resnet18"), "classify model"),
                          (("--model", "fasterrcnn_resnet50_fpn"), "no masks"),
                          (("--warmup", "-1"), "--warmup"),
                          (("--weights", "default"), "--weights")):
        result = cvtool("train", "segment-instance", "--data", shapes, *args, "-o",
                        tmp_path / "x", "-q")
        assert result.code == 2 and message in result.stderr, (args, result.stderr)
