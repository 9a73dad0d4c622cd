"""Scoring inference runs (issue 31, first part): `classify --eval` over a labelled folder or
`--gt labels.csv`, equal to scikit-learn on the same predictions, and the quality gate
`--fail-under METRIC=VALUE` (exit 4 after every record and file is written) for every task."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import classification_report, top_k_accuracy_score

from tests.clirun import ROOT, cvtool
from tests.clirun import cvtool as cvtool_cli

DIGITS = sorted((ROOT / "sample_images" / "digits").glob("*.png"))


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample digits in class folders (`digit_3_0123.png` is a 3), one of them a 7
    filed as a 1 so the model is wrong there, and a folder whose name is no category."""
    top = tmp_path_factory.mktemp("labelled") / "digits"
    for path in DIGITS:
        label = path.name.split("_")[1]
        (top / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, top / label / path.name)
    seven = next(top.glob("7/*.png"))
    (top / "1").mkdir(exist_ok=True)
    shutil.move(seven, top / "1" / seven.name)
    (top / "unknown").mkdir()
    shutil.copy(DIGITS[0], top / "unknown" / "x.png")
    return top


def _truth(path: str) -> int:
    return int(Path(path).parent.name)


def test_classify_eval_equals_scikit_learn(labelled: Path, tmp_path: Path) -> None:
    done = cvtool("classify", labelled, "-m", "digits-cnn", "--topk", "10", "--eval",
                  "-o", tmp_path / "run")
    assert done.code == 0, done.stderr
    assert "1 input has no label" in done.stderr and "top-1" in done.stderr
    records = [r for r in done.records() if Path(r["path"]).parent.name != "unknown"]
    y_true = [_truth(r["path"]) for r in records]
    scores = np.zeros((len(records), 10))
    for row, record in enumerate(records):
        for item in record["predictions"]:
            scores[row, item["index"]] = item["score"]
    y_pred = scores.argmax(1)
    metrics = json.loads((tmp_path / "run" / "run.json").read_text())["metrics"]
    report = classification_report(y_true, y_pred, output_dict=True, zero_division=0)
    assert metrics["images"] == len(records) == 20
    assert metrics["top1"] == pytest.approx(report["accuracy"])
    assert metrics["top1"] < 1.0  # the misfiled 7
    assert metrics["top5"] == pytest.approx(top_k_accuracy_score(y_true, scores, k=5,
                                                                 labels=list(range(10))))
    for average in ("macro", "weighted"):
        for key in ("precision", "recall"):
            assert metrics[average][key] == pytest.approx(report[f"{average} avg"][key])
        assert metrics[average]["f1"] == pytest.approx(report[f"{average} avg"]["f1-score"])
    for row in metrics["per_class"]:
        expected = report[str(row["index"])]
        assert row["precision"] == pytest.approx(expected["precision"])
        assert row["recall"] == pytest.approx(expected["recall"])
        assert row["support"] == expected["support"]
    counts = np.asarray(metrics["confusion"]["counts"])
    assert counts.sum() == len(records) and np.trace(counts) == sum(
        t == p for t, p in zip(y_true, y_pred))
    # ECE: 15 equal bins of the top-1 confidence
    confidence, correct = scores.max(1), y_pred == np.asarray(y_true)
    bins = np.clip(np.ceil(confidence * 15).astype(int) - 1, 0, 14)
    ece = sum((bins == b).mean() * abs(correct[bins == b].mean() - confidence[bins == b].mean())
              for b in range(15) if (bins == b).any())
    assert metrics["ece"] == pytest.approx(ece)


def test_gt_csv_and_label_map_name_the_labels(labelled: Path, tmp_path: Path) -> None:
    inputs = sorted(labelled.glob("[0-9]/*.png"))
    gt = tmp_path / "labels.csv"
    gt.write_text("path,label\n" + "".join(f"{p.parent.name}/{p.name},d{p.parent.name}\n"
                                           for p in inputs))
    mapping = tmp_path / "map.csv"
    mapping.write_text("folder,label\n" + "".join(f"d{n},{n}\n" for n in range(10)))
    done = cvtool("classify", *inputs, "-m", "digits-cnn", "--gt", gt, "--label-map", mapping,
                  "--eval", "-o", tmp_path / "run")
    assert done.code == 0, done.stderr
    metrics = json.loads((tmp_path / "run" / "run.json").read_text())["metrics"]
    folders = cvtool("classify", *inputs, "-m", "digits-cnn", "--eval", "-o", tmp_path / "f")
    assert folders.code == 0
    by_folder = json.loads((tmp_path / "f" / "run.json").read_text())["metrics"]
    assert metrics["images"] == by_folder["images"] == 20
    for key in ("top1", "top5", "per_class", "confusion", "macro"):
        assert metrics[key] == by_folder[key]
    assert metrics["ece"] == pytest.approx(by_folder["ece"], abs=1e-6)  # float32 batches


