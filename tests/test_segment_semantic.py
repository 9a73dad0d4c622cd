"""segment-semantic through the real entry point: masks, overlays, records, --eval, errors."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
import torchvision
import torchvision.transforms.functional as TF
from huggingface_hub import constants
from PIL import Image

from cvtool.io.decode import load_image
from cvtool.io.masks import OVERLAY_ALPHA, class_boundaries
from cvtool.io.palette import COLOURS, colour
from cvtool.models.checkpoint import save_checkpoint
from tests.awkward import ROTATED_SIZE, make_awkward_inputs
from tests.clirun import Result, cvtool
from tests.detecting import save_exif_rotated, textured

FPN, ENCODER, CLASSES = "smp:fpn", "resnet18", 3  # FPN needs padding to 32: odd sizes test it
LRASPP = "lraspp_mobilenet_v3_large"  # the quickest torchvision model; resizes to 520 px
IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
SIZE = (45, 29)  # width, height: odd on both sides


@pytest.fixture(autouse=True)
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No network and empty caches: the smp encoder's mean/std fall back to ImageNet's."""
    monkeypatch.setenv("CVTOOL_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))


def _fpn() -> torch.nn.Module:
    torch.manual_seed(0)
    return smp.FPN(encoder_name=ENCODER, encoder_weights=None, classes=CLASSES).eval()


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("segment-weights")
    torch.save(_fpn().state_dict(), directory / "fpn.pth")
    torch.manual_seed(0)
    lraspp = torchvision.models.segmentation.lraspp_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=21).state_dict()
    for key, value in lraspp.items():  # random heads' biases outweigh the image: one class
        if key.startswith("classifier.") and key.endswith("_classifier.bias"):
            value.zero_()
        elif key.endswith("running_var"):
            value.fill_(0.2)
    torch.save(lraspp, directory / "lraspp.pth")
    return {FPN: directory / "fpn.pth", LRASPP: directory / "lraspp.pth"}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """odd.png (45x29), turned.png (odd.png stored rotated, EXIF-tagged), more/*.png, and
    awkward/rotated.jpg (stored 40x20, displayed 20x40)."""
    root = tmp_path_factory.mktemp("semantic")
    textured(*SIZE, block=4).save(root / "odd.png")
    save_exif_rotated(textured(*SIZE, block=4), root / "turned.png")
    (root / "more").mkdir()
    for seed in (1, 2, 3):
        textured(*SIZE, seed=seed, block=4).save(root / "more" / f"m{seed}.png")
    make_awkward_inputs(root / "awkward")
    return root


def run(model: str, weights: Path, *args: object) -> Result:
    extra = ("--encoder", ENCODER) if model.startswith("smp:") else ()
    return cvtool("segment-semantic", "-m", model, *extra, "--weights", str(weights), "-q",
                  *map(str, args))


