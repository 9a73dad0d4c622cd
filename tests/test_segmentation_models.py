"""load_segmenter: every registry architecture from a state-dict file, smp encoders and their
Hugging Face cache, cvtool checkpoints, and the geometry of padding and argmax. No network."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import segmentation_models_pytorch as smp
import torch
import torchvision
from huggingface_hub import constants
from safetensors.torch import save_file
from torchvision.transforms._presets import SemanticSegmentation

from cvtool.core.status import ResourceUnavailable, UsageError
from cvtool.inference.segment_semantic import class_indices, pad_to
from cvtool.models.checkpoint import save_checkpoint
from cvtool.models.registry import list_models
from cvtool.models.segmentation import BINARY_CLASSES, load_segmenter, segmentation_transforms

TORCHVISION = [s.name for s in list_models("segment-semantic") if s.source == "torchvision"]
SMP = [s.name for s in list_models("segment-semantic") if s.source == "smp"]
ENCODER = "resnet18"


@pytest.fixture(autouse=True)
def no_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Empty torch and Hugging Face caches, and CVTOOL_OFFLINE semantics where asked."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    return tmp_path / "hf-cache"


def _quiet(message: str) -> None:
    pass


def _reference(name: str, classes: int, aux: bool = False) -> torch.nn.Module:
    torch.manual_seed(0)
    if name.startswith("smp:"):
        return smp.MODEL_ARCHITECTURES_MAPPING[name[4:]](
            encoder_name=ENCODER, encoder_weights=None, classes=classes).eval()
    extra = {"aux_loss": True} if aux else {}
    builder = torchvision.models.get_model_builder(name)
    return builder(weights=None, weights_backbone=None, num_classes=classes, **extra).eval()


def _logits(module: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        output = module(images)
    return output["out"] if isinstance(output, dict) else output


@pytest.mark.parametrize("name", TORCHVISION + SMP)
def test_every_architecture_runs_from_a_state_dict_file(name: str, tmp_path: Path) -> None:
    smp_model = name.startswith("smp:")
    classes = 3 if smp_model else 21
    aux = name.startswith(("deeplabv3_", "fcn_"))  # as torchvision's own weights files are
    reference = _reference(name, classes, aux)
    path = tmp_path / ("w.safetensors" if smp_model else "w.pth")
    if smp_model:
        save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    else:
        torch.save(reference.state_dict(), path)
    loaded = load_segmenter(name, str(path), ENCODER if smp_model else None, offline=True,
                            warn=_quiet)
    side = 128 if name == "smp:pan" else 32  # PAN needs 8x its output stride
    images = torch.rand(2, 3, side, side, generator=torch.Generator().manual_seed(1))
    # Equal up to float rounding: oneDNN may pick other kernels for memory-mapped weights.
    torch.testing.assert_close(_logits(loaded.module, images), _logits(reference, images),
                               rtol=1e-5, atol=1e-5)
    assert not loaded.module.training and loaded.weights_file == str(path)
    if smp_model:
        assert loaded.categories == ["class_0", "class_1", "class_2"]
        assert loaded.encoder == ENCODER and loaded.transforms.resize_size is None
    else:
        default = torchvision.models.get_model_weights(name).DEFAULT
        assert loaded.categories == default.meta["categories"]
        assert repr(loaded.transforms) == repr(default.transforms())
        assert hasattr(loaded.module, "aux_classifier") == aux
        return  # torchvision's resize to 520 px and back is tested in test_segment_semantic.py
    # A 45x29 image through the padding and crop: the mask has the image's size.
    tensor = loaded.transforms(torch.randint(0, 256, (3, 29, 45), dtype=torch.uint8))
    padded = pad_to(tensor, loaded.input_multiple, loaded.min_input_side)
    mask = class_indices(_logits(loaded.module, padded[None])[0], tuple(tensor.shape[-2:]),
                         (29, 45))
    assert mask.shape == (29, 45) and mask.max() < classes


def test_a_torchvision_file_with_other_classes_is_relabelled(tmp_path: Path) -> None:
    path = tmp_path / "five.pth"
    torch.save(_reference("lraspp_mobilenet_v3_large", 5).state_dict(), path)
    warnings: list[str] = []
    loaded = load_segmenter("lraspp_mobilenet_v3_large", str(path), warn=warnings.append)
    assert loaded.categories == [f"class_{i}" for i in range(5)]
    assert "has 5 classes, not the 21" in warnings[0]


def test_a_file_for_another_architecture_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "unet.pth"
    torch.save(_reference("smp:unet", 3).state_dict(), path)
    with pytest.raises(UsageError, match="does not fit smp:fpn with encoder resnet18"):
        load_segmenter("smp:fpn", str(path), ENCODER, warn=_quiet)


def test_one_output_channel_is_binary(tmp_path: Path) -> None:
    path = tmp_path / "binary.pth"
    torch.save(_reference("smp:unet", 1).state_dict(), path)
    loaded = load_segmenter("smp:unet", str(path), ENCODER, warn=_quiet)
    assert loaded.categories == BINARY_CLASSES
    logits = torch.tensor([[[-2.0, 0.5], [3.0, -0.1]]])
    assert class_indices(logits, (2, 2), (2, 2)).tolist() == [[0, 1], [1, 0]]


def test_padding_meets_each_architecture_and_is_cropped_away() -> None:
    pan = load_segmenter("smp:pan", "none", ENCODER, warn=_quiet)
    fpn = load_segmenter("smp:fpn", "none", ENCODER, warn=_quiet)
    unet = load_segmenter("smp:unet", "none", ENCODER, warn=_quiet)
    assert (pan.input_multiple, pan.min_input_side) == (16, 128)
    assert (fpn.input_multiple, fpn.min_input_side) == (32, 1)
    assert (unet.input_multiple, unet.min_input_side) == (1, 1)  # smp's Unet takes any size
    tensor = torch.ones(3, 29, 45)
    assert pad_to(tensor, 32, 1).shape == (3, 32, 64)
    assert pad_to(tensor, 16, 128).shape == (3, 128, 128)
    assert pad_to(tensor, 32, 1)[:, 29:].abs().sum() == 0  # zeros: the mean colour
    logits = torch.zeros(2, 32, 64)
    logits[1, :29, :45] = 1.0  # class 1 exactly on the valid region, class 0 on the padding
    assert (class_indices(logits, (29, 45), (29, 45)) == 1).all()


def test_logits_are_resized_to_the_image_before_argmax() -> None:
    logits = torch.zeros(3, 4, 4)
    logits[2, :, 2:] = 5.0  # right half class 2
    mask = class_indices(logits, (4, 4), (10, 7))
    assert mask.shape == (10, 7) and mask.dtype == np.uint8
    assert (mask[:, :3] == 0).all() and (mask[:, 4:] == 2).all()


def test_unknown_encoder_suggests_close_names() -> None:
    with pytest.raises(UsageError, match="did you mean resnet18") as caught:
        load_segmenter("smp:unet", "none", "resnet19", warn=_quiet)
    assert "tu-<timm model>" in caught.value.message


def test_encoder_is_refused_for_other_models() -> None:
    with pytest.raises(UsageError, match="--encoder applies to smp:<arch> models only"):
        load_segmenter("fcn_resnet50", "none", ENCODER, warn=_quiet)


def test_default_smp_weights_offline_and_not_cached_is_exit_3() -> None:
    with pytest.raises(ResourceUnavailable) as caught:
        load_segmenter("smp:unet", "default", ENCODER, offline=True, warn=_quiet)
    assert caught.value.status == 3
    assert "cvtool models pull smp:unet --encoder resnet18" in caught.value.message
    assert "--weights PATH" in caught.value.message


def _cache_encoder(cache: Path, encoder: str, state: dict, config: dict) -> Path:
    """Lay out the Hugging Face cache the way hf_hub_download leaves smp's encoder repo."""
    settings = smp.encoders.encoders[encoder]["pretrained_settings"]["imagenet"]
    repo = cache / ("models--" + settings["repo_id"].replace("/", "--"))
    snapshot = repo / "snapshots" / settings["revision"]
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(snapshot / "model.safetensors"))
    (snapshot / "config.json").write_text(json.dumps(config))
    return snapshot / "model.safetensors"


