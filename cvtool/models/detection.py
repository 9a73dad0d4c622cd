"""Detectors and instance segmenters: a registry name and `--weights` in, a ready model out.

Models are built with `weights=None, weights_backbone=None`, so nothing is downloaded behind the
user's back; parameters come from the cache, a state-dict file, or random init (`--weights none`).
Categories and preprocessing are the default weights' own (`meta["categories"]`,
`transforms()`); torchvision's detectors resize and normalise inside the model and map boxes and
masks back to the input's own pixels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cvtool.core.context import Warn
from cvtool.core.status import UsageError
from cvtool.io.coco import encode_mask
from cvtool.models.checkpoint import build_architecture, load_checkpoint, resolve_checkpoint
from cvtool.models.exported import exported_format
from cvtool.models.loading import (
    LoadedModel,
    load_exactly,
    looks_like_path,
    ready_for_inference,
    refuse_weights,
    warn_on_stderr,
)
from cvtool.models.registry import ModelSpec, get_spec, resolve_reference
from cvtool.models.weights import chosen_weights, state_dict_for

if TYPE_CHECKING:
    import torch
    from torch import nn

# Which registry tasks can serve each command: Mask R-CNN also detects (its masks are dropped).
SERVES: dict[str, tuple[str, ...]] = {
    "detect": ("detect", "segment-instance"),
    "segment-instance": ("segment-instance",),
}



MASK_THRESHOLD = 0.5  # a pixel belongs to the object where the mask probability reaches this

def load_detector(model: str, weights: str, task: str, offline: bool = False,
                  warn: Warn = warn_on_stderr) -> LoadedModel:
    """Resolve `model` (registry name, cvtool checkpoint or run dir) for `task` with `weights`
    default|none|PATH.

    Raises UsageError (unknown or unfitting model, unreadable file) or ResourceUnavailable
    (default weights not cached and offline, or the download failed).
    """
    if exported_format(model):
        from torchvision.transforms._presets import ObjectDetection

        from cvtool.models.runtimes import open_export

        found = open_export(model, task, weights, SERVES[task])
        return LoadedModel(model, found.module, found.categories,  # type: ignore[arg-type]
                           ObjectDetection(), found.parameters)
    if looks_like_path(model):
        return _checkpoint_detector(Path(model), model, weights, task)
    spec = get_spec(model)
    if spec.task in SERVES[task] and spec.source == "house":
        return _checkpoint_detector(spec.checkpoint_path, spec.name, weights, task)
    if spec.task not in SERVES[task] or spec.source != "torchvision":
        listing = " and ".join(f"`cvtool models {t}`" for t in SERVES[task])
        raise UsageError(f"{model} is a {spec.task} model, not one for {task}; {listing} "
                         "list those that are")
    default = chosen_weights(spec, weights)
    categories = list(default.meta["categories"])
    if weights == "none":
        warn(f"{spec.name} runs with random weights (--weights none): its labels are meaningless")
        module = build_detector(spec, len(categories))
        return LoadedModel(
            spec.name, ready_for_inference(module), categories, default.transforms(), None)
    path, state = state_dict_for(spec, weights, offline)
    module = build_detector(spec, len(categories))
    freeze_batch_norms(module, state)
    load_exactly(module, state, f"weights file {path}", spec.name)
    return LoadedModel(
        spec.name, ready_for_inference(module), categories, default.transforms(), str(path))


def _checkpoint_detector(path: Path, name: str, weights: str, task: str) -> LoadedModel:
    """A detector trained by `cvtool train detect|segment-instance`: it resizes and normalises
    inside the model, so its input is the image as float in [0, 1], like torchvision's."""
    from torchvision.transforms._presets import ObjectDetection

    refuse_weights(weights, name)
    tensors_path = resolve_checkpoint(path)
    state, meta = load_checkpoint(tensors_path)
    if meta.get("task") not in SERVES[task] or not isinstance(meta.get("classes"), list):
        raise UsageError(f"{name} is a {meta.get('task')!r} checkpoint; {task} needs one of "
                         f"{', '.join(SERVES[task])}")
    module = build_architecture(meta, state)
    freeze_batch_norms(module, state)
    load_exactly(module, state, f"checkpoint {tensors_path}", name)
    return LoadedModel(name, ready_for_inference(module), [str(c) for c in meta["classes"]],
                       ObjectDetection(), str(tensors_path))


def build_detector(spec: ModelSpec, num_classes: int) -> nn.Module:
    builder = resolve_reference(spec.builder)
    return builder(weights=None, weights_backbone=None, num_classes=num_classes)


def freeze_batch_norms(module: nn.Module, state: Mapping[str, Any]) -> None:
    """Turn the BatchNorm2d layers `state` stores without `num_batches_tracked` into
    FrozenBatchNorm2d, as torchvision's builders do for pretrained weights: the released files
    only fit (and only compute the same function) in that form."""
    from torch import nn
    from torchvision.ops import FrozenBatchNorm2d

    for name, child in list(module.named_modules()):
        for child_name, layer in list(child.named_children()):
            key = f"{name}.{child_name}" if name else child_name
            if isinstance(layer, nn.BatchNorm2d) and f"{key}.weight" in state \
                    and f"{key}.num_batches_tracked" not in state:
                setattr(child, child_name, FrozenBatchNorm2d(layer.num_features, eps=layer.eps))


def detections_of(output: dict[str, torch.Tensor], categories: Sequence[str], conf: float,
                  wanted: set[int] | None, masks: bool) -> list[dict[str, Any]]:
    """A torchvision detector's output for one image as the records' `detections` list."""
    import torch

    keep = output["scores"] >= conf
    if wanted is not None:
        keep &= torch.isin(output["labels"], torch.tensor(sorted(wanted), device=keep.device))
    scores = output["scores"][keep].double().cpu().tolist()
    labels = output["labels"][keep].cpu().tolist()
    boxes = output["boxes"][keep].double().cpu().tolist()
    detections = [{"index": i, "label": _label(categories, i), "score": s, "box": b}
                  for i, s, b in zip(labels, scores, boxes)]
    if masks:
        planes = (output["masks"][keep, 0] >= MASK_THRESHOLD).cpu().numpy()
        for detection, plane in zip(detections, planes):
            detection["mask"], detection["area"] = encode_mask(plane)
    return detections


def _label(categories: Sequence[str], index: int) -> str:
    return categories[index] if 0 <= index < len(categories) else f"class_{index}"
