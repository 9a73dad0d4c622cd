"""A run's plots: loss and accuracy curves, and the val confusion matrix (PNG, atomic writes)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

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


def write_curves(run_dir: Path, history: list[dict[str, Any]],
                 panels: tuple[tuple[str, tuple[str, ...]], ...] = CLASSIFY_PANELS) -> None:
    """One panel per (y label, history keys) pair, each key a line over the epochs."""
    figure, axes_row = _figure(1, len(panels), (5 * len(panels), 4))
    epochs = [row["epoch"] for row in history]
    for axes, (name, keys) in zip(axes_row, panels):
        for key in keys:
            if all(key in row for row in history):
                axes.plot(epochs, [row[key] for row in history], marker=".",
                          label=key.replace("_", " "))
        axes.set_xlabel("epoch")
        axes.set_ylabel(name)
        axes.grid(alpha=0.3)
        axes.legend()
    _save(figure, run_dir / CURVES)


def write_confusion(run_dir: Path, matrix: list[list[int]], classes: list[str],
                    title: str) -> None:
    size = min(12.0, 3 + 0.5 * len(classes))
    figure, axes = _figure(1, 1, (size, size))
    axes.imshow(matrix, cmap="Blues")
    ticks = range(len(classes))
    axes.set_xticks(ticks, classes, rotation=90 if len(classes) > 10 else 0)
    axes.set_yticks(ticks, classes)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    if len(classes) <= 20:  # counts stay legible up to about this many classes
        peak = max(max(row) for row in matrix) or 1
        for i, row in enumerate(matrix):
            for j, count in enumerate(row):
                axes.text(j, i, str(count), ha="center", va="center", fontsize=8,
                          color="white" if count > peak / 2 else "black")
    _save(figure, run_dir / CONFUSION)


def _figure(rows: int, columns: int, size: tuple[float, float]) -> tuple[Any, Any]:
    # A Figure without pyplot: no global backend state, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.subplots(rows, columns)


def _save(figure: Any, path: Path) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    write_bytes(path, buffer.getvalue())


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