def test_cached_encoder_weights_and_their_preprocessing_serve_offline(no_network: Path) -> None:
    torch.manual_seed(3)
    encoder = smp.encoders.get_encoder(ENCODER, weights=None)
    state = {k: v for k, v in encoder.state_dict().items()}
    state.update({"fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)})
    config = {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.2, 0.2], "input_range": [0, 1]}
    path = _cache_encoder(no_network, ENCODER, state, config)
    loaded = load_segmenter("smp:unet", "default", ENCODER, offline=True, warn=_quiet)
    for key, value in loaded.module.encoder.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert loaded.weights_file == str(path) and loaded.categories == BINARY_CLASSES
    assert (loaded.transforms.mean, loaded.transforms.std) == (config["mean"], config["std"])


@pytest.mark.parametrize("resize, attribute, shape", [
    (None, None, (30, 50)), (48, [48], (48, 80)), ([40, 24], [40, 24], (40, 24))])
def test_checkpoint_preprocessing_is_torchvisions_class(resize, attribute, shape) -> None:
    """null keeps the size, an int is the shorter side, [h, w] is exact."""
    transforms = segmentation_transforms({"resize_size": resize, "mean": [0.1, 0.2, 0.3],
                                          "std": [0.5, 0.5, 0.5]})
    assert isinstance(transforms, SemanticSegmentation) and transforms.resize_size == attribute
    image = torch.randint(0, 256, (3, 30, 50), dtype=torch.uint8)
    assert tuple(transforms(image).shape[-2:]) == shape


@pytest.mark.parametrize("preprocessing, message", [
    ({"mean": [0.5] * 3}, "std must be 1 to 4 finite numbers"),
    ({"resize_size": [3], "mean": [0.5] * 3, "std": [0.5] * 3}, "resize_size must be null"),
    ({"resize_size": 8, "mean": [0.5] * 3, "std": [0.5, 0.0, 0.5]}, "std must be above 0")])
def test_invalid_checkpoint_preprocessing_is_a_usage_error(preprocessing, message: str) -> None:
    with pytest.raises(UsageError, match=f"checkpoint preprocessing {message}"):
        segmentation_transforms(preprocessing)


def test_checkpoint_run_directory_loads_with_its_classes(tmp_path: Path) -> None:
    reference = _reference("smp:unet", 4)
    meta = {"task": "segment-semantic",
            "architecture": {"builder": "segmentation_models_pytorch:Unet",
                             "kwargs": {"encoder_name": ENCODER, "encoder_weights": "imagenet",
                                        "classes": 4}},
            "classes": ["background", "circle", "square", "triangle"],
            "preprocessing": {"resize_size": None, "mean": [0.5] * 3, "std": [0.25] * 3}}
    save_checkpoint(tmp_path / "run" / "best.safetensors", reference.state_dict(), meta)
    loaded = load_segmenter(str(tmp_path / "run"), offline=True)  # encoder_weights ignored
    images = torch.rand(1, 3, 64, 64)
    assert torch.equal(_logits(loaded.module, images), _logits(reference, images))
    assert loaded.categories == meta["classes"] and loaded.transforms.mean == [0.5] * 3
    with pytest.raises(UsageError, match="carries its own weights"):
        load_segmenter(str(tmp_path / "run"), "none")
    save_checkpoint(tmp_path / "c.safetensors", reference.state_dict(),
                    {**meta, "task": "classify"})
    with pytest.raises(UsageError, match="not a semantic segmentation checkpoint"):
        load_segmenter(str(tmp_path / "c.safetensors"))


def test_segment_semantic_refuses_models_of_other_tasks() -> None:
    with pytest.raises(UsageError, match="cvtool models segment-semantic"):
        load_segmenter("resnet18", "none")
