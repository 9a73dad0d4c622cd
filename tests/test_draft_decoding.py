"""`--draft`: JPEGs much larger than the model's input decode at a reduced DCT scale (Pillow's
draft) that still covers the resize; records keep the file's own size, and the labels are
full decoding's."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from cvtool.io.decode import full_size, load_image
from tests.clirun import ROOT, cvtool

PHOTOS = ROOT / "sample_images" / "photos"


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Sample photos enlarged 5x (about 3000x2000), as camera JPEGs; one turned by EXIF."""
    folder = tmp_path_factory.mktemp("large")
    for name in ("coffee", "rocket"):
        image = Image.open(PHOTOS / f"{name}.jpg").convert("RGB")
        image.resize((image.width * 5, image.height * 5), Image.BICUBIC).save(
            folder / f"{name}.jpg", quality=92)
    turned = Image.open(folder / "rocket.jpg")
    exif = turned.getexif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to view
    turned.transpose(Image.Transpose.ROTATE_90).save(folder / "turned.jpg", quality=92,
                                                     exif=exif)
    return folder


def test_a_draft_decodes_fewer_pixels_and_knows_the_files_size(large: Path) -> None:
    full = load_image(str(large / "coffee.jpg"))
    drafted = load_image(str(large / "coffee.jpg"), draft=(256, 256))
    assert full.size == full_size(full) == full_size(drafted) == (3000, 2000)
    # 1/4: 2000 // 256 = 7 allows 1/4, not 1/8; the decode still covers 256x256
    assert drafted.size == (750, 500) and drafted.mode == "RGB"
    turned = load_image(str(large / "turned.jpg"), draft=(256, 256))
    assert full_size(turned) == load_image(str(large / "turned.jpg")).size == (3200, 2135)
    assert turned.size[0] > turned.size[1]  # oriented like the full decode
    small = load_image(str(PHOTOS / "coffee.jpg"), draft=(256, 256))  # 600x400: not reduced
    assert small.size == full_size(small) == (600, 400)
    png = ROOT / "sample_images" / "digits"
    first = sorted(png.glob("*.png"))[0]
    assert load_image(str(first), draft=(4, 4)).size == load_image(str(first)).size


def test_classify_with_draft_keeps_sizes_and_labels(large: Path) -> None:
    runs = {}
    for flag in ("--no-draft", "--draft"):
        done = cvtool("classify", large, flag, "--topk", "1")
        assert done.code == 0, done.stderr
        runs[flag] = done.records()
    for full, drafted in zip(runs["--no-draft"], runs["--draft"]):
        assert (full["path"], full["width"], full["height"]) == (
            drafted["path"], drafted["width"], drafted["height"])
        assert full["predictions"][0]["label"] == drafted["predictions"][0]["label"]
        assert drafted["predictions"][0]["score"] == pytest.approx(
            full["predictions"][0]["score"], abs=0.1)
    refused = cvtool("classify", large, "--draft", "--engine", "ray")
    assert refused.code == 2 and "--draft" in refused.stderr
