"""The Python API against the CLI: the same records, the same pictures, the same summaries, for
every task; in-memory inputs as files; options as plain data another process can rebuild from."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cvtool
from tests.clirun import ROOT, same
from tests.clirun import cvtool as cli

DIGITS = sorted((ROOT / "sample_images" / "digits").glob("*.png"))[:6]
SHAPES = sorted((ROOT / "sample_images" / "shapes").glob("shapes_*.png"))[:4]
TASKS = {  # predictor, its options, the CLI's arguments for the same run, inputs
    "classify": (cvtool.Classifier, {"model": "digits-cnn", "topk": 3},
                 ["classify", "-m", "digits-cnn", "--topk", "3"], DIGITS),
    "detect": (cvtool.Detector, {"model": "shapes-maskrcnn", "conf": 0.3},
               ["detect", "-m", "shapes-maskrcnn", "--conf", "0.3"], SHAPES),
    "segment-instance": (cvtool.InstanceSegmenter, {"model": "shapes-maskrcnn"},
                         ["segment-instance", "-m", "shapes-maskrcnn"], SHAPES),
    "segment-semantic": (cvtool.SemanticSegmenter, {"model": "shapes-unet"},
                         ["segment-semantic", "-m", "shapes-unet"], SHAPES),
}


def test_import_cvtool_stays_light() -> None:
    code = ("import sys, cvtool; cvtool.ClassifyOptions; cvtool.Record; "
            "print(sorted(m for m in ('torch', 'torchvision', 'PIL') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("task", TASKS)
def test_records_equal_the_clis(task: str, tmp_path: Path) -> None:
    predictor_type, options, arguments, inputs = TASKS[task]
    missing = tmp_path / "missing.png"
    paths = [*map(str, inputs), str(missing)]
    result = cli(*arguments, *paths, "--device", "cpu", "--format", "jsonl")
    assert result.code == 1  # the missing file fails, the rest go on
    predictor = predictor_type(device="cpu", **options)
    records = list(predictor.predict(paths))
    assert same([record.to_dict() for record in records], result.records())
    assert [type(record).__name__ for record in records[:1]] == [
        {"classify": "ClassifyRecord", "segment-semantic": "SemanticRecord"}.get(
            task, "DetectionRecord")]
    assert not records[-1].ok and records[-1].error.type == "FileNotFoundError"
    assert all(record.ok for record in records[:-1])



def _in_memory(path: Path) -> list[object]:
    rgb = Image.open(path).convert("RGB")
    array = np.asarray(rgb)
    return [Image.open(path), array, torch.from_numpy(array.copy()).permute(2, 0, 1),
            torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255]


@pytest.mark.parametrize("task", ["classify", "segment-instance", "segment-semantic"])
def test_an_image_in_memory_gives_the_files_record(task: str) -> None:
    predictor_type, options, _, inputs = TASKS[task]
    predictor = predictor_type(device="cpu", **options)
    path = inputs[1]
    from_file, *from_memory = predictor.predict([path, *_in_memory(path)])
    expected = {**from_file.to_dict(), "path": None}
    for position, record in enumerate(from_memory, start=1):
        assert record.path == f"memory:{position}"
        assert same({**record.to_dict(), "path": None}, expected)


def test_inputs_mix_in_one_call_and_bad_ones_are_records(tmp_path: Path) -> None:
    (tmp_path / "broken.png").write_bytes(b"not a png")
    classifier = cvtool.Classifier(model="digits-cnn", device="cpu")
    array = np.asarray(Image.open(DIGITS[0]).convert("RGB"))
    records = list(classifier.predict([
        str(DIGITS[1]), array, tmp_path / "broken.png", {"not": "an image"},
        np.zeros((4, 4), np.float32), torch.full((3, 4, 4), 2.0), np.zeros((0, 5, 3), np.uint8),
        str(ROOT / "sample_images" / "digits" / "digit_1_*.png")]))
    assert records[0].path == str(DIGITS[1]) and records[1].path == "memory:1"
    assert [r.error.type for r in records[2:7]] == ["UnidentifiedImage", "UnsupportedInput",
                                                    "InvalidArray", "InvalidArray",
                                                    "InvalidArray"]
    assert [r.path for r in records[3:7]] == [f"memory:{n}" for n in range(3, 7)]
    globbed = records[7:]
    assert len(globbed) == len(list((ROOT / "sample_images" / "digits").glob("digit_1_*.png")))
    assert all(r.ok and r.top.label == "1" for r in globbed)
    assert records[1].top == records[1].predictions[0]
    assert records[1].predictions[0].label == "0" and len(records[1].predictions) == 5


def test_draw_is_what_the_cli_writes(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    shape = SHAPES[1].relative_to(ROOT)
    out = tmp_path / "out"
    assert cli("segment-instance", shape, "-m", "shapes-maskrcnn", "--device", "cpu", "-o",
               out / "i").code == 0
    assert cli("segment-semantic", shape, "-m", "shapes-unet", "--device", "cpu", "-o",
               out / "s").code == 0
    (instances,) = cvtool.InstanceSegmenter(model="shapes-maskrcnn", device="cpu").predict(shape)
    (semantic,) = cvtool.SemanticSegmenter(model="shapes-unet", device="cpu").predict(shape)
    assert np.array_equal(np.asarray(instances.draw()), np.asarray(Image.open(out / "i" / shape)))
    assert np.array_equal(np.asarray(semantic.draw()),
                          np.asarray(Image.open(out / "s" / "overlays" / shape)))
    written_mask = np.asarray(Image.open(out / "s" / "masks" / shape))
    assert np.array_equal(semantic.mask, written_mask)
    assert semantic.classes[0].pixels == int((written_mask == semantic.classes[0].index).sum())
    first = instances.detections[0]
    assert first.mask.shape == (128, 128) and int(first.mask.sum()) == first.area
    kept = next(cvtool.SemanticSegmenter(model="shapes-unet", device="cpu").predict(
        shape, keep_images=False))
    with pytest.raises(ValueError, match="not kept"):
        kept.draw()


def test_options_are_plain_data_another_process_rebuilds_from(tmp_path: Path) -> None:
    options = cvtool.ClassifyOptions(model=["digits-cnn", "digits-cnn"], topk=2, device="cpu",
                                     workers=0)
    assert cvtool.ClassifyOptions.from_dict(json.loads(json.dumps(options.to_dict()))) == options
    assert pickle.loads(pickle.dumps(options)) == options
    for kind in (cvtool.DetectOptions(task="segment-instance", classes=["1"]),
                 cvtool.SegmentOptions(gt_masks=tmp_path), cvtool.GenerateOptions(grid=tmp_path)):
        assert type(kind).from_dict(json.loads(json.dumps(kind.to_dict()))) == kind
    with pytest.raises(cvtool.UsageError, match="unknown ClassifyOptions field"):
        cvtool.ClassifyOptions.from_dict({"modle": "x"})
    here = [r.to_dict() for r in cvtool.Classifier(options).predict(DIGITS[:3])]
    code = ("import json, sys, cvtool\n"
            "options = cvtool.ClassifyOptions.from_dict(json.loads(sys.argv[1]))\n"
            "records = cvtool.Classifier(options).predict(sys.argv[2:])\n"
            "print(json.dumps([r.to_dict() for r in records]))\n")
    done = subprocess.run([sys.executable, "-c", code, json.dumps(options.to_dict()),
                           *map(str, DIGITS[:3])], capture_output=True, text=True, cwd=ROOT,
                          check=True)
    assert same(json.loads(done.stdout), here)


def test_construction_errors_are_cvtool_errors() -> None:
    with pytest.raises(cvtool.UsageError, match="no-such-model"):
        cvtool.Classifier(model="no-such-model", device="cpu")
    with pytest.raises(cvtool.UsageError, match="batch size"):
        cvtool.Classifier(model="digits-cnn", batch_size=0)
    with pytest.raises(TypeError, match="runs task 'detect'"):
        cvtool.Detector(cvtool.DetectOptions(task="segment-instance"))
    with pytest.warns(cvtool.CvtoolWarning, match="random weights"):
        cvtool.Classifier(model="squeezenet1_1", weights="none", device="cpu")


def test_generator_gives_the_pixels_generate_writes(tmp_path: Path) -> None:
    assert cli("generate", "-m", "digits-vae", "-n", "3", "--seed", "5", "--device", "cpu",
               "-o", tmp_path).code == 0
    samples = list(cvtool.Generator(model="digits-vae", device="cpu").predict(3, seed=5))
    assert [s.name for s in samples] == ["000000.png", "000001.png", "000002.png"]
    for sample in samples:
        assert np.array_equal(np.asarray(sample.image),
                              np.asarray(Image.open(tmp_path / sample.name)))
    paths = list(cvtool.Generator(model="digits-gan", device="cpu").predict(
        2, interpolate=True, steps=3))
    assert [(p.index, p.step) for p in paths] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    with pytest.raises(cvtool.UsageError, match="PixelCNN only"):
        next(cvtool.Generator(model="digits-gan").predict(1, temperature=0.5))


def test_training_from_python_is_the_clis_training(tmp_path: Path) -> None:
    options = {"model": "linear", "epochs": 2, "batch_size": 128}
    summary = cvtool.train_classify(data="digits", output=tmp_path / "api", device="cpu",
                                    **options)
    result = cli("train", "classify", "--data", "digits", "-o", tmp_path / "cli", "--device",
                 "cpu", "--model", "linear", "--epochs", "2", "--batch-size", "128", "-q")
    assert result.code == 0, result.stderr
    printed = json.loads(result.stdout)
    assert json.loads((tmp_path / "api" / "metrics.json").read_text()) == summary
    for key in ("val_accuracy", "val_images", "best_epoch", "confusion_matrix"):
        assert summary[key] == printed[key]
    more = cvtool.train_classify(resume=tmp_path / "api", epochs=3, device="cpu")
    assert more["epochs"] == 3
    with pytest.raises(cvtool.UsageError, match="unknown option"):
        cvtool.train_classify(data="digits", output=tmp_path / "x", modle="cnn")


def test_the_readmes_python_example_runs(tmp_path: Path, monkeypatch) -> None:
    readme = (ROOT / "README.md").read_text()
    example = readme.split("```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "sample_images").symlink_to(ROOT / "sample_images")
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "README.md", "exec"), {})
    assert Image.open(tmp_path / "annotated.png").size == (128, 128)
    assert sorted(p.name for p in tmp_path.glob("0*.png")) == [f"00000{n}.png" for n in range(4)]
    assert json.loads((tmp_path / "runs" / "linear" / "metrics.json").read_text())["epochs"] == 2
