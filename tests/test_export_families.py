"""Every model family in the registry exports to both runtimes and passes verification (random
weights; slow: the full-size torchvision models take minutes on a CPU)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cvtool.models.registry import list_models
from tests.clirun import cvtool

CLASSIFIERS = ["alexnet", "convnext_tiny", "densenet121", "efficientnet_b0", "efficientnet_v2_s",
               "googlenet", "inception_v3", "maxvit_t", "mnasnet0_5", "mobilenet_v2",
               "mobilenet_v3_small", "regnet_x_400mf", "resnet18", "resnext50_32x4d",
               "shufflenet_v2_x0_5", "squeezenet1_1", "swin_t", "swin_v2_t", "vgg11_bn",
               "vit_b_32", "wide_resnet50_2"]
DETECTORS = ["fasterrcnn_mobilenet_v3_large_320_fpn", "fasterrcnn_resnet50_fpn_v2",
             "fcos_resnet50_fpn", "keypointrcnn_resnet50_fpn", "retinanet_resnet50_fpn",
             "ssd300_vgg16", "ssdlite320_mobilenet_v3_large", "maskrcnn_resnet50_fpn"]
SEMANTIC = ["deeplabv3_mobilenet_v3_large", "fcn_resnet50", "lraspp_mobilenet_v3_large",
            *[spec.name for spec in list_models("segment-semantic") if spec.source == "smp"]]


def family(name: str) -> str:
    return re.sub(r"[\d_].*$", "", name)


def test_every_classifier_family_has_a_representative() -> None:
    families = {family(spec.name) for spec in list_models("classify")
                if spec.source == "torchvision"}
    assert families == {family(name) for name in CLASSIFIERS}


# Found by this test and left open: with random weights, Keypoint R-CNN's ONNX export fails
# verification (a box 35 px off on the blank image, scores 0.07 apart); the export is refused.
MISMATCHED = {"keypointrcnn_resnet50_fpn"}


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
@pytest.mark.parametrize("model", [
    pytest.param(model, marks=pytest.mark.xfail(reason="fails verification; see MISMATCHED",
                                                strict=True))
    if model in MISMATCHED else model for model in [*CLASSIFIERS, *DETECTORS, *SEMANTIC]])
def test_the_family_exports_and_verifies(tmp_path: Path, model: str, fmt: str) -> None:
    suffix = ".onnx" if fmt == "onnx" else ".xml"
    args = ["--encoder", "resnet18"] if model.startswith("smp:") else []
    result = cvtool("export", model, "--weights", "none", "-o", tmp_path / f"m{suffix}", "-q",
                    *args)
    assert result.code == 0, result.stderr + result.stdout[-2000:]
    assert json.loads(result.stdout)["verified"]
