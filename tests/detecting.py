"""Helpers for the detect / segment-instance tests: peaked random weights, textured images.

Random detectors score every class near 1/91; raising a few classes' logit biases gives
confident, deterministic detections from real forward passes.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cvtool.models.detection import build_detector
from cvtool.models.registry import get_spec
from tests.clirun import Result, cvtool

PERSON, CAR = 1, 3  # COCO category ids, also the torchvision label ids
FAST_DETECTOR = "fasterrcnn_mobilenet_v3_large_320_fpn"
SSD = "ssdlite320_mobilenet_v3_large"
MASKRCNN = "maskrcnn_resnet50_fpn"
_SSD_CLASS_LOGITS = re.compile(r"head\.classification_head\.module_list\.\d+\.1\.bias")


def peaked_state_dict(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    state = build_detector(get_spec(name), 91).state_dict()
    for key, value in state.items():
        if key.endswith("box_predictor.cls_score.bias"):  # R-CNN heads: (91,)
            value[PERSON], value[CAR] = 6.0, 5.0
        elif key.endswith("box_predictor.cls_score.weight"):  # so the biases decide the class
            value.mul_(0.01)
        elif key.endswith("mask_predictor.mask_fcn_logits.bias"):  # Mask R-CNN: fuller masks
            value[PERSON] = 1.0
        elif _SSD_CLASS_LOGITS.fullmatch(key):
            per_anchor = value.view(-1, 91)
            per_anchor[:, PERSON], per_anchor[:, CAR] = 6.0, 5.0
    return state


def save_state_dict(name: str, directory: Path) -> Path:
    path = directory / f"{name}.pth"
    torch.save(peaked_state_dict(name), path)
    return path


def textured(width: int, height: int, seed: int = 0, block: int = 16) -> Image.Image:
    """Coloured blocks: structure for the backbone, and exact under nearest-neighbour scaling."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 256, (height // block, width // block, 3), dtype=np.uint8)
    return Image.fromarray(cells).resize((width, height), Image.Resampling.NEAREST)


def save_exif_rotated(image: Image.Image, path: Path) -> None:
    """Stored turned 90 degrees counter-clockwise with EXIF orientation 6 (rotate clockwise to
    view): a reader that honours EXIF decodes exactly `image`."""
    exif = Image.Exif()
    exif[0x0112] = 6
    image.transpose(Image.Transpose.ROTATE_90).save(path, exif=exif)


def run(task: str, model: str, weights: Path, *args: object, quiet: bool = True) -> Result:
    """The command with `-q` unless the test reads warnings (which `-q` silences)."""
    return cvtool(task, "-m", model, "--weights", str(weights), *(["-q"] if quiet else []),
                  *map(str, args))


def boxes(record: dict) -> list[list[float]]:
    return [d["box"] for d in record["detections"]]
