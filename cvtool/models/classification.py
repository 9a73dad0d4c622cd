"""Image classifiers: a registry name or a cvtool checkpoint in, a ready-to-run model out.

Preprocessing is never approximated: a torchvision model uses its default weights' own
`transforms()` (also under `--weights none|PATH`, the architecture's input contract does not
change), and a cvtool checkpoint rebuilds torchvision's `ImageClassification` from its meta.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cvtool.checkpoint import (
    build_architecture,
    build_on_meta,
    check_tensors,
    checked_preprocessing,
    load_checkpoint,
    resolve_checkpoint,
    with_metadata,
)
from cvtool.models.weights import file_sha256, state_dict_for
from cvtool.registry import ModelSpec, get_spec, is_registered, resolve_reference
from cvtool.status import UsageError

if TYPE_CHECKING:
    from torch import nn

_AUX_HEAD_PREFIXES = ("aux1.", "aux2.", "AuxLogits.")


def warn_on_stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


@dataclass
class LoadedModel:
    name: str  # registry name, or the checkpoint path as given
    module: nn.Module  # eval mode, on CPU, float32
    categories: list[str]
    transforms: Callable  # torchvision ImageClassification
    weights_file: str | None  # where the parameters came from; None for random init

    @cached_property
    def weights_sha256(self) -> str | None:
        # Hashed on demand (run.json): reading a large file is not worth it on every start-up.
        return None if self.weights_file is None else file_sha256(Path(self.weights_file))


def load_classifier(model: str, weights: str = "default", offline: bool = False,
                    warn: Callable[[str], None] = warn_on_stderr) -> LoadedModel:
    """Resolve `model` (registry name, checkpoint, run dir) and `weights` (default|none|PATH).

    Raises UsageError (unknown model, unfitting or unreadable file) or ResourceUnavailable
    (default weights not cached and offline, or the download failed).
    """
    if looks_like_path(model):
        return _checkpoint_classifier(Path(model), model, weights)
    spec = get_spec(model)
    if spec.task != "classify":
        raise UsageError(f"{model} is a {spec.task} model; "
                         f"`cvtool models classify` lists the classifiers")
    if spec.source == "house":
        return _checkpoint_classifier(spec.checkpoint_path, spec.name, weights)
    return _torchvision_classifier(spec, weights, offline, warn)


def classification_transforms(preprocessing: Mapping[str, Any]) -> nn.Module:
    """torchvision's ImageClassification from a checkpoint's `preprocessing` meta."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms._presets import ImageClassification

    checked_preprocessing(preprocessing, ("crop_size", "resize_size"))
    try:
        transforms = ImageClassification(
            crop_size=preprocessing["crop_size"], resize_size=preprocessing["resize_size"],
            mean=preprocessing["mean"], std=preprocessing["std"],
            interpolation=InterpolationMode(preprocessing["interpolation"]))
    except (KeyError, TypeError, ValueError) as error:
        raise UsageError(f"checkpoint preprocessing is invalid: {error!r}") from None
    # ImageClassification wraps its sizes in a list, right for an int; [h, w] is already that list.
    for size in ("crop_size", "resize_size"):
        if isinstance(preprocessing[size], list):
            setattr(transforms, size, list(preprocessing[size]))
    return transforms


def refuse_weights(weights: str, name: str) -> None:
    """A cvtool checkpoint carries its parameters: any --weights other than default is an error."""
    if weights != "default":
        raise UsageError(f"--weights {weights} does not apply to {name}: a cvtool checkpoint "
                         f"carries its own weights")


def looks_like_path(model: str) -> bool:
    """Whether `-m model` names a file or run directory rather than a registry model.

    A registry name always means the registry's model, even where a file or folder of that name
    exists here (write `./resnet50` for that); a name with a path separator or a checkpoint
    suffix is a path; any other name is a path when it exists."""
    if model.endswith((".safetensors", ".json")) or any(sep in model for sep in ("/", "\\")):
        return True
    return not is_registered(model) and Path(model).exists()


def _checkpoint_classifier(path: Path, name: str, weights: str) -> LoadedModel:
    refuse_weights(weights, name)
    tensors_path = resolve_checkpoint(path)
    state, meta = load_checkpoint(tensors_path)
    if meta.get("task") != "classify" or not isinstance(meta.get("classes"), list):
        raise UsageError(f"{name} is not a classification checkpoint (task {meta.get('task')!r})")
    module = build_architecture(meta, state)
    load_exactly(module, state, f"checkpoint {tensors_path}", name)
    transforms = classification_transforms(meta.get("preprocessing", {}))
    return LoadedModel(name, ready_for_inference(module),
                       [str(label) for label in meta["classes"]], transforms, str(tensors_path))


