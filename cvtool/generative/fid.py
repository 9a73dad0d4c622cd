"""`fid_digits`: the Frechet distance between image sets in the feature space of `digits-cnn`.

FID (Heusel et al., 2017) fits a Gaussian to each set's features and measures
||mu_a - mu_b||^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^(1/2)). Inception features mean nothing
on 8x8 digits, so the features here are the house classifier's penultimate activations (the
input of its last linear layer, 64 numbers for digits-cnn), taken with a forward hook.

The reference is the held-out part of scikit-learn's digits, split exactly as training splits
them (`cvtool.data.classification.digits_split`). FID is biased upwards for small samples, so
a figure is only meaningful beside `real_floor(n)`: the distance that `n` real digits drawn from the
training split reach against the same reference, i.e. what a perfect generator of the
training distribution would score with the same sample size.

The matrix square root is taken stably: tr((S_a S_b)^(1/2)) equals the sum of the square roots
of the eigenvalues of the symmetric PSD matrix S_a^(1/2) S_b S_a^(1/2), found with `eigh`, so
nothing goes complex and no diagonal offset is needed (scipy's `sqrtm` of the non-symmetric
product can return imaginary parts from round-off).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cvtool.models.classification import LoadedModel, load_classifier

CLASSIFIER = "digits-cnn"


def digits_tensor(seed: int = 0, val_split: float = 0.2, part: str = "val") -> torch.Tensor:
    """The digits of one part ("train" or "val") of the training split, as float RGB images
    in [0, 1], (N, 3, 8, 8)."""
    from cvtool.data.classification import digits_split

    train, val, _ = digits_split(seed, val_split)
    examples = {"train": train, "val": val}[part]
    pixels = np.stack([np.asarray(example.load()) for example in examples])
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255


@torch.no_grad()
def digits_features(images: torch.Tensor, classifier: LoadedModel | None = None,
                    batch_size: int = 512) -> np.ndarray:
    """The classifier's penultimate activations for float images in [0, 1], (N, 1 or 3, H, W),
    in float64. Images are first rounded to 8 bits, as their PNG files would be."""
    loaded = classifier or load_classifier(CLASSIFIER)
    last_linear = [layer for layer in loaded.module.modules() if isinstance(layer, nn.Linear)][-1]
    captured: list[torch.Tensor] = []
    hook = last_linear.register_forward_pre_hook(
        lambda _layer, inputs: captured.append(inputs[0].double().cpu()))
    try:
        for chunk in _as_saved_rgb(images).split(batch_size):
            loaded.module(loaded.transforms(chunk))
    finally:
        hook.remove()
    return torch.cat(captured).numpy()


@torch.no_grad()
def digit_shares(images: torch.Tensor, classifier: LoadedModel | None = None) -> np.ndarray:
    """The share of each digit 0-9 among float images in [0, 1], (N, 1 or 3, H, W), as the
    classifier labels them (rounded to 8 bits first, as their PNG files would be)."""
    loaded = classifier or load_classifier(CLASSIFIER)
    labels = torch.cat([loaded.module(loaded.transforms(chunk)).argmax(1)
                        for chunk in _as_saved_rgb(images).split(512)])
    return np.bincount(labels.numpy(), minlength=10) / max(1, len(labels))


def _as_saved_rgb(images: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] rounded to 8 bits, as their PNG files would be, grey made RGB."""
    as_saved = (images.detach().float().cpu().clamp(0, 1) * 255).round() / 255
    return as_saved.expand(-1, 3, -1, -1) if as_saved.shape[1] == 1 else as_saved


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """The Frechet distance between Gaussians fitted to two (N, F) feature sets."""
    mean_a, mean_b = features_a.mean(0), features_b.mean(0)
    cov_a, cov_b = np.cov(features_a, rowvar=False), np.cov(features_b, rowvar=False)
    root_a = _psd_sqrt(cov_a)
    product = root_a @ cov_b @ root_a
    cross = np.sqrt(np.clip(np.linalg.eigvalsh((product + product.T) / 2), 0, None)).sum()
    distance = ((mean_a - mean_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * cross
    return max(0.0, float(distance))


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def fid_digits(images: torch.Tensor, reference: torch.Tensor | None = None, *,
               classifier: LoadedModel | None = None, seed: int = 0,
               val_split: float = 0.2) -> float:
    """FID of float images in [0, 1], (N, C, H, W), against `reference` (default: the held-out
    digits of the split made with `seed` and `val_split`)."""
    loaded = classifier or load_classifier(CLASSIFIER)
    reference = digits_tensor(seed, val_split) if reference is None else reference
    return frechet_distance(digits_features(images, loaded), digits_features(reference, loaded))


def real_floor(num: int, *, seed: int = 0, val_split: float = 0.2, draw_seed: int = 0,
               classifier: LoadedModel | None = None) -> float:
    """FID of `num` real training digits (drawn without replacement with `draw_seed`) against
    the held-out ones: the floor for a `num`-sample `fid_digits`."""
    train = digits_tensor(seed, val_split, "train")
    if not 2 <= num <= len(train):
        raise ValueError(f"the floor needs 2 to {len(train)} real digits, not {num}")
    chosen = torch.randperm(len(train), generator=torch.Generator().manual_seed(draw_seed))[:num]
    return fid_digits(train[chosen], classifier=classifier, seed=seed, val_split=val_split)
