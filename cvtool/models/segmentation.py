"""Semantic segmenters: a registry name, an smp architecture or a cvtool checkpoint in, a model out.

- torchvision (`deeplabv3_resnet50`, `fcn_resnet50`, `lraspp_mobilenet_v3_large`, ...): categories
  and preprocessing are the default weights' own (`meta["categories"]`, `transforms()`: shorter
  side to 520, ImageNet mean/std), also under `--weights none|PATH`. Built with `weights=None,
  weights_backbone=None` (nothing downloads behind the user's back) and with `aux_loss` exactly
  when the state dict holds the auxiliary head, as torchvision's builders do for their weights.
- segmentation-models-pytorch, `smp:<arch>` with `--encoder` (default resnet34, smp's own).
  `--weights default` is what smp builds by default: the encoder's ImageNet weights (through
  smp's API into the Hugging Face cache), an untrained decoder and one output channel. A state-dict
  file decides the number of classes. Inputs keep their size, normalised with the mean/std of the
  encoder's ImageNet weights (their config in the Hugging Face cache; ImageNet's own, with a
  warning, where it is not there and `--weights` is not `default`), padded at the bottom and
  right to what the architecture needs.
- cvtool checkpoints (`cvtool train segment-semantic` runs, house models such as `shapes-unet`),
  whose JSON meta (see cvtool/models/checkpoint.py) reads:

    "task": "segment-semantic",
    "architecture": {"builder": "segmentation_models_pytorch:Unet",   # any trusted builder
                     "kwargs": {"encoder_name": "resnet18", "classes": 4}},
    "classes": ["background", "circle", "square", "triangle"],   # index -> label
    "preprocessing": {"resize_size": null | int | [h, w],  # own size | shorter side | exactly
                      "mean": [r, g, b], "std": [r, g, b],
                      "interpolation": "bilinear"}              # optional, bilinear by default

  Pretrained-weight arguments (smp `encoder_weights`, torchvision `weights`/`weights_backbone`)
  are forced to None: the checkpoint holds every parameter. The module returns logits
  (N, C, H, W), or torchvision's {"out": logits}. A model with one output channel is binary
  (class 1 where its logit is positive): its checkpoint lists two classes.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cvtool.core.context import Warn, offline_reason
from cvtool.core.results import one_line
from cvtool.core.status import ResourceUnavailable, UsageError
from cvtool.models.checkpoint import (
    build_architecture,
    build_on_meta,
    checked_preprocessing,
    load_checkpoint,
    resolve_checkpoint,
)
from cvtool.models.exported import exported_format
from cvtool.models.loading import (
    LoadedModel,
    built_and_loaded,
    fitting_num_classes,
    looks_like_path,
    ready_for_inference,
    refuse_weights,
    warn_on_stderr,
)
from cvtool.models.registry import ModelSpec, get_spec, resolve_reference
from cvtool.models.weights import (
    chosen_weights,
    hf_endpoint,
    hub_offline,
    state_dict_for,
    unreachable,
)

if TYPE_CHECKING:
    from torch import nn

TASK = "segment-semantic"
DEFAULT_ENCODER = "resnet34"  # smp's own default
BINARY_CLASSES = ["background", "foreground"]
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass
class LoadedSegmenter(LoadedModel):
    input_multiple: int = 1  # height and width are padded up to a multiple of this
    min_input_side: int = 1  # ... and to at least this
    encoder: str | None = None  # smp models: the --encoder


def load_segmenter(model: str, weights: str = "default", encoder: str | None = None,
                   offline: bool = False, warn: Warn = warn_on_stderr) -> LoadedSegmenter:
    """Resolve `model` (registry name, checkpoint, run dir) with `weights` default|none|PATH.

    Raises UsageError (unknown model or encoder, unfitting or unreadable file) or
    ResourceUnavailable (default weights not cached and offline, or the download failed).
    """
    if exported_format(model):
        from cvtool.models.runtimes import open_export

        _refuse_encoder(encoder, model)
        found = open_export(model, TASK, weights, (TASK,))
        return LoadedSegmenter(model, found.module, found.categories,  # type: ignore[arg-type]
                               segmentation_transforms(found.meta.get("preprocessing", {})),
                               found.parameters, *found.segmentation_layout())
    if looks_like_path(model):
        _refuse_encoder(encoder, model)
        return _checkpoint_segmenter(Path(model), model, weights)
    spec = get_spec(model)
    if spec.task != TASK:
        raise UsageError(f"{model} is a {spec.task} model; `cvtool models {TASK}` lists the "
                         "semantic segmenters")
    if spec.source == "smp":
        return _smp_segmenter(spec, weights, encoder or DEFAULT_ENCODER, offline, warn)
    _refuse_encoder(encoder, model)
    if spec.source == "house":
        return _checkpoint_segmenter(spec.checkpoint_path, spec.name, weights)
    return _torchvision_segmenter(spec, weights, offline, warn)


def segmentation_transforms(preprocessing: Mapping[str, Any]) -> nn.Module:
    """torchvision's SemanticSegmentation from a checkpoint's `preprocessing` meta."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms._presets import SemanticSegmentation

    checked_preprocessing(preprocessing, ("resize_size",))
    resize = preprocessing.get("resize_size")
    try:
        transforms = SemanticSegmentation(
            resize_size=resize if isinstance(resize, int) else None,
            mean=tuple(preprocessing["mean"]), std=tuple(preprocessing["std"]),
            interpolation=InterpolationMode(preprocessing.get("interpolation", "bilinear")))
    except (KeyError, TypeError, ValueError) as error:
        raise UsageError(f"checkpoint preprocessing is invalid: {error!r}") from None
    if isinstance(resize, list):  # [h, w] resizes to exactly that size
        transforms.resize_size = list(resize)
    return transforms


