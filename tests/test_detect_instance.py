"""segment-instance with Mask R-CNN: masks as COCO RLE in original pixels, artifacts, --eval."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

import cvtool.models.detection as detection
from cvtool.io.coco import STAT_NAMES, decode_mask
from tests.detecting import (
    MASKRCNN,
    PERSON,
    boxes,
    run,
    save_exif_rotated,
    save_state_dict,
    textured,
)


@pytest.fixture(autouse=True)
def small_inputs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Mask R-CNN resizes to 800 px (seconds per image on CPU); 128 px keeps tests quick."""
    build = detection.build_detector

    def shrunk(*args, **kwargs):
        module = build(*args, **kwargs)
        module.transform.min_size, module.transform.max_size = (128,), 256
        return module

    monkeypatch.setattr(detection, "build_detector", shrunk)


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_state_dict(MASKRCNN, tmp_path_factory.mktemp("maskrcnn"))


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """a: 128x128; b: a at twice the size (the model sees the same tensor); c: b EXIF-rotated."""
    root = tmp_path_factory.mktemp("instance")
    textured(128, 128, block=8).save(root / "a.png")
    doubled = textured(128, 128, block=8).resize((256, 256), Image.Resampling.NEAREST)
    doubled.save(root / "b.png")
    save_exif_rotated(doubled, root / "c.png")
    return root


def _instances(weights: Path, *args: object) -> list[dict]:
    result = run("segment-instance", MASKRCNN, weights, *args)
    assert result.code == 0, result.stderr
    return result.records()


def test_masks_are_rle_in_original_pixels(weights, scenes) -> None:
    # One batch of three, whatever the machine's load: the model has random weights, whose
    # near-tied scores a batch of one would round differently (decoding in this thread keeps
    # the loop from answering a partial batch while a slow decode is still under way).
    a, b, c = _instances(weights, scenes / "a.png", scenes / "b.png", scenes / "c.png",
                         "-b", "3", "--workers", "0")
    assert a["detections"] and a["detections"][0]["index"] == PERSON
    for doubled, box in zip(boxes(b), boxes(a), strict=True):
        # Resizing to 800 px makes near-identical tensors; a hundredth of a pixel allows for it.
        assert doubled == pytest.approx([v * 2 for v in box], abs=1e-2)
    assert c["detections"] == b["detections"]
    for record in (a, b):
        for found in record["detections"]:
            mask = decode_mask(found["mask"])
            assert found["mask"]["size"] == [record["height"], record["width"]]
            assert found["area"] == mask.sum() > 0
            rows, columns = np.nonzero(mask)
            x1, y1, x2, y2 = found["box"]
            # Mask R-CNN pastes its 28x28 mask into the box grown by one mask cell per side.
            pad_x, pad_y = 1 + (x2 - x1) / 28, 1 + (y2 - y1) / 28
            assert x1 - pad_x <= columns.min() and columns.max() <= x2 + pad_x
            assert y1 - pad_y <= rows.min() and rows.max() <= y2 + pad_y
    small, large = decode_mask(a["detections"][0]["mask"]), decode_mask(b["detections"][0]["mask"])
    shrunk = large[::2, ::2]
    assert (small & shrunk).sum() / (small | shrunk).sum() > 0.9


def test_detect_runs_mask_rcnn_without_masks(weights, scenes) -> None:
    (record,) = run("detect", MASKRCNN, weights, scenes / "a.png").records()
    (instance,) = _instances(weights, scenes / "a.png")
    assert record["task"] == "detect" and set(record["detections"][0]) == {
        "index", "label", "score", "box"}
    assert boxes(record) == boxes(instance)


def test_annotated_image_has_translucent_masks_and_csv_has_areas(weights, scenes,
                                                                 tmp_path) -> None:
    output = tmp_path / "out"
    (record,) = _instances(weights, scenes / "a.png", "-o", output)
    annotated = next(output.rglob("a.png"))
    original = np.asarray(Image.open(scenes / "a.png"), dtype=float)
    drawn = np.asarray(Image.open(annotated), dtype=float)
    inside = decode_mask(record["detections"][0]["mask"])
    assert np.abs(drawn - original)[inside].mean() > 5  # tinted
    # One detection drawn alone: everywhere but its mask, box and tag (where the layout put
    # it) the scene is untouched; inside, the mask's colour is blended in.
    from cvtool.io.annotate import (
        draw_detections,
        label_layout,
        label_padding,
        text_mask,
        text_size,
    )

    first = record["detections"][0]
    alone = np.asarray(draw_detections(Image.open(scenes / "a.png"), [first]), dtype=float)
    drawn_on = inside.astype(bool).copy()
    x1, y1, x2, y2 = (round(v) for v in first["box"])
    drawn_on[max(0, y1 - 2):y2 + 3, max(0, x1 - 2):x2 + 3] = True
    size = text_size(alone.shape[1::-1])
    (left, top, right, bottom), = label_layout(
        [first["box"]], [text_mask(f"{first['label']} {first['score']:.2f}", size).size],
        alone.shape[1::-1], label_padding(size))
    drawn_on[top:bottom, left:right] = True
    assert (~drawn_on).sum() > 0.1 * drawn_on.size
    assert np.array_equal(alone[~drawn_on], original[~drawn_on])
    result = run("segment-instance", MASKRCNN, weights, scenes / "a.png", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [int(r["area"]) for r in rows] == [d["area"] for d in record["detections"]]


def test_eval_reports_box_and_mask_metrics_as_pycocotools_does(weights, scenes, tmp_path) -> None:
    (record,) = _instances(weights, scenes / "a.png")
    annotations = [{"id": n, "image_id": 1, "category_id": PERSON, "iscrowd": 0,
                    "bbox": [x1, y1, x2 - x1, y2 - y1], "area": d["area"],
                    "segmentation": d["mask"]}
                   for n, d in enumerate(record["detections"][::5], start=1)
                   for x1, y1, x2, y2 in [d["box"]]]
    gt = {"images": [{"id": 1, "file_name": "a.png", "width": 128, "height": 128}],
          "annotations": annotations, "categories": [{"id": PERSON, "name": "person"}]}
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(gt))
    result = run("segment-instance", MASKRCNN, weights, scenes / "a.png", "--format", "coco",
                 "--gt", gt_path, "--eval", "-o", tmp_path / "out")
    metrics = json.loads((tmp_path / "out" / "run.json").read_text())["metrics"]
    results = json.loads(result.stdout)
    with contextlib.redirect_stdout(io.StringIO()):
        reference = COCO(str(gt_path))
        detections = reference.loadRes(results)
        for iou_type in ("bbox", "segm"):
            evaluator = COCOeval(reference, detections, iou_type)
            evaluator.evaluate(), evaluator.accumulate(), evaluator.summarize()
            assert [metrics[iou_type][name] for name in STAT_NAMES] == list(evaluator.stats)
    assert metrics["segm"]["AP50"] > 0
