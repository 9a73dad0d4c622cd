"""The shipped house models do their job on data none of them saw: sample_images/shapes (seed
2026) for shapes-maskrcnn and shapes-unet, and sampling for the digits generators."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from cvtool.data.shapes import render
from cvtool.io.coco import decode_mask
from tests.clirun import ROOT, cvtool

SHAPES = sorted((ROOT / "sample_images" / "shapes").glob("shapes_*.png"))
SEED, NAMES = 2026, ["background", "circle", "square", "triangle"]


def _truth(index: int):
    return render(SEED, "val", index).shapes


def test_sample_shapes_are_the_seed_2026_scenes():
    assert len(SHAPES) == 6
    for index, path in enumerate(SHAPES):
        assert np.array_equal(np.array(Image.open(path)), render(SEED, "val", index).pixels)


@pytest.mark.parametrize("name, limit", [("shapes-maskrcnn", 15), ("shapes-unet", 10),
                                         ("digits-pixelcnn", 5), ("digits-vae", 5),
                                         ("digits-gan", 5)])
def test_house_checkpoints_are_small(name, limit):
    assert (ROOT / "cvtool" / "house" / f"{name}.safetensors").stat().st_size < limit << 20


def test_shapes_maskrcnn_finds_every_shape_with_its_mask(tmp_path):
    result = cvtool("segment-instance", *SHAPES, "-m", "shapes-maskrcnn", "--device", "cpu",
                    "-q", "-o", tmp_path / "out")
    assert result.code == 0, result.stderr
    for index, record in enumerate(result.records()):
        truth = _truth(index)
        found = record["detections"]
        assert len(found) == len(truth), record["path"]
        for shape in truth:
            best = max(found, key=lambda d: _iou(decode_mask(d["mask"]), shape.mask))
            assert best["label"] == NAMES[shape.category_id]
            assert _iou(decode_mask(best["mask"]), shape.mask) > 0.8
    annotated = list((tmp_path / "out").rglob("shapes_00.png"))
    assert annotated and Image.open(annotated[0]).size == (128, 128)
    boxes = cvtool("detect", SHAPES[0], "-m", "shapes-maskrcnn", "--device", "cpu", "-q")
    assert boxes.code == 0 and len(boxes.records()[0]["detections"]) == len(_truth(0))


def test_shapes_unet_labels_the_pixels(tmp_path):
    result = cvtool("segment-semantic", *SHAPES, "-m", "shapes-unet", "--device", "cpu", "-q",
                    "-o", tmp_path / "out")
    assert result.code == 0, result.stderr
    for index, record in enumerate(result.records()):
        predicted = np.array(Image.open(record["mask_path"]))
        truth = render(SEED, "val", index).semantic_mask()
        assert (predicted == truth).mean() > 0.97, record["path"]


@pytest.fixture(scope="module")
def independent_classifier():
    """An RBF SVC on all 1797 of scikit-learn's 8x8 digits: a reader of digits that shares
    nothing with cvtool's models. Its probabilities are libsvm's pairwise Platt coupling (the
    measure issue 19 set the goal in, and the stricter: real digits 0.969, against 0.916 for
    one-vs-rest calibration); scikit-learn 1.9 deprecates `probability=True`, so a release
    without it gets the one-vs-rest calibration it recommends instead."""
    import warnings

    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.datasets import load_digits
    from sklearn.svm import SVC

    digits = load_digits()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            svc = SVC(probability=True, random_state=0)
    except TypeError:
        svc = CalibratedClassifierCV(SVC(), ensemble=False)
    return svc.fit(digits.data / 16, digits.target)


@pytest.mark.parametrize("name", ["digits-pixelcnn", "digits-vae", "digits-gan"])
def test_digits_generators_sample_every_digit_readably(tmp_path, name, independent_classifier):
    """Issue 19's goals on 1000 samples (the PNG files `cvtool generate` writes): fid_digits at
    most 3x the real-vs-real floor for 1000 digits, every digit 6% to 14% of the samples as
    digits-cnn reads them, and the independent SVC confident >= 0.8 on average (uniform noise
    scores 34x the floor; the SVC gives real held-out digits 0.97)."""
    import torch

    from cvtool.generative.fid import digit_shares, fid_digits, real_floor

    result = cvtool("generate", "-m", name, "-n", "1000", "--seed", "3", "-o", tmp_path / "out",
                    "--grid", tmp_path / "grid.png", "-q")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["images"] == 1000
    files = sorted((tmp_path / "out").glob("*.png"))
    assert len(files) == 1000 and Image.open(files[0]).size == (8, 8)
    pixels = np.stack([np.asarray(Image.open(f).convert("L"), dtype=np.float32) / 255
                       for f in files])
    images = torch.from_numpy(pixels)[:, None]
    assert fid_digits(images) <= 3 * real_floor(1000)
    shares = digit_shares(images)
    assert 0.06 <= shares.min() and shares.max() <= 0.14, shares
    confidence = independent_classifier.predict_proba(pixels.reshape(1000, 64)).max(1).mean()
    assert confidence >= 0.8


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))
