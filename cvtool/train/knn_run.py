"""`--model knn`: the data helper's k-NN fit, written out as a run like the neural ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cvtool.core.context import Environment
from cvtool.data.classification import ClassificationData
from cvtool.io.writers import write_json
from cvtool.models.checkpoint import save_checkpoint
from cvtool.train.config import ClassifyConfig
from cvtool.train.knn import fit_knn
from cvtool.train.loop import Evaluation
from cvtool.train.report import write_summary
from cvtool.train.state import CONFIG, write_metrics_lines


def train_knn(env: Environment, config: ClassifyConfig, data: ClassificationData,
              run_dir: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """k (and the distance) chosen by cross-validation on train; one "epoch": the fit."""
    fit = fit_knn(data, k=config.k, distance=config.distance, folds=config.folds,
                  seed=config.seed)
    meta = {**meta, "architecture": fit.module.architecture}
    write_json(run_dir / CONFIG, {**meta["training"], "architecture": meta["architecture"]})
    for name in ("best", "last"):  # nothing to resume: both are the fitted model
        save_checkpoint(run_dir / f"{name}.safetensors", fit.module.state_dict(), meta)
    train, val = fit.predictions["train"], fit.predictions["val"]
    write_metrics_lines(run_dir, [{"epoch": 1, "train_accuracy": train.accuracy,
                                   "val_accuracy": val.accuracy}])
    env.log(f"k-NN: k={fit.k}, distance {fit.distance}, val accuracy {val.accuracy:.4f}")
    evaluation = Evaluation(float("nan"), val.accuracy, val.predicted, val.targets)
    return write_summary(run_dir, data, evaluation, {
        "k": fit.k, "distance": fit.distance, "cv_table": fit.cv_table,
        "train_accuracy": train.accuracy, "initial_loss": None,
        "expected_initial_loss": None})
