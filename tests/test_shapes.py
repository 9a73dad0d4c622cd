"""`cvtool data shapes`: the synthetic shapes data set, checked from the files it writes."""

from __future__ import annotations

import contextlib
import io
import json
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from tests.clirun import cvtool

# pycocotools' own decode trips numpy 2's __array__ deprecation; nothing here to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

SEED = 3
CLASSES = ["background", "circle", "square", "triangle"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out_dir = tmp_path_factory.mktemp("shapes") / "out"
    result = cvtool("data", "shapes", out_dir, "--num", "60", "--val-num", "20",
                    "--seed", str(SEED), "-q")
    assert result.code == 0, result.stderr
    return out_dir


def load_split(out_dir: Path, split: str) -> dict:
    return json.loads((out_dir / "annotations" / f"{split}.json").read_text())


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def instance_mask(annotation: dict) -> np.ndarray:
    return coco_mask.decode(annotation["segmentation"]).astype(bool)


def tight_box(mask: np.ndarray) -> list[int]:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]


def images_with_annotations(out_dir: Path, split: str) -> list[tuple[dict, list[dict]]]:
    coco = load_split(out_dir, split)
    by_image: dict[int, list[dict]] = {image["id"]: [] for image in coco["images"]}
    for annotation in coco["annotations"]:
        by_image[annotation["image_id"]].append(annotation)
    return [(image, by_image[image["id"]]) for image in coco["images"]]


def test_layout_and_summary(dataset: Path) -> None:
    again = cvtool("data", "shapes", dataset, "--num", "60", "--val-num", "20",
                   "--seed", str(SEED), "--force", "-q")
    summary = json.loads(again.stdout)
    assert (dataset / "classes.txt").read_text() == "".join(f"{c}\n" for c in CLASSES)
    for split, count in (("train", 60), ("val", 20)):
        coco = load_split(dataset, split)
        assert summary[split]["images"] == len(coco["images"]) == count
        per_class = [a["category_id"] for a in coco["annotations"]]
        assert summary[split]["objects"] == {c: per_class.count(i) for i, c in
                                             enumerate(CLASSES) if i}
        assert [c["name"] for c in coco["categories"]] == CLASSES[1:]
        assert {c["supercategory"] for c in coco["categories"]} == {"shape"}
        assert len({a["id"] for a in coco["annotations"]}) == len(coco["annotations"])
        for image in coco["images"]:
            stem = Path(image["file_name"]).stem
            coco_image = dataset / "images" / image["file_name"]
            with Image.open(coco_image) as rgb, Image.open(dataset / split / "masks" /
                                                           f"{stem}.png") as mask:
                assert (rgb.mode, rgb.size, mask.mode, mask.size) == \
                    ("RGB", (128, 128), "P", (128, 128))
                assert mask.getpalette() is not None
            semantic_image = dataset / split / "images" / f"{stem}.png"
            assert semantic_image.read_bytes() == coco_image.read_bytes()


@pytest.mark.parametrize("split", ["train", "val"])
def test_instances_agree_with_boxes_and_semantic_masks(dataset: Path, split: str) -> None:
    for image, instances in images_with_annotations(dataset, split):
        assert 1 <= len(instances) <= 4
        semantic = pixels(dataset / split / "masks" / Path(image["file_name"]).name)
        union = np.zeros_like(semantic)
        for annotation in instances:
            mask = instance_mask(annotation)
            x, y, w, h = annotation["bbox"]
            assert annotation["bbox"] == tight_box(mask)
            assert 0 <= x and 0 <= y and x + w <= 128 and y + h <= 128
            assert 16 <= w <= 48 and 16 <= h <= 48
            assert annotation["area"] == mask.sum() and annotation["iscrowd"] == 0
            assert not union[mask].any()
            union[mask] = annotation["category_id"]
        np.testing.assert_array_equal(union, semantic)
        for a, b in combinations([a["bbox"] for a in instances], 2):
            assert a[0] + a[2] <= b[0] or b[0] + b[2] <= a[0] or \
                a[1] + a[3] <= b[1] or b[1] + b[3] <= a[1]