def _refuse_encoder(encoder: str | None, model: str) -> None:
    if encoder is not None:
        raise UsageError(f"--encoder applies to smp:<arch> models only, not to {model}")


def _checkpoint_segmenter(path: Path, name: str, weights: str) -> LoadedSegmenter:
    refuse_weights(weights, name)
    tensors_path = resolve_checkpoint(path)
    state, meta = load_checkpoint(tensors_path)
    classes = meta.get("classes")
    if meta.get("task") != TASK or not isinstance(classes, list) or not classes:
        raise UsageError(f"{name} is not a semantic segmentation checkpoint "
                         f"(task {meta.get('task')!r})")
    transforms = segmentation_transforms(meta.get("preprocessing", {}))
    offline_meta = {**meta, "architecture": _without_downloads(meta.get("architecture"))}
    module = built_and_loaded(lambda: build_architecture(offline_meta, state), state,
                              f"checkpoint {tensors_path}", name)
    return _loaded(name, module, [str(label) for label in classes], transforms, str(tensors_path))


def _without_downloads(architecture: Any) -> Any:
    if not isinstance(architecture, dict) or not isinstance(architecture.get("builder"), str) \
            or not isinstance(architecture.get("kwargs", {}), dict):
        return architecture  # build_architecture says what is wrong
    kwargs = dict(architecture.get("kwargs", {}))
    builder = architecture["builder"]
    if builder.startswith("segmentation_models_pytorch"):
        kwargs["encoder_weights"] = None
    elif builder.startswith("torchvision.models.segmentation"):
        kwargs.update(weights=None, weights_backbone=None)
    return {**architecture, "kwargs": kwargs}


def _torchvision_segmenter(spec: ModelSpec, weights: str, offline: bool,
                           warn: Warn) -> LoadedSegmenter:
    default = chosen_weights(spec, weights)
    categories = list(default.meta["categories"])
    if weights == "none":
        warn(f"{spec.name} runs with random weights (--weights none): its labels are meaningless")
        module = _build_torchvision(spec, len(categories), aux_loss=False)
        return _loaded(spec.name, module, categories, default.transforms(), None)
    path, state = state_dict_for(spec, weights, offline)
    aux_loss = any(key.startswith("aux_classifier.") for key in state)
    num_classes = _fitting_outputs(lambda n: _build_torchvision(spec, n, aux_loss), state,
                                   len(categories))
    if num_classes != len(categories):
        warn(f"{path} has {num_classes} classes, not the {len(categories)} of {default!r}: "
             f"labels are class_0..class_{num_classes - 1}")
        categories = [f"class_{index}" for index in range(num_classes)]
    module = built_and_loaded(lambda: _build_torchvision(spec, num_classes, aux_loss), state,
                              f"weights file {path}", spec.name)
    return _loaded(spec.name, module, categories, default.transforms(), str(path))


