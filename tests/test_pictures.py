"""Pictures people can read: labels placed by a layout the tests can check (inside the image,
never over each other, outside the object where there is room), text scaled to the image,
masks and semantic regions outlined, a legend on every overlay, one colour per class in every
picture, and a golden image of one annotated scene and one overlay."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cvtool
from cvtool.io.annotate import (
    label_layout,
    label_padding,
    line_width,
    outline,
    text_mask,
    text_size,
)
from cvtool.io.masks import class_boundaries, overlay
from cvtool.io.palette import COLOURS, colour
from tests.clirun import ROOT

GOLDEN = Path(__file__).parent / "golden"
SHAPES = ROOT / "sample_images" / "shapes"


def _overlap(a: tuple, b: tuple) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


@pytest.mark.parametrize("size", [(128, 128), (640, 480), (320, 1000)])
def test_labels_stay_inside_the_image_and_off_each_other(size: tuple[int, int]) -> None:
    rng = random.Random(sum(size))
    width, height = size
    for _ in range(50):
        boxes = []
        for _ in range(rng.randint(1, 6)):
            x1, y1 = rng.uniform(-5, width - 10), rng.uniform(-5, height - 10)
            boxes.append([x1, y1, min(width, x1 + rng.uniform(8, width / 2)),
                          min(height, y1 + rng.uniform(8, height / 2))])
        text = text_size(size)
        sizes = [text_mask(f"triangle {rng.random():.2f}", text).size for _ in boxes]
        places = label_layout(boxes, sizes, size, label_padding(text))
        for left, top, right, bottom in places:
            assert 0 <= left < right <= width and 0 <= top < bottom <= height
        for number, place in enumerate(places):
            assert not any(_overlap(place, other) for other in places[number + 1:]), places


def test_a_label_goes_above_its_box_else_below_it_not_over_the_object() -> None:
    text = text_size((128, 128))
    tag = text_mask("square 1.00", text).size
    pad = label_padding(text)
    (middle,) = label_layout([[40, 50, 80, 90]], [tag], (128, 128), pad)
    assert middle[3] == 50 and middle[0] == 40  # just above, at the box's left edge
    (at_top,) = label_layout([[40, 0, 80, 30]], [tag], (128, 128), pad)
    assert at_top[1] == 30  # the box touches the top edge: just below it
    (at_right,) = label_layout([[100, 50, 128, 90]], [tag], (128, 128), pad)
    assert at_right[2] <= 128  # moved left to stay inside, not cut off
    # shapes_05: a box at the top edge and one right below it; each label stays off its box.
    boxes = [[45, 0, 78, 33], [41, 43, 92, 98]]
    first, second = label_layout(boxes, [tag, tag], (128, 128), pad)
    assert first[1] >= 33  # below the first box, not over its object
    assert second[3] <= 43 or second[1] >= 98  # above or below the second
    assert not _overlap(first, second)


def test_text_and_lines_grow_with_the_image() -> None:
    assert text_size((128, 128)) < text_size((640, 480)) < text_size((1920, 1080))
    assert text_size((4000, 3000)) == 48 and text_size((64, 64)) == 9
    assert line_width((128, 128)) == 1 < line_width((1920, 1080))


def test_outlines_are_the_border_of_each_region() -> None:
    square = np.zeros((20, 20), bool)
    square[5:15, 5:15] = True
    ring = outline(square)
    assert ring.sum() == 10 * 4 - 4 and not ring[6:14, 6:14].any() and ring[5, 5]
    mask = square.astype(np.uint8) * 2
    assert np.array_equal(class_boundaries(mask), ring)


def test_every_overlay_has_a_legend_in_the_masks_palette() -> None:
    image = Image.new("RGB", (128, 96), (90, 90, 90))
    mask = np.zeros((96, 128), np.uint8)
    mask[10:40, 10:40], mask[50:80, 60:120] = 1, 3
    drawn = np.asarray(overlay(image, mask, {0: "background", 1: "circle", 3: "triangle"}))
    assert drawn.shape[:2][1] == 128 and drawn.shape[0] > 96
    legend = drawn[96:]
    for index in (1, 3):  # a swatch of each class named, the background not
        assert (legend == COLOURS[index]).all(axis=-1).sum() >= 16
    assert (legend == 255).all(axis=-1).any()  # the names, in white
    assert np.asarray(overlay(image, mask)).shape[:2] == (96, 128)  # no labels: no legend
    # One colour per class everywhere: the overlay's palette is the boxes' colours.
    assert all(tuple(COLOURS[index]) == colour(index) for index in range(1, 255))


def _close(drawn: Image.Image, golden: Path) -> float:
    """The share of pixels within 24 levels of the golden picture (fonts may render a little
    differently across Pillow versions; a wrong layout, colour or outline moves far more)."""
    expected = np.asarray(Image.open(golden).convert("RGB"), dtype=int)
    got = np.asarray(drawn.convert("RGB"), dtype=int)
    assert got.shape == expected.shape
    return float((np.abs(got - expected).max(axis=-1) <= 24).mean())


def test_one_annotated_scene_and_one_overlay_match_their_golden_pictures() -> None:
    scene = str(SHAPES / "shapes_05.png")
    (instances,) = cvtool.InstanceSegmenter(model="shapes-maskrcnn", device="cpu").predict(scene)
    (semantic,) = cvtool.SemanticSegmenter(model="shapes-unet", device="cpu").predict(scene)
    assert _close(instances.draw(), GOLDEN / "shapes_05_segment_instance.png") >= 0.99
    assert _close(semantic.draw(), GOLDEN / "shapes_05_segment_semantic.png") >= 0.99


def test_curves_draw_only_panels_with_data_and_both_gan_players(tmp_path: Path) -> None:
    from cvtool.train.generate_run import AXES
    from cvtool.train.report import write_curves

    history = [{"epoch": 1, "train_loss": 1.2, "discriminator_loss": 0.7,
                "generator_loss": 1.2, "seconds": 1.0}]
    panels = (("train loss", ("discriminator_loss", "generator_loss")),
              (AXES["fid_digits"], ("fid_digits",)))  # a GAN on an image folder: no FID
    drawn = write_curves(tmp_path, history, panels, best_epoch=1)
    assert drawn == [("train loss", ["discriminator_loss", "generator_loss"])]
    with Image.open(tmp_path / "curves.png") as picture:
        assert picture.width < 600  # one panel, not two with an empty one
    vae = [{"epoch": e, "train_loss": 100.0 - e, "elbo": -120.0 + e, "val_kl": 1.8,
            "fid_digits": 94.0 - e} for e in (1, 2, 3)]
    drawn = write_curves(tmp_path, vae, (("train loss", ("train_loss",)),
                                         *((AXES[k], (k,)) for k in ("elbo", "val_kl",
                                                                     "fid_digits"))), 3)
    assert [name for name, _ in drawn] == ["train loss", "held-out ELBO (nats/image)",
                                           "KL (nats/image)", "fid_digits (lower is better)"]
