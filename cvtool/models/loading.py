"""What every model loader shares: the loaded model, strict loading, and the `-m` rule.

Each task's loader (classification, detection, segmentation, generative) builds its module and
hands it here to be loaded exactly: every tensor present, of the right shape and kind, nothing
left over. A file that does not fit is one UsageError line naming what does not fit.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cvtool.core.status import UsageError
from cvtool.models.checkpoint import build_on_meta, check_tensors, with_metadata
from cvtool.models.registry import is_registered
from cvtool.models.weights import file_sha256

if TYPE_CHECKING:
    from torch import nn


def warn_on_stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


@dataclass


class LoadedModel:
    name: str  # registry name, or the checkpoint path as given
    module: nn.Module  # eval mode, on CPU, float32
    categories: list[str]
    transforms: Callable  # torchvision ImageClassification
    weights_file: str | None  # where the parameters came from; None for random init
    folded_batch_norms: int = field(default=0, kw_only=True)  # set by the backend that serves it

    @cached_property
    def weights_sha256(self) -> str | None:
        # Hashed on demand (run.json): reading a large file is not worth it on every start-up.
        return None if self.weights_file is None else file_sha256(Path(self.weights_file))


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
