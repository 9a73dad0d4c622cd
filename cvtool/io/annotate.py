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
    """A copy of `image` with translucent masks, boxes and `label score` tags."""
    canvas = image.convert("RGB")
    if masked := [detection for detection in detections if "mask" in detection]:
        canvas = _blend_masks(canvas, masked)
    draw = ImageDraw.Draw(canvas)
    width = max(1, round(min(canvas.size) / 250))
    for detection in detections:
        rgb = colour(detection["index"])
        x1, y1, x2, y2 = detection["box"]
        draw.rectangle((x1, y1, x2, y2), outline=rgb, width=width)
        text = _tag(f"{detection['label']} {detection['score']:.2f}")
        text_width, text_height = text.size
        # Above the box, or just inside it when the box touches the top edge.
        top = y1 - text_height - 2 if y1 >= text_height + 2 else y1
        draw.rectangle((x1, top, x1 + text_width + 2, top + text_height + 2), fill=rgb)
        canvas.paste((0, 0, 0), (round(x1) + 1, round(top) + 1), text)
    return canvas


@functools.lru_cache(maxsize=4096)
def _tag(text: str) -> Image.Image:
    """`text` rendered once in the default font, as the coverage mask it is pasted through
    (labels and two-decimal scores repeat; rendering them is most of the drawing's cost)."""
    font = ImageFont.load_default()
    _, _, width, height = font.getbbox(text)
    mask = Image.new("L", (width, height))
    ImageDraw.Draw(mask).text((0, 0), text, fill=255, font=font)
    return mask


def _blend_masks(canvas: Image.Image, detections: list[dict[str, Any]]) -> Image.Image:
    """Every mask tinted in its class colour in one composite (a later mask's colour where two
    overlap)."""
    from cvtool.io.coco import decode_mask

    height, width = canvas.height, canvas.width
    colours = np.zeros((height, width, 3), np.uint8)
    alpha = np.zeros((height, width), np.uint8)
    for detection in detections:
        inside = decode_mask(detection["mask"]).astype(bool)
        colours[inside] = colour(detection["index"])
        alpha[inside] = round(255 * MASK_ALPHA)
    return Image.composite(Image.fromarray(colours), canvas, Image.fromarray(alpha))


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
