"""Generated images as files: 8-bit arrays, sample grids and atomically written PNGs.

Shared by `cvtool generate` and the training loop's per-epoch sample grids. PNG encoding is
deterministic (no timestamps), so the same pixels always give the same bytes.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from cvtool.io.writers import write_artifact

if TYPE_CHECKING:
    from torch import Tensor

PNG_MODES = {1: "L", 3: "RGB"}
GRID_MIN_CELL = 32  # grid cells are enlarged (nearest neighbour) to at least this many pixels
GRID_GAP = 2
GRID_BACKGROUND = 128  # mid grey: tells cells apart on black and on white backgrounds


def to_uint8(images: Tensor) -> np.ndarray:
    """Float images in [0, 1], (N, C, H, W) -> uint8 (N, H, W, C), each value rounded to the
    nearest of 0..255 (a digit's level v of 0..16 becomes round(v * 255 / 16), as on disk)."""
    if images.shape[1] not in PNG_MODES:
        raise ValueError(f"cannot store {images.shape[1]}-channel images as PNG (1 or 3)")
    scaled = (images.detach().float().cpu().clamp(0, 1) * 255).round()
    return scaled.byte().permute(0, 2, 3, 1).numpy()


def png_bytes(pixels: np.ndarray) -> bytes:
    """One (H, W, C) uint8 image, C = 1 or 3, as PNG."""
    buffer = io.BytesIO()
    plane = np.ascontiguousarray(pixels.squeeze(2) if pixels.shape[2] == 1 else pixels)
    Image.fromarray(plane, PNG_MODES[pixels.shape[2]]).save(buffer, format="PNG")
    return buffer.getvalue()


def write_png(path: Path, pixels: np.ndarray) -> None:
    write_artifact(path, png_bytes(pixels))


def grid(pixels: np.ndarray, columns: int | None = None) -> np.ndarray:
    """(N, H, W, C) uint8 images tiled row by row, `columns` per row (default: a square-ish
    grid), each cell enlarged by a whole factor to at least GRID_MIN_CELL pixels a side."""
    count, height, width, channels = pixels.shape
    columns = max(1, min(columns or math.ceil(math.sqrt(count)), max(count, 1)))
    rows = max(1, math.ceil(count / columns))
    scale = max(1, math.ceil(GRID_MIN_CELL / min(height, width)))
    cell_h, cell_w = height * scale + GRID_GAP, width * scale + GRID_GAP
    canvas = np.full((rows * cell_h + GRID_GAP, columns * cell_w + GRID_GAP, channels),
                     GRID_BACKGROUND, dtype=np.uint8)
    for index, image in enumerate(pixels):
        top, left = GRID_GAP + index // columns * cell_h, GRID_GAP + index % columns * cell_w
        canvas[top:top + height * scale, left:left + width * scale] = \
            image.repeat(scale, axis=0).repeat(scale, axis=1)
    return canvas


def write_grid(path: Path, images: Tensor, columns: int | None = None) -> None:
    """A sample grid PNG of float images in [0, 1], (N, C, H, W)."""
    write_png(path, grid(to_uint8(images), columns))
