"""Fit k-nearest neighbours: choose k and the distance by stratified k-fold CV on train only.

CV never sees the val split, so the val accuracy reported is an honest estimate. Each fold's
distances are computed once for the largest candidate k; every smaller k reuses its nearest ones.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cvtool.core.status import UsageError
from cvtool.data.classification import ClassificationData

if TYPE_CHECKING:
    from torch import Tensor

    from cvtool.models.knn import KNearestNeighbors

CANDIDATE_K = (1, 3, 5, 7, 9, 11, 15)
CANDIDATE_DISTANCES = ("l1", "l2")


@dataclass
class SplitPredictions:
    targets: list[int]
    predicted: list[int]

    @property
    def accuracy(self) -> float:
        hits = sum(t == p for t, p in zip(self.targets, self.predicted))
        return hits / len(self.targets)


@dataclass
class KnnFit:
    module: KNearestNeighbors  # eval mode; its memory is the whole train split
    k: int
    distance: str
    cv_table: list[dict[str, Any]]  # {k, distance, folds: [accuracy...], mean, std}; [] if fixed
    # "train" (each input is among its own neighbours) and "val", for a confusion matrix.
    predictions: dict[str, SplitPredictions] = field(default_factory=dict)

    @property
    def val_accuracy(self) -> float:
        return self.predictions["val"].accuracy


def fit_knn(data: ClassificationData, k: str | int = "auto", distance: str = "auto",
            folds: int = 5, seed: int = 0) -> KnnFit:
    """k-NN on `data.train`; "auto" k and/or distance are chosen by `folds`-fold CV."""
    import torch

    from cvtool.models.knn import KNearestNeighbors

    ks, distances = candidate_ks(k), candidate_distances(distance)
    inputs, labels = stacked(data.train)
    if len(ks) == 1 and ks[0] > len(labels):
        raise UsageError(f"--k {ks[0]} is more than the {len(labels)} training images")
    cv_table = []
    if len(ks) * len(distances) > 1:
        cv_table = cross_validate(inputs, labels, len(data.classes), ks, distances, folds, seed)
        best = max(cv_table, key=lambda row: row["mean"])  # first of equals: smaller k, l1
        ks, distances = [best["k"]], [best["distance"]]
    module = KNearestNeighbors.fitted(inputs, labels, len(data.classes), ks[0], distances[0])
    val_inputs, val_labels = stacked(data.val)
    with torch.no_grad():
        predictions = {split: SplitPredictions(y.tolist(), module(x).argmax(1).tolist())
                       for split, (x, y) in (("train", (inputs, labels)),
                                             ("val", (val_inputs, val_labels)))}
    return KnnFit(module, ks[0], distances[0], cv_table, predictions)


def candidate_ks(k: str | int) -> list[int]:
    if k == "auto":
        return list(CANDIDATE_K)
    if isinstance(k, int) or (isinstance(k, str) and k.isdigit()):
        if int(k) >= 1:
            return [int(k)]
    raise UsageError(f"--k must be 'auto' or a positive integer, not {k!r}")


def candidate_distances(distance: str) -> list[str]:
    if distance == "auto":
        return list(CANDIDATE_DISTANCES)
    if distance in CANDIDATE_DISTANCES:
        return [distance]
    raise UsageError(f"--distance must be auto, {', '.join(CANDIDATE_DISTANCES)}; "
                     f"not {distance!r}")


def stacked(dataset: Any) -> tuple[Tensor, Tensor]:
    """All of a dataset's items as (inputs (N, C, H, W), labels (N))."""
    import torch

    items = [dataset[index] for index in range(len(dataset))]
    return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])


def cross_validate(inputs: Tensor, labels: Tensor, num_classes: int, ks: list[int],
                   distances: list[str], folds: int, seed: int) -> list[dict[str, Any]]:
    """One row per (distance, k), in grid order: distance outer, k inner (as scikit-learn's)."""
    scores: dict[tuple[str, int], list[float]] = {(d, k): [] for d in distances for k in ks}
    for train_index, held_index in fold_indices(labels, folds, seed):
        for distance in distances:
            fold_scores = score_fold(inputs, labels, train_index, held_index, num_classes,
                                     ks, distance)
            for k, accuracy in fold_scores.items():
                scores[(distance, k)].append(accuracy)
    return [{"k": k, "distance": d, "folds": values, "mean": statistics.fmean(values),
             "std": statistics.pstdev(values)} for (d, k), values in scores.items() if values]


def fold_indices(labels: Tensor, folds: int, seed: int) -> list[tuple[Tensor, Tensor]]:
    """Stratified folds; fewer when the smallest class has fewer than `folds` images."""
    import torch
    from sklearn.model_selection import StratifiedKFold

    smallest = int(torch.bincount(labels)[torch.bincount(labels) > 0].min())
    if min(folds, smallest) < 2:
        raise UsageError("choosing k by cross-validation needs at least 2 folds and 2 training "
                         "images per class; give --k and --distance instead")
    splitter = StratifiedKFold(n_splits=min(folds, smallest), shuffle=True, random_state=seed)
    return [(torch.from_numpy(train), torch.from_numpy(held))
            for train, held in splitter.split(labels.numpy().reshape(-1, 1), labels.numpy())]


def score_fold(inputs: Tensor, labels: Tensor, train_index: Tensor, held_index: Tensor,
               num_classes: int, ks: list[int], distance: str) -> dict[int, float]:
    """Held-out accuracy of each k that the fold's train part has enough images for."""
    from cvtool.models.knn import log_vote_fractions, nearest_neighbours

    usable = [k for k in ks if k <= len(train_index)]
    references = inputs[train_index].flatten(1)
    found, indices = nearest_neighbours(inputs[held_index].flatten(1), references, max(usable),
                                        distance)
    neighbour_labels, targets = labels[train_index][indices], labels[held_index]
    return {k: float((log_vote_fractions(found[:, :k], neighbour_labels[:, :k], num_classes)
                      .argmax(1) == targets).float().mean()) for k in usable}
