"""Decode one input file into a fully loaded RGB PIL image, or raise `InputFailure` saying why.

Every inference command reads its inputs through `load_image`, from a pool of threads, so this
module keeps no state and never touches Pillow's global switches (`LOAD_TRUNCATED_IMAGES`,
warning filters): a truncated file is an error, not a half-grey image. Pillow and numpy only.
"""

from __future__ import annotations

import os
import re
import struct
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cvtool.core.files import open_regular
from cvtool.core.results import InputFailure, one_line
from cvtool.core.status import UsageError

DEFAULT_MAX_PIXELS: int = 89_478_485  # Pillow's own MAX_IMAGE_PIXELS default (about 0.25 GiB RGBA)
MAX_PIXELS_LIMIT: int = 2 * DEFAULT_MAX_PIXELS  # Pillow refuses larger images whatever we allow

_ORIENTATION = 0x0112  # the EXIF tag exif_transpose turns by
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})
# What Pillow's decoders raise on damaged data, besides OSError.
_CORRUPT_DATA_ERRORS = (SyntaxError, ValueError, EOFError, IndexError, struct.error)


def load_image(path: str, max_pixels: int = DEFAULT_MAX_PIXELS,
               draft: tuple[int, int] | None = None) -> Image.Image:
    """The first frame of `path` as RGB, EXIF orientation applied, pixels loaded.

    `max_pixels` bounds width*height as read from the header, before any pixel is decoded, so a
    small file that claims a huge canvas fails fast instead of allocating it. `draft` (width,
    height): a JPEG at least twice as large in both sides is decoded at a reduced DCT scale
    (1/2, 1/4 or 1/8, Pillow's `draft`) that still covers that size, which skips most of the
    decoding work; `full_size(image)` is then the size the file has.
    """
    try:
        file = open_regular(path)  # a FIFO or device is an error at once, never a wait
    except OSError as exc:
        raise InputFailure(type(exc).__name__, _strerror(exc)) from None
    with file:
        _require_content(file)
        image = _open(file, max_pixels)
        return _decode(image, draft)


