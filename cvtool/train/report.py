"""A run's plots: loss and accuracy curves, and the val confusion matrix (PNG, atomic writes)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from cvtool.writers import write_bytes

CURVES = "curves.png"
CONFUSION = "confusion_matrix.png"


def confusion_matrix(labels: list[int], predictions: list[int],
                     num_classes: int) -> list[list[int]]:
    """Rows: true class; columns: predicted class."""
    matrix = [[0] * num_classes for _ in range(num_classes)]
    for truth, predicted in zip(labels, predictions):
        matrix[truth][predicted] += 1
    return matrix


def write_curves(run_dir: Path, history: list[dict[str, Any]]) -> None:
    """Train and val loss (left) and accuracy (right) per epoch."""
    figure, (loss_axes, accuracy_axes) = _figure(1, 2, (10, 4))
    epochs = [row["epoch"] for row in history]
    for split in ("train", "val"):
        loss_axes.plot(epochs, [row[f"{split}_loss"] for row in history], marker=".", label=split)
        accuracy_axes.plot(epochs, [row[f"{split}_accuracy"] for row in history], marker=".",
                           label=split)
    for axes, name in ((loss_axes, "loss"), (accuracy_axes, "accuracy")):
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
