"""--format coco, --gt file-name matching and --eval against pycocotools run directly."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from cvtool.core.status import UsageError
from cvtool.io.coco import STAT_NAMES, load_ground_truth
from tests.detecting import CAR, PERSON, SSD, run, save_state_dict, textured


@pytest.fixture(scope="module")
def ssd_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_state_dict(SSD, tmp_path_factory.mktemp("coco-weights"))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("coco")
    (root / "images" / "sub").mkdir(parents=True)
    textured(320, 320, seed=1).save(root / "images" / "one.png")
    textured(256, 320, seed=2).save(root / "images" / "sub" / "two.png")
    return root


def _ground_truth(annotations: list[dict], **changes: object) -> dict:
    images = [{"id": 7, "file_name": "images/one.png", "width": 320, "height": 320},
              {"id": 9, "file_name": "sub/two.png", "width": 256, "height": 320}]
    categories = [{"id": PERSON, "name": "person"}, {"id": CAR, "name": "car"}]
    return {"images": images, "annotations": annotations, "categories": categories, **changes}


def _annotation(number: int, image_id: int, box: list[float], category: int = PERSON) -> dict:
    return {"id": number, "image_id": image_id, "category_id": category, "bbox": box,
            "area": box[2] * box[3], "iscrowd": 0}


def _write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


def _direct_stats(gt_path: Path, results: list[dict]) -> list[float]:
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        evaluator = COCOeval(gt, gt.loadRes(results), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return list(evaluator.stats)


def test_coco_results_load_with_loadres_and_match_gt_by_file_name(ssd_weights, dataset,
                                                                   tmp_path) -> None:
    gt_path = _write(tmp_path / "gt.json", _ground_truth([_annotation(1, 7, [10, 10, 50, 80])]))
    result = run("detect", SSD, ssd_weights, dataset / "images", "--conf", "0.3",
                 "--format", "coco", "--gt", gt_path)
    assert result.code == 0, result.stderr
    results = json.loads(result.stdout)
    assert {r["image_id"] for r in results} == {7, 9}
    assert set(results[0]) == {"image_id", "category_id", "bbox", "score"}
    with contextlib.redirect_stdout(io.StringIO()):
        loaded = COCO(str(gt_path)).loadRes(results)
    assert len(loaded.getAnnIds()) == len(results)


def test_coco_without_gt_numbers_inputs_and_names_files(ssd_weights, dataset) -> None:
    result = run("detect", SSD, ssd_weights, dataset / "images", "--conf", "0.3",
                 "--format", "coco")
    results = json.loads(result.stdout)
    assert {(r["image_id"], Path(r["file_name"]).name) for r in results} == \
        {(1, "one.png"), (2, "two.png")}


def test_eval_equals_pycocotools_on_the_same_files(ssd_weights, dataset, tmp_path) -> None:
    # Ground truth from some of the detections, shrunk a little, plus a missed object.
    (one, two) = run("detect", SSD, ssd_weights, dataset / "images", "--conf", "0.3").records()
    boxes = [(7, d["box"]) for d in one["detections"][::3]] + \
            [(9, d["box"]) for d in two["detections"][::4]]
    annotations = [_annotation(n, image_id, [x1, y1, x2 - x1 - 3, y2 - y1 - 5])
                   for n, (image_id, (x1, y1, x2, y2)) in enumerate(boxes, start=1)]
    annotations.append(_annotation(len(annotations) + 1, 9, [5, 5, 120, 150], CAR))
    gt_path = _write(tmp_path / "gt.json", _ground_truth(annotations))
    result = run("detect", SSD, ssd_weights, dataset / "images", "--conf", "0.3",
                 "--format", "coco", "--gt", gt_path, "--eval", "-o", tmp_path / "out")
    assert result.code == 0, result.stderr
    metrics = json.loads((tmp_path / "out" / "run.json").read_text())["metrics"]["bbox"]
    expected = _direct_stats(gt_path, json.loads(result.stdout))
    assert [metrics[name] for name in STAT_NAMES] == expected
    assert 0 < metrics["AP50"] < 1 and "skipped" not in result.stderr
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all" in result.stderr


@pytest.mark.parametrize("text, message", [
    ("{not json", "cannot read --gt"),
    ('{"annotations": []}', 'no "images" list'),
    ('{"images": [{"id": 1}]}', 'integer "id" and a "file_name"'),
    ('[1, 2]', 'no "images" list'),
    ('{"images": [{"id": 1, "file_name": "a"}, {"id": 1, "file_name": "b"}]}', "not unique"),
])
def test_malformed_gt_is_a_one_line_usage_error(ssd_weights, dataset, tmp_path, text,
                                                message) -> None:
    (tmp_path / "gt.json").write_text(text)
    result = run("detect", SSD, ssd_weights, dataset / "images", "--format", "coco",
                 "--gt", tmp_path / "gt.json", "--eval")
    assert result.code == 2 and message in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and result.stdout == ""


def test_unusable_annotations_are_skipped_with_a_warning(tmp_path) -> None:
    annotations = [_annotation(1, 7, [10, 10, 50, 80]),
                   _annotation(2, 99, [10, 10, 50, 80]),  # no such image
                   _annotation(3, 7, [300, 10, 50, 80]),  # past the right edge
                   _annotation(4, 9, [10, 10, -5, 80]),  # negative width
                   {"id": 5, "image_id": 9, "category_id": PERSON}]  # no bbox
    warnings: list[str] = []
    data = _write(tmp_path / "gt.json", _ground_truth(annotations, categories=None))
    ground_truth = load_ground_truth(data, warnings.append)
    assert [a["id"] for a in ground_truth["annotations"]] == [1]
    assert ground_truth["categories"] == [{"id": PERSON, "name": str(PERSON)}]
    assert len(warnings) == 1 and "skipped 4 annotations" in warnings[0]


def test_empty_annotations_and_unmatched_inputs_warn_not_crash(ssd_weights, dataset,
                                                               tmp_path) -> None:
    gt = _ground_truth([])
    gt["images"] = gt["images"][:1]  # two.png is not in the ground truth
    gt_path = _write(tmp_path / "gt.json", gt)
    result = cvtool_eval(ssd_weights, dataset, gt_path, tmp_path / "out", quiet=False)
    assert result.code == 0, result.stderr
    assert "no usable annotations" in result.stderr and "two.png is not in --gt" in result.stderr
    metrics = json.loads((tmp_path / "out" / "run.json").read_text())["metrics"]["bbox"]
    assert set(metrics.values()) == {-1.0}


def test_gt_file_that_does_not_exist_is_a_usage_error(tmp_path) -> None:
    with pytest.raises(UsageError, match="cannot read --gt"):
        load_ground_truth(tmp_path / "missing.json", print)


def cvtool_eval(weights: Path, dataset: Path, gt_path: Path, output: Path, quiet: bool = True):
    return run("detect", SSD, weights, dataset / "images", "--conf", "0.3", "--gt", gt_path,
               "--eval", "-o", output, quiet=quiet)
