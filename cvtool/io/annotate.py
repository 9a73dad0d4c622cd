"""Artifacts for detect and segment-instance: annotated images and per-detection crops.

Files mirror the input's path under `--output`: a path inside the working directory keeps its
relative path, any other keeps its absolute path below the output root. Annotated images keep the
input's name (JPEG for .jpg/.jpeg, PNG otherwise, `.png` appended to other extensions); crops go
to `crops/<mirrored input folder>/<name>_<ext>/<NNN>_<label>.png` (`a.png` -> `a_png/`: a folder
that does not look like an image to `**/*.png` globs, and `a.jpg` beside it keeps its own), NNN
the detection's position in the record.
Pillow and numpy only; every file is written atomically.
"""

from __future__ import annotations

import functools
import io
import math
import os
import re
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cvtool.core.status import UsageError
from cvtool.io.palette import colour
from cvtool.io.writers import BackgroundWrites, write_artifact

MASK_ALPHA = 0.45  # masks translucent enough to see the object through them
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def draw_detections(image: Image.Image, detections: list[dict[str, Any]]) -> Image.Image:
    """A copy of `image` with each mask as a translucent fill inside a crisp outline, each box,
    and `label score` tags placed by `label_layout` (outside the object where there is room,
    inside the image, never over each other), text and lines scaled to the image."""
    canvas = image.convert("RGB")
    if masked := [detection for detection in detections if "mask" in detection]:
        canvas = _blend_masks(canvas, masked)
    draw = ImageDraw.Draw(canvas)
    width = line_width(canvas.size)
    size = text_size(canvas.size)
    tags = [text_mask(f"{d['label']} {d['score']:.2f}", size) for d in detections]
    places = label_layout([d["box"] for d in detections], [tag.size for tag in tags],
                          canvas.size, padding=label_padding(size))
    for detection in detections:
        draw.rectangle(tuple(detection["box"]), outline=colour(detection["index"]), width=width)
    for detection, tag, (left, top, right, bottom) in zip(detections, tags, places):
        rgb = colour(detection["index"])
        draw.rectangle((left, top, right - 1, bottom - 1), fill=rgb)
        pad = label_padding(size)
        canvas.paste(text_colour(rgb), (left + pad, top + pad), tag)
    return canvas


def line_width(size: tuple[int, int]) -> int:
    """Box and outline width: 1 px up to 375 px images, then growing with the image."""
    return max(1, round(min(size) / 250))


def text_size(size: tuple[int, int]) -> int:
    """Label text height in px: 3.5% of the image's shorter side, 9 to 48 px."""
    return max(9, min(48, round(min(size) * 0.035)))


