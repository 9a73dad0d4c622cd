"""Class-index masks: palette PNGs and overlays out, ground-truth masks in. Pillow and numpy only.

Under `--output DIR`, `DIR/masks/<input path>.png` holds one class index per pixel (a palette PNG:
cvtool's class colours, the boxes' colours of the same class ids, 0 black and 255, the usual
ignore value, white) and
`DIR/overlays/<input path>` the image with every region of a class other than 0 filled
translucently in that class's colour inside a solid outline, and a legend band below it (each
class present: its colour and name). The colours are the masks' own palette. Paths
mirror the inputs as annotated images do (cvtool/io/annotate.py); a mask takes the input's stem,
as the masks of a training set do.

Ground-truth masks are the `.png` files under `--gt-masks DIR`; an input's mask is the one whose
path below DIR, without extension, is the longest trailing run of the input's own path components
without extension (`val/images/a.jpg` finds `DIR/a.png`, or `DIR/images/a.png` before it).
"""

from __future__ import annotations

from pathlib import Path, PurePath

import numpy as np
from PIL import Image

from cvtool.core.files import open_regular
from cvtool.core.results import InputError, InputFailure, one_line
from cvtool.core.status import UsageError
from cvtool.io.annotate import (
    class_boundaries,
    encoded,
    image_name,
    label_padding,
    line_width,
    mirrored,
    refuse_overwriting_input,
    text_mask,
    text_size,
)
from cvtool.io.matching import TailIndex
from cvtool.io.palette import COLOURS
from cvtool.io.writers import BackgroundWrites, write_artifact

_MASK_MODES = ("P", "L", "1", "I;16", "I;16B", "I;16L", "I")  # one channel of class indices




def mask_png(mask: np.ndarray) -> bytes:
    """A (H, W) array of class indices (< 256) as a palette PNG."""
    image = Image.fromarray(mask.astype(np.uint8))
    image.putpalette(COLOURS.tobytes())  # makes it a "P" image whose pixel values are the indices
    return encoded(image, ".png")


OVERLAY_ALPHA = 0.55  # strong enough to see on any background; the outline says where it ends
LEGEND_BACKGROUND = (32, 32, 32)


def overlay(image: Image.Image, mask: np.ndarray, labels: dict[int, str] | None = None,
            alpha: float = OVERLAY_ALPHA) -> Image.Image:
    """`image` with each region of class c > 0 filled with c's colour (`alpha`) inside a
    solid outline of it, class 0 left as it is; with `labels` (index -> name of the classes
    to name), a legend band below the image. Pillow's blend and composite for the fill."""
    base = image.convert("RGB")
    indices = Image.fromarray(mask.astype(np.uint8))
    tint = indices.copy()
    tint.putpalette(COLOURS.tobytes())
    tinted = tint.convert("RGB")
    blended = Image.blend(base, tinted, alpha)
    drawn = Image.composite(blended, base, indices.point(lambda value: 255 if value else 0))
    edges = class_boundaries(mask, line_width(base.size))
    drawn = Image.composite(tinted, drawn, Image.fromarray(edges.astype(np.uint8) * 255))
    if labels:
        drawn = with_legend(drawn, [(index, labels[index]) for index in sorted(labels)
                                    if index != 0])
    return drawn


