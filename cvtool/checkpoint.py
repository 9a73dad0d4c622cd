"""cvtool's own checkpoints: tensors in safetensors, a description of them in a JSON sidecar.

`run/best.safetensors` holds the state dict; `run/best.json` says how to rebuild and use it:

    {
      "format": "cvtool-checkpoint",      # added by save_checkpoint
      "format_version": 1,                # added by save_checkpoint
      "task": "classify",                 # one of cvtool.registry.TASKS
      "architecture": {"builder": "module:function", "kwargs": {...}},
      "classes": ["label", ...],          # index -> label
      "preprocessing": {                  # the arguments of torchvision's ImageClassification
        "resize_size": int | [h, w], "crop_size": int | [h, w],
        "mean": [...], "std": [...], "interpolation": "bilinear" | "bicubic" | "nearest"
      },
      "training": {...}                   # free-form: data, epochs, metrics, command
    }

Neither file is ever seen half-written: each goes to a temp file in the same directory first and is
then renamed over the target. Loading never unpickles anything, and `build_architecture` calls only
builders under `TRUSTED_BUILDER_MODULES`, so a checkpoint from elsewhere cannot run code.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from cvtool.registry import resolve_reference
from cvtool.status import UsageError
from cvtool.writers import atomic_open, atomic_path

if TYPE_CHECKING:
    from torch import Tensor, nn

FORMAT = "cvtool-checkpoint"
FORMAT_VERSION = 1
RUN_DIR_CHECKPOINTS = ("best.safetensors", "last.safetensors")
TRUSTED_BUILDER_MODULES = ("torchvision.models", "segmentation_models_pytorch",
                           "cvtool.models", "cvtool.generative")


def save_checkpoint(path: Path, state_dict: Mapping[str, Tensor], meta: dict) -> None:
    """Write `path` (.safetensors) and its .json sidecar, each atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"checkpoint path must end in .safetensors: {path}")
    # Serialize the sidecar first so a bad meta fails before anything is written.
    sidecar = json.dumps({**meta, "format": FORMAT, "format_version": FORMAT_VERSION}, indent=2)
    # Cloning drops storage shared between entries (tied weights), which safetensors refuses.
    tensors = {key: value.detach().cpu().contiguous().clone() for key, value in state_dict.items()}
    with atomic_path(path) as temp:
        save_file(tensors, str(temp))
    with atomic_open(path.with_suffix(".json"), "w") as handle:
        handle.write(sidecar + "\n")


def load_checkpoint(path: Path) -> tuple[dict[str, Tensor], dict]:
    """The state dict and meta of a checkpoint given as its .safetensors, its .json or a run dir."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    tensors_path = resolve_checkpoint(path)
    meta = _read_meta(tensors_path.with_suffix(".json"))
    try:
        return load_file(str(tensors_path)), meta
    except (SafetensorError, OSError) as error:
        raise UsageError(f"cannot read checkpoint {tensors_path}: {error}") from None


def resolve_checkpoint(path: Path) -> Path:
    """The .safetensors file that `path` (file, sidecar or run directory) stands for."""
    path = Path(path)
    if path.is_dir():
        for name in RUN_DIR_CHECKPOINTS:
            if (path / name).is_file():
                return path / name
        expected = " or ".join(RUN_DIR_CHECKPOINTS)
        raise UsageError(f"{path} is not a run directory: it has no {expected}")
    if path.suffix not in (".safetensors", ".json"):
        problem = "is not a cvtool checkpoint" if path.exists() else "does not exist"
        raise UsageError(f"{path} {problem} (expected a .safetensors, .json or run directory)")
    tensors_path = path.with_suffix(".safetensors")
    if not tensors_path.is_file():
        raise UsageError(f"checkpoint {tensors_path} does not exist")
    return tensors_path


def build_architecture(meta: dict) -> nn.Module:
    """A freshly initialised module as the checkpoint's `architecture` describes it."""
    architecture = meta.get("architecture")
    if not isinstance(architecture, dict) or not isinstance(architecture.get("builder"), str):
        raise UsageError("checkpoint meta has no architecture.builder")
    builder = architecture["builder"]
    module_name = builder.partition(":")[0]
    if not any(module_name == trusted or module_name.startswith(trusted + ".")
               for trusted in TRUSTED_BUILDER_MODULES):
        trusted = ", ".join(TRUSTED_BUILDER_MODULES)
        raise UsageError(f"checkpoint builder {builder!r} is outside {trusted}")
    try:
        return resolve_reference(builder)(**architecture.get("kwargs", {}))
    except (TypeError, ValueError) as error:
        raise UsageError(f"cannot build {builder} from the checkpoint's kwargs: {error}") from None


def _read_meta(sidecar: Path) -> dict:
    if not sidecar.is_file():
        raise UsageError(f"checkpoint sidecar {sidecar} is missing; "
                         f"a cvtool checkpoint needs both files")
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UsageError(f"cannot read checkpoint sidecar {sidecar}: {error}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UsageError(f"{sidecar} is not a cvtool checkpoint sidecar "
                         f"(no \"format\": \"{FORMAT}\")")
    if meta.get("format_version") != FORMAT_VERSION:
        raise UsageError(f"{sidecar} has format_version {meta.get('format_version')!r}; "
                         f"this cvtool reads version {FORMAT_VERSION}")
    return meta