def label_padding(text: int) -> int:
    return max(1, text // 8)


def text_colour(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black on light label colours, white on dark ones (by relative luminance)."""
    red, green, blue = rgb
    return (0, 0, 0) if 0.299 * red + 0.587 * green + 0.114 * blue >= 140 else (255, 255, 255)


Rect = tuple[int, int, int, int]  # left, top, right, bottom (exclusive)


def label_layout(boxes: list[list[float]], sizes: list[tuple[int, int]],
                 image: tuple[int, int], padding: int = 1) -> list[Rect]:
    """Where each box's label goes: just above the box, else just below it, else inside it at
    its top edge; kept inside the image, and moved sideways past labels already placed (or
    stacked on the nearest free row), so no two overlap where the image has room. Returns one
    rectangle (left, top, right, bottom; right and bottom exclusive) per box."""
    width, height = image
    rects = [(math.floor(x1), math.floor(y1), math.ceil(x2), math.ceil(y2))
             for x1, y1, x2, y2 in boxes]
    spans = [(min(width, w + 2 * padding), min(height, h + 2 * padding)) for w, h in sizes]

    def room(number: int) -> int:  # how many of above / below fit inside the image
        (_, top, _, bottom), (_, h) = rects[number], spans[number]
        return (top - h >= 0) + (bottom + h <= height)

    # Boxes with less room outside (at the image's edge) choose first: a label that can only
    # go below its box is not pushed inside it by a neighbour's label that had a choice.
    placed: dict[int, Rect] = {}
    for number in sorted(range(len(rects)), key=lambda number: (room(number), number)):
        placed[number] = _free_spot(rects[number], *spans[number], image, list(placed.values()))
    return [placed[number] for number in range(len(rects))]


def _free_spot(box: Rect, w: int, h: int, image: tuple[int, int], placed: list[Rect]) -> Rect:
    """In order of preference, a w x h spot inside the image and free of `placed`: just above
    or just below the box (at its left edge, or shifted sideways just past a label in the
    way); a row stacked against a placed label, off the box; inside the box at its top edge;
    a stacked row over the box. Failing all (no room left), inside the box at its top edge."""
    width, height = image
    left = min(max(0, box[0]), width - w)
    inside = max(0, min(box[1], height - h))

    def spot(top: int) -> Rect | None:
        if not 0 <= top <= height - h:
            return None
        shifts = {other[2] for other in placed} | {other[0] - w for other in placed}
        for x in [left, *sorted(shifts, key=lambda x: abs(x - left))]:
            candidate = (x, top, x + w, top + h)
            if 0 <= x <= width - w and not any(_overlap(candidate, o) for o in placed):
                return candidate
        return None

    def off_box(top: int) -> bool:
        return top + h <= box[1] or top >= box[3]

    rows = sorted({other[3] for other in placed} | {other[1] - h for other in placed},
                  key=lambda top: abs(top - box[1]))
    for top in [box[1] - h, box[3], *filter(off_box, rows), inside,
                *(row for row in rows if not off_box(row))]:
        if found := spot(top):
            return found
    return (left, inside, left + w, inside + h)


def _overlap(a: Rect, b: Rect) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


@functools.lru_cache(maxsize=4096)
def text_mask(text: str, size: int) -> Image.Image:
    """`text` rendered once in Pillow's own font at `size` px, as the coverage mask it is
    pasted through (labels and two-decimal scores repeat; rendering is most of the cost)."""
    font = _font(size)
    left, top, right, bottom = font.getbbox(text)
    mask = Image.new("L", (right - left, bottom - top))
    ImageDraw.Draw(mask).text((-left, -top), text, fill=255, font=font)
    return mask


@functools.lru_cache(maxsize=64)
def _font(size: int) -> Any:
    return ImageFont.load_default(size)


def _blend_masks(canvas: Image.Image, detections: list[dict[str, Any]]) -> Image.Image:
    """Every mask tinted in its class colour in one composite (a later mask's colour where two
    overlap), then each mask's outline drawn solid over it."""
    from cvtool.io.coco import decode_mask

    height, width = canvas.height, canvas.width
    colours = np.zeros((height, width, 3), np.uint8)
    alpha = np.zeros((height, width), np.uint8)
    planes = []
    for detection in detections:
        inside = decode_mask(detection["mask"]).astype(bool)
        colours[inside] = colour(detection["index"])
        alpha[inside] = round(255 * MASK_ALPHA)
        planes.append((inside, colour(detection["index"])))
    for inside, rgb in planes:
        edge = outline(inside, line_width((width, height)))
        colours[edge] = rgb
        alpha[edge] = 255
    return Image.composite(Image.fromarray(colours), canvas, Image.fromarray(alpha))


def outline(inside: np.ndarray, width: int = 1) -> np.ndarray:
    """The pixels of the boolean plane `inside` within `width` of its border (a pixel outside
    it, or the image's edge)."""
    return class_boundaries(inside.astype(np.uint8), width)


def class_boundaries(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """Pixels of a class other than 0 within `width` of a pixel of another class (or of the
    image's edge): every region's outline, each in its own class."""
    from PIL import ImageFilter

    plane = Image.fromarray(mask.astype(np.uint8))
    size = 2 * width + 1
    low = np.asarray(plane.filter(ImageFilter.MinFilter(size)))
    high = np.asarray(plane.filter(ImageFilter.MaxFilter(size)))
    edge = (low != mask) | (high != mask)
    edge[:width], edge[-width:], edge[:, :width], edge[:, -width:] = True, True, True, True
    return edge & (mask != 0)


def crop(image: Image.Image, box: list[float]) -> Image.Image:
    """The box's pixels, rounded outwards so the whole object is kept."""
    x1, y1, x2, y2 = box
    left, top = max(0, math.floor(x1)), max(0, math.floor(y1))
    right = min(image.width, max(left + 1, math.ceil(x2)))
    bottom = min(image.height, max(top + 1, math.ceil(y2)))
    return image.crop((left, top, right, bottom))


def mirrored(path: str) -> Path:
    """`path` relative to the working directory, or absolute without its root."""
    resolved = Path(os.path.abspath(path))
    try:
        return resolved.relative_to(Path.cwd())
    except ValueError:
        return resolved.relative_to(resolved.anchor)


class ArtifactWriter:
    """Each input's annotated image (and crops) under `output`: the names are settled here,
    the drawing, encoding and writing happen on `writes`' threads."""

    def __init__(self, output: Path, save_crops: bool, writes: BackgroundWrites) -> None:
        self.output, self.save_crops, self.writes = Path(output), save_crops, writes

    def save(self, path: str, image: Image.Image, detections: list[dict[str, Any]]) -> None:
        relative = mirrored(path)
        target = self.output / image_name(relative)
        refuse_overwriting_input(target, path, self.output)
        self.writes.submit(path, lambda: write_artifact(
            target, encoded(draw_detections(image, detections), target.suffix)))
        if self.save_crops:
            self.writes.submit(path, lambda: self._crops(relative, image, detections))

    def _crops(self, relative: Path, image: Image.Image,
               detections: list[dict[str, Any]]) -> None:
        for number, detection in enumerate(detections):
            name = f"{number:03d}_{_UNSAFE.sub('_', detection['label'])}.png"
            cropped = crop(image, detection["box"])
            write_artifact(self.output / "crops" / crops_folder(relative) / name,
                           encoded(cropped, ".png"))


def crops_folder(relative: Path) -> Path:
    """Where an input's crops go, relative to `crops/`: its name with the dot of its extension
    made an underscore."""
    return relative.with_name(relative.name.replace(".", "_"))


def refuse_overwriting_input(target: Path, path: str, output: Path) -> None:
    if Path(os.path.abspath(target)) == Path(os.path.abspath(path)):
        raise UsageError(f"--output {output} would overwrite the input {path}; "
                         "choose another directory")


def image_name(relative: Path) -> Path:
    """An image artifact's name: the input's for JPEG and PNG, `.png` appended to others."""
    if relative.suffix.lower() in (".jpg", ".jpeg", ".png"):
        return relative
    return relative.with_name(relative.name + ".png")


def encoded(image: Image.Image, suffix: str) -> bytes:
    buffer = io.BytesIO()
    if suffix.lower() in (".jpg", ".jpeg"):
        image.save(buffer, format="JPEG", quality=95)
    else:
        # zlib's run-length strategy: 3-4x faster than the default on photos, files ~4% larger
        # (OpenCV's default for PNG too). Artifacts are written for every input; speed wins.
        image.save(buffer, format="PNG", compress_type=zlib.Z_RLE)
    return buffer.getvalue()