def _build_torchvision(spec: ModelSpec, num_classes: int, aux_loss: bool) -> nn.Module:
    # LR-ASPP has no auxiliary head (nor the argument): pass it only when the file has one.
    extra = {"aux_loss": True} if aux_loss else {}
    return resolve_reference(spec.builder)(weights=None, weights_backbone=None,
                                           num_classes=num_classes, **extra)


def _fitting_outputs(build: Callable[[int], nn.Module], state: Mapping[str, Any],
                     expected: int) -> int:
    module = build_on_meta(lambda: build(expected)) or build(expected)
    return fitting_num_classes(module, state, expected)


def _smp_segmenter(spec: ModelSpec, weights: str, encoder: str, offline: bool,
                   warn: Warn) -> LoadedSegmenter:
    check_encoder(encoder)
    weights_file = None
    if weights == "default":
        warn(f"{spec.name}'s default weights are its encoder's ImageNet weights: the decoder is "
             "untrained, so its masks are meaningless")
        module = fetch_pretrained(lambda: build_smp(spec, encoder, 1, pretrained=True),
                             spec, encoder, offline)
        weights_file = cached_encoder_file(encoder)
    elif weights == "none":
        warn(f"{spec.name} runs with random weights (--weights none): its masks are meaningless")
        module = build_smp(spec, encoder, 1)
    else:
        path, state = state_dict_for(spec, weights, offline)
        outputs = _fitting_outputs(lambda n: build_smp(spec, encoder, n), state, 1)
        module = built_and_loaded(lambda: build_smp(spec, encoder, outputs), state,
                                  f"weights file {path}", f"{spec.name} with encoder {encoder}")
        weights_file = str(path)
    outputs = _output_channels(module)
    categories = BINARY_CLASSES if outputs == 1 else [f"class_{i}" for i in range(outputs)]
    # Only `default` may download (the config comes with the weights); a file never needs network.
    mean, std = encoder_normalisation(encoder, offline or weights != "default", warn)
    return _loaded(spec.name, module, categories, _own_size_transforms(mean, std), weights_file,
                   encoder)


def build_smp(spec: ModelSpec, encoder: str, classes: int, pretrained: bool = False) -> nn.Module:
    """`spec`'s smp architecture; `pretrained` fetches the encoder's ImageNet weights (network or
    Hugging Face cache: wrap the call in `fetch_pretrained` for cvtool's errors)."""
    try:
        return resolve_reference(spec.builder)(
            encoder_name=encoder, encoder_weights="imagenet" if pretrained else None,
            classes=classes)
    except KeyError as error:  # smp: this encoder has no ImageNet weights
        raise UsageError(f"{spec.name} with encoder {encoder}: {one_line(error)}; use "
                         "--weights none or --weights PATH") from None
    except RuntimeError as error:  # timm: unknown tu- model
        raise UsageError(f"cannot build {spec.name} with encoder {encoder}: "
                         f"{one_line(error)}") from None


