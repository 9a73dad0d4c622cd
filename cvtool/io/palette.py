"""Every colour cvtool draws with, in one place: one colour per class for detections, masks and
overlays alike, PASCAL VOC's colour map (for reference), and the shapes dataset's mask palette."""

from __future__ import annotations

import numpy as np

MAX_CLASSES = 256  # a palette PNG holds indices 0-255

# Detections: one colour per class id (cycled), distinct on photos and on each other.
DETECTION_COLOURS = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200),
                     (245, 130, 48), (145, 30, 180),
                     (70, 240, 240), (240, 50, 230), (210, 245, 60), (0, 128, 128))


def colour(index: int) -> tuple[int, int, int]:
    """A detection's colour, by its class id."""
    return DETECTION_COLOURS[index % len(DETECTION_COLOURS)]


def voc_colour_map(size: int = MAX_CLASSES) -> np.ndarray:
    """PASCAL VOC's colour map: the bits of each index spread over R, G and B, high bits first."""
    colours = np.zeros((size, 3), dtype=np.uint8)
    for index in range(size):
        value, r, g, b = index, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (value & 1) << shift
            g |= ((value >> 1) & 1) << shift
            b |= ((value >> 2) & 1) << shift
            value >>= 3
        colours[index] = (r, g, b)
    return colours


def class_palette(size: int = MAX_CLASSES) -> np.ndarray:
    """One colour per class index for every picture cvtool draws: class c > 0 is `colour(c)`,
    as its detections' boxes are, 0 (background) black and 255 (the usual ignore value)
    white. Semantic masks' palette PNGs carry it too."""
    colours = np.array([colour(index) for index in range(size)], dtype=np.uint8)
    colours[0] = 0
    if size > 255:
        colours[255] = 255
    return colours


COLOURS = class_palette()

# The shapes dataset's mask files (`cvtool data shapes`): background black, circle, square and
# triangle in the detection colours of classes 0, 1 and 3, 255 (ignore) white.
MASK_PALETTE = [0, 0, 0, 230, 25, 75, 60, 180, 75, 0, 130, 200] + [0, 0, 0] * 251 + [255] * 3
