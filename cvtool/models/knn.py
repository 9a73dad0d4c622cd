"""k-nearest-neighbour classification as an `nn.Module`, so a checkpoint can hold and rebuild it.

The training set is the model: buffers `train_x` (N, D: flattened, normalised inputs) and
`train_y` (N). `forward` returns the log of each class's share of the k nearest neighbours' votes,
so the softmax that `cvtool classify` applies gives vote fractions as its scores. A tie in votes
goes to the class whose voters are nearer in total: that class gets a share of at most `TIE_WEIGHT`
less taken off, so scores are vote fractions to within 1e-4.

Distances are computed exactly (no `|x|^2 + |y|^2 - 2xy` shortcut): its rounding depends on the
batch, and a classify run must find the neighbours the training run found.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

DISTANCES = {"l1": 1.0, "l2": 2.0}  # name -> p of the Minkowski distance
TIE_WEIGHT = 1e-4
DISTANCE_BUDGET = 1 << 24  # distance-matrix entries per chunk of queries (64 MiB of float32)


class KNearestNeighbors(nn.Module):
    """Majority vote of the `k` training inputs nearest under L1 or L2 distance."""

    def __init__(self, num_features: int, num_train: int, num_classes: int, k: int = 5,
                 distance: str = "l2") -> None:
        super().__init__()
        if distance not in DISTANCES:
            raise ValueError(f"distance must be one of {', '.join(DISTANCES)}, not {distance!r}")
        if not 1 <= k <= num_train:
            raise ValueError(f"k must be between 1 and num_train ({num_train}), not {k}")
        self.num_classes, self.k, self.distance = num_classes, k, distance
        self.kwargs = {"num_features": num_features, "num_train": num_train,
                       "num_classes": num_classes, "k": k, "distance": distance}
        self.register_buffer("train_x", torch.zeros(num_train, num_features))
        self.register_buffer("train_y", torch.zeros(num_train, dtype=torch.int64))

    @classmethod
    def fitted(cls, inputs: Tensor, labels: Tensor, num_classes: int, k: int,
               distance: str) -> KNearestNeighbors:
        """A model whose memory is `inputs` (N, ...) with class indices `labels` (N)."""
        flat = inputs.flatten(1).float()
        model = cls(flat.shape[1], flat.shape[0], num_classes, k, distance)
        model.train_x.copy_(flat)
        model.train_y.copy_(labels)
        return model.eval()

    @property
    def architecture(self) -> dict:
        """The checkpoint meta's `architecture`: how `build_architecture` rebuilds this model."""
        return {"builder": "cvtool.models.knn:KNearestNeighbors", "kwargs": dict(self.kwargs)}

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, num_classes): log vote fractions."""
        distances, indices = nearest_neighbours(x.flatten(1), self.train_x, self.k, self.distance)
        return log_vote_fractions(distances, self.train_y[indices], self.num_classes)


def nearest_neighbours(queries: Tensor, references: Tensor, k: int,
                       distance: str) -> tuple[Tensor, Tensor]:
    """Distances (B, k) to the `k` nearest rows of `references` (ascending) and their indices."""
    rows = max(1, DISTANCE_BUDGET // max(1, len(references)))
    found = [_nearest_chunk(chunk.to(references.dtype), references, k, DISTANCES[distance])
             for chunk in queries.split(rows)]
    return torch.cat([d for d, _ in found]), torch.cat([i for _, i in found])


def _nearest_chunk(queries: Tensor, references: Tensor, k: int, p: float) -> tuple[Tensor, Tensor]:
    distances = torch.cdist(queries, references, p=p,
                            compute_mode="donot_use_mm_for_euclid_dist")
    return distances.topk(k, dim=1, largest=False, sorted=True)


def log_vote_fractions(distances: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """(B, k) neighbour distances and labels -> (B, num_classes) log of each class's vote share."""
    k = labels.shape[1]
    votes = torch.zeros(len(labels), num_classes, dtype=distances.dtype, device=labels.device)
    votes.scatter_add_(1, labels, torch.ones_like(distances))
    near = torch.zeros_like(votes).scatter_add_(1, labels, distances)
    # Each class's share of the total neighbour distance, in [0, 1]: less is nearer.
    share = near / distances.sum(1, keepdim=True).clamp_min(torch.finfo(distances.dtype).tiny)
    fractions = (votes - TIE_WEIGHT * share) / k
    # A floor, not log(0): -inf turns into NaN under the arithmetic callers do on logits.
    return fractions.clamp_min(torch.finfo(fractions.dtype).tiny).log()
