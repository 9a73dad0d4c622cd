"""Image-folder training streams from disk through DataLoader workers; fine-tuning preprocesses as
the pretrained weights expect."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from cvtool.data.classification import StreamedImages, load_classification_data
from cvtool.models.classification import classification_transforms
from tests.clirun import cvtool, kill_after_first_epoch


def make_folder(root: Path, per_class: int = 12, size: int = 24) -> Path:
    rng = np.random.default_rng(1)
    for split, count in (("train", per_class), ("val", per_class // 3)):
        for name, level in (("dark", 70), ("light", 180)):
            folder = root / split / name
            folder.mkdir(parents=True)
            for index in range(count):
                pixels = np.clip(rng.normal(level, 50, (size, size, 3)), 0, 255)
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{index:03d}.jpg")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("stream") / "data")


def _history(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{key: value for key, value in row.items() if key != "seconds"} for row in rows]


def test_a_folder_is_listed_not_decoded(folder: Path, tmp_path: Path) -> None:
    data = load_classification_data(str(folder))
    assert isinstance(data.train, StreamedImages) and isinstance(data.val, StreamedImages)
    assert all(example.image is None for example in data.train.examples)
    image, label = data.val[0]
    assert image.shape == (3, 24, 24) and label == 0


def test_a_file_that_fails_mid_training_is_one_line_exit_2(folder: Path, tmp_path: Path) -> None:
    broken = tmp_path / "data"
    make_folder(broken, per_class=70)
    # Past the 128 images the sanity checks read first: a DataLoader worker meets it.
    victim = broken / "train" / "light" / "999.png"
    noise = np.random.default_rng(2).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    Image.fromarray(noise).save(victim)
    whole = victim.read_bytes()
    victim.write_bytes(whole[:len(whole) * 2 // 3])  # the header reads, the pixels do not
    result = cvtool("train", "classify", "--data", broken, "--model", "cnn", "--epochs", "1",
                    "--workers", "2", "--device", "cpu", "-q", "-o", tmp_path / "run")
    assert result.code == 2, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: cannot read training image {victim}: ")
    assert "Traceback" not in result.stderr and "worker" not in result.stderr


ARGS = ["--model", "cnn", "--width", "8", "--augment", "--dropout", "0.2", "--epochs", "4",
        "--batch-size", "8", "--workers", "2", "--device", "cpu", "--threads", "1", "-q"]


def test_resume_after_kill_9_with_workers_is_bit_identical(folder: Path, tmp_path: Path) -> None:
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    kill_after_first_epoch(["train", "classify", "--data", folder, *ARGS], killed)
    assert len(_history(killed)) < 4, "the run finished before it could be killed"
    threads = torch.get_num_threads()
    try:
        resumed = cvtool("train", "classify", "--resume", killed, "--device", "cpu",
                         "--threads", "1", "-q")
        assert resumed.code == 0, resumed.stderr
        done = cvtool("train", "classify", "--data", folder, *ARGS, "-o", straight)
        assert done.code == 0, done.stderr
    finally:
        torch.set_num_threads(threads)
    assert json.loads((killed / "config.json").read_text())["config"]["workers"] == 2
    assert _history(killed) == _history(straight)
    last_killed, last_straight = (load_file(run / "last.safetensors")
                                  for run in (killed, straight))
    assert all(torch.equal(last_killed[key], last_straight[key]) for key in last_straight)


def test_fine_tuning_uses_the_weights_own_preprocessing(folder: Path, tmp_path: Path) -> None:
    # mobilenet_v3_small: ImageNet's 256/224 preprocessing like resnet18's, at a fifth the cost.
    from torchvision.models import MobileNet_V3_Small_Weights, mobilenet_v3_small

    torch.manual_seed(0)
    weights_file = tmp_path / "mnv3.pth"
    torch.save(mobilenet_v3_small().state_dict(), weights_file)
    run = tmp_path / "run"
    result = cvtool("train", "classify", "--data", folder, "--model", "mobilenet_v3_small",
                    "--weights", weights_file, "--epochs", "1", "--batch-size", "8",
                    "--optimizer", "sgd", "--lr", "0.001", "--device", "cpu", "-q", "-o", run)
    assert result.code == 0, result.stderr
    expected = MobileNet_V3_Small_Weights.DEFAULT.transforms()
    meta = json.loads((run / "best.json").read_text())
    assert meta["preprocessing"] == {
        "resize_size": expected.resize_size[0], "crop_size": expected.crop_size[0],
        "mean": list(expected.mean), "std": list(expected.std),
        "interpolation": expected.interpolation.value}
    # What classify -m RUN_DIR applies is exactly what training measured val accuracy on.
    data = load_classification_data(str(folder), preprocessing=meta["preprocessing"])
    rebuilt = classification_transforms(meta["preprocessing"])
    for index, example in enumerate(data.val.examples):
        assert torch.equal(rebuilt(Image.open(example.name).convert("RGB")),
                           data.val[index][0])
    summary = json.loads(result.stdout)
    records = cvtool("classify", folder / "val", "-m", run, "--topk", "1",
                     "--format", "jsonl").records()
    correct = sum(r["predictions"][0]["label"] == Path(r["path"]).parent.name for r in records)
    assert correct / len(records) == summary["val_accuracy"]