def _mask(path: str | Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode == "P"
        return np.asarray(image)


def _reference_fpn_mask(path: Path) -> np.ndarray:
    """The FPN's argmax computed here, the plain way: normalise, pad to 32, crop."""
    tensor = TF.normalize(TF.to_tensor(load_image(str(path))), *IMAGENET)
    height, width = tensor.shape[-2:]
    padded = F.pad(tensor, (0, -width % 32, 0, -height % 32))
    with torch.no_grad():
        logits = _fpn()(padded[None])[0, :, :height, :width]
    return logits.argmax(0).numpy()


def test_masks_have_the_input_size_and_class_values(weights, scenes, tmp_path) -> None:
    out = tmp_path / "out"
    result = run(FPN, weights[FPN], scenes / "odd.png", scenes / "turned.png",
                 scenes / "awkward" / "rotated.jpg", "-o", out)
    assert result.code == 0, result.stderr
    odd, turned, rotated = result.records()
    assert (odd["width"], odd["height"]) == (turned["width"], turned["height"]) == SIZE
    assert (rotated["width"], rotated["height"]) == ROTATED_SIZE[::-1]
    masks = [_mask(record["mask_path"]) for record in (odd, turned, rotated)]
    for record, mask in zip((odd, turned, rotated), masks):
        assert mask.shape == (record["height"], record["width"])
        assert set(np.unique(mask)) <= set(range(CLASSES))
        counts = np.bincount(mask.ravel(), minlength=CLASSES)
        assert [(c["index"], c["pixels"]) for c in record["classes"]] == sorted(
            ((i, int(n)) for i, n in enumerate(counts) if n), key=lambda pair: -pair[1])
        assert [c["label"] for c in record["classes"]] == [
            f"class_{c['index']}" for c in record["classes"]]
        assert sum(c["fraction"] for c in record["classes"]) == pytest.approx(1.0)
    with Image.open(odd["mask_path"]) as png:
        # cvtool's class colours: class c as its boxes are drawn, background black.
        assert png.getpalette()[:9] == [0, 0, 0, *colour(1), *colour(2)]
    assert len(odd["classes"]) >= 2
    assert np.array_equal(masks[0], masks[1])  # EXIF orientation applied before the model
    assert (masks[0] == _reference_fpn_mask(scenes / "odd.png")).mean() > 0.999


def test_overlay_tints_every_class_but_zero(weights, scenes, tmp_path) -> None:
    (record,) = run(FPN, weights[FPN], scenes / "odd.png", "-o", tmp_path).records()
    mask = _mask(record["mask_path"])
    overlay_path = Path(record["mask_path"].replace("/masks/", "/overlays/"))
    image = np.asarray(Image.open(scenes / "odd.png"), dtype=float)
    drawn = np.asarray(Image.open(overlay_path), dtype=float)
    # The image on top, a legend band (the classes present) below it.
    assert drawn.shape[1] == image.shape[1] and drawn.shape[0] > image.shape[0]
    legend, drawn = drawn[image.shape[0]:], drawn[:image.shape[0]]
    assert np.array_equal(drawn[mask == 0], image[mask == 0])
    edges = class_boundaries(mask)
    fill = (mask > 0) & ~edges
    expected = np.rint(image * (1 - OVERLAY_ALPHA) + COLOURS[mask].astype(float) * OVERLAY_ALPHA)
    assert np.abs(drawn - expected)[fill].max() <= 1
    assert np.array_equal(drawn[edges], COLOURS[mask][edges].astype(float))  # solid outline
    for row in record["classes"]:
        if row["index"]:  # every class present has its swatch in the legend
            assert (legend == COLOURS[row["index"]]).all(axis=-1).any(), row
    run_json = json.loads((tmp_path / "run.json").read_text())
    assert run_json["models"][0]["encoder"] == ENCODER and run_json["task"] == "segment-semantic"


def test_torchvision_masks_map_back_to_the_original_pixels(weights, scenes, tmp_path) -> None:
    paths = [scenes / "odd.png", scenes / "awkward" / "rotated.jpg"]
    result = run(LRASPP, weights[LRASPP], *paths, "-o", tmp_path)
    assert result.code == 0, result.stderr
    model = torchvision.models.segmentation.lraspp_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=21).eval()
    model.load_state_dict(torch.load(weights[LRASPP], weights_only=True))
    transforms = torchvision.models.get_model_weights(LRASPP).DEFAULT.transforms()
    for record, path in zip(result.records(), paths):
        image = load_image(str(path))
        with torch.no_grad():
            logits = model(transforms(image)[None])["out"]
        assert logits.shape[-2:] != image.size[::-1]  # the model saw a 520-px version
        resized = F.interpolate(logits, size=image.size[::-1], mode="bilinear")
        mask = _mask(record["mask_path"])
        assert mask.shape == image.size[::-1]
        # Random weights give near-ties; folded batch norms (cvtool serves them folded) move a
        # near-tie's argmax by a rounding, more so on AVX2 than AVX-512 kernels. Pixels whose
        # top two logits are apart must agree.
        top = resized[0].topk(2, dim=0).values
        decided = ((top[0] - top[1]) > 1e-3).numpy()
        agree = mask == resized[0].argmax(0).numpy()
        assert agree[decided].mean() > 0.9999 and decided.mean() > 0.9 and agree.mean() > 0.99
        assert len(record["classes"]) >= 3
        assert record["classes"][0]["label"] == torchvision.models.get_model_weights(
            LRASPP).DEFAULT.meta["categories"][record["classes"][0]["index"]]


