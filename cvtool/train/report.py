"""A run's plots: loss and accuracy curves, and the val confusion matrix (PNG, atomic writes)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from cvtool.io.figures import new_figure, save_figure
from cvtool.io.writers import write_bytes, write_json

if TYPE_CHECKING:
    from cvtool.data.classification import ClassificationData
    from cvtool.train.loop import Evaluation

CURVES = "curves.png"
CONFUSION = "confusion_matrix.png"


def confusion_matrix(labels: list[int], predictions: list[int],
                     num_classes: int) -> list[list[int]]:
    """Rows: true class; columns: predicted class."""
    matrix = [[0] * num_classes for _ in range(num_classes)]
    for truth, predicted in zip(labels, predictions):
        matrix[truth][predicted] += 1
    return matrix


CLASSIFY_PANELS = (("loss", ("train_loss", "val_loss")),
                   ("accuracy", ("train_accuracy", "val_accuracy")))
Panels = tuple[tuple[str, tuple[str, ...]], ...]


def write_curves(run_dir: Path, history: list[dict[str, Any]], panels: Panels = CLASSIFY_PANELS,
                 best_epoch: int | None = None) -> list[tuple[str, list[str]]]:
    """One panel per (y axis label, history keys) pair that has data, each key a line over
    the epochs (whole-number ticks), the best epoch marked on every panel; returns the panels
    drawn and their lines."""
    filled = [(name, [key for key in keys if history and all(key in row for row in history)])
              for name, keys in panels]
    filled = [(name, keys) for name, keys in filled if keys]
    if not filled:
        return []
    columns = min(3, len(filled))
    rows = -(-len(filled) // columns)
    figure, grid = new_figure(rows, columns, (4.6 * columns, 3.6 * rows), squeeze=False)
    from matplotlib.ticker import MaxNLocator

    epochs = [row["epoch"] for row in history]
    for axes, (name, keys) in zip(grid.flat, filled):
        for key in keys:
            axes.plot(epochs, [row[key] for row in history], marker="o", markersize=3,
                      label=key.replace("_", " "))
        if best_epoch in epochs:
            axes.axvline(best_epoch, color="0.4", linestyle="--", linewidth=1,
                         label=f"best epoch ({best_epoch})")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(epochs) == 1:  # one point: a window around it, not matplotlib's +-0.04
            axes.set_xlim(epochs[0] - 1, epochs[0] + 1)
        axes.set_xlabel("epoch")
        axes.set_ylabel(name)
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
    for axes in list(grid.flat)[len(filled):]:
        axes.set_visible(False)  # no empty panels
    save_figure(figure, run_dir / CURVES)
    return filled


def write_confusion(run_dir: Path, matrix: list[list[int]], classes: list[str],
                    title: str) -> None:
    """Counts and row shares side by side, drawn as `--eval` draws its matrix."""
    import numpy as np

    from cvtool.io.annotate import encoded
    from cvtool.io.charts import confusion_picture

    counts = np.asarray(matrix, dtype=np.int64)
    rows = counts.sum(1, keepdims=True)
    shares = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
    picture = confusion_picture(classes, [(counts, "val images", "count"),
                                          (shares, "share of the true row", "share")], title)
    write_bytes(run_dir / CONFUSION, encoded(picture, ".png"))


def write_summary(run_dir: Path, data: ClassificationData, evaluation: Evaluation,
                  details: dict[str, Any]) -> dict[str, Any]:
    """metrics.json and the confusion matrix of the val predictions; returns the summary."""
    matrix = confusion_matrix(evaluation.labels, evaluation.predictions, len(data.classes))
    write_confusion(run_dir, matrix, data.classes,
                    f"val accuracy {evaluation.accuracy:.4f} ({len(evaluation.labels)} images)")
    summary = {"run_dir": str(run_dir), "val_accuracy": evaluation.accuracy,
               "val_images": len(evaluation.labels), **details, "confusion_matrix": matrix}
    write_json(run_dir / "metrics.json", summary)
    return summary
