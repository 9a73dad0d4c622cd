"""load_image: every awkward input decodes to the right RGB pixels or fails with the right type."""

from __future__ import annotations

import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from awkward import BLUE, EXPECTED_OK, RED, ROTATED_SIZE, bomb_png_bytes
from PIL import Image, ImageFile

from cvtool.core.results import InputError, InputFailure
from cvtool.io.decode import DEFAULT_MAX_PIXELS, load_image, to_rgb

EXPECTED_ERROR = {
    "empty.jpg": "EmptyFile",
    "truncated.jpg": "TruncatedImage",
    "truncated.png": "TruncatedImage",
    "text.jpg": "UnidentifiedImage",
    "page.png": "UnidentifiedImage",
    "bomb.png": "DecompressionBomb",
}


def decode_error(path: Path | str, **options: int) -> InputError:
    with pytest.raises(InputFailure) as caught:
        load_image(str(path), **options)
    return caught.value.error


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(int)


def test_expected_errors_cover_every_failing_input() -> None:
    assert set(EXPECTED_ERROR) == {name for name, ok in EXPECTED_OK.items() if not ok}


@pytest.mark.parametrize("name", sorted(EXPECTED_OK))
def test_awkward_input_decodes_to_rgb_or_fails_with_its_type(awkward_dir: Path, name: str) -> None:
    if EXPECTED_OK[name]:
        image = load_image(str(awkward_dir / name))
        assert image.mode == "RGB"
        assert pixels(image).shape == (image.height, image.width, 3)
    else:
        error = decode_error(awkward_dir / name)
        assert error.type == EXPECTED_ERROR[name]
        assert error.message and "\n" not in error.message


@pytest.mark.parametrize(("name", "size", "colour"), [
    ("tiny_1x1.png", (1, 1), RED),
    ("wide_2000x3.png", (2000, 3), BLUE),
    ("with space.png", (3, 2), RED),
    ("café ñ 猫.png", (2, 3), BLUE),
    ("new\nline.png", (4, 4), RED),
    ("UPPER CASE.PNG", (3, 3), RED),
    ("animated.gif", (8, 8), RED),  # first frame RED, second BLUE
    ("multipage.tif", (6, 4), BLUE),  # first page BLUE, second RED
])
def test_solid_inputs_keep_size_and_colour(awkward_dir: Path, name: str, size: tuple[int, int],
                                           colour: tuple[int, int, int]) -> None:
    image = load_image(str(awkward_dir / name))
    assert image.size == size
    assert (pixels(image) == colour).all()


@pytest.mark.parametrize("name", ["animated.gif", "multipage.tif"])
def test_multi_frame_inputs_really_have_two_frames(awkward_dir: Path, name: str) -> None:
    with Image.open(awkward_dir / name) as image:
        assert image.n_frames == 2