def test_csv_rows_are_classes_and_the_table_shows_fractions(weights, scenes, tmp_path) -> None:
    (record,) = run(FPN, weights[FPN], scenes / "odd.png", "-o", tmp_path / "a").records()
    rows = list(csv.DictReader(io.StringIO(run(
        FPN, weights[FPN], scenes / "odd.png", "-o", tmp_path / "b", "--format", "csv").stdout)))
    assert [(int(r["index"]), int(r["pixels"])) for r in rows] == [
        (c["index"], c["pixels"]) for c in record["classes"]]
    assert {r["mask_path"] for r in rows} == {record["mask_path"].replace("/a/", "/b/")}
    table = run(FPN, weights[FPN], scenes / "odd.png", "--format", "table").stdout
    top = record["classes"][0]
    assert f"{top['label']} {top['fraction']:.1%}" in table
    (no_output,) = run(FPN, weights[FPN], scenes / "odd.png").records()
    assert no_output["mask_path"] is None and no_output["classes"] == record["classes"]


def _ground_truth(directory: Path, masks: dict[str, np.ndarray]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, mask in masks.items():
        Image.fromarray(mask.astype(np.uint8)).save(directory / name)
    return directory


def _eval(weights: Path, inputs: list[Path], gt: Path, out: Path, *args: object) -> Result:
    return run(FPN, weights, *inputs, "--gt-masks", gt, "--eval", "-o", out, *args)


def test_eval_agrees_with_smp_metrics(weights, scenes, tmp_path) -> None:
    inputs = sorted((scenes / "more").glob("*.png"))
    rng = np.random.default_rng(0)
    truths = {p.name: rng.integers(0, CLASSES, SIZE[::-1]) for p in inputs}
    for truth in truths.values():
        truth[:5, :7] = 255  # ignored
    result = _eval(weights[FPN], inputs, _ground_truth(tmp_path / "gt", truths), tmp_path / "o")
    assert result.code == 0, result.stderr
    metrics = json.loads((tmp_path / "o" / "run.json").read_text())["metrics"]
    predicted = torch.tensor(np.stack([_mask(r["mask_path"]) for r in result.records()]),
                             dtype=torch.long)
    target = torch.tensor(np.stack([truths[p.name] for p in inputs]), dtype=torch.long)
    stats = smp.metrics.get_stats(predicted, target, mode="multiclass", num_classes=CLASSES,
                                  ignore_index=255)
    assert metrics["miou"] == pytest.approx(
        smp.metrics.iou_score(*stats, reduction="macro").item(), abs=1e-6)
    tp, fp, fn, tn = (s.sum(0) for s in stats)
    assert [c["iou"] for c in metrics["per_class"]] == pytest.approx(
        (tp / (tp + fp + fn)).tolist(), abs=1e-6)
    assert metrics["pixel_accuracy"] == pytest.approx(
        smp.metrics.recall(*stats, reduction="micro").item(), abs=1e-6)
    assert metrics["pixels"] == len(inputs) * (SIZE[0] * SIZE[1] - 35) == int(tp.sum() + fn.sum())
    assert metrics["images"] == 3 and "mIoU" in result.stderr


def test_ignore_index_is_honoured(weights, scenes, tmp_path) -> None:
    (record,) = run(FPN, weights[FPN], scenes / "odd.png", "-o", tmp_path / "p").records()
    predicted = _mask(record["mask_path"]).astype(np.int64)
    wrong = predicted.copy()
    wrong[10:20, 10:30] = (predicted[10:20, 10:30] + 1) % CLASSES
    ignored = predicted.copy()
    ignored[10:20, 10:30] = 255

    def metrics(truth: np.ndarray, name: str, *args: object) -> dict:
        gt = _ground_truth(tmp_path / name, {"odd.png": truth})
        result = _eval(weights[FPN], [scenes / "odd.png"], gt, tmp_path / f"o-{name}", *args)
        assert result.code == 0, result.stderr
        return json.loads((tmp_path / f"o-{name}" / "run.json").read_text())["metrics"]

    assert metrics(wrong, "wrong")["pixel_accuracy"] == pytest.approx(1 - 200 / predicted.size)
    perfect = metrics(ignored, "ignored")
    assert (perfect["miou"], perfect["pixel_accuracy"]) == (1.0, 1.0)
    assert perfect["pixels"] == predicted.size - 200
    seven = metrics(np.where(wrong == 1, 7, wrong), "seven", "--ignore-index", "7")
    assert seven["per_class"][1]["true_pixels"] == 0  # every 1 became 7, which is ignored
    gt = _ground_truth(tmp_path / "not-ignored", {"odd.png": ignored})
    result = _eval(weights[FPN], [scenes / "odd.png"], gt, tmp_path / "o4", "--ignore-index", "7")
    assert result.code == 1 and result.records()[0]["error"]["type"] == "MaskValueOutOfRange"


def test_ground_truth_problems_are_per_input_errors(weights, scenes, tmp_path) -> None:
    inputs = [scenes / "more" / f"m{seed}.png" for seed in (1, 2, 3)] + [scenes / "odd.png",
                                                                         scenes / "turned.png"]
    gt = _ground_truth(tmp_path / "gt", {
        "m1.png": np.zeros((SIZE[0], SIZE[1])),  # transposed: 29x45 instead of 45x29
        "m2.png": np.full(SIZE[::-1], 9),  # class 9 of a 3-class model
        "odd.png": np.zeros(SIZE[::-1]),
        "turned.png": np.zeros(SIZE[::-1]),  # the displayed size, after EXIF rotation
    })
    Image.new("RGB", SIZE, (1, 1, 1)).save(gt / "m3.png")
    result = _eval(weights[FPN], inputs, gt, tmp_path / "o")
    assert result.code == 1
    records = {Path(r["path"]).name: r for r in result.records()}
    assert records["m1.png"]["error"]["type"] == "MaskSizeMismatch"
    assert "is 29x45, the image 45x29" in records["m1.png"]["error"]["message"]
    assert records["m2.png"]["error"]["type"] == "MaskValueOutOfRange"
    assert "values 9, outside the model's classes 0-2" in records["m2.png"]["error"]["message"]
    assert records["m3.png"]["error"]["type"] == "InvalidMask"
    assert records["odd.png"]["ok"] and records["turned.png"]["ok"]
    assert "Traceback" not in result.stderr
    metrics = json.loads((tmp_path / "o" / "run.json").read_text())["metrics"]
    assert metrics["images"] == 2 and metrics["pixels"] == 2 * SIZE[0] * SIZE[1]
    (unmatched,) = _eval(weights[FPN], [scenes / "awkward" / "rotated.jpg"], gt,
                         tmp_path / "o2").records()
    assert unmatched["ok"]


def test_ground_truth_is_found_by_the_longest_trailing_path(tmp_path) -> None:
    from cvtool.io.masks import GroundTruthMasks

    for name in ("a.png", "val/a.png", "b/a.PNG", ".hidden/c.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (2, 2)).save(tmp_path / name, format="PNG")
    masks = GroundTruthMasks(tmp_path)
    assert masks.find("data/val/a.jpg") == tmp_path / "val/a.png"
    assert masks.find("/x/images/a.jpeg") == tmp_path / "a.png"
    assert masks.find("b/a.png") == tmp_path / "b/a.PNG"
    assert masks.find("c.png") is None


@pytest.mark.parametrize("args, message", [
    (("--eval",), "--eval needs --gt-masks"),
    (("--gt-masks", "."), "--gt-masks is only read by --eval"),
    (("--eval", "--gt-masks", "no/such/dir"), "--gt-masks no/such/dir is not a directory"),
    (("--eval", "--gt-masks", "{empty}"), "holds no .png masks"),
    (("-m", LRASPP, "--encoder", ENCODER), "--encoder applies to smp:<arch> models only"),
    (("--encoder", "resnet81"), "unknown encoder 'resnet81'"),
    (("-m", "resnet18"), "resnet18 is a classify model"),
    (("-m", "unet"), "did you mean smp:unet"),
    (("--weights", "nope.pth"), "weights file nope.pth does not exist"),
])
def test_usage_errors_are_one_line(weights, scenes, tmp_path, args, message) -> None:
    (tmp_path / "empty").mkdir()
    args = tuple(str(a).replace("{empty}", str(tmp_path / "empty")) for a in args)
    result = cvtool("segment-semantic", "-m", FPN, "--encoder", ENCODER, "--weights",
                    str(weights[FPN]), str(scenes / "odd.png"), *args)
    assert result.code == 2 and message in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and result.stdout == ""


@pytest.mark.parametrize("args, fix", [
    ((), "cvtool models pull deeplabv3_mobilenet_v3_large"),
    (("-m", "smp:unet", "--encoder", ENCODER), "cvtool models pull smp:unet --encoder resnet18"),
])
def test_missing_default_weights_offline_exit_3(scenes, args, fix) -> None:
    result = cvtool("segment-semantic", str(scenes / "odd.png"), *args)
    assert result.code == 3, result.stderr
    assert fix in result.stderr and "--weights PATH" in result.stderr
    pulled = cvtool("models", "pull", *args[1:2] or ["deeplabv3_mobilenet_v3_large"],
                    *args[2:])
    assert pulled.code == 3 and fix in pulled.stderr


def test_checkpoint_model_with_its_classes_and_fixed_size(scenes, tmp_path) -> None:
    torch.manual_seed(1)
    model = smp.Unet(encoder_name=ENCODER, encoder_weights=None, classes=4)
    classes = ["background", "circle", "square", "triangle"]
    save_checkpoint(tmp_path / "run" / "best.safetensors", model.state_dict(), {
        "task": "segment-semantic",
        "architecture": {"builder": "segmentation_models_pytorch:Unet",
                         "kwargs": {"encoder_name": ENCODER, "classes": 4}},
        "classes": classes,
        "preprocessing": {"resize_size": [32, 32], "mean": IMAGENET[0], "std": IMAGENET[1]}})
    result = cvtool("segment-semantic", "-m", tmp_path / "run", scenes / "odd.png",
                    scenes / "awkward" / "rotated.jpg", "-o", tmp_path / "o")
    assert result.code == 0, result.stderr
    for record in result.records():
        assert record["model"] == str(tmp_path / "run")
        assert _mask(record["mask_path"]).shape == (record["height"], record["width"])
        assert {c["label"] for c in record["classes"]} <= set(classes)


def test_failed_inputs_and_mask_name_collisions_are_records(weights, scenes, tmp_path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    textured(*SIZE, block=4).save(folder / "a.png")
    textured(*SIZE, block=4).save(folder / "a.tif")  # would also write masks/.../a.png
    (folder / "b.png").write_bytes(b"not a png")
    result = run(FPN, weights[FPN], folder, "-o", tmp_path / "o")
    assert result.code == 1
    a_png, a_tif, b_png = sorted(result.records(), key=lambda r: r["path"])
    assert a_png["ok"] and a_tif["error"]["type"] == "OutputCollision"
    assert b_png["error"]["type"] == "UnidentifiedImage"
    fail_fast = run(FPN, weights[FPN], folder, "--fail-fast", "-o", tmp_path / "o2")
    assert fail_fast.code == 1 and len(fail_fast.records()) == 2


def test_models_lists_the_semantic_segmenters() -> None:
    rows = cvtool("models", "segment-semantic", "--format", "jsonl").records()
    by_name = {row["name"]: row for row in rows}
    assert len(rows) >= 17 and by_name["smp:unet"]["source"] == "smp"
    assert by_name["smp:unet"]["cached"] is None
    assert by_name["fcn_resnet50"]["default_weights"] == (
        "FCN_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1")
