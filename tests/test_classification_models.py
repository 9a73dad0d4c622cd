"""load_classifier and the weights cache, with tiny randomly initialised models and no network."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from urllib.error import URLError
from urllib.parse import urlparse

import pytest
import torch
import torchvision
from safetensors.torch import save_file
from torchvision.transforms._presets import ImageClassification

from cvtool.core.status import ResourceUnavailable, UsageError
from cvtool.models import classification_transforms, describe, is_cached, load_classifier, pull
from cvtool.models.checkpoint import save_checkpoint
from cvtool.models.registry import get_spec

NAME = "mobilenet_v3_small"
DEFAULT = torchvision.models.MobileNet_V3_Small_Weights.DEFAULT
TRANSFORM_FIELDS = ("crop_size", "resize_size", "mean", "std", "interpolation", "antialias")


@pytest.fixture(autouse=True)
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache per test, so nothing here reads the user's cache or needs the network."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    return tmp_path / "torch-home"


def _reference(num_classes: int = 1000) -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.mobilenet_v3_small(num_classes=num_classes).eval()


def _images() -> torch.Tensor:
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def _assert_same_function(loaded: torch.nn.Module, reference: torch.nn.Module) -> None:
    assert not loaded.training and next(loaded.parameters()).dtype == torch.float32
    with torch.no_grad():
        assert torch.equal(loaded(_images()), reference(_images()))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cache_file(torch_home: Path) -> Path:
    return torch_home / "hub" / "checkpoints" / os.path.basename(urlparse(DEFAULT.url).path)


@pytest.mark.parametrize("layout", ["bare", "state_dict", "model", "safetensors"])
def test_weights_file_gives_the_plain_torchvision_function(tmp_path: Path, layout: str) -> None:
    reference = _reference()
    path = tmp_path / ("w.safetensors" if layout == "safetensors" else "w.pth")
    if layout == "safetensors":
        save_file(reference.state_dict(), str(path))
    else:
        state = reference.state_dict()
        torch.save(state if layout == "bare" else {layout: state, "epoch": 3}, path)
    loaded = load_classifier(NAME, weights=str(path))
    _assert_same_function(loaded.module, reference)
    assert loaded.categories == DEFAULT.meta["categories"]
    assert (loaded.weights_file, loaded.weights_sha256) == (str(path), _sha256(path))


def test_default_weights_offline_and_not_cached_name_both_fixes() -> None:
    with pytest.raises(ResourceUnavailable) as caught:
        load_classifier(NAME, offline=True)
    assert f"cvtool models pull {NAME}" in caught.value.message
    assert "--weights PATH" in caught.value.message


def test_download_failure_is_resource_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable(*args: object, **kwargs: object) -> None:
        raise URLError("no route to host")

    monkeypatch.setattr(type(DEFAULT), "get_state_dict", unreachable)
    with pytest.raises(ResourceUnavailable, match="cvtool models pull"):
        load_classifier(NAME, offline=False)
    with pytest.raises(ResourceUnavailable, match="--weights PATH"):
        pull(get_spec(NAME), offline=False)


def test_default_weights_from_the_cache_need_no_network(torch_home: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    reference = _reference()
    cache_file = _cache_file(torch_home)
    cache_file.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), cache_file)
    monkeypatch.setattr(type(DEFAULT), "get_state_dict", pytest.fail)
    loaded = load_classifier(NAME, offline=True)
    _assert_same_function(loaded.module, reference)
    assert (loaded.weights_file, loaded.weights_sha256) == (str(cache_file), _sha256(cache_file))


def test_cached_state_shows_in_describe_and_pull(torch_home: Path) -> None:
    spec = get_spec(NAME)
    assert not is_cached(spec)
    with pytest.raises(ResourceUnavailable, match="not cached"):
        pull(spec, offline=True)
    _cache_file(torch_home).parent.mkdir(parents=True)
    torch.save(_reference().state_dict(), _cache_file(torch_home))
    assert pull(spec, offline=True) == _cache_file(torch_home)
    row = describe(spec)
    meta = DEFAULT.meta
    assert row == {"name": NAME, "task": "classify", "source": "torchvision",
                   "default_weights": "MobileNet_V3_Small_Weights.IMAGENET1K_V1", "cached": True,
                   "params": meta["num_params"], "gflops": meta["_ops"],
                   "accuracy": meta["_metrics"]["ImageNet-1K"]["acc@1"],
                   "metric": "acc@1 ImageNet-1K", "input_size": 224,
                   # once cached, the size of the file on disk (this test's own file)
                   "size_mb": round(_cache_file(torch_home).stat().st_size / 2**20, 3)}


@pytest.mark.parametrize("weights", ["none", "file"])
def test_torchvision_transforms_are_the_weights_own(tmp_path: Path, weights: str) -> None:
    path = tmp_path / "w.pth"
    torch.save(_reference().state_dict(), path)
    loaded = load_classifier(NAME, weights="none" if weights == "none" else str(path),
                             warn=lambda message: None)
    expected = DEFAULT.transforms()
    assert type(loaded.transforms) is type(expected) is ImageClassification
    for field in TRANSFORM_FIELDS:
        assert getattr(loaded.transforms, field) == getattr(expected, field)


def test_random_weights_warn_that_labels_are_meaningless() -> None:
    warnings: list[str] = []
    loaded = load_classifier(NAME, weights="none", warn=warnings.append)
    assert len(warnings) == 1 and "meaningless" in warnings[0]
    assert (loaded.weights_file, loaded.weights_sha256) == (None, None)
    assert len(loaded.categories) == 1000


def test_mismatched_state_dict_is_a_one_line_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "resnet.pth"
    torch.save(torchvision.models.resnet18(num_classes=2).state_dict(), path)
    with pytest.raises(UsageError, match=f"does not fit {NAME}: .* missing keys") as caught:
        load_classifier(NAME, weights=str(path))
    assert "\n" not in caught.value.message


@pytest.mark.parametrize("content", [b"not a checkpoint", None])
def test_unreadable_weights_file_is_a_usage_error(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "w.pth"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UsageError, match="weights file"):
        load_classifier(NAME, weights=str(path))


def test_other_class_count_relabels_and_warns(tmp_path: Path) -> None:
    reference = _reference(num_classes=5)
    path = tmp_path / "five.pth"
    torch.save(reference.state_dict(), path)
    warnings: list[str] = []
    loaded = load_classifier(NAME, weights=str(path), warn=warnings.append)
    assert loaded.categories == [f"class_{index}" for index in range(5)]
    assert len(warnings) == 1 and "5 classes" in warnings[0]
    _assert_same_function(loaded.module, reference)


def test_googlenet_fine_tuned_state_dict_without_aux_heads_loads(tmp_path: Path) -> None:
    torch.manual_seed(0)
    # What googlenet(weights=DEFAULT) looks like after torchvision drops its auxiliary heads.
    reference = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=False,
                                             transform_input=True, num_classes=4).eval()
    path = tmp_path / "googlenet.pth"
    torch.save(reference.state_dict(), path)
    loaded = load_classifier("googlenet", weights=str(path), warn=lambda message: None)
    with torch.no_grad():
        assert torch.equal(loaded.module(_images()), reference(_images()))


def _write_checkpoint(run_dir: Path, task: str = "classify") -> torch.nn.Module:
    reference = _reference(num_classes=3)
    meta = {"task": task, "classes": ["cat", "dog", "fox"],
            "architecture": {"builder": "torchvision.models:mobilenet_v3_small",
                             "kwargs": {"num_classes": 3}},
            "preprocessing": {"resize_size": [80, 72], "crop_size": 64, "mean": [0.5, 0.4, 0.3],
                              "std": [0.2, 0.2, 0.2], "interpolation": "bicubic"},
            "training": {}}
    save_checkpoint(run_dir / "best.safetensors", reference.state_dict(), meta)
    return reference


def test_checkpoint_run_dir_loads_with_its_own_classes_and_preprocessing(tmp_path: Path) -> None:
    reference = _write_checkpoint(tmp_path / "run")
    loaded = load_classifier(str(tmp_path / "run"))
    _assert_same_function(loaded.module, reference)
    assert (loaded.name, loaded.categories) == (str(tmp_path / "run"), ["cat", "dog", "fox"])
    tensors = tmp_path / "run" / "best.safetensors"
    assert (loaded.weights_file, loaded.weights_sha256) == (str(tensors), _sha256(tensors))
    assert (loaded.transforms.resize_size, loaded.transforms.crop_size) == ([80, 72], [64])
    expected = ImageClassification(crop_size=64, resize_size=72, mean=[0.5, 0.4, 0.3],
                                   std=[0.2, 0.2, 0.2],
                                   interpolation=torchvision.transforms.InterpolationMode.BICUBIC)
    for field in ("crop_size", "mean", "std", "antialias"):
        assert getattr(loaded.transforms, field) == getattr(expected, field)
    assert loaded.transforms.interpolation.value == expected.interpolation.value
    assert loaded.transforms(torch.rand(3, 100, 90)).shape == (3, 64, 64)


def test_checkpoint_of_another_task_is_a_usage_error(tmp_path: Path) -> None:
    _write_checkpoint(tmp_path, task="detect")
    with pytest.raises(UsageError, match="not a classification checkpoint"):
        load_classifier(str(tmp_path / "best.safetensors"))


def test_checkpoint_rejects_weights_option(tmp_path: Path) -> None:
    _write_checkpoint(tmp_path)
    with pytest.raises(UsageError, match="carries its own weights"):
        load_classifier(str(tmp_path / "best.json"), weights="none")


def test_invalid_preprocessing_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="preprocessing"):
        classification_transforms({"crop_size": 64, "resize_size": 72, "mean": [0.5] * 3,
                                   "std": [0.2] * 3, "interpolation": "lanczos-ish"})


def test_unknown_model_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="mobilenet_v3_small"):
        load_classifier("mobilenet_v3_smal")


def test_named_weights_choose_another_member_of_the_weights_enum(torch_home: Path) -> None:
    """`--weights IMAGENET1K_V1` for mobilenet_v2 (whose default is V2): that member's file in
    torch hub's cache, and that member's own transforms (V1 and V2 resize differently)."""
    v1 = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1
    v2 = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V2
    assert v1.transforms().resize_size != v2.transforms().resize_size
    cache = torch_home / "hub" / "checkpoints" / os.path.basename(urlparse(v1.url).path)
    cache.parent.mkdir(parents=True)
    torch.manual_seed(3)
    reference = torchvision.models.mobilenet_v2().eval()
    torch.save(reference.state_dict(), cache)
    loaded = load_classifier("mobilenet_v2", weights="IMAGENET1K_V1", offline=True)
    assert loaded.weights_file == str(cache)
    assert loaded.transforms.resize_size == v1.transforms().resize_size
    _assert_same_function(loaded.module, reference)
    assert pull(get_spec("mobilenet_v2"), offline=True, weights="IMAGENET1K_V1") == cache
    # The default member is not cached: its name says so, and what to pull.
    with pytest.raises(ResourceUnavailable, match="not cached"):
        load_classifier("mobilenet_v2", weights="IMAGENET1K_V2", offline=True)
    with pytest.raises(UsageError, match="IMAGENET1K_V1, IMAGENET1K_V2 "):
        load_classifier("mobilenet_v2", weights="IMAGENET1K_V3", offline=True)


def test_named_weights_bring_their_own_input_size() -> None:
    from cvtool.models.weights import chosen_weights

    spec = get_spec("vit_b_16")
    swag = chosen_weights(spec, "IMAGENET1K_SWAG_E2E_V1")
    assert swag.transforms().crop_size == [384] and swag.meta["min_size"] == (384, 384)
    assert chosen_weights(spec, "default") is chosen_weights(spec, "none") is \
        torchvision.models.ViT_B_16_Weights.DEFAULT


def test_named_weights_through_the_cli(torch_home: Path, tmp_path: Path) -> None:
    from tests.clirun import ROOT, cvtool

    v1 = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1
    cache = torch_home / "hub" / "checkpoints" / os.path.basename(urlparse(v1.url).path)
    cache.parent.mkdir(parents=True)
    torch.save(torchvision.models.mobilenet_v2().state_dict(), cache)
    photo = ROOT / "sample_images" / "photos" / "coffee.jpg"
    ran = cvtool("classify", photo, "-m", "mobilenet_v2", "--weights", "IMAGENET1K_V1",
                 "-o", tmp_path / "out")
    assert ran.code == 0, ran.stderr
    import json

    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["models"][0]["weights_file"] == str(cache)
    wrong = cvtool("classify", photo, "-m", "mobilenet_v2", "--weights", "IMAGENET1K_V9")
    assert wrong.code == 2 and "IMAGENET1K_V1, IMAGENET1K_V2" in wrong.stderr
    pulled = cvtool("models", "pull", "mobilenet_v2", "--weights", "IMAGENET1K_V1")
    assert pulled.code == 0 and pulled.stdout.strip() == str(cache)
