"""cvtool's copy of torchvision's ResNet family (`cvtool.models.resnet` / `resnet_net`), which
serves `-m resnet50` and its kin without importing torchvision: held equal to torchvision's
modules (names, random init from a seed, forward) and to its default weights' metadata (file,
preprocessing, labels), for every member of the family."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest
import torch
import torchvision
from torchvision.models import get_model, get_model_weights

from cvtool.models import load_classifier, resnet
from cvtool.models.efficientnet_lite import imagenet_categories
from cvtool.models.registry import get_spec
from cvtool.models.resnet_net import ResNet, build
from cvtool.models.weights import local_weights_path
from tests.clirun import ROOT

FAMILY = sorted(resnet.ARCHITECTURES)
SMALL = "resnet18"


@pytest.fixture(autouse=True)
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    return tmp_path / "torch-home"


def test_the_family_is_every_resnet_torchvision_has() -> None:
    theirs = {name for name in torchvision.models.list_models(torchvision.models)
              if "resnet" in name or "resnext" in name}
    assert set(resnet.ARCHITECTURES) == set(resnet.DEFAULT_WEIGHTS) == theirs


@pytest.mark.parametrize("name", FAMILY)
def test_default_weights_metadata_is_torchvisions(name: str) -> None:
    default = get_model_weights(name).DEFAULT
    assert resnet.default_url(name) == default.url
    assert os.path.basename(urlparse(default.url).path) == resnet.DEFAULT_WEIGHTS[name][0]
    assert get_spec(name).weights.endswith(f"{type(default).__name__}.{default.name}")
    preset, ours = default.transforms(), resnet.preprocessing(name)
    assert (preset.crop_size, preset.resize_size) == ([ours["crop_size"]], [ours["resize_size"]])
    assert (preset.mean, preset.std) == (ours["mean"], ours["std"])
    assert preset.interpolation.value == ours["interpolation"] and preset.antialias
    assert list(default.meta["categories"]) == imagenet_categories()


@pytest.mark.parametrize("name", FAMILY)
def test_modules_names_init_and_forward_are_torchvisions(name: str) -> None:
    torch.manual_seed(0)
    theirs = get_model(name, num_classes=7).eval()
    torch.manual_seed(0)
    ours = build(name, num_classes=7).eval()
    their_state, our_state = theirs.state_dict(), ours.state_dict()
    assert list(our_state) == list(their_state)
    assert all(torch.equal(our_state[key], their_state[key]) for key in their_state)
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        assert torch.equal(ours(images), theirs(images))


def test_load_classifier_serves_the_family_from_cvtools_copy(tmp_path: Path,
                                                            torch_home: Path) -> None:
    torch.manual_seed(0)
    reference = get_model(SMALL).eval()
    path = tmp_path / "w.pth"
    torch.save(reference.state_dict(), path)
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    cache = local_weights_path(get_spec(SMALL))
    assert cache == torch_home / "hub" / "checkpoints" / resnet.DEFAULT_WEIGHTS[SMALL][0]
    cache.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), cache)
    for weights in (str(path), "default"):
        loaded = load_classifier(SMALL, weights=weights, offline=True)
        assert isinstance(loaded.module, ResNet)
        assert loaded.categories == imagenet_categories()
        with torch.inference_mode():
            assert torch.equal(loaded.module(images), reference(images))
        preset = get_model_weights(SMALL).DEFAULT.transforms()
        photo = torch.rand(3, 300, 400, generator=torch.Generator().manual_seed(2))
        assert torch.equal(loaded.transforms(photo), preset(photo))
    relabelled = tmp_path / "five.pth"
    torch.save(get_model(SMALL, num_classes=5).state_dict(), relabelled)
    warnings: list[str] = []
    five = load_classifier(SMALL, weights=str(relabelled), warn=warnings.append)
    assert five.categories == [f"class_{i}" for i in range(5)]
    assert "ResNet18_Weights.IMAGENET1K_V1" in warnings[0]


def test_named_weights_still_come_from_torchvisions_enum(torch_home: Path) -> None:
    """IMAGENET1K_V1 of resnet50 resizes to 256 where the default (V2) resizes to 232."""
    from cvtool.models.weights import url_cache_path

    member = torchvision.models.ResNet50_Weights.IMAGENET1K_V1
    cache = url_cache_path(member.url)
    cache.parent.mkdir(parents=True)
    torch.save(get_model("resnet50").state_dict(), cache)
    loaded = load_classifier("resnet50", weights="IMAGENET1K_V1", offline=True)
    assert loaded.transforms.resize_size == [256]


def test_a_resnet_run_imports_neither_torchvision_nor_dynamo(tmp_path: Path) -> None:
    weights = tmp_path / "w.pth"
    torch.save(get_model(SMALL).state_dict(), weights)
    code = ("import runpy, sys\n"
            f"sys.argv = ['cvtool', 'classify', 'sample_images/photos', '-m', '{SMALL}', "
            f"'--weights', {str(weights)!r}, '-q', '-o', {str(tmp_path / 'out')!r}]\n"
            "try:\n    runpy.run_module('cvtool', run_name='__main__')\n"
            "except SystemExit as exit:\n    assert exit.code in (0, None), exit.code\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torchvision', 'sympy')"
            " or m == 'torch._dynamo'), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 8
    assert done.stderr.strip().splitlines()[-1] == "[]"
