"""Confusion matrices and per-class bar charts drawn with Pillow: a few milliseconds where
matplotlib's import and layout take most of a second, so a scored run pays next to nothing for
its pictures. Text is Pillow's own font (`annotate.text_mask`); every label from a model or a
dataset is shown through `results.shown` (control characters escaped) and shortened.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from cvtool.core.results import shown
from cvtool.io.annotate import text_mask

WHITE, INK, GRID = (255, 255, 255), (34, 34, 34), (225, 225, 225)
# matplotlib's "Blues" end points and middle: white to a deep blue.
_RAMP = np.array([(247, 251, 255), (107, 174, 214), (8, 48, 107)], dtype=np.float64)
SERIES = ((31, 119, 180), (255, 127, 14), (44, 160, 44))  # the bar colours, in order
LABEL_CHARS = 24
TEXT = 13  # px


def short(text: object, limit: int = LABEL_CHARS) -> str:
    text = shown(str(text))
    return text if len(text) <= limit else text[:limit - 1] + "…"


def blues(share: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 colours for shares in [0, 1]."""
    share = np.clip(share, 0.0, 1.0)[..., None]
    low = _RAMP[0] + (_RAMP[1] - _RAMP[0]) * np.minimum(share, 0.5) * 2
    high = _RAMP[1] + (_RAMP[2] - _RAMP[1]) * (np.maximum(share, 0.5) - 0.5) * 2
    return np.where(share <= 0.5, low, high).round().astype(np.uint8)


def _paste_text(canvas: Image.Image, text: str, xy: tuple[int, int], size: int = TEXT,
                colour: tuple[int, int, int] = INK, anchor: str = "lt",
                rotate: bool = False) -> None:
    """`text` at `xy`; `anchor`: l/c/r then t/m/b, of the (possibly rotated) text's box."""
    mask = text_mask(text, size) if text else Image.new("L", (1, 1))
    if rotate:
        mask = mask.rotate(90, expand=True)
    x, y = xy
    x -= {"l": 0, "c": mask.width // 2, "r": mask.width}[anchor[0]]
    y -= {"t": 0, "m": mask.height // 2, "b": mask.height}[anchor[1]]
    canvas.paste(colour, (x, y), mask)


def _text_width(text: str, size: int = TEXT) -> int:
    return text_mask(text, size).width if text else 0


def confusion_picture(labels: Sequence[str], panels: Sequence[tuple[np.ndarray, str, str]],
                      title: str) -> Image.Image:
    """Panels side by side, each (values [true, predicted], name, "count" | "share"), rows
    and columns named by `labels`; a cell's number is written in it (empty cells stay blank,
    so errors stand out) up to 25 classes, beyond that the colour alone says."""
    names = [short(label) for label in labels]
    n = len(names)
    cell = max(14, min(56, 640 // max(n, 1)))
    written = n <= 25
    label_width = max(_text_width(name) for name in names) + 8
    side = cell * n
    top, left, gap = 58, label_width + 26, 30
    width = left + len(panels) * side + (len(panels) - 1) * gap + 20
    height = top + side + label_width + 34
    canvas = Image.new("RGB", (width, height), WHITE)
    draw = ImageDraw.Draw(canvas)
    _paste_text(canvas, title, (width // 2, 10), 15, anchor="ct")
    for number, (values, name, kind) in enumerate(panels):
        x0 = left + number * (side + gap)
        values = np.asarray(values, dtype=np.float64)
        peak = float(values.max()) if values.size and values.max() > 0 else 1.0
        share = values if kind == "share" else values / peak
        colours = blues(share)
        if not written:  # no numbers in the cells: what the darkest one means
            name += f" (darkest: {values.max():.2f})" if kind == "share" else \
                f" (darkest: {_count(values.max())})"
        _paste_text(canvas, name, (x0 + side // 2, top - 8), anchor="cb")
        for i in range(n):
            for j in range(n):
                box = (x0 + j * cell, top + i * cell, x0 + (j + 1) * cell - 1,
                       top + (i + 1) * cell - 1)
                draw.rectangle(box, fill=tuple(colours[i, j]))
                if written and values[i, j] > 0:
                    text = f"{values[i, j]:.2f}" if kind == "share" else _count(values[i, j])
                    ink = WHITE if share[i, j] > 0.55 else INK
                    _paste_text(canvas, text, ((box[0] + box[2]) // 2, (box[1] + box[3]) // 2),
                                max(9, min(13, cell // 3)), ink, anchor="cm")
        draw.rectangle((x0 - 1, top - 1, x0 + side, top + side), outline=(120, 120, 120))
        for j, label in enumerate(names):  # column labels, read bottom to top
            _paste_text(canvas, label, (x0 + j * cell + cell // 2, top + side + 6),
                        anchor="ct", rotate=True)
        _paste_text(canvas, "predicted", (x0 + side // 2, height - 8), anchor="cb")
        if number == 0:
            for i, label in enumerate(names):
                _paste_text(canvas, label, (x0 - 6, top + i * cell + cell // 2), anchor="rm")
    _paste_text(canvas, "true", (8, top + side // 2), anchor="lm", rotate=True)
    return canvas


def bar_picture(labels: Sequence[str], series: dict[str, Sequence[float]], axis: str,
                title: str) -> Image.Image:
    """Horizontal bar groups, one per label in the order given, one bar per series (values
    in [0, 1]; negative: nothing to measure, drawn as "-"), the first series' values
    written beside its bars, a 0-1 axis with grid lines every 0.2."""
    names = [short(label) for label in labels]
    bar, group_gap = 11, 10
    group = bar * len(series) + group_gap
    label_width = max(_text_width(name) for name in names) + 12
    plot = 560
    top, left = 54, label_width + 8
    width = left + plot + 60
    height = top + group * len(names) + 46
    canvas = Image.new("RGB", (width, height), WHITE)
    draw = ImageDraw.Draw(canvas)
    _paste_text(canvas, title, (left, 10), 15)
    x = left + plot
    for name, colour in reversed(list(zip(series, SERIES))):  # legend, right-aligned
        x -= _text_width(name) + 8
        _paste_text(canvas, name, (x, 34), anchor="lm")
        x -= 16
        draw.rectangle((x, 29, x + 11, 39), fill=colour)
        x -= 14
    bottom = top + group * len(names)
    for tick in range(6):
        gx = left + round(plot * tick / 5)
        draw.line((gx, top, gx, bottom), fill=GRID)
        _paste_text(canvas, f"{tick / 5:.1f}", (gx, bottom + 5), 11, anchor="ct")
    _paste_text(canvas, axis, (left + plot // 2, height - 6), anchor="cb")
    for k, name in enumerate(names):
        y = top + k * group + group_gap // 2
        _paste_text(canvas, name, (left - 8, y + bar * len(series) // 2), anchor="rm")
        for s, (values, colour) in enumerate(zip(series.values(), SERIES)):
            value = float(values[k])
            y0 = y + s * bar
            if value > 0:
                draw.rectangle((left, y0, left + round(plot * min(value, 1.0)), y0 + bar - 2),
                               fill=colour)
            if s == 0:
                _paste_text(canvas, "-" if value < 0 else f"{value:.2f}",
                            (left + round(plot * max(0.0, min(value, 1.0))) + 4,
                             y0 + (bar - 2) // 2), 10, anchor="lm")
    draw.line((left, top, left, bottom), fill=INK)
    return canvas


def _count(value: float) -> str:
    value = int(value)
    return f"{value / 1000:.1f}k" if value >= 10_000 else str(value)