def from_memory(image: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """An in-memory input as `load_image` would return it: a `PIL.Image` (EXIF orientation
    applied, first frame), a numpy array (H, W) or (H, W, 1|3|4) of uint8, or a torch tensor
    (H, W) or (1|3|4, H, W), uint8 or floating point in [0, 1]. Anything else, or values out of
    range, is an `InputFailure`; the caller's object is never modified."""
    if isinstance(image, Image.Image):
        width, height = image.size
        _check_pixels(width, height, max_pixels)
        return _decode(image)
    module = type(image).__module__.split(".")[0]
    if module == "torch":
        array = _tensor_to_hwc(image)
    elif module == "numpy":
        array = image
    else:
        raise InputFailure("UnsupportedInput", f"a {type(image).__name__} is not an input; give "
                           "a path, a PIL image, a numpy array or a torch tensor")
    return _array_to_rgb(array, max_pixels, "array")


def _tensor_to_hwc(tensor: Any) -> np.ndarray:
    if tensor.ndim == 3:
        tensor = tensor.permute(1, 2, 0)  # CHW -> HWC
    values = tensor.detach().cpu()
    if values.is_floating_point():
        values = values.double().numpy()
        if values.size and not (np.isfinite(values).all() and 0.0 <= values.min()
                                and values.max() <= 1.0):
            raise InputFailure("InvalidArray", "a floating-point tensor must hold values in "
                                               "[0, 1]")
        return np.rint(values * 255.0).astype(np.uint8)
    return values.numpy()


def _array_to_rgb(array: np.ndarray, max_pixels: int, what: str) -> Image.Image:
    channels = array.shape[2] if array.ndim == 3 else None
    if array.ndim not in (2, 3) or channels not in (None, 1, 3, 4) or array.dtype != np.uint8:
        raise InputFailure("InvalidArray", f"an image {what} must be (H, W) or (H, W, 1|3|4) "
                           f"uint8 (a tensor: (1|3|4, H, W)), not {tuple(array.shape)} "
                           f"{array.dtype}")
    height, width = array.shape[:2]
    if not height or not width:
        raise InputFailure("InvalidArray", f"an image {what} of {width}x{height} has no pixels")
    _check_pixels(width, height, max_pixels)
    array = np.ascontiguousarray(array[..., 0] if channels == 1 else array)
    return to_rgb(Image.fromarray(array))


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise InputFailure(
            "DecompressionBomb",
            f"{width}x{height} is {width * height} pixels, over the limit of {max_pixels}",
        )


def _require_content(file: BinaryIO) -> None:
    if os.fstat(file.fileno()).st_size == 0:
        raise InputFailure("EmptyFile", "file is empty (0 bytes)")


def _open(file: BinaryIO, max_pixels: int) -> Image.Image:
    try:
        image = Image.open(file)
    except UnidentifiedImageError:
        raise InputFailure("UnidentifiedImage", "not an image format Pillow can read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own header check, against its global limit (at most MAX_PIXELS_LIMIT, the
        # highest --max-pixels); the warning arrives as an exception only where the caller made
        # warnings errors. Either way it is a bomb, reported against cvtool's one limit.
        found = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = f"{found[1]} pixels" if found else "too many pixels"
        raise InputFailure("DecompressionBomb", f"{pixels}, over the limit of {max_pixels}"
                           ) from None
    except (OSError, *_CORRUPT_DATA_ERRORS) as exc:
        message = f"cannot read the image header: {one_line(exc)}"
        raise InputFailure("CorruptImage", message) from None
    _check_pixels(*image.size, max_pixels)
    return image


def check_max_pixels(max_pixels: int | None) -> None:
    """--max-pixels: from 1 to Pillow's hard limit, above which Pillow refuses any image."""
    if max_pixels is not None and not 1 <= max_pixels <= MAX_PIXELS_LIMIT:
        raise UsageError(f"--max-pixels must be from 1 to {MAX_PIXELS_LIMIT} (Pillow's own "
                         f"hard limit), not {max_pixels}")


def full_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) of the file `image` was decoded from, oriented (a draft decode is
    smaller)."""
    return getattr(image, "cvtool_full_size", image.size)


def _decode(image: Image.Image, draft: tuple[int, int] | None = None) -> Image.Image:
    """Load pixels (first frame: a fresh image starts there), orient, convert to RGB."""
    try:
        size = image.size
        drafted = draft is not None and image.format == "JPEG" and image.mode in ("RGB", "L")
        if drafted:
            image.draft(image.mode, draft)
        image.load()
        rgb = to_rgb(ImageOps.exif_transpose(image))
        if drafted and image.size != size:  # the file's size, turned as the pixels are
            turned = image.getexif().get(_ORIENTATION) in (5, 6, 7, 8)
            rgb.cvtool_full_size = size[::-1] if turned else size  # type: ignore[attr-defined]
        return rgb
    except OSError as exc:
        kind = "TruncatedImage" if "truncated" in str(exc) else "CorruptImage"
        raise InputFailure(kind, one_line(exc)) from None
    except _CORRUPT_DATA_ERRORS as exc:
        raise InputFailure("CorruptImage", one_line(exc)) from None
    except MemoryError:
        raise InputFailure("MemoryError", "not enough memory to decode this image") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB, alpha dropped (as torchvision's pil_loader does)."""
    if image.mode == "RGB":
        return image
    if image.mode in _SIXTEEN_BIT_MODES:
        return _gray_to_rgb(np.asarray(image).astype(np.float64) / 257.0)
    if image.mode == "F":
        return _gray_to_rgb(_float_to_8bit_scale(np.asarray(image, dtype=np.float64)))
    if "transparency" in image.info:
        # Via RGBA: Pillow warns when a palette's transparency is converted straight to RGB.
        return image.convert("RGBA").convert("RGB")
    return image.convert("RGB")


def _gray_to_rgb(values: np.ndarray) -> Image.Image:
    # Scale, not clip: Pillow's own I;16 -> RGB clips, turning most of a 16-bit range white.
    gray = np.rint(np.clip(values, 0.0, 255.0)).astype(np.uint8)
    return Image.fromarray(gray).convert("RGB")


def _float_to_8bit_scale(values: np.ndarray) -> np.ndarray:
    # Float images come as 0..1 (scientific TIFF) or 0..255 (Pillow's own float mode); the
    # value range is the only hint which.
    values = np.nan_to_num(values, nan=0.0, posinf=255.0, neginf=0.0)
    return values * 255.0 if values.size and values.max() <= 1.0 else values


def _strerror(exc: OSError) -> str:
    return (exc.strerror or str(exc)).lower()