def _torchvision_classifier(spec: ModelSpec, weights: str, offline: bool,
                            warn: Callable[[str], None]) -> LoadedModel:
    default = resolve_reference(spec.weights)
    categories = list(default.meta["categories"])
    if weights == "none":
        warn(f"{spec.name} runs with random weights (--weights none): its labels are meaningless")
        module = _build_torchvision(spec, default, {}, len(categories))
        return LoadedModel(
            spec.name, ready_for_inference(module), categories, default.transforms(), None)

    path, state = state_dict_for(spec, weights, offline)
    build = lambda: _build_torchvision(spec, default, state, len(categories))  # noqa: E731
    module = build_on_meta(build) or build()
    num_classes = fitting_num_classes(module, state, len(categories))
    if num_classes != len(categories):
        warn(f"{path} has {num_classes} classes, not the {len(categories)} of {default!r}: "
             f"labels are class_0..class_{num_classes - 1}")
        categories = [f"class_{index}" for index in range(num_classes)]
    module = built_and_loaded(lambda: _build_torchvision(spec, default, state, num_classes),
                              state, f"weights file {path}", spec.name)
    return LoadedModel(
        spec.name, ready_for_inference(module), categories, default.transforms(), str(path))


def _build_torchvision(spec: ModelSpec, default: Any, state: Mapping[str, Any],
                       num_classes: int) -> nn.Module:
    """The architecture as torchvision's builder configures it for `default` weights.

    Mirrors the `_ovewrite_named_param` calls in torchvision's builders: a state dict made for the
    weights only fits, and only computes the same function, when the model is built the same way.
    """
    kwargs: dict[str, Any] = {"num_classes": num_classes}
    if spec.name.startswith("vit_"):
        kwargs["image_size"] = default.meta["min_size"][0]
    elif spec.name == "maxvit_t":
        kwargs["input_size"] = default.meta["min_size"]
    elif spec.name in ("googlenet", "inception_v3"):
        aux_logits = any(key.startswith(_AUX_HEAD_PREFIXES) for key in state)
        kwargs.update(transform_input=True, init_weights=False, aux_logits=aux_logits)
    return resolve_reference(spec.builder)(weights=None, **kwargs)


def fitting_num_classes(module: nn.Module, state: Mapping[str, Any], num_classes: int) -> int:
    """The file's class count when only the output layers' size differs, else `num_classes`."""
    expected = module.state_dict()
    if set(expected) != set(state):
        return num_classes
    different = [key for key in expected if expected[key].shape != state[key].shape]
    found = {state[key].shape[0] for key in different}
    fits = all(expected[key].shape[0] == num_classes
               and expected[key].shape[1:] == state[key].shape[1:] for key in different)
    return found.pop() if different and fits and len(found) == 1 else num_classes


def load_exactly(module: nn.Module, state: Mapping[str, Any], source: str, name: str) -> None:
    """Strict load with a one-line summary of what does not fit; tensors the module cannot
    compute with (integers for floats, NaN) are refused too."""
    expected = module.state_dict()
    check_tensors(expected, state, source)
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    misshapen = [key for key in expected
                 if key in state and expected[key].shape != state[key].shape]
    problems = [f"{len(keys)} {what} ({_first(keys)})" for what, keys in (
        ("missing keys", missing), ("unexpected keys", unexpected), ("of wrong shape", misshapen))
        if keys]
    if problems:
        raise UsageError(f"{source} does not fit {name}: {', '.join(problems)}")
    try:
        module.load_state_dict(with_metadata(state, module), strict=True,
                               assign=_has_meta_tensors(module))
    except (RuntimeError, ValueError) as error:
        raise UsageError(f"{source} does not fit {name}: {' '.join(str(error).split())}") from None


def built_and_loaded(build: Callable[[], nn.Module], state: Mapping[str, Any], source: str,
                     name: str) -> nn.Module:
    """`build()`'s module holding `state`, loaded strictly.

    Built on the meta device first: no time goes into a random init the state overwrites anyway.
    Built again for real only when buffers outside the state dict still need values.
    """
    module = build_on_meta(build) or build()
    load_exactly(module, state, source, name)
    if _has_meta_tensors(module):
        module = build()
        load_exactly(module, state, source, name)
    return module


def _has_meta_tensors(module: nn.Module) -> bool:
    return any(tensor.is_meta for tensor in (*module.parameters(), *module.buffers()))


def ready_for_inference(module: nn.Module) -> nn.Module:
    return module.float().to("cpu").eval()


def _first(keys: list[str], shown: int = 3) -> str:
    return ", ".join(keys[:shown]) + (", ..." if len(keys) > shown else "")