def test_the_gate_is_exit_4_after_writing_everything(labelled: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = cvtool("classify", labelled, "-m", "digits-cnn", "--eval", "-o", out,
                  "--fail-under", "top1=0.999", "--fail-under", "class:7/recall=0.5",
                  "--fail-under", "macro_f1=0.1")
    assert done.code == 4, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "top1" in lines[0] and "0.999" in lines[0]
    assert "macro_f1" not in lines[0] and "class:7" not in lines[0]
    assert len(done.records()) == 21
    info = json.loads((out / "run.json").read_text())
    assert info["gate"]["passed"] is False and info["complete"] is True
    passed = cvtool("classify", labelled, "-m", "digits-cnn", "--eval", "--fail-under",
                    "top1=0.5")
    assert passed.code == 0, passed.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--fail-under", "top9=0.5"], "unknown metric 'top9' for classify; valid: top1"),
    (["--fail-under", "top1"], "expected METRIC=NUMBER"),
    (["--fail-under", "top1=0.5", "--no-eval"], "--fail-under needs --eval"),
    (["--label-map", "x.csv"], "--label-map goes with --eval"),
])
def test_gate_usage_errors(labelled: Path, args: list[str], message: str) -> None:
    args = [arg for arg in args if arg != "--no-eval"] + ([] if "--no-eval" in args
                                                         or "--label-map" in args
                                                         else ["--eval"])
    done = cvtool("classify", labelled, "-m", "digits-cnn", *args)
    assert done.code == 2 and message in done.stderr, done.stderr


def test_an_unknown_class_bar_is_exit_2_naming_the_classes(labelled: Path) -> None:
    done = cvtool("classify", labelled, "-m", "digits-cnn", "--eval", "--fail-under",
                  "class:cat/recall=0.5")
    assert done.code == 2 and "no class 'cat'" in done.stderr, done.stderr


def test_the_gate_holds_detection_and_semantic_metrics(tmp_path: Path) -> None:
    data = tmp_path / "shapes"
    made = cvtool("data", "shapes", data, "--num", "0", "--val-num", "4", "--seed", "3")
    assert made.code == 0, made.stderr
    images = data / "images" / "val"
    gt = data / "annotations" / "val.json"
    low = cvtool("detect", images, "-m", "shapes-maskrcnn", "--gt", gt, "--eval",
                 "--fail-under", "map50=0.01")
    high = cvtool("segment-instance", images, "-m", "shapes-maskrcnn", "--gt", gt, "--eval",
                  "--fail-under", "segm_map=1.01")
    assert low.code == 0 and high.code == 4, (low.stderr, high.stderr)
    assert "segm_map" in high.stderr
    masks = data / "val" / "masks"
    semantic = cvtool("segment-semantic", data / "val" / "images", "-m", "shapes-unet",
                      "--gt-masks", masks, "--eval", "--fail-under", "miou=1.01", "--fail-under",
                      "class:circle/iou=0.01")
    assert semantic.code == 4 and "miou" in semantic.stderr and "circle" not in \
        semantic.stderr.splitlines()[-1], semantic.stderr
    unknown = cvtool("detect", images, "-m", "shapes-maskrcnn", "--gt", gt, "--eval",
                     "--fail-under", "miou=0.5")
    assert unknown.code == 2 and "valid: map" in unknown.stderr


def test_per_class_detection_rows_equal_pycocotools_per_category(tmp_path: Path) -> None:
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    data = tmp_path / "shapes"
    made = cvtool("data", "shapes", data, "--num", "0", "--val-num", "8", "--seed", "11")
    assert made.code == 0, made.stderr
    gt = data / "annotations" / "val.json"
    done = cvtool("segment-instance", data / "images" / "val", "-m", "shapes-maskrcnn", "--gt",
                  gt, "--eval", "--conf", "0.05", "--format", "coco", "-o", tmp_path / "out",
                  "--fail-under", "class:circle/AP50=0.0")
    assert done.code == 0, done.stderr
    assert "per class (bbox" in done.stderr and "per class (segm" in done.stderr
    metrics = json.loads((tmp_path / "out" / "run.json").read_text())["metrics"]
    results = json.loads(done.stdout)
    truth = json.loads(gt.read_text())
    with contextlib.redirect_stdout(io.StringIO()):
        reference = COCO(str(gt))
        detections = reference.loadRes(results)
        for iou_type in ("bbox", "segm"):
            rows = {row["id"]: row for row in metrics["per_class"][iou_type]}
            assert set(rows) == {category["id"] for category in truth["categories"]}
            for category_id, row in rows.items():
                evaluator = COCOeval(reference, detections, iou_type)
                evaluator.params.catIds = [category_id]
                evaluator.evaluate(), evaluator.accumulate(), evaluator.summarize()
                assert row["AP"] == pytest.approx(evaluator.stats[0])
                assert row["AP50"] == pytest.approx(evaluator.stats[1])
                assert row["recall"] == pytest.approx(evaluator.stats[8])  # AR@100
    # tp + misses is the ground truth of each class; tp + fp the detections kept (<= 100 each)
    for row in metrics["per_class"]["bbox"]:
        objects = sum(a["category_id"] == row["id"] for a in truth["annotations"])
        found = sum(r["category_id"] == row["id"] for r in results)
        assert row["tp"] + row["misses"] == objects and row["tp"] + row["fp"] == found


