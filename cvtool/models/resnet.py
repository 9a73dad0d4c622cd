"""torchvision's ResNet family (ResNet, ResNeXt, Wide ResNet) without importing torchvision.

`import torchvision` costs a second and a half of every run's start-up (its ops import
torch._dynamo), more than the whole of a 96-image ResNet-50 run in bf16 on an AMX CPU. A
ResNet needs none of it: `resnet_net` builds the same modules under torchvision's names (so
torchvision's files and every fine-tuned state dict load strictly), and this table holds what
torchvision's default weights enum says about each architecture: its file's URL (torch hub's
cache name) and its preprocessing. tests/test_resnet.py holds both equal to torchvision's.
Named weights (`--weights IMAGENET1K_V1`) and downloads still go through torchvision. No torch
at import.
"""

from __future__ import annotations

from typing import Any

_URL = "https://download.pytorch.org/models/"
# name: (block, blocks per stage, groups, width per group)
ARCHITECTURES: dict[str, tuple[str, tuple[int, int, int, int], int, int]] = {
    "resnet18": ("basic", (2, 2, 2, 2), 1, 64),
    "resnet34": ("basic", (3, 4, 6, 3), 1, 64),
    "resnet50": ("bottleneck", (3, 4, 6, 3), 1, 64),
    "resnet101": ("bottleneck", (3, 4, 23, 3), 1, 64),
    "resnet152": ("bottleneck", (3, 8, 36, 3), 1, 64),
    "resnext50_32x4d": ("bottleneck", (3, 4, 6, 3), 32, 4),
    "resnext101_32x8d": ("bottleneck", (3, 4, 23, 3), 32, 8),
    "resnext101_64x4d": ("bottleneck", (3, 4, 23, 3), 64, 4),
    "wide_resnet50_2": ("bottleneck", (3, 4, 6, 3), 1, 128),
    "wide_resnet101_2": ("bottleneck", (3, 4, 23, 3), 1, 128),
}
# name: (default weights' file, the shorter side its preprocessing resizes to)
DEFAULT_WEIGHTS: dict[str, tuple[str, int]] = {
    "resnet18": ("resnet18-f37072fd.pth", 256),
    "resnet34": ("resnet34-b627a593.pth", 256),
    "resnet50": ("resnet50-11ad3fa6.pth", 232),
    "resnet101": ("resnet101-cd907fc2.pth", 232),
    "resnet152": ("resnet152-f82ba261.pth", 232),
    "resnext50_32x4d": ("resnext50_32x4d-1a0047aa.pth", 232),
    "resnext101_32x8d": ("resnext101_32x8d-110c445d.pth", 232),
    "resnext101_64x4d": ("resnext101_64x4d-173b62eb.pth", 232),
    "wide_resnet50_2": ("wide_resnet50_2-9ba9bcbe.pth", 232),
    "wide_resnet101_2": ("wide_resnet101_2-d733dc28.pth", 232),
}


def default_url(name: str) -> str:
    return _URL + DEFAULT_WEIGHTS[name][0]


def preprocessing(name: str) -> dict[str, Any]:
    """torchvision's ImageClassification preset of `name`'s default weights, as the keys
    `classification_transforms` takes."""
    return {"crop_size": 224, "resize_size": DEFAULT_WEIGHTS[name][1],
            "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
            "interpolation": "bilinear"}
