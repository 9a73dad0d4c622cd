"""The synthetic shapes data set: circles, squares and triangles on noisy colour gradients.

Each image comes from its own generator, seeded by (seed, split, index): images are independent
of one another, so any subset can be made again, in any order or in parallel, byte for byte.
Objects are rasterized as binary masks first and painted through them, so mask and image agree
exactly. The noise lies on the background only: every object is one solid colour, as it is in
its mask, and its contrast with the background is the contrast it was drawn with. No torch here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

SIZE = 128
CATEGORIES = ("circle", "square", "triangle")  # category ids 1, 2, 3; 0 is the background
POLYGON_CORNERS = {"square": 4, "triangle": 3}
SPLITS = ("train", "val")
MIN_SIDE, MAX_SIDE = 16, 48
MAX_OBJECTS = 4
NOISE_SIGMA = 8.0
MIN_CONTRAST = 80  # L1 over RGB between an object's colour and the background under its box
PLACEMENT_TRIES = 100
GAP = 1  # free pixels between boxes, so no two objects touch and the semantic mask keeps them apart
# Corner colours stay three sigmas inside 0..255, so clipping hardly ever bends the noise.
CORNER_RANGE = (3 * NOISE_SIGMA, 255 - 3 * NOISE_SIGMA)
PAD = 2  # margin of the canvas a shape is rasterized on, so no vertex falls off it
# Semantic mask colours: black background, then red, green and blue; 255 (ignore) is white.


@dataclass(frozen=True)
class Shape:
    category_id: int
    mask: np.ndarray  # bool, SIZE x SIZE
    colour: tuple[int, int, int]

    @property
    def box(self) -> tuple[int, int, int, int]:
        """The tight [x, y, w, h] of the mask."""
        rows, cols = np.flatnonzero(self.mask.any(1)), np.flatnonzero(self.mask.any(0))
        return int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)


@dataclass(frozen=True)
class ShapesImage:
    pixels: np.ndarray  # uint8, SIZE x SIZE x 3
    shapes: list[Shape]

    def semantic_mask(self) -> np.ndarray:
        mask = np.zeros((SIZE, SIZE), np.uint8)
        for shape in self.shapes:
            mask[shape.mask] = shape.category_id
        return mask


def render(seed: int, split: str, index: int) -> ShapesImage:
    """Image `index` of `split`: one to four shapes in non-overlapping boxes."""
    rng = np.random.default_rng([seed, SPLITS.index(split), index])
    background = _background(rng)
    pixels, shapes, boxes = background.copy(), [], []
    for _ in range(int(rng.integers(1, MAX_OBJECTS + 1))):
        category_id = int(rng.integers(1, len(CATEGORIES) + 1))
        local = _shape_mask(rng, category_id)
        box = _place(rng, local.shape, boxes)
        if box is None:  # no room left for this one; the first shape always fits
            continue
        boxes.append(box)
        x, y, w, h = box
        colour = _colour(rng, background[y:y + h, x:x + w].reshape(-1, 3).mean(0))
        mask = np.zeros((SIZE, SIZE), bool)
        mask[y:y + h, x:x + w] = local
        pixels[mask] = colour
        shapes.append(Shape(category_id, mask, colour))
    return ShapesImage(pixels, shapes)


def _background(rng: np.random.Generator) -> np.ndarray:
    """A bilinear blend of four random corner colours plus Gaussian noise."""
    corners = rng.uniform(*CORNER_RANGE, size=(2, 2, 3))
    t = np.linspace(0.0, 1.0, SIZE)[:, None]
    top = (1 - t) * corners[0, 0] + t * corners[0, 1]  # one colour per column
    bottom = (1 - t) * corners[1, 0] + t * corners[1, 1]
    gradient = (1 - t)[:, :, None] * top[None] + t[:, :, None] * bottom[None]
    noisy = gradient + rng.normal(0.0, NOISE_SIGMA, gradient.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def _shape_mask(rng: np.random.Generator, category_id: int) -> np.ndarray:
    """The shape's mask cropped to its tight box; redrawn until both box sides are in range
    (a rotated triangle is narrower one way than the other)."""
    while True:
        side, angle = int(rng.integers(MIN_SIDE, MAX_SIDE + 1)), rng.uniform(0.0, 360.0)
        mask = _crop(_rasterize(category_id, side, angle))
        if MIN_SIDE <= min(mask.shape) and max(mask.shape) <= MAX_SIDE:
            return mask


def _rasterize(category_id: int, side: int, angle: float) -> np.ndarray:
    canvas = Image.new("L", (side + 2 * PAD, side + 2 * PAD), 0)
    draw = ImageDraw.Draw(canvas)
    name = CATEGORIES[category_id - 1]
    if name == "circle":
        draw.ellipse([PAD, PAD, PAD + side - 1, PAD + side - 1], fill=1)
    else:
        draw.polygon(_vertices(POLYGON_CORNERS[name], side, angle), fill=1)
    return np.asarray(canvas, dtype=bool)


def _vertices(corners: int, side: int, angle: float) -> list[tuple[float, float]]:
    """A regular polygon turned by `angle` degrees, scaled so its longer extent spans `side`
    pixels (extent + 1 pixel, as the rasterizer fills both ends)."""
    turns = math.radians(angle) + 2 * math.pi * np.arange(corners) / corners
    unit = np.stack([np.cos(turns), np.sin(turns)], 1)
    low = unit.min(0)
    scale = (side - 1) / (unit.max(0) - low).max()
    return [(float(x), float(y)) for x, y in (unit - low) * scale + PAD]


def _crop(mask: np.ndarray) -> np.ndarray:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def _place(rng: np.random.Generator, shape: tuple[int, int],
           boxes: list[tuple[int, int, int, int]]) -> tuple[int, int, int, int] | None:
    """A random [x, y, w, h] for a mask of `shape` that keeps GAP pixels from every box."""
    h, w = shape
    for _ in range(PLACEMENT_TRIES):
        box = (int(rng.integers(0, SIZE - w + 1)), int(rng.integers(0, SIZE - h + 1)), w, h)
        if not any(_near(box, other) for other in boxes):
            return box
    return None


def _near(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return (a[0] < b[0] + b[2] + GAP and b[0] < a[0] + a[2] + GAP
            and a[1] < b[1] + b[3] + GAP and b[1] < a[1] + a[3] + GAP)


def _colour(rng: np.random.Generator, local_mean: np.ndarray) -> tuple[int, int, int]:
    while True:
        colour = rng.integers(0, 256, 3)
        if np.abs(colour - local_mean).sum() >= MIN_CONTRAST:
            return (int(colour[0]), int(colour[1]), int(colour[2]))


def coco_categories() -> list[dict[str, Any]]:
    return [{"id": i, "name": name, "supercategory": "shape"}
            for i, name in enumerate(CATEGORIES, start=1)]


def coco_annotations(image: ShapesImage, image_id: int, first_id: int) -> list[dict[str, Any]]:
    """One COCO instance per shape: tight box, RLE and area all taken from its mask."""
    from pycocotools import mask as coco_mask

    annotations = []
    for number, shape in enumerate(image.shapes):
        rle = coco_mask.encode(np.asfortranarray(shape.mask.astype(np.uint8)))
        annotations.append({
            "id": first_id + number, "image_id": image_id, "category_id": shape.category_id,
            "bbox": list(shape.box), "area": int(shape.mask.sum()), "iscrowd": 0,
            "segmentation": {"size": [SIZE, SIZE], "counts": rle["counts"].decode("ascii")}})
    return annotations
