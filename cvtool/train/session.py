"""The run-directory side every EpochTrainer run shares: config, resume, checkpoints, summary.

A run directory holds config.json, last.* and best.* cvtool checkpoints (safetensors + JSON),
state/ (the resumable state of the newest committed epoch), metrics.jsonl, metrics.json and
curves.png. Task modules (detection_run, semantic_run, ...) build the data, model and trainer and
hand them here.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from cvtool.core import jsonfile
from cvtool.core.context import Environment
from cvtool.core.files import describe_os_error
from cvtool.core.results import one_line
from cvtool.core.status import UsageError
from cvtool.core.versions import versions
from cvtool.io.writers import strict_json, write_json
from cvtool.models.checkpoint import save_checkpoint
from cvtool.train import distributed
from cvtool.train.loop import EpochTrainer
from cvtool.train.progress import EpochProgress
from cvtool.train.report import write_curves
from cvtool.train.state import (
    CONFIG,
    TrainingState,
    prepare_run_dir,
    resumed_state,
    save_state,
    write_metrics_lines,
)


class Config(Protocol):
    epochs: int
    batch_size: int

    def to_dict(self) -> dict[str, Any]: ...


def start_run(env: Environment, run_dir: Path, resume: bool, force: bool, config: Any,
              config_type: type, device: str, threads: int | None) -> tuple[Any, Any]:
    """(config, torch device) of a new or resumed run in `run_dir`: the device must exist, the
    directory be new or empty (or --force), and a resumed run's config comes from its own
    config.json, whatever the command line said."""
    from cvtool.core.device import precision_warning, set_threads

    target = distributed.start(device)  # under torchrun: this rank's device, the group joined

    def own() -> None:  # rank 0 holds and writes the run directory; the others read it
        env.own_directory(run_dir, "run directory")
        prepare_run_dir(run_dir, resume, force)

    set_threads(threads)
    distributed.on_main(own)
    if resume:
        config = _resumed_config(run_dir, config_type, config)
    assert config is not None  # the CLI passes one for every new run
    if warning := precision_warning(target, config.precision):
        env.warn(warning)
    return config, target


def _resumed_config(run_dir: Path, config_type: type, changes: dict[str, Any] | None) -> Any:
    """The run's own config; `changes` may only raise `epochs` (the schedule then spans the new
    total from the next epoch on), which config.json keeps for later resumes. The settings the
    command line gave besides (`changes["given"]`) must equal the run's."""
    try:
        saved = jsonfile.read(run_dir / CONFIG, follow=False)
        if not isinstance(saved, dict):
            raise UsageError("it is not a JSON object")
        config = config_type.from_dict(saved.get("config"))
    except (OSError, jsonfile.UntrustedJSON, UsageError) as error:
        reason = (error.message if isinstance(error, UsageError) else describe_os_error(error)
                  if isinstance(error, OSError) else one_line(error))
        raise UsageError(f"--resume {run_dir}: cannot use its {CONFIG}: {reason}") from None
    _refuse_differences(run_dir, config.to_dict(), (changes or {}).get("given") or {})
    if changes and changes.get("epochs") not in (None, config.epochs):
        if changes["epochs"] < config.epochs:
            raise UsageError(f"--epochs {changes['epochs']} is below the {config.epochs} the "
                             f"run in {run_dir} was started with; --resume can only extend it")
        config.epochs = changes["epochs"]
        if distributed.WORLD.main:
            write_json(run_dir / CONFIG, {**saved, "config": config.to_dict()})
    return config


def _refuse_differences(run_dir: Path, saved: dict[str, Any], given: dict[str, Any]) -> None:
    differences = []
    for name, value in sorted(given.items()):
        option = "--" + name.replace("_", "-")
        if name not in saved:
            differences.append(f"{option} (not a setting this run keeps)")
        elif not _same_setting(name, saved[name], value):
            differences.append(f"{option} {saved[name]!r} in the run, {value!r} now")
    if differences:
        raise UsageError(f"--resume {run_dir} continues the run with its own settings; these "
                         f"differ: {'; '.join(differences)} (leave them out, or start a new run; "
                         "--epochs, --device, --threads and --workers may change)")


