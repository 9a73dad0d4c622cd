"""k-NN: votes and distances, the checkpoint, CV model selection and the digits accuracy."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cvtool.core.status import UsageError
from cvtool.data.classification import ClassificationData, load_classification_data
from cvtool.models.checkpoint import build_architecture, load_checkpoint, save_checkpoint
from cvtool.models.knn import KNearestNeighbors
from cvtool.train.knn import CANDIDATE_DISTANCES, CANDIDATE_K, KnnFit, fit_knn
from tests.clirun import cvtool


@pytest.fixture(scope="module")
def digits() -> ClassificationData:
    return load_classification_data("digits")


@pytest.fixture(scope="module")
def auto_fit(digits: ClassificationData) -> KnnFit:
    return fit_knn(digits)


def points(*xy: tuple[float, float]) -> torch.Tensor:
    """2-D points as (N, C=1, H=1, W=2) images."""
    return torch.tensor(xy, dtype=torch.float32).reshape(len(xy), 1, 1, 2)


def knn(train: torch.Tensor, labels: list[int], k: int, distance: str) -> KNearestNeighbors:
    return KNearestNeighbors.fitted(train, torch.tensor(labels), 3, k, distance)


def test_l1_and_l2_disagree_where_they_should() -> None:
    # (2, 0) is nearer the origin under L1 (2 < 2.4); (1.2, 1.2) under L2 (1.70 < 2).
    train = points((2.0, 0.0), (1.2, 1.2))
    origin = points((0.0, 0.0))
    assert knn(train, [0, 1], 1, "l1")(origin).argmax(1).item() == 0
    assert knn(train, [0, 1], 1, "l2")(origin).argmax(1).item() == 1


def test_softmax_of_output_is_the_vote_fraction_and_ties_go_to_the_nearer() -> None:
    train = points((1.0, 0.0), (2.0, 0.0), (0.0, 3.0), (9.0, 9.0))
    model = knn(train, [0, 0, 1, 2], 3, "l2")
    scores = model(points((0.0, 0.0))).softmax(1)[0]
    assert torch.allclose(scores, torch.tensor([2 / 3, 1 / 3, 0.0]), atol=1e-4)
    tied = knn(train, [0, 1, 1, 2], 2, "l2")  # one vote each for 0 (at 1) and 1 (at 2)
    assert tied(points((0.0, 0.0))).argmax(1).item() == 0
    assert tied(points((3.0, 0.0))).argmax(1).item() == 1


def test_checkpoint_round_trip_gives_identical_outputs(digits: ClassificationData,
                                                       tmp_path: Path) -> None:
    fit = fit_knn(digits, k=3, distance="l1")
    assert fit.cv_table == [] and (fit.k, fit.distance) == (3, "l1")
    meta = {"task": "classify", "architecture": fit.module.architecture,
            "classes": digits.classes, "preprocessing": digits.preprocessing}
    save_checkpoint(tmp_path / "best.safetensors", fit.module.state_dict(), meta)
    state, loaded_meta = load_checkpoint(tmp_path)
    rebuilt = build_architecture(loaded_meta)
    rebuilt.load_state_dict(state, strict=True)
    with torch.no_grad():
        assert torch.equal(rebuilt(digits.val.inputs), fit.module(digits.val.inputs))


def test_bad_kwargs_in_a_checkpoint_are_usage_errors() -> None:
    meta = {"architecture": {"builder": "cvtool.models.knn:KNearestNeighbors", "kwargs": {
        "num_features": 4, "num_train": 2, "num_classes": 2, "k": 1, "distance": "l3"}}}
    with pytest.raises(UsageError, match="kwarg distance='l3' must be one of 'l1', 'l2'"):
        build_architecture(meta)
    meta["architecture"]["kwargs"].update(distance="l2", k=3)  # k above num_train: the builder's
    with pytest.raises(UsageError, match="k must be between 1 and num_train"):
        build_architecture(meta)


def test_auto_cv_covers_the_grid_and_picks_the_best(auto_fit: KnnFit) -> None:
    grid = [(row["distance"], row["k"]) for row in auto_fit.cv_table]
    assert grid == [(d, k) for d in CANDIDATE_DISTANCES for k in CANDIDATE_K]
    assert all(len(row["folds"]) == 5 for row in auto_fit.cv_table)
    best = max(row["mean"] for row in auto_fit.cv_table)
    chosen = next(row for row in auto_fit.cv_table
                  if (row["distance"], row["k"]) == (auto_fit.distance, auto_fit.k))
    assert chosen["mean"] == best > 0.97 and auto_fit.k <= 7


def test_digits_val_accuracy_meets_the_target(auto_fit: KnnFit) -> None:
    assert auto_fit.val_accuracy >= 0.98
    assert len(auto_fit.predictions["val"].predicted) == 360
    assert auto_fit.predictions["train"].accuracy > auto_fit.val_accuracy


def test_classify_on_the_exported_val_folder_reproduces_val_accuracy(
        digits: ClassificationData, auto_fit: KnnFit, tmp_path: Path) -> None:
    meta = {"task": "classify", "architecture": auto_fit.module.architecture,
            "classes": digits.classes, "preprocessing": digits.preprocessing}
    save_checkpoint(tmp_path / "run" / "best.safetensors", auto_fit.module.state_dict(), meta)
    assert cvtool("data", "digits", tmp_path / "digits", "--quiet").code == 0
    result = cvtool("classify", "--model", tmp_path / "run", tmp_path / "digits" / "val",
                    "--quiet", "--topk", "1")
    records = result.records()
    hits = sum(r["predictions"][0]["label"] == Path(r["path"]).parent.name for r in records)
    assert len(records) == 360 and hits / 360 == auto_fit.val_accuracy


@pytest.mark.parametrize("k, distance, message", [
    ("many", "auto", "--k must be 'auto' or a positive integer"),
    (0, "auto", "--k must be"),
    (5000, "l2", "more than the 1437 training images"),
    ("auto", "cosine", "--distance must be"),
])
def test_bad_k_or_distance(digits: ClassificationData, k, distance: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        fit_knn(digits, k=k, distance=distance)
