"""Awkward inputs every inference command must survive: broken, odd-mode and oddly named files.

`make_awkward_inputs(dir)` writes them all (each well under 50 KB) and returns
{relative name: whether it should decode}. The tests in test_decode.py check the values; this
module only knows how each file is built, so the pixel values used here are exported as constants.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

RED = (220, 20, 30)
BLUE = (20, 40, 210)
SIXTEEN_BIT_ROW = (0, 257 * 10, 32768, 65535)  # -> 8-bit 0, 10, 128, 255
ROTATED_SIZE = (40, 20)  # stored width x height; EXIF orientation 6 shows it as 20x40
BOMB_SIZE = (20000, 20000)


def _halves(size: tuple[int, int]) -> Image.Image:
    """Left half RED, right half BLUE: any rotation or flip shows in where RED ends up."""
    image = Image.new("RGB", size, BLUE)
    image.paste(RED, (0, 0, size[0] // 2, size[1]))
    return image


def _encoded(image: Image.Image, format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format, **options)
    return buffer.getvalue()


def _png(image: Image.Image) -> bytes:
    return _encoded(image, "PNG")


def _jpeg(image: Image.Image, **options: object) -> bytes:
    return _encoded(image, "JPEG", quality=90, **options)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png_bytes(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR claiming width x height RGB, with a token IDAT: ~60 bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 16)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
            + _png_chunk(b"IEND", b""))


def _rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    return _jpeg(_halves(ROTATED_SIZE), exif=exif.tobytes())


def _animated_gif() -> bytes:
    frames = [Image.new("RGB", (8, 8), colour) for colour in (RED, BLUE)]
    return _encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)


def _multipage_tiff() -> bytes:
    pages = [Image.new("RGB", (6, 4), colour) for colour in (BLUE, RED)]
    return _encoded(pages[0], "TIFF", save_all=True, append_images=pages[1:])


def _rgba() -> Image.Image:
    """Left column opaque RED, right column fully transparent BLUE: alpha must not darken it."""
    image = Image.new("RGBA", (2, 2), (*BLUE, 0))
    image.putpixel((0, 0), (*RED, 255))
    image.putpixel((0, 1), (*RED, 255))
    return image


def _palette(transparent: bool) -> Image.Image:
    image = Image.new("P", (4, 4), 1)
    image.putpalette([*RED, *BLUE] + [0, 0, 0] * 254)
    image.putpixel((0, 0), 0)
    if transparent:
        image.info["transparency"] = bytes([255, 0])  # BLUE (index 1) fully transparent
    return image


def _truncated(format: str) -> bytes:
    """The first half of a noise image: noise keeps the file from compressing to a few bytes."""
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = _encoded(Image.fromarray(noise), format)
    return data[: len(data) // 2]


def _gray16() -> bytes:
    return _png(Image.fromarray(np.array([SIXTEEN_BIT_ROW] * 2, dtype=np.uint16)))


def _float_tiff() -> bytes:
    return _encoded(Image.fromarray(np.full((3, 4), 0.5, dtype=np.float32)), "TIFF")


# name -> (builder of the file's bytes, expected to decode)
_BUILDERS: dict[str, tuple[Callable[[], bytes], bool]] = {
    "empty.jpg": (lambda: b"", False),
    "truncated.jpg": (lambda: _truncated("JPEG"), False),
    "truncated.png": (lambda: _truncated("PNG"), False),
    "text.jpg": (lambda: b"just some notes, not a picture\n" * 4, False),
    "page.png": (lambda: b"<!DOCTYPE html><html><body>404 Not Found</body></html>\n", False),
    "bomb.png": (lambda: bomb_png_bytes(*BOMB_SIZE), False),
    "cmyk.jpg": (lambda: _jpeg(Image.new("CMYK", (6, 4), (0, 255, 255, 0))), True),
    "gray16.png": (_gray16, True),
    "gray.png": (lambda: _png(Image.new("L", (5, 3), 77)), True),
    "gray_alpha.png": (lambda: _png(Image.new("LA", (5, 3), (77, 0))), True),
    "bilevel.png": (lambda: _png(Image.new("1", (9, 3), 1)), True),
    "float.tif": (_float_tiff, True),
    "rgba.png": (lambda: _png(_rgba()), True),
    "palette.png": (lambda: _png(_palette(transparent=False)), True),
    "palette_transparent.png": (lambda: _png(_palette(transparent=True)), True),
    "animated.gif": (_animated_gif, True),
    "multipage.tif": (_multipage_tiff, True),
    "rotated.jpg": (_rotated_jpeg, True),
    "tiny_1x1.png": (lambda: _png(Image.new("RGB", (1, 1), RED)), True),
    "wide_2000x3.png": (lambda: _png(Image.new("RGB", (2000, 3), BLUE)), True),
    "UPPER CASE.PNG": (lambda: _png(Image.new("RGB", (3, 3), RED)), True),
    "with space.png": (lambda: _png(Image.new("RGB", (3, 2), RED)), True),
    "café ñ 猫.png": (lambda: _png(Image.new("RGB", (2, 3), BLUE)), True),
    "new\nline.png": (lambda: _png(Image.new("RGB", (4, 4), RED)), True),
}

EXPECTED_OK: dict[str, bool] = {name: ok for name, (_, ok) in _BUILDERS.items()}


def make_awkward_inputs(dir: Path) -> dict[str, bool]:
    """Write every awkward input into `dir`; return {relative name: expected to decode}."""
    dir.mkdir(parents=True, exist_ok=True)
    for name, (build, _) in _BUILDERS.items():
        (dir / name).write_bytes(build())
    return dict(EXPECTED_OK)
