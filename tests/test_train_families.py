"""`train classify` for one model of every torchvision classifier family in the registry (the way
timm tests its registry): a tiny run, then `classify -m RUN_DIR` on the val folder must rebuild
the best checkpoint through the same builder and reproduce the run's val predictions exactly.

maxvit_t is marked slow: its partitions fix the input at 224 px, about 90 s on two cores. So are
vgg11_bn and vit_b_16, whose checkpoints (510 and 330 MB, written as best and last and read back)
cost 20-30 s each of CI's 15 minutes, and efficientnet_v2_s (25 s); they run with
`pytest -m slow`. The trainer, checkpoint
and rebuild code they exercise is the same for every family, and test_registry.py still holds
their builders and weights to installed torchvision's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cvtool.models.registry import list_models
from tests.clirun import cvtool

# family -> the registry model that stands for it (the smallest one)
FAMILIES = {
    "resnet": "resnet18", "resnext/wide": "resnext50_32x4d", "mobilenet_v2": "mobilenet_v2",
    "mobilenet_v3": "mobilenet_v3_small", "efficientnet": "efficientnet_b0",
    "efficientnet_v2": "efficientnet_v2_s", "regnet": "regnet_x_400mf",
    "mnasnet": "mnasnet0_5", "densenet": "densenet121", "vgg": "vgg11_bn",
    "shufflenet": "shufflenet_v2_x0_5", "squeezenet": "squeezenet1_1",
    "googlenet/inception": "googlenet", "convnext": "convnext_tiny", "vit": "vit_b_16",
    "swin": "swin_t", "maxvit": "maxvit_t", "alexnet": "alexnet",
}
_PREFIXES = {"resnext": "resnext/wide", "wide_resnet": "resnext/wide", "resnet": "resnet",
             "mobilenet_v2": "mobilenet_v2", "mobilenet_v3": "mobilenet_v3",
             "efficientnet_v2": "efficientnet_v2", "efficientnet": "efficientnet",
             "regnet": "regnet", "mnasnet": "mnasnet", "densenet": "densenet", "vgg": "vgg",
             "shufflenet": "shufflenet", "squeezenet": "squeezenet",
             "googlenet": "googlenet/inception", "inception": "googlenet/inception",
             "convnext": "convnext", "vit": "vit", "swin": "swin", "maxvit": "maxvit",
             "alexnet": "alexnet"}
SLOW = {"maxvit_t", "vgg11_bn", "vit_b_16", "efficientnet_v2_s"}


def family(name: str) -> str:
    return next(family for prefix, family in _PREFIXES.items() if name.startswith(prefix))


def test_every_registry_classifier_has_a_tested_family() -> None:
    torchvision = [spec.name for spec in list_models("classify") if spec.source == "torchvision"]
    assert {family(name) for name in torchvision} == set(FAMILIES)
    assert all(family(model) == name for name, model in FAMILIES.items())


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    """Two classes (dark and light noise), four 32x32 training images and two val images each."""
    root = tmp_path_factory.mktemp("tiny") / "data"
    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("val", 2)):
        for name, level in (("dark", 60), ("light", 190)):
            folder = root / split / name
            folder.mkdir(parents=True)
            for index in range(count):
                pixels = np.clip(rng.normal(level, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{index}.png")
    return root


@pytest.mark.parametrize("model", [
    pytest.param(model, marks=pytest.mark.slow) if model in SLOW else model
    for model in FAMILIES.values()])
def test_family_trains_and_its_run_directory_classifies(tiny_folder: Path, tmp_path: Path,
                                                        model: str) -> None:
    run = tmp_path / "run"
    size = {"maxvit_t": "224", "alexnet": "64"}.get(model, "32")
    trained = cvtool("train", "classify", "--data", tiny_folder, "--model", model,
                     "--image-size", size, "--epochs", "1", "--batch-size", "4",
                     "--optimizer", "sgd", "--lr", "0.001", "--device", "cpu", "-q", "-o", run)
    assert trained.code == 0, trained.stderr
    summary = json.loads(trained.stdout)
    classified = cvtool("classify", tiny_folder / "val", "-m", run, "--topk", "1",
                        "--format", "jsonl")
    assert classified.code == 0, classified.stderr
    classes = ["dark", "light"]
    matrix = [[0, 0], [0, 0]]
    for record in classified.records():
        truth = classes.index(Path(record["path"]).parent.name)
        matrix[truth][record["predictions"][0]["index"]] += 1
    assert matrix == summary["confusion_matrix"]
    assert sum(matrix[i][i] for i in range(2)) / 4 == summary["val_accuracy"]


def test_an_input_too_small_for_the_net_is_exit_2(tiny_folder: Path, tmp_path: Path) -> None:
    result = cvtool("train", "classify", "--data", tiny_folder, "--model", "alexnet",
                    "--image-size", "32", "--epochs", "1", "--device", "cpu", "-q",
                    "-o", tmp_path / "run")
    assert result.code == 2 and "cannot run on 32x32 images" in result.stderr
    assert "--image-size" in result.stderr
