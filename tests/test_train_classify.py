"""`cvtool train classify` through the real entry point: outputs, errors, k-NN, resume after
kill -9, and `cvtool classify` reproducing training's val accuracy."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from cvtool.cli.app import run_cli
from cvtool.core.context import Environment
from tests.clirun import ROOT, cvtool, kill_after_first_epoch

QUICK = ("--data", "digits", "--device", "cpu", "-q")


def _summary(result) -> dict:
    assert result.code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1  # one JSON object on stdout, nothing else
    return json.loads(lines[0])


def test_linear_svm_run_writes_every_output(tmp_path):
    run = tmp_path / "run"
    summary = _summary(cvtool("train", "classify", *QUICK, "--model", "linear", "--loss", "svm",
                              "--epochs", "2", "-o", run))
    assert summary["expected_initial_loss"] == 9.0
    assert summary["initial_loss"] == pytest.approx(9.0, rel=0.02)
    assert summary["val_accuracy"] > 0.8 and summary["val_images"] == 360
    assert summary["sanity"]["gradient_check"]["passed"]
    names = {path.name for path in run.iterdir()}
    assert {"best.safetensors", "best.json", "last.safetensors", "last.json", "config.json",
            "metrics.jsonl", "metrics.json", "curves.png", "confusion_matrix.png"} <= names
    assert json.loads((run / "metrics.json").read_text()) == summary
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2]
    meta = json.loads((run / "best.json").read_text())
    assert meta["task"] == "classify" and meta["classes"] == [str(d) for d in range(10)]
    assert meta["architecture"]["builder"] == "cvtool.models.small:linear"
    assert meta["training"]["config"]["loss"] == "svm"


def test_large_init_and_sanity_overfit_are_reported(tmp_path):
    result = cvtool("train", "classify", "--data", "digits", "--device", "cpu", "--model", "mlp",
                    "--init", "large", "--sanity", "--epochs", "1", "-o", tmp_path / "run")
    summary = _summary(result)
    assert not summary["initial_loss_agrees"]
    assert "initial loss" in result.stderr and "far from the expected" in result.stderr
    assert summary["sanity"]["overfit"]["examples"] == 20
    assert summary["sanity"]["layer_statistics"]["flags"]


def test_knn_run_writes_a_checkpoint_and_the_cv_table(tmp_path):
    summary = _summary(cvtool("train", "classify", *QUICK, "--model", "knn", "--k", "auto",
                              "--distance", "l2", "-o", tmp_path / "run"))
    assert summary["val_accuracy"] >= 0.98
    assert summary["cv_table"] and summary["k"] in {row["k"] for row in summary["cv_table"]}
    assert (tmp_path / "run" / "confusion_matrix.png").is_file()
    assert json.loads((tmp_path / "run" / "best.json").read_text())["architecture"]["builder"] \
        == "cvtool.models.knn:KNearestNeighbors"


@pytest.mark.parametrize("args, code, message", [
    (("--model", "resnet5"), 2, "did you mean"),
    (("--optimizer", "adamw"), 2, "--optimizer"),
    (("--activation", "gelu"), 2, "--activation"),
    (("--dropout", "1.5"), 2, "--dropout"),
    (("--device", "cuda:7"), 3, "cuda"),
])
def test_bad_options_are_usage_errors(tmp_path, args, code, message):
    result = cvtool("train", "classify", *QUICK, "--epochs", "1", *args, "-o", tmp_path / "run")
    assert result.code == code, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_bad_data_folders_are_clear_usage_errors(tmp_path):
    one_class = tmp_path / "one" / "train" / "cat"
    one_class.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(one_class / "a.png")
    for data, message in ((tmp_path / "absent", "is not a directory"),
                          (tmp_path / "one", "only one class")):
        result = cvtool("train", "classify", "--data", data, "-o", tmp_path / "run", "-q")
        assert result.code == 2 and message in result.stderr, result.stderr


def test_existing_run_dir_needs_resume_or_force(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    args = ("train", "classify", *QUICK, "--model", "linear", "--epochs", "1", "-o", run)
    refused = cvtool(*args)
    assert refused.code == 2 and "--resume" in refused.stderr
    assert _summary(cvtool(*args, "--force"))["epochs"] == 1
    assert cvtool("train", "classify").code == 2  # neither --data/--output nor --resume


def test_torchvision_architecture_trains_from_scratch(tmp_path):
    summary = _summary(cvtool("train", "classify", *QUICK, "--model", "squeezenet1_1",
                              "--weights", "none", "--epochs", "1", "--image-size", "32",
                              "-o", tmp_path / "run"))
    meta = json.loads((tmp_path / "run" / "best.json").read_text())
    assert meta["architecture"] == {"builder": "torchvision.models:squeezenet1_1",
                                    "kwargs": {"num_classes": 10}}
    assert summary["epochs"] == 1


def test_torchvision_architecture_fine_tunes_from_a_weights_file(tmp_path):
    from torchvision.models import get_model

    torch.manual_seed(3)
    pretrained = get_model("squeezenet1_1").state_dict()  # 1000 classes, like ImageNet weights
    weights = tmp_path / "pretrained.pth"
    torch.save({"state_dict": pretrained}, weights)  # the wrapper training scripts often write
    run = tmp_path / "run"
    _summary(cvtool("train", "classify", *QUICK, "--model", "squeezenet1_1", "--weights",
                    weights, "--epochs", "1", "--image-size", "32", "--optimizer", "sgd",
                    "--lr", "1e-12", "-o", run))
    trained = load_file(run / "last.safetensors")
    backbone = [key for key in pretrained if key.startswith("features.")]
    # An all but frozen step: the backbone is still the file's, not a fresh init.
    assert all(torch.allclose(trained[key], pretrained[key], atol=1e-6) for key in backbone)
    assert trained["classifier.1.weight"].shape[0] == 10  # a new head for the 10 digits
    scratch = tmp_path / "scratch"
    _summary(cvtool("train", "classify", *QUICK, "--model", "squeezenet1_1", "--weights", "none",
                    "--epochs", "1", "--image-size", "32", "--optimizer", "sgd", "--lr", "1e-12",
                    "-o", scratch))
    fresh = load_file(scratch / "last.safetensors")
    assert not torch.allclose(fresh[backbone[0]], pretrained[backbone[0]], atol=1e-3)


def test_classify_on_the_val_folder_reproduces_val_accuracy(tmp_path):
    run = tmp_path / "run"
    summary = _summary(cvtool("train", "classify", *QUICK, "--model", "cnn", "--batch-norm",
                              "--width", "8", "--epochs", "2", "-o", run))
    assert cvtool("data", "digits", tmp_path / "folder", "-q").code == 0
    result = cvtool("classify", tmp_path / "folder" / "val", "-m", run, "--topk", "1",
                    "--device", "cpu", "-q")
    assert result.code == 0, result.stderr
    records = result.records()
    hits = [r["predictions"][0]["label"] == Path(r["path"]).parent.name for r in records]
    assert len(records) == summary["val_images"]
    assert sum(hits) / len(hits) == summary["val_accuracy"]


def _history(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{key: value for key, value in row.items() if key != "seconds"} for row in rows]


def test_resume_after_kill_9_loses_and_repeats_no_epoch(tmp_path):
    args = ["train", "classify", *QUICK, "--model", "cnn", "--width", "16", "--dropout", "0.3",
            "--epochs", "6", "--schedule", "cosine", "--threads", "1"]
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    kill_after_first_epoch(args, killed)
    # metrics.jsonl follows the committed state; a kill between the two leaves it one behind.
    assert len(_history(killed)) < 6, "the run finished before it could be killed"
    threads = torch.get_num_threads()  # --threads 1 applies to this process from here on
    resumed = _summary(cvtool("train", "classify", "--resume", killed, "--device", "cpu",
                              "--threads", "1", "-q"))
    assert [row["epoch"] for row in _history(killed)] == [1, 2, 3, 4, 5, 6]
    assert resumed["epochs"] == 6
    try:
        _summary(cvtool(*args, "-o", straight))
    finally:
        torch.set_num_threads(threads)
    assert _history(killed) == _history(straight)
    last_killed = load_file(killed / "last.safetensors")
    last_straight = load_file(straight / "last.safetensors")
    assert all((last_killed[key] == last_straight[key]).all() for key in last_straight)
    assert len(list((killed / "state").glob("epoch-*.json"))) == 1


def test_house_digits_cnn_labels_the_sample_digits():
    digits = sorted((ROOT / "sample_images" / "digits").glob("digit_*.png"))
    result = cvtool("classify", *digits, "-m", "digits-cnn", "--topk", "1", "--device", "cpu",
                    "-q")
    assert result.code == 0, result.stderr
    labels = [r["predictions"][0]["label"] for r in result.records()]
    assert labels == [path.name.split("_")[1] for path in digits]
    assert (ROOT / "cvtool" / "house" / "digits-cnn.safetensors").stat().st_size < 1 << 20


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_goes_to_a_terminal_stderr_only(tmp_path):
    stdout, stderr = io.StringIO(), _Terminal()
    env = Environment(stdout=stdout, stderr=stderr)
    code = run_cli(["train", "classify", "--data", "digits", "--model", "linear", "--epochs", "2",
                    "--device", "cpu", "-o", str(tmp_path / "run")], env)
    assert code == 0
    assert json.loads(stdout.getvalue())["epochs"] == 2
    assert "━" in stderr.getvalue()  # the bar itself, not only the per-epoch log lines


@pytest.mark.slow
def test_compile_trains_the_same_model(tmp_path):
    args = ("train", "classify", *QUICK, "--model", "mlp", "--epochs", "1")
    eager = _summary(cvtool(*args, "-o", tmp_path / "eager"))
    compiled = _summary(cvtool(*args, "--compile", "-o", tmp_path / "compiled"))
    config = json.loads((tmp_path / "compiled" / "config.json").read_text())["config"]
    assert config["compile"] is True
    assert compiled["val_accuracy"] == pytest.approx(eager["val_accuracy"], abs=0.02)


def test_resume_with_more_epochs_extends_the_run(tmp_path):
    run = tmp_path / "run"
    _summary(cvtool("train", "classify", *QUICK, "--model", "linear", "--epochs", "2",
                    "--schedule", "cosine", "-o", run))
    shrunk = cvtool("train", "classify", "--resume", run, "--epochs", "1", "-q")
    assert shrunk.code == 2 and "only extend" in shrunk.stderr
    extended = _summary(cvtool("train", "classify", "--resume", run, "--epochs", "4", "-q"))
    assert extended["epochs"] == 4
    assert [row["epoch"] for row in _history(run)] == [1, 2, 3, 4]
    assert json.loads((run / "config.json").read_text())["config"]["epochs"] == 4
    again = _summary(cvtool("train", "classify", "--resume", run, "-q"))  # nothing left to do
    assert again["epochs"] == 4