def with_legend(image: Image.Image, entries: list[tuple[int, str]]) -> Image.Image:
    """`image` over a band that names each (class index, label): a swatch of the class's
    colour and its name, left to right, wrapping to as many rows as the width needs."""
    from PIL import ImageDraw

    if not entries:
        return image
    size = text_size(image.size)
    pad = label_padding(size) + 1
    tags = [text_mask(label, size) for _, label in entries]
    cells, x, y = [], pad, pad
    for tag in tags:
        cell = size + pad + tag.width + 3 * pad  # swatch, gap, text, gap to the next
        if x > pad and x + cell > image.width:
            x, y = pad, y + size + pad
        cells.append((x, y))
        x += cell
    band = Image.new("RGB", (image.width, y + size + pad), LEGEND_BACKGROUND)
    draw = ImageDraw.Draw(band)
    for (index, _), tag, (x, y) in zip(entries, tags, cells):
        swatch = tuple(int(value) for value in COLOURS[index])
        draw.rectangle((x, y, x + size - 1, y + size - 1), fill=swatch, outline=(255, 255, 255))
        band.paste((255, 255, 255), (x + size + pad, y + max(0, (size - tag.height) // 2)), tag)
    out = Image.new("RGB", (image.width, image.height + band.height))
    out.paste(image, (0, 0))
    out.paste(band, (0, image.height))
    return out


class MaskWriter:
    """Writes each input's mask and overlay under `output`, atomically."""

    def __init__(self, output: Path, writes: BackgroundWrites) -> None:
        self.output, self.writes = Path(output), writes
        self.written: dict[Path, str] = {}  # mask file -> the input it was written for

    def save(self, path: str, image: Image.Image, mask: np.ndarray,
             labels: dict[int, str] | None = None) -> str | InputError:
        """The mask's path, or why it cannot be written (another input took its name).
        `labels`: the classes present, named in the overlay's legend."""
        relative = mirrored(path)
        mask_path = self.output / "masks" / relative.with_name(relative.stem + ".png")
        overlay_path = self.output / "overlays" / image_name(relative)
        owner = self.written.setdefault(mask_path, path)
        if owner != path:
            return InputError("OutputCollision", f"its mask {mask_path} was already written for "
                                                 f"{owner} (same folder, same stem)")
        for target in (mask_path, overlay_path):
            refuse_overwriting_input(target, path, self.output)
        self.writes.submit(path, lambda: write_artifact(mask_path, mask_png(mask)))
        self.writes.submit(path, lambda: write_artifact(
            overlay_path, encoded(overlay(image, mask, labels), overlay_path.suffix)))
        return str(mask_path)


class GroundTruthMasks:
    """The `.png` masks under a folder, found for each input by path (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise UsageError(f"--gt-masks {root} is not a directory")
        self.index: TailIndex[Path] = TailIndex()
        for path in sorted(self.root.rglob("*.[pP][nN][gG]")):
            key = path.relative_to(self.root).with_suffix("").parts
            if path.is_file() and not any(part.startswith(".") for part in key):
                self.index.add(key, path)
        if not len(self.index):
            raise UsageError(f"--gt-masks {root} holds no .png masks")

    def find(self, path: str) -> Path | None:
        return self.index.find(PurePath(path).with_suffix("").parts)


def read_ground_truth(path: Path, size: tuple[int, int], num_classes: int,
                      ignore_index: int) -> np.ndarray:
    """The (H, W) int64 class indices of `path`; `InputFailure` if it is unreadable, not one
    channel, not `size` (H, W), or holds values that are neither classes nor `ignore_index`."""
    try:
        with open_regular(path) as file, Image.open(file) as image:
            mode, truth = image.mode, np.asarray(image)
    except (OSError, ValueError, SyntaxError) as error:
        raise InputFailure("InvalidMask", f"cannot read ground-truth mask {path}: "
                                          f"{one_line(error)}") from None
    if mode not in _MASK_MODES:
        raise InputFailure("InvalidMask", f"ground-truth mask {path} is {mode}; expected one "
                           "channel (palette or grayscale PNG) whose values are class indices")
    if truth.shape != size:
        raise InputFailure("MaskSizeMismatch", f"ground-truth mask {path} is {truth.shape[1]}x"
                           f"{truth.shape[0]}, the image {size[1]}x{size[0]} (after EXIF rotation)")
    truth = truth.astype(np.int64)
    wrong = np.unique(truth[((truth < 0) | (truth >= num_classes)) & (truth != ignore_index)])
    if wrong.size:
        shown = ", ".join(str(v) for v in wrong[:5]) + (", ..." if wrong.size > 5 else "")
        raise InputFailure("MaskValueOutOfRange", f"ground-truth mask {path} has values {shown}, "
                           f"outside the model's classes 0-{num_classes - 1} and not "
                           f"--ignore-index {ignore_index}")
    return truth
