"""detect through the real entry point: coordinates, records, filters, formats, artifacts."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from cvtool.io.decode import load_image
from tests.clirun import cvtool
from tests.detecting import (
    CAR,
    FAST_DETECTOR,
    PERSON,
    SSD,
    boxes,
    run,
    save_exif_rotated,
    save_state_dict,
    textured,
)


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("detect-weights")
    return {name: save_state_dict(name, directory) for name in (FAST_DETECTOR, SSD)}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """a: 320x320; b: a stretched 2x wide, 3x tall; c: b stored rotated with an EXIF tag."""
    root = tmp_path_factory.mktemp("scenes")
    textured(320, 320).save(root / "a.png")
    stretched = textured(320, 320).resize((640, 960), Image.Resampling.NEAREST)
    stretched.save(root / "b.png")
    save_exif_rotated(stretched, root / "c.png")
    return root


def test_boxes_are_in_original_pixels_for_other_sizes_and_exif(weights, scenes) -> None:
    # SSDlite resizes every input to 320x320, and b's nearest-neighbour stretch shrinks back to
    # exactly a: the model sees the same tensor, so b's boxes must be a's scaled by (2, 3).
    a, b, c = run("detect", SSD, weights[SSD], scenes / "a.png", scenes / "b.png",
                  scenes / "c.png", "--conf", "0.3").records()
    assert (b["width"], b["height"]) == (c["width"], c["height"]) == (640, 960)
    decoded = [load_image(str(scenes / name)).tobytes() for name in ("b.png", "c.png")]
    assert decoded[0] == decoded[1]
    assert len(boxes(a)) > 3
    scaled = [[x1 * 2, y1 * 3, x2 * 2, y2 * 3] for x1, y1, x2, y2 in boxes(a)]
    for got, expected in zip(boxes(b), scaled, strict=True):
        assert got == pytest.approx(expected, rel=1e-5, abs=1e-3)
    assert boxes(c) == boxes(b)
    assert all(0 <= x1 < x2 <= 640 and 0 <= y1 < y2 <= 960 for x1, y1, x2, y2 in boxes(b))


def test_records_follow_the_contract(weights, scenes) -> None:
    result = run("detect", FAST_DETECTOR, weights[FAST_DETECTOR], scenes / "a.png")
    assert result.code == 0, result.stderr
    (record,) = result.records()
    assert {"path", "ok", "task", "model", "width", "height", "detections"} == set(record)
    assert (record["task"], record["model"], record["ok"]) == ("detect", FAST_DETECTOR, True)
    detection = record["detections"][0]
    assert set(detection) == {"index", "label", "score", "box"}
    assert (detection["index"], detection["label"]) == (PERSON, "person")
    assert all(d["score"] >= 0.5 for d in record["detections"])


def test_conf_and_classes_filter(weights, scenes) -> None:
    def detections(*args: str) -> list[dict]:
        return run("detect", SSD, weights[SSD], scenes / "a.png", *args).records()[0]["detections"]

    everything = detections("--conf", "0")
    assert {d["index"] for d in everything} >= {PERSON, CAR}
    by_label = detections("--conf", "0", "--classes", "Car")
    assert by_label == detections("--conf", "0", "--classes", str(CAR))
    assert by_label == [d for d in everything if d["index"] == CAR]
    both = detections("--conf", "0", "--classes", "person,car")
    assert both == [d for d in everything if d["index"] in (PERSON, CAR)]
    assert detections("--conf", "0.62") == [d for d in everything if d["score"] >= 0.62]


def test_csv_has_one_row_per_detection(weights, scenes) -> None:
    args = (scenes / "a.png", "--conf", "0.3")
    (record,) = run("detect", SSD, weights[SSD], *args).records()
    rows = list(csv.DictReader(io.StringIO(run("detect", SSD, weights[SSD], *args,
                                               "--format", "csv").stdout)))
    assert len(rows) == len(record["detections"])
    first = record["detections"][0]
    assert [float(rows[0][k]) for k in ("x1", "y1", "x2", "y2")] == pytest.approx(first["box"])
    assert (rows[0]["rank"], rows[0]["label"]) == ("1", first["label"])


def test_annotated_images_and_crops_mirror_the_inputs(weights, scenes, tmp_path) -> None:
    output = tmp_path / "out"
    result = run("detect", SSD, weights[SSD], scenes / "a.png", "--conf", "0.3",
                 "-o", output, "--save-crops")
    assert result.code == 0, result.stderr
    (record,) = result.records()
    mirrored = Path(os.path.abspath(scenes / "a.png")).relative_to("/")
    with Image.open(output / mirrored) as annotated:
        assert annotated.size == (320, 320)
    # The crops' folder does not look like a PNG itself: every **/*.png is an image.
    crops = sorted((output / "crops" / mirrored.parent / "a_png").iterdir())
    assert all(path.is_file() for path in (output / "crops").rglob("*.png"))
    assert [p.name for p in crops][:2] == ["000_person.png", "001_person.png"]
    assert len(crops) == len(record["detections"])
    x1, y1, x2, y2 = record["detections"][0]["box"]
    with Image.open(crops[0]) as first:
        assert abs(first.width - (x2 - x1)) <= 2 and abs(first.height - (y2 - y1)) <= 2
    assert json.loads((output / "run.json").read_text())["models"][0]["name"] == SSD


@pytest.mark.parametrize("args, message", [
    (("--classes", "unicorn"), "unknown class 'unicorn'"),
    (("--eval",), "--eval needs --gt"),
    (("--save-crops",), "--save-crops needs --output"),
    (("--conf", "1.5"), "invalid --conf"),
    (("-m", "resnet18"), "resnet18 is a classify model"),
    (("--format", "coco", "-m", "fasterrcnn_mobilenet_v3_large_fpn", "--weights", "nope.pth"),
     "weights file nope.pth does not exist"),
])
def test_usage_errors_are_one_line(weights, scenes, args, message) -> None:
    result = cvtool("detect", "--weights", weights[SSD], "-m", SSD, str(scenes / "a.png"), *args)
    assert result.code == 2 and message in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and result.stdout == ""


def test_segment_instance_refuses_a_box_only_model(weights, scenes) -> None:
    result = run("segment-instance", SSD, weights[SSD], scenes / "a.png")
    assert result.code == 2 and "cvtool models segment-instance" in result.stderr


def test_missing_default_weights_offline_exit_3(scenes, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("CVTOOL_OFFLINE", "1")
    result = cvtool("detect", str(scenes / "a.png"))
    assert result.code == 3, result.stderr
    assert "cvtool models pull fasterrcnn_mobilenet_v3_large_fpn" in result.stderr


def test_failed_input_is_a_record_and_exit_1(weights, scenes, tmp_path) -> None:
    (tmp_path / "broken.png").write_bytes(b"not a png")
    result = run("detect", SSD, weights[SSD], scenes / "a.png", tmp_path / "broken.png")
    assert result.code == 1
    good, bad = result.records()
    assert good["ok"] and not bad["ok"] and bad["error"]["type"] == "UnidentifiedImage"
