"""timm's models: `timm:<architecture>` and `timm:<architecture>.<tag>`, for classify and train.

A name is checked for its form alone until a timm model is really used: `import timm` costs
seconds, so only this module imports it, and only inside functions (never for `--help`, never
for another model). Then:

- the architecture must be one of `timm.list_models()` and the tag one of its pretrained tags
  (`timm.list_pretrained("<architecture>.*")`); without a tag, timm's default tag;
- `--weights` is `default` (the tag's weights), another tag of the architecture, `none`
  (random init, the tag's preprocessing) or a state-dict file;
- the weights come from the Hugging Face cache (`hf_hub_id` of timm's pretrained config,
  `model.safetensors` or `pytorch_model.bin`) or, for the few configs with only a URL, torch
  hub's cache; cvtool reads the file (safetensors, or torch.load with weights_only) and hands
  the tensors to timm's own `load_pretrained` (`pretrained_cfg_overlay={"state_dict": ...}`),
  which adapts them as timm does (filter functions, label offsets, a new class head);
- the preprocessing is timm's `resolve_data_config` + `create_transform` at evaluation,
  rebuilt as the `ImageClassification` every cvtool classifier uses (tests hold the two equal):
  resize to floor(size / crop_pct) (the shorter side, or both sides for crop_mode "squash"),
  centre crop, mean/std. The few configs timm crops otherwise ("border", non-square keep-ratio)
  are refused with that reason.
"""

from __future__ import annotations

import difflib
import functools
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cvtool.core.context import offline_reason
from cvtool.core.status import ResourceUnavailable, UsageError
from cvtool.models.registry import TIMM_NAME as _NAME
from cvtool.models.registry import TIMM_PREFIX as PREFIX
from cvtool.models.registry import timm_spec as spec

if TYPE_CHECKING:
    from torch import nn

_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm's hub loader looks for


def split(name: str) -> tuple[str, str | None]:
    match = _NAME.fullmatch(name)
    if match is None:
        spec(name)  # raises the usage error
    return match[1], match[2]


def resolve(name: str, weights: str = "default") -> tuple[str, str | None]:
    """(architecture, tag) that `name` and `--weights` choose; the tag is None only for an
    architecture timm has no pretrained weights for. Unknown names suggest close ones."""
    architecture, tag = split(name)
    known = _architectures()
    if architecture not in known:
        close = difflib.get_close_matches(architecture, sorted(known), n=5, cutoff=0.7)
        hint = f"; did you mean {', '.join(PREFIX + c for c in close)}?" if close else ""
        raise UsageError(f"timm has no model {architecture!r}{hint}")
    from cvtool.models.weights import is_weights_name

    tags = pretrained_tags(architecture)
    if is_weights_name(weights):  # a tag, not default, none or a file
        if tag is not None and weights != tag:
            raise UsageError(f"{name} already names its weights; --weights {weights} names "
                             "others: give one of the two")
        tag = weights
    if tag is not None and tag not in tags:
        listed = ", ".join(tags) if tags else "none (it has no pretrained weights)"
        raise UsageError(f"timm:{architecture} has no weights {tag!r}; its tags: {listed}")
    if tag is None and tags:
        tag = tags[0]  # timm's default
    return architecture, tag


def pretrained_tags(architecture: str) -> list[str]:
    """The architecture's tags that have weights, timm's default first."""
    from timm.models import get_arch_pretrained_cfgs

    published = _pretrained_names()
    return [found.partition(".")[2] for found in get_arch_pretrained_cfgs(architecture)
            if found in published]


@functools.cache
def _architectures() -> frozenset[str]:
    import timm

    return frozenset(timm.list_models())


@functools.cache
def _pretrained_names() -> frozenset[str]:
    import timm

    return frozenset(timm.list_pretrained())


def pretrained_config(architecture: str, tag: str | None) -> dict[str, Any]:
    """timm's pretrained config for the tag (the architecture's default config without one)."""
    from timm.models import get_pretrained_cfg

    found = get_pretrained_cfg(f"{architecture}.{tag}" if tag else architecture)
    if found is None:  # an architecture registered without any config
        return {"architecture": architecture, "input_size": (3, 224, 224), "num_classes": 1000}
    return found.to_dict()


def preprocessing(config: dict[str, Any], image_size: int | None = None) -> dict[str, Any]:
    """timm's evaluation transform for `config` as cvtool's preprocessing meta; `image_size`
    (training at another size) scales it as timm does, keeping crop_pct."""
    from timm.data import resolve_data_config

    data = resolve_data_config({}, pretrained_cfg=config)
    _, height, width = data["input_size"]
    if image_size is not None:
        height = width = image_size
    crop_pct, mode = data["crop_pct"], data.get("crop_mode", "center")
    scaled = [math.floor(height / crop_pct), math.floor(width / crop_pct)]
    if mode == "squash":
        resize: int | list[int] = scaled
    elif mode == "center" and scaled[0] == scaled[1]:
        resize = scaled[0]
    else:
        raise UsageError(f"timm:{config.get('architecture')} preprocesses with crop mode "
                         f"{mode!r} at {height}x{width}, which cvtool does not reproduce; "
                         "choose another tag")
    return {"crop_size": height if height == width else [height, width],
            "resize_size": resize, "mean": list(data["mean"]), "std": list(data["std"]),
            "interpolation": data["interpolation"]}


