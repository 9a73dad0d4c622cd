"""The CLI shell: help without torch, version, the models command, preprocessing fidelity."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from PIL import Image

from tests.clirun import ROOT, cvtool, cvtool_process

COMMANDS = ["classify", "segment-semantic", "models", "benchmark-device"]


def test_help_never_imports_torch():
    script = ("import sys\nfrom cvtool.cli.app import run_cli\n"
              f"for args in [['--help']] + [[c, '--help'] for c in {COMMANDS!r}]:\n"
              "    assert run_cli(args) == 0, args\n"
              "heavy = [m for m in ('torch', 'torchvision', 'segmentation_models_pytorch',"
              " 'PIL.Image') if m in sys.modules]\n"
              "assert not heavy, heavy\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "classify" in done.stdout and "--model" in done.stdout


def test_shell_completion_completes_commands_and_options_without_torch():
    import os

    # The shell named, not detected: detection reads the parent processes, and a detached test
    # run (CI, nohup) has no shell among them.
    script = cvtool_process("--show-completion", "bash",
                            env={"_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"})
    assert script.code == 0 and "_CVTOOL_COMPLETE=complete_bash" in script.stdout
    for words, cword, expected in (("cvtool segment-s", "1", "segment-semantic"),
                                   ("cvtool detect --str", "2", "--streams")):
        done = subprocess.run([sys.executable, "-X", "importtime", "-m", "cvtool"],
                              capture_output=True, text=True, cwd=ROOT,
                              env={**os.environ, "_CVTOOL_COMPLETE": "complete_bash",
                                   "COMP_WORDS": words, "COMP_CWORD": cword})
        assert done.returncode == 0 and done.stdout.split() == [expected], done.stdout
        assert not any(line.endswith("| torch") for line in done.stderr.splitlines())


def test_version_and_module_entry_point():
    import tomllib

    result = cvtool_process("--version")
    written = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert result.code == 0 and result.stdout == f"cvtool {written}\n"  # one place: pyproject


def test_unknown_command_and_option_are_usage_errors():
    assert cvtool("frobnicate").code == 2
    bad = cvtool("classify", "x.jpg", "--no-such-option")
    assert bad.code == 2 and "no-such-option" in bad.stderr.lower()
    # One line, as cvtool's own usage errors are, pointing at the command's help.
    assert bad.stderr.strip().count("\n") == 0 and "`cvtool classify --help`" in bad.stderr


def test_models_lists_every_torchvision_classifier(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    rows = [row for row in cvtool("models", "classify", "--format", "jsonl").records()
            if row["source"] == "torchvision"]
    expected = set(torchvision.models.list_models(module=torchvision.models))
    assert {row["name"] for row in rows} == expected
    resnet = next(row for row in rows if row["name"] == "resnet50")
    assert resnet == {"name": "resnet50", "task": "classify", "source": "torchvision",
                      "default_weights": "ResNet50_Weights.IMAGENET1K_V2", "cached": False,
                      "params": 25557032, "gflops": 4.089, "accuracy": 80.858,
                      "metric": "acc@1 ImageNet-1K", "input_size": 224, "size_mb": 97.79}


def test_models_filter_and_formats(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    names = [row["name"] for row in cvtool("models", "--filter", "RESNET5?", "--format",
                                           "jsonl").records()]
    assert names == ["resnet50"]
    substring = cvtool("models", "--filter", "maskrcnn", "--format", "csv")
    assert substring.code == 0
    header, *lines = substring.stdout.splitlines()
    assert header.split(",")[:3] == ["name", "task", "source"] and "gflops" in header
    assert {line.split(",")[0] for line in lines} == {
        "maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2", "shapes-maskrcnn"}
    table = cvtool("models", "--filter", "digits-cnn", "--format", "table")
    assert "digits-cnn" in table.stdout and "val_accuracy" in table.stdout
    none = cvtool("models", "--filter", "no-such-model*")
    assert none.code == 0 and none.stdout == "" and "no model matches" in none.stderr


def test_models_shows_cached_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / "resnet18-f37072fd.pth").write_bytes(b"x")
    rows = cvtool("models", "--format", "jsonl").records()
    cached = {row["name"] for row in rows if row["cached"] and row["source"] == "torchvision"}
    assert cached == {"resnet18"}


def test_models_pull_offline_is_exit_3(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("CVTOOL_OFFLINE", "1")
    result = cvtool("models", "pull", "resnet18")
    assert result.code == 3 and "cvtool models pull resnet18" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("args", [["pull"], ["nosuchtask"], ["pull", "resnet5O"]])
def test_models_usage_errors(args):
    result = cvtool("models", *args)
    assert result.code == 2 and result.stderr.startswith("error:")


@pytest.mark.parametrize("arch", ["resnet50", "efficientnet_b3", "vit_b_16"])
def test_classify_preprocessing_equals_weights_transforms(arch, photo_paths):
    """The tensor the model sees is exactly what `weights.transforms()` makes of the photo."""
    from torchvision.models import get_model_weights

    from cvtool.io.decode import load_image
    from cvtool.models import load_classifier
    from cvtool.models.preprocess import classification_input

    reference = get_model_weights(arch).DEFAULT.transforms()
    loaded = load_classifier(arch, "none", warn=lambda message: None)
    for path in photo_paths:
        ours = classification_input(loaded.transforms, load_image(str(path)))
        theirs = reference(Image.open(path).convert("RGB"))
        assert ours.shape == theirs.shape and torch.equal(ours, theirs)


def test_tta_views_share_the_model_transforms(photo_paths):
    from torchvision.models import get_model_weights

    from cvtool.io.decode import load_image
    from cvtool.models.preprocess import classification_input

    transforms = get_model_weights("resnet50").DEFAULT.transforms()
    image = load_image(str(photo_paths[0]))
    views = classification_input(transforms, image, tta=True)
    assert views.shape == (10, 3, 224, 224)
    assert torch.allclose(views[4], transforms(image), atol=1e-6)  # the centre crop
    assert torch.allclose(views[9], transforms(image).flip(-1), atol=1e-6)  # its mirror


def test_counts_are_in_the_right_number_and_csv_says_false_as_json_does(tmp_path):
    digit = sorted((ROOT / "sample_images" / "digits").glob("*.png"))[0]
    one = cvtool("classify", digit, "-m", "digits-cnn", "--device", "cpu")
    assert one.code == 0 and "1 input, 0 failed" in one.stderr and "1 inputs" not in one.stderr
    two = cvtool("classify", digit, tmp_path / "missing.png", "-m", "digits-cnn", "--device",
                 "cpu", "--format", "csv")
    assert two.code == 1 and "2 inputs, 1 failed" in two.stderr
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(two.stdout)))
    assert rows[-1]["ok"] == "false" and rows[-1]["error_type"] == "FileNotFoundError"


def test_help_names_values_as_users_type_them_and_shows_choices_and_examples():
    """Every command's --help: no Python annotation as a value's type (`<list[str]>`,
    `<int range>`); choices listed (and so validated by Typer); an example; the default model
    and whether it works offline."""
    commands = [["classify"], ["detect"], ["segment-instance"], ["segment-semantic"], ["merge"],
                ["export"], ["models"], ["generate"], ["benchmark-device"], ["train", "classify"],
                ["train", "detect"], ["train", "segment-semantic"], ["train", "generate"],
                ["data", "digits"], ["data", "shapes"]]
    script = ("import contextlib, io, json, sys\nfrom cvtool.cli.app import run_cli\nout = {}\n"
              f"for args in {commands!r}:\n"
              "    buf = io.StringIO()\n"
              "    with contextlib.redirect_stdout(buf):\n"
              "        assert run_cli([*args, '--help']) == 0, args\n"
              "    out[' '.join(args)] = buf.getvalue()\n"
              "print(json.dumps(out))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr
    import json
    import re

    helps = json.loads(done.stdout)
    for name, text in helps.items():
        python_types = re.findall(r"<(?:list\[\w+\]|int(?: range)?|float(?: range)?|str|bool|"
                                  r"path)>", text)
        assert not python_types, (name, python_types)
    assert "--precision <fp32|bf16|fp16|auto>" in helps["classify"]
    assert "--activation <sigmoid|tanh|relu|leaky_relu|elu>" in helps["train classify"]
    for name, text in helps.items():
        assert "Example:\n    cvtool " in text, name  # every command shows one
    for name in ("classify", "detect", "segment-instance", "segment-semantic", "generate"):
        assert "Example:\n    cvtool " + name in helps[name], name
        assert "works offline" in helps[name] or "work offline" in helps[name], name
    assert "efficientnet_lite0" in helps["classify"]
    assert "fasterrcnn_mobilenet_v3_large_fpn" in helps["detect"]
    bad = cvtool("classify", "x.jpg", "--precision", "bf17")
    assert bad.code == 2 and "bf17" in bad.stderr and "fp32" in bad.stderr