def test_python_evaluate_gives_the_clis_metrics(labelled: Path, tmp_path: Path) -> None:
    import cvtool

    done = _cli_metrics(labelled, tmp_path)
    with cvtool.Classifier(model="digits-cnn", device="cpu", topk=10) as classifier:
        on_predictor = classifier.evaluate(labelled)
        records = list(classifier.predict(labelled, keep_images=False))
        from_records = cvtool.evaluate(records, categories=classifier.categories)
    as_dicts = cvtool.evaluate([record.to_dict() for record in records],
                               {r.path: Path(r.path).parent.name for r in records},
                               categories=[str(n) for n in range(10)])
    for metrics in (on_predictor, from_records, as_dicts):
        assert metrics["top1"] == done["top1"] and metrics["per_class"] == done["per_class"]
    assert done["images"] == 20


def _cli_metrics(labelled: Path, tmp_path: Path) -> dict:
    done = cvtool("classify", labelled, "-m", "digits-cnn", "--topk", "10", "--eval", "-o",
                  tmp_path / "cli")
    assert done.code == 0, done.stderr
    return json.loads((tmp_path / "cli" / "run.json").read_text())["metrics"]


def test_python_evaluate_scores_detections_and_semantic_masks(tmp_path: Path) -> None:
    import cvtool

    data = tmp_path / "shapes"
    assert cvtool_cli("data", "shapes", data, "--num", "0", "--val-num", "3").code == 0
    gt = data / "annotations" / "val.json"
    out = tmp_path / "run"
    done = cvtool_cli("detect", data / "images" / "val", "-m", "shapes-maskrcnn", "--gt", gt,
                      "--eval", "-o", out)
    assert done.code == 0, done.stderr
    cli = json.loads((out / "run.json").read_text())["metrics"]
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert cvtool.evaluate(records, gt) == cli
    with cvtool.Detector(model="shapes-maskrcnn", device="cpu") as detector:
        assert detector.evaluate(data / "images" / "val", gt)["bbox"] == cli["bbox"]
    with cvtool.SemanticSegmenter(model="shapes-unet", device="cpu",
                                  gt_masks=data / "val" / "masks") as segmenter:
        semantic = segmenter.evaluate(data / "val" / "images")
    assert semantic["images"] == 3 and 0 <= semantic["miou"] <= 1


@pytest.fixture(scope="module")
def weaker_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("weak") / "linear"
    done = cvtool("train", "classify", "--data", "digits", "--model", "linear", "--epochs", "1",
                  "--lr", "0.0005", "-o", run, "-q")
    assert done.code == 0, done.stderr
    return run


def test_compare_two_runs_with_a_bootstrap_and_a_regression_gate(
        labelled: Path, weaker_model: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for model, out in (("digits-cnn", a), (weaker_model, b)):
        done = cvtool("classify", labelled, "-m", model, "--eval", "-o", out, "-q")
        assert done.code == 0, done.stderr
    metrics = [json.loads((run / "run.json").read_text())["metrics"] for run in (a, b)]
    done = cvtool("compare", a, b, "--bootstrap", "500", "--seed", "3", "--format", "jsonl")
    assert done.code == 0, done.stderr
    changed = done.records()
    answers = [{r["path"]: r["predictions"][0]["label"]
                for r in map(json.loads, (run / "records.jsonl").read_text().splitlines())}
               for run in (a, b)]
    assert [row["path"] for row in changed] == [p for p in answers[0]
                                                if answers[0][p] != answers[1][p]]
    assert all(row["a"] == answers[0][row["path"]] and row["b"] == answers[1][row["path"]]
               for row in changed)
    difference = metrics[1]["top1"] - metrics[0]["top1"]
    assert f"{difference:+.4f}" in done.stderr
    line = next(line for line in done.stderr.splitlines() if "bootstrap interval" in line)
    low, high = (float(v) for v in line.split("[")[1].rstrip("]").split(", "))
    assert low <= difference <= high and low < high
    again = cvtool("compare", a, b, "--bootstrap", "500", "--seed", "3", "--format", "jsonl")
    assert line in again.stderr  # seeded
    tolerance = abs(difference) / 2 if difference < 0 else 0.0
    gated = cvtool("compare", a, b, "--fail-on-regression", f"top1={tolerance}")
    assert gated.code == (4 if difference < 0 else 0), gated.stderr
    if difference < 0:
        assert "regression beyond the allowed drop: top1" in gated.stderr
    assert cvtool("compare", a, a, "--fail-on-regression", "top1=0").code == 0
    unknown = cvtool("compare", a, b, "--fail-on-regression", "miou=0.1")
    assert unknown.code == 2 and "valid: top1" in unknown.stderr