def _same_setting(name: str, saved: Any, given: Any) -> bool:
    if json.loads(strict_json(saved)) == json.loads(strict_json(given)):
        return True
    if name == "data" and isinstance(saved, str) and isinstance(given, str):
        return os.path.realpath(saved) == os.path.realpath(given)
    return False


def train_epochs(env: Environment, run_dir: Path, trainer: EpochTrainer, config: Config,
                 meta: dict[str, Any], resume: tuple[bool, bool], logged: list[str],
                 introduction: str = "",
                 on_new_run: Callable[[TrainingState], None] | None = None,
                 best: Callable[[dict[str, Any]], tuple[Any, dict[str, Any]]] | None = None,
                 ) -> TrainingState:
    """Run (or continue) the epochs, committing each: last (and best) checkpoints, then the
    state. `resume` is (--resume, --force); `meta` the checkpoint meta every epoch shares;
    `logged` the figures of the per-epoch log line. `on_new_run(state)` runs once a new run's
    config.json is written (classify's sanity checks); `best(meta)` gives the weights and meta
    the best checkpoint holds when they differ from the model's (batch norm folded)."""
    state = resumed_state(env, run_dir, trainer.model, trainer.optimizer, *resume)
    if state.epoch:
        env.log(f"resuming {run_dir} after epoch {state.epoch} of {config.epochs}")
    else:  # a new run, or one killed before its first epoch was committed
        def begin() -> dict[str, Any]:
            write_json(run_dir / CONFIG, {**meta["training"],
                                          "architecture": meta["architecture"],
                                          "command": sys.argv, "versions": versions(),
                                          "world_size": distributed.WORLD.size})
            if on_new_run is not None:
                on_new_run(state)
            write_metrics_lines(run_dir, [])
            return state.extra

        state.extra = distributed.on_main(begin)  # rank 0's sanity report, on every rank
        if introduction:
            env.log(introduction)

    def epoch_done(state: TrainingState, improved: bool) -> None:
        row = state.history[-1]
        epoch_meta = {**meta, "training": {**meta["training"], "epoch": state.epoch,
                                           "metrics": row}}
        save_checkpoint(run_dir / "last.safetensors", trainer.model.state_dict(), epoch_meta)
        if improved:
            weights, best_meta = (best(epoch_meta) if best is not None
                                  else (trainer.model.state_dict(), epoch_meta))
            save_checkpoint(run_dir / "best.safetensors", weights, best_meta)
        save_state(run_dir, state, trainer.model, trainer.optimizer)
        figures = [f"{key.replace('_', ' ')} {row[key]:.4f}"
                   for key in ("train_loss", *logged) if key in row]
        env.log(f"epoch {row['epoch']}/{config.epochs}: {', '.join(figures)}")

    with EpochProgress(env, config.epochs, state.epoch, len(trainer.train_set),
                       config.batch_size) as bar:
        return trainer.fit(state, epoch_done, bar.advance)


def finish_run(env: Environment, run_dir: Path, state: TrainingState,
               panels: tuple[tuple[str, tuple[str, ...]], ...], figures: list[str],
               details: dict[str, Any]) -> dict[str, Any]:
    """curves.png, and the summary (the best epoch's `figures` plus `details`) as metrics.json;
    returns the summary."""
    best = next(row for row in state.history if row["epoch"] == state.best_epoch)
    summary = {"run_dir": str(run_dir), **{key: best[key] for key in figures},
               "best_epoch": state.best_epoch, "epochs": state.epoch, **details,
               "final_train_loss": state.history[-1]["train_loss"],
               "train_seconds": round(sum(row["seconds"] for row in state.history), 3)}

    def write() -> dict[str, Any]:
        write_curves(run_dir, state.history, panels, best_epoch=state.best_epoch)
        write_json(run_dir / "metrics.json", summary)
        return summary

    return distributed.on_main(write)


def parameters(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())
