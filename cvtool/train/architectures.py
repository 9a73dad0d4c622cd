"""The module a run trains, and the `architecture` meta that rebuilds it from a checkpoint."""

from __future__ import annotations

from typing import Any

from torch import nn

from cvtool.core.context import Warn
from cvtool.core.status import UsageError
from cvtool.models.registry import get_spec, resolve_reference
from cvtool.models.small import initialise
from cvtool.train.config import SMALL_MODELS, ClassifyConfig

# torchvision nets whose training forward returns auxiliary outputs unless told not to.
_AUX_LOGITS = ("googlenet", "inception_v3")


def build_classifier(config: ClassifyConfig, input_shape: tuple[int, int, int],
                     num_classes: int, offline: bool,
                     warn: Warn) -> tuple[nn.Module, dict[str, Any]]:
    """A freshly initialised (or pretrained, for --weights) module and its architecture meta."""
    if config.model in SMALL_MODELS:
        architecture = {"builder": f"cvtool.models.small:{config.model}",
                        "kwargs": small_kwargs(config, input_shape, num_classes)}
        module = resolve_reference(architecture["builder"])(**architecture["kwargs"])
        initialise(module, config.resolved_init, config.activation)
        return module, architecture
    if config.model.startswith("timm:"):
        return _timm_classifier(config, input_shape, num_classes, offline, warn)
    return _torchvision_classifier(config, input_shape, num_classes, offline, warn)


def small_kwargs(config: ClassifyConfig, input_shape: tuple[int, int, int],
                 num_classes: int) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"input_shape": list(input_shape), "num_classes": num_classes}
    if config.model == "linear":
        return kwargs
    layers = {"mlp": ("hidden", [config.width] * config.depth),
              "cnn": ("channels", [config.width * 2 ** i for i in range(config.depth)])}
    name, widths = layers[config.model]
    return {**kwargs, name: widths, "activation": config.activation,
            "batch_norm": config.batch_norm, "dropout": config.dropout}


def _torchvision_classifier(config: ClassifyConfig, input_shape: tuple[int, int, int],
                            num_classes: int, offline: bool,
                            warn: Warn) -> tuple[nn.Module, dict[str, Any]]:
    spec = get_spec(config.model)  # unknown names: usage error with close matches
    if spec.task != "classify" or spec.source != "torchvision":
        raise UsageError(f"--model {config.model}: expected knn, linear, mlp, cnn, a "
                         f"torchvision classifier (`cvtool models classify`) or timm:<name>")
    kwargs: dict[str, Any] = {"num_classes": num_classes, **_input_size_kwargs(config.model,
                                                                             input_shape)}
    if config.model in _AUX_LOGITS:
        kwargs["aux_logits"] = False
    module = resolve_reference(spec.builder)(**kwargs)
    if config.weights != "none":
        _load_pretrained(module, spec, config.weights, offline, warn)
    return module, {"builder": spec.builder, "kwargs": kwargs}


def _timm_classifier(config: ClassifyConfig, input_shape: tuple[int, int, int],
                     num_classes: int, offline: bool,
                     warn: Warn) -> tuple[nn.Module, dict[str, Any]]:
    """timm's architecture with a new class head: from scratch (--weights none), from a tag's
    weights (default, or --weights TAG; timm's load_pretrained fits them), or from a file."""
    import cvtool.models.timm_models as hub
    from cvtool.models.weights import (
        is_weights_name,
        load_fitting,
        read_state_dict,
        state_dict_for,
    )

    architecture, tag = hub.resolve(config.model, config.weights)
    model_config = hub.pretrained_config(architecture, tag)
    kwargs: dict[str, Any] = {"model_name": architecture, "num_classes": num_classes,
                              "pretrained": False}
    if model_config.get("fixed_input_size") and \
            tuple(model_config["input_size"][1:]) != tuple(input_shape[1:]):
        kwargs["img_size"] = input_shape[1]  # position embeddings, window partitions
    extra = {key: value for key, value in kwargs.items() if key == "img_size"}
    if config.weights == "none":
        return hub.create(architecture, None, num_classes, **extra), kwargs_meta(kwargs)
    if config.weights == "default" or is_weights_name(config.weights):
        label = f"{hub.PREFIX}{architecture}.{tag}"
        state = read_state_dict(hub.weights_file(label, model_config, offline))
        module = hub.create(architecture, tag, num_classes, state, **extra)
        warn(f"{label}: the class head starts untrained ({num_classes} classes)")
        return module, kwargs_meta(kwargs)
    module = hub.create(architecture, None, num_classes, **extra)
    _, state = state_dict_for(get_spec(config.model), config.weights, offline)
    fresh = load_fitting(module, state, f"--weights {config.weights}", config.model)
    if fresh:
        warn(f"{len(fresh)} tensors of {config.model} start untrained ({', '.join(fresh[:3])}"
             f"{', ...' if len(fresh) > 3 else ''}): the class head is new")
    return module, kwargs_meta(kwargs)


def kwargs_meta(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The `architecture` meta of a timm model (cvtool.models.builders checks it on load)."""
    from cvtool.models.registry import TIMM_BUILDER as BUILDER

    return {"builder": BUILDER, "kwargs": kwargs}


def pretrained_preprocessing(config: ClassifyConfig) -> dict[str, Any] | None:
    """What a fine-tuned torchvision model's weights expect: their own transforms() (resize
    size and interpolation, crop, mean, std), as checkpoint meta stores them; None when the run
    trains from scratch. --image-size sets the crop, and the resize keeps the weights' ratio."""
    if config.model in SMALL_MODELS or config.weights == "none":
        return None
    if config.model.startswith("timm:"):
        import cvtool.models.timm_models as hub

        architecture, tag = hub.resolve(config.model, config.weights)
        return hub.preprocessing(hub.pretrained_config(architecture, tag), config.image_size)
    spec = get_spec(config.model)
    if spec.source != "torchvision" or spec.weights is None:
        return None
    from cvtool.models.weights import chosen_weights

    transforms = chosen_weights(spec, config.weights).transforms()
    crop, resize = transforms.crop_size[0], transforms.resize_size[0]
    if config.image_size is not None:
        crop, resize = config.image_size, round(config.image_size * resize / crop)
    return {"resize_size": resize, "crop_size": crop, "mean": list(transforms.mean),
            "std": list(transforms.std), "interpolation": transforms.interpolation.value}


def _input_size_kwargs(model: str, input_shape: tuple[int, int, int]) -> dict[str, Any]:
    """The transformers fix their input size at build time: ViT's position embeddings, MaxViT's
    partitions; they are built for the size the run trains at."""
    side = input_shape[1]
    if model.startswith("vit_"):
        return {"image_size": side}
    if model == "maxvit_t":
        return {"input_size": [side, side]}
    return {}


def _load_pretrained(module: nn.Module, spec: Any, weights: str, offline: bool,
                     warn: Warn) -> None:
    """Fine-tuning: every pretrained tensor that fits; the class head stays freshly initialised."""
    from cvtool.models.weights import load_fitting, state_dict_for

    _, state = state_dict_for(spec, weights, offline)
    fresh = load_fitting(module, state, f"--weights {weights}", spec.name)
    if fresh:
        warn(f"{len(fresh)} tensors of {spec.name} start untrained ({', '.join(fresh[:3])}"
             f"{', ...' if len(fresh) > 3 else ''}): the class head is new")
