"""Figures without pyplot (no global backend state, no display needed), saved as PNGs
atomically: the one way cvtool's plots are made and written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cvtool.core.mpl import prepare_matplotlib
from cvtool.io.writers import write_bytes


def new_figure(rows: int, columns: int, size: tuple[float, float],
               squeeze: bool = True) -> tuple[Any, Any]:
    """A Figure and its axes without pyplot: no global backend state, no display needed."""
    prepare_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.subplots(rows, columns, squeeze=squeeze)


def save_figure(figure: Any, path: Path, dpi: int = 100) -> None:
    """The figure as a PNG, written atomically."""
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    write_bytes(path, buffer.getvalue())