def fit_gradient(image: np.ndarray, background: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares bilinear gradient through the background pixels: (prediction, residuals)."""
    y, x = np.mgrid[0:128, 0:128] / 127.0
    design = np.stack([np.ones_like(x), x, y, x * y], -1)
    coefficients = np.linalg.lstsq(design[background], image[background].astype(float),
                                   rcond=None)[0]
    prediction = design @ coefficients
    return prediction, image[background] - prediction[background]


def test_colour_contrast_and_background_noise(dataset: Path) -> None:
    residuals = []
    for image, instances in images_with_annotations(dataset, "train"):
        rgb = pixels(dataset / "images" / image["file_name"])
        objects = pixels(dataset / "train" / "masks" / Path(image["file_name"]).name) > 0
        gradient, residual = fit_gradient(rgb, ~objects)
        residuals.append(residual)
        for annotation in instances:
            colours = np.unique(rgb[instance_mask(annotation)], axis=0)
            assert len(colours) == 1  # solid: no noise, no anti-aliasing
            x, y, w, h = annotation["bbox"]
            local_mean = gradient[y:y + h, x:x + w].reshape(-1, 3).mean(0)
            # The generator measures the noisy background under the box; the fit is noise-free.
            assert np.abs(colours[0] - local_mean).sum() >= 80 - 4
    assert 7.6 < np.concatenate(residuals).std() < 8.4


def vertex_angle(mask: np.ndarray, corners: int) -> float:
    """Direction from the centroid to the farthest pixel (a vertex), modulo the symmetry."""
    ys, xs = np.nonzero(mask)
    dy, dx = ys - ys.mean(), xs - xs.mean()
    far = np.argmax(dx ** 2 + dy ** 2)
    return float(np.degrees(np.arctan2(dy[far], dx[far])) % (360 / corners))


@pytest.mark.parametrize(("category_id", "corners"), [(2, 4), (3, 3)])
def test_rotation_varies(dataset: Path, category_id: int, corners: int) -> None:
    angles = [vertex_angle(instance_mask(a), corners)
              for a in load_split(dataset, "train")["annotations"]
              if a["category_id"] == category_id]
    quarters = np.histogram(angles, bins=4, range=(0, 360 / corners))[0]
    assert len(angles) >= 20 and (quarters > 0).all()


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_ground_truth_as_detections_scores_ap_one(dataset: Path, iou_type: str) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO(str(dataset / "annotations" / "val.json"))
        detections = truth.loadRes([{**a, "score": 1.0} for a in truth.dataset["annotations"]])
        evaluation = COCOeval(truth, detections, iou_type)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    assert evaluation.stats[0] == pytest.approx(1.0)


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_seed_fixes_every_byte(dataset: Path, tmp_path: Path) -> None:
    for name, seed in (("same", SEED), ("again", SEED), ("other", SEED + 1)):
        args = ("--num", "5", "--val-num", "2", "--seed", str(seed), "-q")
        assert cvtool("data", "shapes", tmp_path / name, *args).code == 0
    same, again, other = (tree_bytes(tmp_path / name) for name in ("same", "again", "other"))
    assert same == again
    image = "images/train/000001.png"
    assert same[image] != other[image] and same[image] != same["images/val/000001.png"]
    # Each image has its own generator: a smaller set is the start of a larger one.
    assert same[image] == (dataset / image).read_bytes()


def test_refuses_a_non_empty_out_dir(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    result = cvtool("data", "shapes", tmp_path, "--num", "1", "--val-num", "1")
    assert result.code == 2 and "not empty" in result.stderr and result.stdout == ""
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
    assert cvtool("data", "shapes", tmp_path, "--num", "1", "--val-num", "1", "--force",
                  "-q").code == 0
