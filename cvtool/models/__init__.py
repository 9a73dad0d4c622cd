"""Models per task, their weights, and the one factory over the task loaders.

Importing this package does not import torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cvtool.core.context import Warn
from cvtool.core.status import UsageError
from cvtool.models.catalog import describe
from cvtool.models.classification import classification_transforms, load_classifier
from cvtool.models.detection import load_detector
from cvtool.models.loading import LoadedModel, warn_on_stderr
from cvtool.models.registry import ModelSpec
from cvtool.models.segmentation import load_segmenter, pull_encoder
from cvtool.models.weights import is_cached, pull_default, pull_named

__all__ = ["LoadedModel", "classification_transforms", "describe", "is_cached", "load_classifier",
           "load_detector", "load_model", "load_segmenter", "pull"]


def load_model(name: str, weights: str = "default", task: str = "classify", *,
               encoder: str | None = None, offline: bool = False,
               warn: Warn = warn_on_stderr) -> Any:
    """`name` (registry name, cvtool checkpoint or run directory) loaded for `task` with
    `weights` (default | none | PATH): a `LoadedModel` (a `LoadedSegmenter` for
    segment-semantic), eval mode, on the CPU."""
    if encoder is not None and task != "segment-semantic":
        raise ValueError("encoder applies to segment-semantic models only")
    if task == "classify":
        return load_classifier(name, weights, offline=offline, warn=warn)
    if task in ("detect", "segment-instance"):
        return load_detector(name, weights, task, offline=offline, warn=warn)
    if task == "segment-semantic":
        return load_segmenter(name, weights, encoder, offline=offline, warn=warn)
    raise ValueError(f"no model loader for task {task!r}")


def pull(spec: ModelSpec, offline: bool, progress: bool = True,
         encoder: str | None = None, weights: str | None = None) -> Path:
    """Make sure `spec`'s default weights (or the published ones `weights` names) are in the
    cache and return the cached file (for smp models: the ImageNet weights of `encoder`, in
    the Hugging Face cache)."""
    if weights is not None and spec.source not in ("torchvision", "timm"):
        raise UsageError(f"--weights names torchvision's or timm's published weights; "
                         f"{spec.name} is a {spec.source} model")
    if spec.source == "smp":
        return pull_encoder(spec, encoder, offline)
    if spec.source == "timm":
        from cvtool.models.timm_models import pull as pull_timm

        return pull_timm(spec.name, offline, weights or "default")
    if weights is not None:
        return pull_named(spec, weights, offline, progress)
    return pull_default(spec, offline, progress)
