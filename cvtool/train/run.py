"""`cvtool train classify`: data, model, sanity checks, the loop, and the run directory's files.

Run directory: config.json; best.* (batch norm folded, what `cvtool classify` loads) and last.*
(as trained) cvtool checkpoints; state/ (resume); metrics.jsonl; metrics.json; curves.png;
confusion_matrix.png. The summary (metrics.json) also goes to stdout as one JSON line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cvtool.core.context import Environment
from cvtool.core.device import seed_everything
from cvtool.core.results import one_line
from cvtool.core.status import UsageError
from cvtool.data.classification import ClassificationData, load_classification_data
from cvtool.models.checkpoint import (
    build_architecture,
    load_checkpoint,
    with_metadata,
)
from cvtool.models.small import fold_batch_norm
from cvtool.train import distributed, sanity
from cvtool.train.architectures import build_classifier, pretrained_preprocessing
from cvtool.train.config import ClassifyConfig
from cvtool.train.loop import Trainer, loop_settings
from cvtool.train.report import write_curves, write_summary
from cvtool.train.session import start_run, train_epochs
from cvtool.train.state import (
    TrainingState,
)

SANITY_EXAMPLES = 128


def train_classify(env: Environment, config: ClassifyConfig | None, run_dir: Path,
                   resume: bool, force: bool, device: str, threads: int | None) -> dict[str, Any]:
    """Train (or, with `resume`, continue) the run in `run_dir`; returns its summary."""
    config, target = start_run(env, run_dir, resume, force, config, ClassifyConfig, device,
                               threads)
    data = load_classification_data(config.data, val_split=config.val_split, seed=config.seed,
                                    image_size=config.image_size, augment=config.augment,
                                    preprocessing=pretrained_preprocessing(config))
    if config.model == "knn":
        from cvtool.train.knn_run import train_knn

        # No gradient steps to share out: under torchrun, rank 0 fits it, once.
        summary = distributed.on_main(
            lambda: train_knn(env, config, data, run_dir, _meta(config, data, {})))
    else:
        summary = _train_network(env, config, data, run_dir, target, (resume, force))
    return summary


def _train_network(env: Environment, config: ClassifyConfig, data: ClassificationData,
                   run_dir: Path, device: torch.device,
                   resume: tuple[bool, bool]) -> dict[str, Any]:
    seed_everything(config.seed)
    module, architecture = build_classifier(config, data.input_shape, len(data.classes),
                                            env.offline, env.warn)
    meta = _meta(config, data, architecture)
    trainer = Trainer(module, loop_settings({**config.to_dict(), "lr": config.resolved_lr}),
                      device, data.train, data.val)

    def sanity_checks(state: TrainingState) -> None:
        try:  # the first forward pass: where an input too small for the net shows
            state.extra["sanity"] = _sanity_report(env, trainer, config, data)
        except RuntimeError as error:
            raise UsageError(f"--model {config.model} cannot run on {data.input_shape[1]}x"
                             f"{data.input_shape[2]} images: {one_line(error)}; try a larger "
                             "--image-size") from None

    state = train_epochs(env, run_dir, trainer, config, meta, resume,
                         ["val_loss", "val_accuracy"], on_new_run=sanity_checks,
                         best=lambda epoch_meta: _best_weights(trainer, epoch_meta))
    return distributed.on_main(lambda: _finish(run_dir, trainer, state, data))


def _meta(config: ClassifyConfig, data: ClassificationData,
          architecture: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint meta every checkpoint of the run shares."""
    return {"task": "classify", "architecture": architecture, "classes": data.classes,
            "preprocessing": data.preprocessing,
            "training": {"config": config.to_dict(), "data": data.description}}


def _sanity_report(env: Environment, trainer: Trainer, config: ClassifyConfig,
                   data: ClassificationData) -> dict[str, Any]:
    """The notes' checks on the untrained model; what looks wrong is also a warning."""
    batch = sanity.first_examples(data.train, SANITY_EXAMPLES)
    model, settings = trainer.model, trainer.settings
    report = sanity.initial_loss(model, batch, settings, len(data.classes))
    report["gradient_check"] = sanity.gradient_check(model, batch, settings, config.seed)
    report["layer_statistics"] = sanity.layer_statistics(model, batch, settings)
    if config.sanity:
        report["overfit"] = sanity.overfit_tiny_subset(model, batch, settings)
    for warning in _sanity_warnings(report):
        env.warn(warning)
    env.log(f"initial loss {report['initial_loss']:.4f} "
            f"(expected {report['expected_initial_loss']:.4f} for {config.loss})")
    return report


def _sanity_warnings(report: dict[str, Any]) -> list[str]:
    warnings = []
    if not report["initial_loss_agrees"]:
        warnings.append(f"initial loss {report['initial_loss']:.4f} is far from the expected "
                        f"{report['expected_initial_loss']:.4f}: check the initialisation")
    if not report["gradient_check"]["passed"]:
        warnings.append("numeric gradient check failed: max relative error "
                        f"{report['gradient_check']['max_relative_error']:.2e}")
    if "overfit" in report and not report["overfit"]["passed"]:
        warnings.append(f"could not overfit {report['overfit']['examples']} examples "
                        f"(loss {report['overfit']['final_loss']:.4f}): check the model and --lr")
    return warnings + report["layer_statistics"]["flags"]


def _best_weights(trainer: Trainer, meta: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """What best.* holds. Folding is done only where the builder rebuilds the folded graph:
    cvtool's own MLP and CNN with batch_norm=False. torchvision's nets keep their batch norms."""
    architecture = meta["architecture"]
    if not architecture["kwargs"].get("batch_norm"):
        return trainer.model.state_dict(), meta
    folded = {**architecture, "kwargs": {**architecture["kwargs"], "batch_norm": False}}
    return fold_batch_norm(trainer.model).state_dict(), {**meta, "architecture": folded}


def _finish(run_dir: Path, trainer: Trainer, state: TrainingState,
            data: ClassificationData) -> dict[str, Any]:
    """Evaluate the best checkpoint as `cvtool classify` will load it; write the summary."""
    tensors, meta = load_checkpoint(run_dir / "best.safetensors")
    best = build_architecture(meta)
    best.load_state_dict(with_metadata(tensors, best))
    evaluation = trainer.evaluation(best.to(trainer.device), data.val)
    write_curves(run_dir, state.history, best_epoch=state.best_epoch)
    return write_summary(run_dir, data, evaluation, {
        "best_epoch": state.best_epoch, "epochs": state.epoch,
        **_sanity_summary(state.extra.get("sanity", {})),
        "final_train_loss": state.history[-1]["train_loss"],
        "train_seconds": round(sum(row["seconds"] for row in state.history), 3)})


def _sanity_summary(report: dict[str, Any]) -> dict[str, Any]:
    # The contract's keys at the top level; the rest of the report under "sanity".
    top = ("initial_loss", "expected_initial_loss", "initial_loss_agrees")
    return {**{key: report.get(key) for key in top},
            "sanity": {key: value for key, value in report.items() if key not in top}}
