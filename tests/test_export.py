"""`cvtool export` on real models and real runtimes (ONNX Runtime, OpenVINO): every export is
verified before it is written, carries its metadata, and runs through the same inference
commands with records that agree with eager PyTorch's (top-1 equal, boxes within 0.5 px, masks
IoU >= 0.99). Bad exports and missing runtimes get their documented exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cvtool.export import verify
from tests.clirun import ROOT, cvtool

DIGITS = sorted((ROOT / "sample_images" / "digits").glob("*.png"))[:8]
SHAPES = sorted((ROOT / "sample_images" / "shapes").glob("*.png"))
PHOTOS = sorted((ROOT / "sample_images" / "photos").glob("*.jpg"))[:3]
SUFFIX = {"onnx": ".onnx", "openvino": ".xml"}


def export(model: str, output: Path, *args: str) -> dict:
    result = cvtool("export", model, "-o", output, "-q", *args)
    assert result.code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["verified"] and summary["verification"]["passed"], summary
    return summary


def metadata(path: Path) -> dict:
    if path.suffix == ".onnx":
        import onnx

        props = {entry.key: entry.value for entry in onnx.load(str(path)).metadata_props}
        return json.loads(props["cvtool"])
    import openvino as ov

    return json.loads(ov.Core().read_model(str(path)).get_rt_info(["cvtool"]).astype(str))


def records(task: str, model: Path | str, inputs: list[Path], *args: str) -> list[dict]:
    result = cvtool(task, *inputs, "-m", model, "--format", "jsonl", "-q", *args)
    assert result.code == 0, result.stderr
    return result.records()


def assert_same_classes(eager: list[dict], exported: list[dict]) -> None:
    assert len(eager) == len(exported)
    for left, right in zip(eager, exported):
        assert left["predictions"][0]["index"] == right["predictions"][0]["index"], left["path"]
        assert abs(left["predictions"][0]["score"] - right["predictions"][0]["score"]) < 1e-3


def assert_same_detections(eager: list[dict], exported: list[dict], masks: bool) -> None:
    from pycocotools import mask as coco_mask

    assert len(eager) == len(exported)
    for left, right in zip(eager, exported):
        assert len(left["detections"]) == len(right["detections"]), left["path"]
        for one, other in zip(left["detections"], right["detections"]):
            assert one["label"] == other["label"]
            assert np.abs(np.subtract(one["box"], other["box"])).max() <= 0.5
            if masks:
                first, second = (coco_mask.decode({**d["mask"], "counts": d["mask"]["counts"]
                                                   .encode()}).astype(bool)
                                 for d in (one, other))
                assert (first & second).sum() / max((first | second).sum(), 1) >= 0.99


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_the_house_classifier_exports_and_classifies_as_eager(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"digits{SUFFIX[fmt]}"
    summary = export("digits-cnn", path, "--dynamic-batch")
    assert summary["task"] == "classify" and summary["input"] == {"batch": None, "height": 8,
                                                                   "width": 8}
    assert summary["verification"]["top1_agreements"] == summary["verification"]["images"] > 8
    meta = metadata(path)
    assert meta["categories"] == [str(digit) for digit in range(10)]
    assert meta["preprocessing"]["crop_size"] == 8 and meta["verification"]["passed"]
    assert len(meta["source_weights_sha256"]) == 64
    eager = records("classify", "digits-cnn", DIGITS, "-b", "3")
    exported = records("classify", path, DIGITS, "-b", "3")
    assert_same_classes(eager, exported)
    assert {record["model"] for record in exported} == {str(path)}


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_the_house_mask_rcnn_exports_and_segments_as_eager(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"shapes-maskrcnn{SUFFIX[fmt]}"
    summary = export("shapes-maskrcnn", path)
    checked = summary["verification"]
    assert summary["input"]["batch"] == 1 and summary["folded_batch_norms"] > 0
    # The blank verification image has no detections; the runtime returns none for it either.
    assert checked["images_without_detections"] >= 1 and checked["detections"] > 10
    assert checked["max_box_diff_px"] <= 0.5 and checked["min_mask_iou"] >= 0.99
    blank = tmp_path / "blank.png"
    from PIL import Image

    Image.new("RGB", (100, 80), (128, 128, 128)).save(blank)
    inputs = [*SHAPES[:3], blank]
    eager = records("segment-instance", "shapes-maskrcnn", inputs, "-b", "2")
    exported = records("segment-instance", path, inputs, "-b", "2")
    assert eager[-1]["detections"] == [] and sum(len(r["detections"]) for r in eager) > 3
    assert_same_detections(eager, exported, masks=True)
    boxes = records("detect", path, SHAPES[:2])
    assert_same_detections(records("detect", "shapes-maskrcnn", SHAPES[:2]), boxes, masks=False)
    assert all("mask" not in d for r in boxes for d in r["detections"])


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_the_house_unet_exports_and_segments_as_eager(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / ("unet.onnx" if fmt == "onnx" else "unet-ir")
    summary = export("shapes-unet", path, "--format", fmt)
    assert summary["verification"]["min_class_iou"] >= 0.99
    assert summary["input"] == {"batch": None, "height": None, "width": None}
    if fmt == "openvino":
        assert sorted(p.name for p in path.iterdir()) == ["model.bin", "model.xml"]
    inputs = [*SHAPES[:2], PHOTOS[0]]  # 128x128 and a photo: the graph takes any size
    eager = records("segment-semantic", "shapes-unet", inputs, "-o", tmp_path / "eager")
    exported = records("segment-semantic", path, inputs, "-o", tmp_path / "exported")
    from PIL import Image

    for left, right in zip(eager, exported):
        first = np.asarray(Image.open(left["mask_path"]))
        second = np.asarray(Image.open(right["mask_path"]))
        assert first.shape == second.shape and (first == second).mean() >= 0.999
    run = json.loads((tmp_path / "exported" / "run.json").read_text())
    assert run["models"][0]["runtime"] == ("onnxruntime" if fmt == "onnx" else "openvino")


@pytest.mark.parametrize(("model", "fmt"), [("digits-vae", "onnx"), ("digits-gan", "openvino")])
def test_generative_decoders_export_for_any_batch(tmp_path: Path, model: str, fmt: str) -> None:
    import torch

    from cvtool.generative.checkpoint import load_generative
    from cvtool.models.runtimes import open_export

    path = tmp_path / f"{model}{SUFFIX[fmt]}"
    summary = export(model, path)
    assert summary["task"] == "generate" and summary["verification"]["max_abs_pixel_diff"] < 1e-3
    loaded = load_generative(model)
    latents = torch.randn(3, loaded.module.latent_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        if loaded.family == "vae":
            from cvtool.generative import vae

            eager = vae.decode(loaded.module, latents)
        else:
            eager = loaded.module.generator(latents)
    found = open_export(str(path), "generate", "default", ("generate",))
    exported = found.module(latents)
    assert exported.shape == eager.shape == (3, 1, 8, 8)
    assert (exported - eager).abs().max() < 1e-4


def test_a_torchvision_classifier_with_a_weights_file_is_folded_and_batched(
        tmp_path: Path) -> None:
    import onnx
    import torch
    import torchvision

    weights = tmp_path / "resnet18.pth"
    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    for module in model.modules():  # running statistics that are not the identity
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    torch.save(model.state_dict(), weights)
    path = tmp_path / "resnet18.onnx"
    summary = export("resnet18", path, "--weights", weights, "--dynamic-batch",
                     "--verify-images", PHOTOS[0].parent)
    assert summary["folded_batch_norms"] == 20
    graph = onnx.load(str(path)).graph
    assert not [node for node in graph.node if node.op_type == "BatchNormalization"]
    meta = metadata(path)
    assert meta["preprocessing"]["crop_size"] == 224 and meta["preprocessing"]["resize_size"] == 256
    assert meta["source_weights"] == str(weights)
    eager = records("classify", "resnet18", PHOTOS, "--weights", weights, "-b", "3")
    assert_same_classes(eager, records("classify", path, PHOTOS, "-b", "3"))


def test_verification_beyond_tolerance_is_exit_1_and_writes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Any difference at all is too much here: the float32 runtime cannot match exactly.
    monkeypatch.setattr(verify, "PROBABILITY_TOLERANCE", 0.0)
    path = tmp_path / "digits.onnx"
    result = cvtool("export", "digits-cnn", "-o", path, "-q")
    assert result.code == 1
    summary = json.loads(result.stdout)
    assert summary["verified"] is False and summary["verification"]["failures"]
    assert "nothing was written" in result.stderr and len(result.stderr.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_no_verify_says_what_it_skips(tmp_path: Path) -> None:
    result = cvtool("export", "digits-cnn", "-o", tmp_path / "d.onnx", "--no-verify")
    assert result.code == 0
    assert json.loads(result.stdout)["verification"] == {"skipped": True}
    assert "not compared with eager PyTorch" in result.stderr


def test_bf16_runs_on_openvino_and_is_refused_by_onnx_runtime(tmp_path: Path) -> None:
    xml = tmp_path / "digits.xml"
    export("digits-cnn", xml)
    bf16 = records("classify", xml, DIGITS, "--precision", "bf16", "-o", tmp_path / "run")
    eager = records("classify", "digits-cnn", DIGITS)
    assert [r["predictions"][0]["index"] for r in bf16] == \
        [r["predictions"][0]["index"] for r in eager]
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["models"][0]["runtime_precision"] in ("bf16", "fp32")
    onnx_path = tmp_path / "digits.onnx"
    export("digits-cnn", onnx_path)
    result = cvtool("classify", DIGITS[0], "-m", onnx_path, "--precision", "bf16")
    assert result.code == 2 and "--format openvino" in result.stderr


def test_export_model_and_the_python_predictors_take_exports(tmp_path: Path) -> None:
    import cvtool as api

    path = tmp_path / "unet.onnx"
    summary = api.export_model("shapes-unet", path)
    assert summary["verified"] and path.is_file()
    with api.SemanticSegmenter(model=str(path), device="cpu") as segmenter:
        exported = list(segmenter.predict([str(p) for p in SHAPES[:2]]))
    with api.SemanticSegmenter(model="shapes-unet", device="cpu") as segmenter:
        eager = list(segmenter.predict([str(p) for p in SHAPES[:2]]))
    for left, right in zip(eager, exported):
        assert right.ok and (left.mask == right.mask).mean() >= 0.999
    # The runtime divides its own threads: batches in flight at once are torch's alone.
    with pytest.raises(api.UsageError, match="--streams applies to PyTorch models"):
        api.SemanticSegmenter(model=str(path), device="cpu", streams=2)


@pytest.mark.parametrize(("args", "message"), [
    (["shapes-maskrcnn", "--dynamic-batch"], "one image at a time"),
    (["shapes-unet", "--image-size", "64"], "--image-size applies to classifiers"),
    (["digits-pixelcnn"], "PixelCNN"),
    (["digits-cnn", "--format", "tflite"], "invalid --format"),
    (["nonexistent-model"], "unknown model"),
])
def test_exports_that_cannot_work_are_usage_errors(tmp_path: Path, args: list[str],
                                                   message: str) -> None:
    result = cvtool("export", *args, "-o", tmp_path / "out.onnx")
    assert result.code == 2, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out.onnx").exists()


def test_an_existing_output_needs_force(tmp_path: Path) -> None:
    path = tmp_path / "digits.onnx"
    path.write_bytes(b"keep me")
    result = cvtool("export", "digits-cnn", "-o", path, "-q")
    assert result.code == 2 and "--force" in result.stderr
    assert path.read_bytes() == b"keep me"
    export("digits-cnn", path, "--force")
    assert metadata(path)["model"] == "digits-cnn"


def _edited(source: Path, target: Path, change: dict) -> Path:
    import onnx

    proto = onnx.load(str(source))
    for entry in proto.metadata_props:
        if entry.key == "cvtool":
            entry.value = json.dumps({**json.loads(entry.value), **change})
    onnx.save(proto, str(target))
    return target


def test_hostile_and_foreign_model_files_are_one_line_usage_errors(tmp_path: Path) -> None:
    import torch

    good = tmp_path / "digits.onnx"
    export("digits-cnn", good)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07not a protobuf" * 10)
    foreign = tmp_path / "foreign.onnx"
    with torch.no_grad():
        torch.onnx.export(torch.nn.Linear(3, 2), (torch.zeros(1, 3),), str(foreign),
                          dynamo=False)
    bad_labels = _edited(good, tmp_path / "labels.onnx", {"categories": "0123456789"})
    wrong_task = _edited(good, tmp_path / "task.onnx", {"task": "segment-semantic"})
    bad_version = _edited(good, tmp_path / "version.onnx", {"format_version": 99})
    # Metadata that loads but does not describe the graph: caught at the first batch.
    three_labels = _edited(good, tmp_path / "three.onnx", {"categories": ["a", "b", "c"]})
    other_input = _edited(good, tmp_path / "input.onnx", {"preprocessing": {
        **metadata(good)["preprocessing"], "crop_size": 16, "resize_size": 16}})
    lonely = tmp_path / "lonely.xml"
    lonely.write_text("<net/>")
    cases = [(garbage, "not a model ONNX Runtime can run"), (foreign, "no cvtool metadata"),
             (bad_labels, "categories must be"), (wrong_task, "needs one of classify"),
             (bad_version, "format_version"), (lonely, "needs its weights file lonely.bin"),
             (three_labels, "does not fit its classify metadata"),
             (other_input, "does not take the input its metadata describes"),
             (tmp_path / "missing.onnx", "cannot read")]
    for path, message in cases:
        result = cvtool("classify", DIGITS[0], "-m", path)
        assert result.code == 2, (path, result.stderr)
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, \
            result.stderr
    result = cvtool("classify", DIGITS[0], "-m", good, "--weights", "none")
    assert result.code == 2 and "carries its own weights" in result.stderr


@pytest.mark.parametrize(("blocked", "args", "install"), [
    ("onnxruntime", ["export", "digits-cnn", "-o", "{tmp}/d.onnx"], "cvtool[onnx]"),
    ("openvino", ["export", "digits-cnn", "-o", "{tmp}/d.xml"], "cvtool[openvino]"),
    ("onnxruntime", ["classify", str(DIGITS[0]), "-m", "{tmp}/d.onnx"], "cvtool[onnx]"),
])
def test_without_the_runtime_export_and_exported_models_are_exit_3(
        tmp_path: Path, blocked: str, args: list[str], install: str) -> None:
    (tmp_path / "d.onnx").write_bytes(b"")
    code = (f"import sys; sys.modules[{blocked!r}] = None; from cvtool.cli.app import main; "
            "sys.argv = ['cvtool', *sys.argv[1:]]; main()")
    argv = [arg.format(tmp=tmp_path) for arg in args]
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert done.returncode == 3, done.stderr
    assert f'pip install "{install}"' in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "d.xml").exists()


def test_folding_keeps_what_every_norm_computes() -> None:
    import timm
    import torch
    import torchvision

    from cvtool.models.fold import fold_batch_norms

    torch.manual_seed(0)
    # timm's BatchNormAct2d applies ReLU6 after normalising: folding must keep that.
    lite = lambda: timm.create_model("tf_efficientnet_lite0", pretrained=False)  # noqa: E731
    for build in (torchvision.models.mobilenet_v3_small, torchvision.models.resnet18, lite):
        model = build().eval()
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
        image = torch.rand(2, 3, 96, 96)
        with torch.no_grad():
            expected = model(image)
            folded = fold_batch_norms(model, lambda m: m(image))
            assert folded == sum(isinstance(m, torch.nn.BatchNorm2d) for m in build().modules())
            assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
            assert torch.allclose(model(image), expected, atol=1e-4)


def test_a_run_directory_exports_and_classifies_as_eager(tmp_path: Path) -> None:
    run = tmp_path / "run"
    trained = cvtool("train", "classify", "--data", "digits", "--model", "cnn", "--batch-norm",
                     "--epochs", "1", "-o", run, "-q")
    assert trained.code == 0, trained.stderr
    path = tmp_path / "run.onnx"
    summary = export(str(run), path)
    # cvtool's trainer folds its batch norms when it saves: none are left to fold here.
    assert summary["folded_batch_norms"] == 0 and metadata(path)["model"] == str(run)
    assert_same_classes(records("classify", run, DIGITS), records("classify", path, DIGITS))