def test_exif_orientation_6_rotates_clockwise(awkward_dir: Path) -> None:
    image = load_image(str(awkward_dir / "rotated.jpg"))
    width, height = ROTATED_SIZE
    assert image.size == (height, width)  # 40x20 stored, 20x40 shown
    values = pixels(image)
    # The stored left half (RED) ends up on top after a clockwise quarter turn.
    assert np.abs(values[: width // 2 - 2] - RED).max() <= 12
    assert np.abs(values[width // 2 + 2 :] - BLUE).max() <= 12


def test_sixteen_bit_png_is_scaled_not_clipped(awkward_dir: Path) -> None:
    assert Image.open(awkward_dir / "gray16.png").mode.startswith("I;16")
    values = pixels(load_image(str(awkward_dir / "gray16.png")))
    assert values[0, :, 0].tolist() == [0, 10, 128, 255]
    assert (values == values[..., :1]).all()  # gray stays gray


@pytest.mark.parametrize("dtype", [np.dtype("<u2"), np.dtype(">u2"), np.dtype("int32")])
def test_every_sixteen_bit_mode_scales_by_257(dtype: np.dtype) -> None:
    image = Image.fromarray(np.array([[0, 257, 32768, 65535]], dtype=dtype))
    assert image.mode in {"I;16", "I;16B", "I"}
    assert pixels(to_rgb(image))[0, :, 1].tolist() == [0, 1, 128, 255]


def test_float_images_in_unit_range_are_scaled(awkward_dir: Path) -> None:
    assert (pixels(load_image(str(awkward_dir / "float.tif"))) == 128).all()  # 0.5 -> 128
    wide = Image.fromarray(np.array([[0.0, 100.0, 300.0]], dtype=np.float32))
    assert pixels(to_rgb(wide))[0, :, 0].tolist() == [0, 100, 255]


def test_rgba_alpha_is_dropped_not_blended(awkward_dir: Path) -> None:
    values = pixels(load_image(str(awkward_dir / "rgba.png")))
    assert (values[:, 0] == RED).all()
    assert (values[:, 1] == BLUE).all()  # fully transparent, colour kept as stored


@pytest.mark.parametrize("name", ["palette.png", "palette_transparent.png"])
def test_palette_maps_to_its_colours_without_warnings(awkward_dir: Path, name: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        values = pixels(load_image(str(awkward_dir / name)))
    assert values[0, 0].tolist() == list(RED)
    assert (values[1:] == BLUE).all()


@pytest.mark.parametrize(("name", "gray"), [("gray.png", 77), ("gray_alpha.png", 77),
                                            ("bilevel.png", 255)])
def test_gray_modes_replicate_into_three_channels(awkward_dir: Path, name: str, gray: int) -> None:
    assert (pixels(load_image(str(awkward_dir / name))) == gray).all()


def test_cmyk_jpeg_converts_to_rgb(awkward_dir: Path) -> None:
    assert Image.open(awkward_dir / "cmyk.jpg").mode == "CMYK"
    assert np.abs(pixels(load_image(str(awkward_dir / "cmyk.jpg"))) - (255, 0, 0)).max() <= 8


@pytest.mark.parametrize("mode", ["LAB", "HSV", "YCbCr", "LA", "PA", "RGBX", "1", "L"])
def test_other_modes_convert_through_to_rgb(mode: str) -> None:
    source = Image.new("RGB", (2, 2), RED)
    # An adaptive palette holds RED exactly; a plain convert("P") would dither to web colours.
    converted = to_rgb(source.quantize(4).convert(mode) if mode == "PA" else source.convert(mode))
    assert converted.mode == "RGB"
    if mode not in {"1", "L", "LA"}:
        assert np.abs(pixels(converted) - RED).max() <= 10


def test_bomb_header_fails_fast_from_the_header(awkward_dir: Path) -> None:
    assert (awkward_dir / "bomb.png").stat().st_size < 100
    start = time.perf_counter()
    assert decode_error(awkward_dir / "bomb.png").type == "DecompressionBomb"
    assert time.perf_counter() - start < 0.5  # decoding 20000x20000 RGB would take seconds


def test_bomb_guard_does_not_depend_on_pillow_globals(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # Pillow's own check switched off
    path = tmp_path / "claims.png"
    path.write_bytes(bomb_png_bytes(10_000, 10_000))
    assert decode_error(path).type == "DecompressionBomb"


def test_max_pixels_is_the_callers_limit(photo_paths: list[Path]) -> None:
    width, height = Image.open(photo_paths[0]).size
    error = decode_error(photo_paths[0], max_pixels=width * height - 1)
    assert error.type == "DecompressionBomb" and str(width * height - 1) in error.message
    assert load_image(str(photo_paths[0]), max_pixels=width * height).size == (width, height)
    assert DEFAULT_MAX_PIXELS == 89_478_485


@pytest.mark.parametrize(("make", "expected"), [
    (lambda tmp: tmp / "missing.jpg", "FileNotFoundError"),
    (lambda tmp: tmp, "IsADirectoryError"),
])
def test_filesystem_errors_keep_their_os_names(tmp_path: Path, make, expected: str) -> None:
    assert decode_error(make(tmp_path)).type == expected


def test_truncated_images_stay_errors_and_globals_untouched(awkward_dir: Path) -> None:
    decode_error(awkward_dir / "truncated.jpg")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_photos_decode_like_pillow_itself(photo_paths: list[Path]) -> None:
    for path in photo_paths:
        image = load_image(str(path))
        with Image.open(path) as reference:
            assert (pixels(image) == pixels(reference.convert("RGB"))).all()
        assert max(image.size) <= 640


def outcome(path: Path) -> bytes | str:
    try:
        return load_image(str(path)).tobytes()
    except InputFailure as failure:
        return failure.error.type


def test_concurrent_decoding_matches_serial(awkward_dir: Path, photo_paths: list[Path]) -> None:
    inputs = [awkward_dir / name for name in sorted(EXPECTED_OK)] + photo_paths
    serial = [outcome(path) for path in inputs]
    with ThreadPoolExecutor(8) as pool:
        concurrent = list(pool.map(outcome, inputs * 6))
    assert concurrent == serial * 6
