"""Every registered torchvision detector builds offline and runs from a state-dict file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision.ops import FrozenBatchNorm2d

from cvtool.core.status import UsageError
from cvtool.models.detection import build_detector, load_detector
from cvtool.models.registry import list_models
from tests.detecting import FAST_DETECTOR

# About 5 s each on 2 CPU cores (large checkpoints, heads run on every random proposal).
_SLOW = {"ssd300_vgg16", "maskrcnn_resnet50_fpn_v2", "fasterrcnn_resnet50_fpn_v2"}
_SPECS = [spec for task in ("detect", "segment-instance") for spec in list_models(task)
          if spec.source == "torchvision"]


def _shrunk(module: torch.nn.Module) -> torch.nn.Module:
    # The R-CNN family resizes inputs to 800 px; 128 keeps a CPU forward pass well under a second.
    if module.transform.fixed_size is None:
        module.transform.min_size, module.transform.max_size = (128,), 128
    return module


def _image() -> list[torch.Tensor]:
    return [torch.rand(3, 96, 128, generator=torch.Generator().manual_seed(0))]


@pytest.mark.parametrize("spec", [
    pytest.param(spec, id=spec.name, marks=[pytest.mark.slow] if spec.name in _SLOW else [])
    for spec in _SPECS])
def test_builds_and_runs_from_a_state_dict_file(spec, tmp_path: Path) -> None:
    torch.manual_seed(0)
    reference = _shrunk(build_detector(spec, 2 if spec.name.startswith("keypoint") else 91)).eval()
    path = tmp_path / "weights.pth"
    torch.save(reference.state_dict(), path)
    loaded = load_detector(spec.name, str(path), spec.task)
    assert loaded.weights_file == str(path) and not loaded.module.training
    with torch.inference_mode():
        expected, got = reference(_image())[0], _shrunk(loaded.module)(_image())[0]
    assert set(got) >= {"boxes", "labels", "scores"}
    assert ("masks" in got) == (spec.task == "segment-instance")
    for key in expected:
        assert torch.equal(got[key], expected[key]), key


def test_released_layout_gets_frozen_batch_norm_like_torchvision(tmp_path: Path) -> None:
    # torchvision's COCO files store the backbone's FrozenBatchNorm2d: no num_batches_tracked.
    spec = next(spec for spec in _SPECS if spec.name == FAST_DETECTOR)
    reference = build_detector(spec, 91).eval()
    state = {k: v for k, v in reference.state_dict().items() if "num_batches_tracked" not in k}
    torch.save(state, tmp_path / "released.pth")
    loaded = load_detector(FAST_DETECTOR, str(tmp_path / "released.pth"), "detect").module
    assert any(isinstance(m, FrozenBatchNorm2d) for m in loaded.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in loaded.modules())
    with torch.inference_mode():
        batch = torch.rand(1, 3, 64, 64)
        for level, features in reference.backbone(batch).items():
            assert torch.allclose(loaded.backbone(batch)[level], features, atol=1e-5), level


def test_mask_rcnn_serves_detect_but_box_models_not_segment_instance(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cvtool models segment-instance"):
        load_detector(FAST_DETECTOR, "none", "segment-instance")
    warnings: list[str] = []
    loaded = load_detector("maskrcnn_resnet50_fpn", "none", "detect", warn=warnings.append)
    assert loaded.categories[1] == "person" and "meaningless" in warnings[0]


def test_state_dict_of_another_architecture_is_a_usage_error(tmp_path: Path) -> None:
    torch.save({"weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(UsageError, match="does not fit ssdlite320_mobilenet_v3_large"):
        load_detector("ssdlite320_mobilenet_v3_large", str(tmp_path / "other.pth"), "detect")
