"""Generative checkpoints: what a trained model's meta says, and loading one back.

A generative checkpoint is a cvtool checkpoint (`cvtool.models.checkpoint`) with task
"generate", the builder and kwargs of its family (`cvtool.generative.pixelcnn:pixelcnn`,
`...vae:vae`, `...gan:gan`) and a `generative` block that says what it makes without building it:

    "generative": {"family": "pixelcnn" | "vae" | "gan", "channels": 1 | 3,
                   "image_size": [h, w], "levels": int | null, "latent_dim": int | null}

`levels` is set for the families that model intensities discretely (PixelCNN, VAE), `latent_dim`
for those with a latent (VAE, GAN). A GAN checkpoint holds both players.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cvtool.core.status import UsageError
from cvtool.generative import FAMILIES
from cvtool.models.checkpoint import build_architecture, load_checkpoint, resolve_checkpoint
from cvtool.models.loading import load_exactly, looks_like_path, ready_for_inference
from cvtool.models.registry import get_spec
from cvtool.models.weights import file_sha256

if TYPE_CHECKING:
    from torch import nn

TASK = "generate"
BUILDERS = {family: f"cvtool.generative.{family}:{family}" for family in FAMILIES}


def checkpoint_meta(model: nn.Module, training: dict[str, Any] | None = None) -> dict[str, Any]:
    """The meta `cvtool.models.checkpoint.save_checkpoint` stores beside a model that one of this
    package's builders made; `training` is free-form (config, data, metrics)."""
    return {"task": TASK,
            "architecture": {"builder": BUILDERS[model.family], "kwargs": dict(model.kwargs)},
            "generative": describe(model), "training": training or {}}


def describe(model: nn.Module) -> dict[str, Any]:
    return {"family": model.family, "channels": model.channels,
            "image_size": list(model.image_size), "levels": getattr(model, "levels", None),
            "latent_dim": getattr(model, "latent_dim", None)}


@dataclass
class LoadedGenerative:
    name: str  # registry name, or the checkpoint path as given
    family: str
    module: nn.Module  # eval mode, on CPU, float32
    meta: dict[str, Any]
    weights_file: str

    @cached_property
    def weights_sha256(self) -> str:
        return file_sha256(Path(self.weights_file))


def load_generative(model: str) -> LoadedGenerative:
    """A registry name (a house model of task "generate"), a checkpoint file or a run directory;
    anything else is a UsageError naming what is wrong."""
    if looks_like_path(model):
        return _from_checkpoint(Path(model), model)
    spec = get_spec(model)
    if spec.task != TASK or spec.source != "house":
        raise UsageError(f"{model} is a {spec.task} model; `cvtool models generate` lists the "
                         "generative models")
    return _from_checkpoint(spec.checkpoint_path, spec.name)


def _from_checkpoint(path: Path, name: str) -> LoadedGenerative:
    tensors_path = resolve_checkpoint(path)
    state, meta = load_checkpoint(tensors_path)
    generative = meta.get("generative")
    family = generative.get("family") if isinstance(generative, dict) else None
    if meta.get("task") != TASK or family not in FAMILIES:
        raise UsageError(f"{name} is not a generative checkpoint (task {meta.get('task')!r}, "
                         f"family {family!r}; expected {', '.join(FAMILIES)})")
    module = build_architecture(meta, state)
    if getattr(module, "family", None) != family:
        raise UsageError(f"{name}: its builder {meta['architecture']['builder']} does not make "
                         f"a {family} model")
    load_exactly(module, state, f"checkpoint {tensors_path}", name)
    return LoadedGenerative(name, family, ready_for_inference(module), meta, str(tensors_path))
