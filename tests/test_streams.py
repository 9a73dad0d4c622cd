"""Batches in flight at once (`--streams`) and batch norms folded at load: speed-ups that must
not change what comes out. Records equal a one-stream run's, in input order; what depends on
order (which input keeps a file name) stays in input order; folded models compute what the
unfolded ones do, to float32 rounding."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import cvtool
from cvtool.models.fold import fold_for_inference
from tests.clirun import ROOT
from tests.clirun import cvtool as cli

SHAPES = sorted((ROOT / "sample_images" / "shapes").glob("shapes_*.png"))


def _detections(records: list) -> list:
    return [(r.path, [(d["label"], d["mask"]["counts"]) for d in r.to_dict()["detections"]],
             [d["box"] for d in r.to_dict()["detections"]]) for r in records]


def test_two_streams_give_one_streams_records_in_input_order() -> None:
    paths = [str(p) for p in SHAPES] + [str(ROOT / "missing.png")]
    runs = {}
    for streams in (1, 2):
        with cvtool.InstanceSegmenter(model="shapes-maskrcnn", device="cpu", batch_size=2,
                                      streams=streams, threads=2) as segmenter:
            runs[streams] = list(segmenter.predict(paths, keep_images=False))
            assert segmenter.loop.streams == streams
            assert segmenter.loop.stream_threads == 2 // streams
    assert [r.path for r in runs[2]] == paths  # order kept, the missing file in its place
    assert not runs[2][-1].ok and runs[2][-1].error.type == "FileNotFoundError"
    one, two = _detections(runs[1][:-1]), _detections(runs[2][:-1])
    assert [(path, found) for path, found, _ in one] == [(path, found) for path, found, _ in two]
    for (_, _, boxes), (_, _, other) in zip(one, two):
        assert all(abs(x - y) < 1e-3 for a, b in zip(boxes, other) for x, y in zip(a, b))
    assert sum(len(found) for _, found, _ in two) >= len(SHAPES)  # it did detect things
    assert torch.get_num_threads() == 2  # the caller's thread count is left as it was


def test_the_first_input_in_order_keeps_a_mask_name_whatever_stream_ends_first(
        tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    # scene.jpg and scene.png want the same masks/scene.png; the JPEG sorts first.
    from PIL import Image

    Image.open(SHAPES[0]).convert("RGB").save(folder / "scene.jpg", quality=95)
    shutil.copy(SHAPES[1], folder / "scene.png")
    for number, path in enumerate(SHAPES[2:6]):
        shutil.copy(path, folder / f"other_{number}.png")
    result = cli("segment-semantic", folder, "-m", "shapes-unet", "-b", "1", "--streams", "2",
                 "--device", "cpu", "--format", "jsonl", "-o", tmp_path / "out")
    records = result.records()
    assert result.code == 1 and [Path(r["path"]).name for r in records][:2] == [
        "other_0.png", "other_1.png"]
    by_name = {Path(r["path"]).name: r for r in records}
    assert by_name["scene.jpg"]["ok"] and by_name["scene.jpg"]["mask_path"].endswith("scene.png")
    assert by_name["scene.png"]["error"]["type"] == "OutputCollision"
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["streams"] == 2 and run["models"][0]["folded_batch_norms"] > 0


def test_streams_on_the_command_line(tmp_path: Path) -> None:
    result = cli("classify", SHAPES[0], "-m", "digits-cnn", "--streams", "0", "--device", "cpu")
    assert result.code == 2 and "--streams" in result.stderr
    result = cli("classify", *SHAPES[:3], "-m", "digits-cnn", "--streams", "1", "--device",
                 "cpu", "-o", tmp_path / "one", "--format", "jsonl")
    assert result.code == 0
    assert json.loads((tmp_path / "one" / "run.json").read_text())["streams"] == 1


def _resnet18_with_statistics() -> torch.nn.Module:
    """torchvision's resnet18 whose batch norms hold statistics (not the identity of a fresh
    init), so folding them is a real change of weights."""
    from torchvision.models import resnet18

    torch.manual_seed(0)
    model = resnet18()
    for layer in model.modules():
        if isinstance(layer, torch.nn.BatchNorm2d):
            layer.running_mean.uniform_(-0.2, 0.2)
            layer.running_var.uniform_(0.5, 1.5)
            layer.weight.data.uniform_(0.5, 1.5)
            layer.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def test_a_served_classifier_is_folded_and_scores_as_the_plain_loop(tmp_path: Path) -> None:
    from torchvision.models import ResNet18_Weights

    model = _resnet18_with_statistics()
    weights = tmp_path / "resnet18.pth"
    torch.save(model.state_dict(), weights)
    photos = sorted((ROOT / "sample_images" / "photos").glob("*.jpg"))[:3]
    with cvtool.Classifier(model="resnet18", weights=str(weights), device="cpu",
                           topk=3) as classifier:
        records = list(classifier.predict([str(p) for p in photos]))
        assert classifier.loaded[0].folded_batch_norms == 20
        assert not any(isinstance(m, torch.nn.BatchNorm2d)
                       for m in classifier.loaded[0].module.modules())
    from PIL import Image

    transforms = ResNet18_Weights.IMAGENET1K_V1.transforms()
    batch = torch.stack([transforms(Image.open(p).convert("RGB")) for p in photos])
    with torch.inference_mode():
        expected = model(batch).double().softmax(1).topk(3)
    for record, scores, indices in zip(records, *expected):
        assert [p["index"] for p in record.to_dict()["predictions"]] == indices.tolist()
        assert [p["score"] for p in record.to_dict()["predictions"]] == pytest.approx(
            scores.tolist(), abs=1e-5)


def test_a_model_the_sample_pass_does_not_fit_serves_unfolded() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)).eval()
    before = {name: value.clone() for name, value in model.state_dict().items()}

    def refuses(_module: torch.nn.Module) -> None:
        raise ValueError("this model takes 512x512 inputs only")

    assert fold_for_inference(model, refuses) == 0
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())
    assert isinstance(model[1], torch.nn.BatchNorm2d)
    assert fold_for_inference(torch.nn.Linear(2, 2), refuses) == 0  # nothing to fold: no pass
