"""The exact builders a cvtool checkpoint may name, and the kwargs each may receive.

A checkpoint's sidecar is untrusted input: its `architecture.builder` is looked up in this table
as a whole string (never imported, never walked attribute by attribute), and every kwarg is
checked against the builder's own entry: known name, JSON type, bounds. What the table does not
list cannot be built, so a sidecar cannot reach any other callable. No torch here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from cvtool.core.status import UsageError
from cvtool.models.registry import list_models

Check = Callable[[str, Any], None]  # raises UsageError naming the kwarg

MAX_CLASSES = 100_000
MAX_CHANNELS = 8192
MAX_SIDE = 4096
MAX_LAYERS = 64


def integer(low: int, high: int) -> Check:
    def check(name: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise UsageError(f"kwarg {name}={short_repr(value)} must be an integer from {low} to "
                             f"{high}")
    return check


def number(low: float, high: float) -> Check:
    def check(name: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or not low <= value <= high:
            raise UsageError(f"kwarg {name}={short_repr(value)} must be a number from {low} "
                             f"to {high}")
    return check


def choice(*allowed: Any) -> Check:
    def check(name: str, value: Any) -> None:
        # `is`-aware: True must not pass for 1, nor None for a string.
        if not any(value is option or (type(value) is type(option) and value == option)
                   for option in allowed):
            raise UsageError(f"kwarg {name}={short_repr(value)} must be one of "
                             f"{', '.join(map(repr, allowed))}")
    return check


def integers(low: int, high: int, shortest: int, longest: int) -> Check:
    item = integer(low, high)

    def check(name: str, value: Any) -> None:
        if not isinstance(value, list) or not shortest <= len(value) <= longest:
            raise UsageError(f"kwarg {name}={short_repr(value)} must be a list of {shortest} to "
                             f"{longest} integers")
        for entry in value:
            item(name, entry)
    return check


def size_or_pair(low: int, high: int) -> Check:
    single, pair = integer(low, high), integers(low, high, 2, 2)

    def check(name: str, value: Any) -> None:
        (pair if isinstance(value, list) else single)(name, value)
    return check


def name_like(name: str, value: Any) -> None:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_.\-]{1,100}", value):
        raise UsageError(f"kwarg {name}={short_repr(value)} must be a model name")


BOOLEAN = choice(True, False)
NOTHING = choice(None)
CLASSES = integer(1, MAX_CLASSES)
CHANNELS = integer(1, MAX_CHANNELS)
SIDE = integer(1, MAX_SIDE)
ACTIVATION = choice("sigmoid", "tanh", "relu", "leaky_relu", "elu")
PROBABILITY = number(0.0, 1.0)

_SMALL_CLASSIFIER = {"input_shape": integers(1, MAX_SIDE, 3, 3), "num_classes": CLASSES}
_SMALL_LAYERS = {"activation": ACTIVATION, "batch_norm": BOOLEAN, "dropout": PROBABILITY}
_GENERATIVE = {"channels": integer(1, 4), "image_size": size_or_pair(1, 256),
               "width": CHANNELS}

_OWN: dict[str, dict[str, Check]] = {
    "cvtool.models.small:linear": _SMALL_CLASSIFIER,
    "cvtool.models.small:mlp": {**_SMALL_CLASSIFIER, **_SMALL_LAYERS,
                                "hidden": integers(1, MAX_CHANNELS * 4, 0, MAX_LAYERS)},
    "cvtool.models.small:cnn": {**_SMALL_CLASSIFIER, **_SMALL_LAYERS,
                                "channels": integers(1, MAX_CHANNELS, 0, MAX_LAYERS)},
    "cvtool.models.knn:KNearestNeighbors": {
        "num_features": integer(1, 1 << 24), "num_train": integer(1, 1 << 24),
        "num_classes": CLASSES, "k": integer(1, 1 << 24), "distance": choice("l1", "l2")},
    "cvtool.models.small_detection:small_rcnn": {
        "num_classes": CLASSES, "masks": BOOLEAN, "width": integer(2, 1024),
        "min_size": SIDE, "max_size": SIDE, "anchor_sizes": integers(1, MAX_SIDE, 1, 8),
        "detections_per_image": integer(1, 10_000)},
    "cvtool.generative.pixelcnn:pixelcnn": {
        **_GENERATIVE, "levels": integer(2, 256), "layers": integer(1, MAX_LAYERS),
        "kernel_size": choice(3, 5, 7, 9, 11), "dropout": PROBABILITY, "gated": BOOLEAN},
    "cvtool.generative.vae:vae": {**_GENERATIVE, "levels": integer(2, 256),
                                  "latent_dim": integer(1, 4096),
                                  "prior_components": integer(0, 4096)},
    "cvtool.generative.gan:gan": {**_GENERATIVE, "latent_dim": integer(1, 4096)},
    # timm's models, by architecture name (checked against timm's list when built).
    "timm:create_model": {"model_name": name_like, "num_classes": CLASSES,
                          "pretrained": choice(False), "img_size": SIDE},
}

# What cvtool's trainers and loaders pass to the registry's own builders, per task.
_REGISTRY_KWARGS: dict[tuple[str, str], dict[str, Check]] = {
    ("torchvision", "classify"): {
        "num_classes": CLASSES, "aux_logits": BOOLEAN, "transform_input": BOOLEAN,
        "init_weights": BOOLEAN, "image_size": SIDE, "input_size": integers(1, MAX_SIDE, 2, 2),
        "weights": NOTHING},
    ("torchvision", "detect"): {"num_classes": CLASSES, "weights": NOTHING,
                                "weights_backbone": NOTHING, "min_size": SIDE, "max_size": SIDE},
    ("torchvision", "segment-semantic"): {"num_classes": CLASSES, "weights": NOTHING,
                                          "weights_backbone": NOTHING, "aux_loss": BOOLEAN},
    ("pypi", "classify"): {"num_classes": CLASSES, "pretrained": choice(False)},
    ("smp", "segment-semantic"): {
        "encoder_name": name_like, "encoder_weights": NOTHING, "encoder_depth": integer(3, 5),
        "classes": CLASSES, "decoder_channels": integers(1, MAX_CHANNELS, 1, 8)},
}
_REGISTRY_KWARGS["torchvision", "segment-instance"] = _REGISTRY_KWARGS["torchvision", "detect"]


def _table() -> dict[str, dict[str, Check]]:
    table = dict(_OWN)
    for spec in list_models():
        if spec.source != "house":
            table[spec.builder] = _REGISTRY_KWARGS[spec.source, spec.task]
    return table


BUILDERS: dict[str, dict[str, Check]] = _table()


def checked_architecture(architecture: Any) -> tuple[str, dict[str, Any]]:
    """(builder, kwargs) of a sidecar's `architecture`, refused unless the builder is in the
    table and every kwarg is one it lists, within bounds."""
    if not isinstance(architecture, dict) or not isinstance(architecture.get("builder"), str):
        raise UsageError("checkpoint meta has no architecture.builder")
    builder = architecture["builder"]
    if builder not in BUILDERS:
        raise UsageError(f"checkpoint builder {short_repr(builder)} is not one cvtool writes "
                         "(cvtool builds only its own and its registry's architectures)")
    kwargs = architecture.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise UsageError(f"checkpoint kwargs of {builder} must be an object")
    allowed = BUILDERS[builder]
    for name, value in kwargs.items():
        if name not in allowed:
            raise UsageError(f"checkpoint builder {builder} takes no kwarg {short_repr(name)} "
                             f"(it takes {', '.join(sorted(allowed))})")
        allowed[name](name, value)
    return builder, kwargs


def short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
