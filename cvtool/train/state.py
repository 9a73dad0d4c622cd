"""The run directory: checkpoints, the resumable training state and metrics.jsonl.

A kill -9 may land anywhere, so every file is written atomically and the state of epoch N is
committed by its JSON sidecar, written after its tensors (`state/epoch-000N.json`): resume takes
the newest epoch whose sidecar exists, and metrics.jsonl is rewritten from that state's
history, so no finished epoch is lost or repeated. Nothing is pickled: tensors go to
safetensors, the rest to JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cvtool.core.context import Warn
from cvtool.core.files import open_regular
from cvtool.core.ownership import require_empty
from cvtool.core.status import UsageError
from cvtool.io.writers import atomic_open, strict_json
from cvtool.models.checkpoint import load_checkpoint, save_checkpoint, with_metadata

STATE_DIR = "state"
CONFIG = "config.json"
METRICS_LINES = "metrics.jsonl"


@dataclass
class TrainingState:
    """Where training stands after `epoch` finished epochs."""

    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    best_score: float = -1.0  # of the metric that picks the best checkpoint (val accuracy, mAP)
    extra: dict[str, Any] = field(default_factory=dict)  # the sanity report, kept for the summary


def prepare_run_dir(path: Path, resume: bool, force: bool) -> None:
    """A new run needs an empty (or absent) directory unless --force; resume a config.json."""
    if resume:
        if not (path / CONFIG).is_file():
            raise UsageError(f"--resume {path}: not a training run directory (no {CONFIG})")
        return
    if not force:
        require_empty(path, "--output", f"use --resume {path} to continue that run or --force "
                                        "to start over in it")
    for stale in (path / STATE_DIR).glob("epoch-*") if force else ():
        stale.unlink()  # a later --resume must not pick up the previous run's epochs
    path.mkdir(parents=True, exist_ok=True)


def save_state(run_dir: Path, state: TrainingState, model: nn.Module,
               optimizer: torch.optim.Optimizer) -> None:
    """Commit epoch `state.epoch`, then drop older states and rewrite metrics.jsonl."""
    tensors = {f"model.{key}": value for key, value in model.state_dict().items()}
    optimizer_state = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for index, entries in optimizer_state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    tensors.update(_rng_tensors())
    meta = {**state.__dict__, "optimizer": {"param_groups": optimizer_state["param_groups"],
                                            "scalars": scalars}}
    path = run_dir / STATE_DIR / f"epoch-{state.epoch:04d}.safetensors"
    save_checkpoint(path, tensors, meta)
    # Every other state goes, a stray "newer" one (passed over at resume) included.
    for other in _committed(run_dir):
        if other != path.with_suffix(".json"):
            other.with_suffix(".safetensors").unlink(missing_ok=True)
            other.unlink(missing_ok=True)
    write_metrics_lines(run_dir, state.history)


def load_state(run_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
               warn: Warn) -> TrainingState:
    """Restore the newest complete committed epoch into `model` and `optimizer`, RNGs
    included. A state whose tensors are missing or whose fields do not check out is passed
    over with a warning for the next older one; nothing is applied until a state has passed."""
    for sidecar in _committed(run_dir):
        try:
            tensors, meta = load_checkpoint(sidecar)
            state, weights, optimizer_state = _checked_state(tensors, meta, model)
        except UsageError as error:
            warn(f"passing over {sidecar}: {error.message}")
            continue
        model.load_state_dict(with_metadata(weights, model))
        try:
            optimizer.load_state_dict(optimizer_state)
        except (KeyError, TypeError, ValueError, IndexError) as error:
            raise UsageError(f"{sidecar}: optimizer state does not fit: {error}") from None
        _restore_rng(tensors)
        write_metrics_lines(run_dir, state.history)
        return state
    return TrainingState()


def resumed_state(env: Any, run_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                  resume: bool, force: bool) -> TrainingState:
    """Where a run starts: a new run at epoch 0; --resume at its newest usable state. A run
    that finished epochs (metrics.jsonl lists them) but has no usable state left (state/
    deleted or damaged) is refused rather than silently restarted, unless --force."""
    if not resume:
        return TrainingState()
    state = load_state(run_dir, model, optimizer, env.warn)
    if not state.epoch and _logged_epochs(run_dir):
        if not force:
            raise UsageError(f"--resume {run_dir}: {METRICS_LINES} lists finished epochs but "
                             f"{STATE_DIR}/ holds no usable state to continue from; add "
                             "--force to train it again from epoch 1")
        env.warn(f"{run_dir}: no usable state; training again from epoch 1 (--force)")
    return state


def _logged_epochs(run_dir: Path) -> bool:
    """Whether metrics.jsonl (rewritten after each committed epoch) names any epoch."""
    try:  # never through a link, never a wait on a FIFO planted there
        with open_regular(run_dir / METRICS_LINES, follow=False) as file:
            return bool(file.read().strip())
    except OSError:
        return False


def _checked_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any],
                   model: nn.Module) -> tuple[TrainingState, dict[str, torch.Tensor], dict]:
    """The state, model weights and optimizer state a sidecar and its tensors describe, refused
    (UsageError) unless every field has the type and shape training needs."""
    weights = {key[6:]: value for key, value in tensors.items() if key.startswith("model.")}
    expected = model.state_dict()
    if set(weights) != set(expected) or any(weights[key].shape != expected[key].shape
                                            for key in expected):
        raise UsageError("its model tensors do not fit this run's model")
    rng = tensors.get("rng.cpu")
    if rng is None or rng.dtype != torch.uint8:
        raise UsageError("its random-number state is missing")
    meta.setdefault("best_score", meta.get("best_val_accuracy", -1.0))  # its earlier name
    fields = TrainingState.__dataclass_fields__
    state = TrainingState(**{key: value for key, value in meta.items() if key in fields})
    history_ok = isinstance(state.history, list) and all(
        isinstance(row, dict) and isinstance(row.get("epoch"), int) for row in state.history)
    if not (isinstance(state.epoch, int) and state.epoch >= 1 and history_ok
            and len(state.history) == state.epoch and isinstance(state.best_epoch, int)
            and isinstance(state.best_score, (int, float)) and isinstance(state.extra, dict)):
        raise UsageError("its epoch, history or best-epoch fields are damaged")
    saved = meta.get("optimizer")
    if not isinstance(saved, dict) or not isinstance(saved.get("param_groups"), list) \
            or not isinstance(saved.get("scalars"), dict):
        raise UsageError("its optimizer state is damaged")
    try:
        optimizer_state = _optimizer_state(tensors, saved)
    except (AttributeError, TypeError, ValueError) as error:
        raise UsageError(f"its optimizer state is damaged ({error})") from None
    return state, weights, optimizer_state


def write_metrics_lines(run_dir: Path, history: list[dict[str, Any]]) -> None:
    with atomic_open(run_dir / METRICS_LINES, "w") as handle:
        handle.writelines(strict_json(row) + "\n" for row in history)


def _committed(run_dir: Path) -> list[Path]:
    """Committed state sidecars, newest first (a sidecar exists only once its tensors do)."""
    return sorted((run_dir / STATE_DIR).glob("epoch-*.json"), reverse=True)


def _optimizer_state(tensors: dict[str, torch.Tensor], saved: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for index, entries in saved["scalars"].items():
        state.setdefault(int(index), {}).update(entries)
    return {"state": state, "param_groups": saved["param_groups"]}


def _rng_tensors() -> dict[str, torch.Tensor]:
    # Dropout and augmentation draw from these; shuffling has its own per-epoch generator.
    tensors = {"rng.cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for index, rng in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{index}"] = rng
    return tensors


def _restore_rng(tensors: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["rng.cpu"])
    cuda = [tensors[key] for key in sorted(tensors) if key.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