def categories(config: dict[str, Any], num_classes: int) -> list[str]:
    """Class labels in output order: ImageNet-1k's (the ones every cvtool classifier prints),
    timm's descriptions of the other ImageNet subsets, else class_N."""
    from timm.data import ImageNetInfo, infer_imagenet_subset

    offset = config.get("label_offset") or 0
    subset = infer_imagenet_subset(config)
    if subset == "imagenet-1k":
        from cvtool.models.efficientnet_lite import imagenet_categories

        names = imagenet_categories()
    elif subset:
        info = ImageNetInfo(subset)
        names = [info.index_to_description(index).split(", ")[0]
                 for index in range(info.num_classes())]
    else:
        names = []
    labels = ["background"] * offset + names
    if len(labels) != num_classes:
        return [f"class_{index}" for index in range(num_classes)]
    return labels


def create(architecture: str, tag: str | None, num_classes: int,
           state: dict[str, Any] | None = None, **kwargs: Any) -> nn.Module:
    """timm's model; with `state` (the tag's weights as cvtool read them), loaded by timm's
    own load_pretrained, which fits them to `num_classes` (a new head where they differ)."""
    import timm

    name = f"{architecture}.{tag}" if tag else architecture
    if state is None:
        return timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
    try:
        return timm.create_model(name, pretrained=True, num_classes=num_classes,
                                 pretrained_cfg_overlay={"state_dict": state}, **kwargs)
    except (RuntimeError, KeyError, ValueError) as error:
        raise UsageError(f"weights of timm:{name} do not fit it: "
                         f"{' '.join(str(error).split())[:300]}") from None


def cached_file(config: dict[str, Any]) -> Path | None:
    """Where the config's weights lie in the Hugging Face (or torch hub) cache, if they do."""
    repo = config.get("hf_hub_id")
    if repo:
        from huggingface_hub import try_to_load_from_cache

        for filename in _filenames(config):
            found = try_to_load_from_cache(repo, filename)
            if isinstance(found, str):
                return Path(found)
        return None
    url = config.get("url")
    if url:
        from cvtool.models.weights import url_cache_path

        path = url_cache_path(url)
        return path if path.is_file() else None
    return None


def weights_file(name: str, config: dict[str, Any], offline: bool) -> Path:
    """The tag's weights file, from the cache or downloaded into it through huggingface_hub
    (torch hub for URL-only configs); offline or without network, exit 3 naming the fix."""
    from cvtool.models.weights import hf_endpoint, not_cached_message, require_network

    found = cached_file(config)
    if found is not None:
        return found
    if config.get("custom_load"):
        raise UsageError(f"{name}'s weights load through custom code, which cvtool does not run")
    repo, url = config.get("hf_hub_id"), config.get("url")
    if not repo and not url:
        raise UsageError(f"{name} has no pretrained weights; use --weights none or PATH")
    if offline:
        raise ResourceUnavailable(not_cached_message(name, "classify",
                                                     offline_reason()))
    require_network(hf_endpoint() if repo else url, name, "classify")
    if not repo:
        from cvtool.models.weights import download_url

        return download_url(url, name, "classify")
    return _download_from_hub(name, repo, config)


def pull(name: str, offline: bool, weights: str = "default") -> Path:
    """`cvtool models pull timm:...`: the tag's weights into the cache; the cached file."""
    architecture, tag = resolve(name, weights)
    if tag is None:
        raise UsageError(f"{name} has no pretrained weights to pull")
    return weights_file(f"{PREFIX}{architecture}.{tag}", pretrained_config(architecture, tag),
                        offline)


def _download_from_hub(name: str, repo: str, config: dict[str, Any]) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    from cvtool.core.results import one_line
    from cvtool.models.weights import not_cached_message

    for filename in _filenames(config):
        try:
            return Path(hf_hub_download(repo, filename))
        except EntryNotFoundError:
            continue
        except OSError as error:
            raise ResourceUnavailable(not_cached_message(
                name, "classify", f"the download failed ({type(error).__name__}: "
                f"{one_line(error, 160)})")) from None
    raise ResourceUnavailable(f"{repo} on the Hugging Face hub holds no weights file")


def _filenames(config: dict[str, Any]) -> tuple[str, ...]:
    chosen = config.get("hf_hub_filename")
    return (chosen,) if chosen else _FILES