def check_encoder(encoder: str) -> None:
    """smp's own encoders, or `tu-<timm model>`; anything else is a usage error with suggestions."""
    from segmentation_models_pytorch.encoders import get_encoder_names

    names = get_encoder_names()
    if encoder in names or encoder.startswith("tu-"):
        return
    close = difflib.get_close_matches(encoder, names, n=5, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise UsageError(f"unknown encoder {encoder!r}{hint} (segmentation-models-pytorch has "
                     f"{len(names)}: {', '.join(sorted(names))}; or tu-<timm model>)")


def encoder_normalisation(encoder: str, offline: bool,
                          warn: Warn) -> tuple[list[float], list[float]]:
    """The mean and std of the encoder's ImageNet weights, as smp's `get_preprocessing_params`
    gives them (their config.json; from the Hugging Face cache only when `offline`); ImageNet's
    own, with a warning, where that config cannot be had."""
    from segmentation_models_pytorch.encoders import get_preprocessing_params

    try:
        # Without network, the cache alone (huggingface_hub would retry for half a minute).
        with hub_offline(offline or unreachable(hf_endpoint()) is not None):
            params = get_preprocessing_params(encoder, pretrained="imagenet")
        return list(params["mean"]), list(params["std"])
    except (OSError, ValueError, KeyError) as error:
        reason = (("not in the Hugging Face cache" if offline else "not downloadable")
                  if isinstance(error, OSError) else one_line(error, 120))
        warn(f"the mean and std of encoder {encoder}'s ImageNet weights: {reason}; normalising "
             "with ImageNet's")
        return list(IMAGENET_MEAN), list(IMAGENET_STD)


def pull_encoder(spec: ModelSpec, encoder: str | None, offline: bool) -> Path:
    """Fetch `encoder`'s ImageNet weights into the Hugging Face cache through smp's API."""
    from huggingface_hub import constants
    from segmentation_models_pytorch.encoders import get_encoder

    encoder = encoder or DEFAULT_ENCODER
    check_encoder(encoder)
    fetch_pretrained(lambda: get_encoder(encoder, weights="imagenet"), spec, encoder, offline)
    return Path(cached_encoder_file(encoder) or constants.HF_HUB_CACHE)


def cached_encoder_file(encoder: str) -> str | None:
    """Where smp's own encoder's ImageNet weights lie in the Hugging Face cache, if they do."""
    from huggingface_hub import try_to_load_from_cache
    from segmentation_models_pytorch.encoders import encoders

    settings = encoders.get(encoder, {}).get("pretrained_settings", {}).get("imagenet")
    if settings is None:
        return None
    found = try_to_load_from_cache(settings["repo_id"], "model.safetensors",
                                   revision=settings["revision"])
    return found if isinstance(found, str) else None


def fetch_pretrained(fetch: Callable[[], Any], spec: ModelSpec, encoder: str,
                     offline: bool) -> Any:
    """`fetch()` (which downloads encoder weights through smp) with cvtool's errors."""
    no_network = None if offline else unreachable(hf_endpoint())
    try:
        with hub_offline(offline or no_network is not None):
            return fetch()
    except KeyError as error:
        raise UsageError(f"encoder {encoder}: {one_line(error)}") from None
    except OSError as error:  # huggingface_hub's errors: not cached, offline, HTTP, connection
        reason = (offline_reason() if offline else no_network or
                  f"the download failed ({type(error).__name__}: {one_line(error, 160)})")
        raise ResourceUnavailable(
            f"ImageNet weights of encoder {encoder} are not in the Hugging Face cache and "
            f"{reason}; run `cvtool models pull {spec.name} --encoder {encoder}` with network "
            "access, or pass a state dict file with `--weights PATH`") from None


def _own_size_transforms(mean: list[float], std: list[float]) -> nn.Module:
    return segmentation_transforms({"resize_size": None, "mean": mean, "std": std})


def _output_channels(module: nn.Module) -> int:
    return int(module.segmentation_head[0].out_channels)


def input_geometry(module: nn.Module) -> tuple[int, int]:
    """(multiple, minimum side) that an input's height and width must meet for `module`."""
    stride = getattr(getattr(module, "encoder", None), "output_stride", None)
    if not isinstance(stride, int) or not getattr(module, "requires_divisible_input_shape", False):
        return 1, 1
    # PAN's pyramid attention halves its deepest features three more times.
    return stride, 8 * stride if type(module).__name__ == "PAN" else 1


def _loaded(name: str, module: nn.Module, categories: list[str], transforms: Callable,
            weights_file: str | None, encoder: str | None = None) -> LoadedSegmenter:
    multiple, min_side = input_geometry(module)
    return LoadedSegmenter(name, ready_for_inference(module), categories, transforms,
                           weights_file, input_multiple=multiple, min_input_side=min_side,
                           encoder=encoder)
