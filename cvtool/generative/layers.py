"""What the families share: image sizes, quantisation, convolutional stacks and latent draws.

The VAE's encoder and the GAN's discriminator are one `ConvEncoder`; the VAE's decoder and the
GAN's generator are one `ConvDecoder`. Both halve (or double) the resolution `plan_size(size)`
times with stride-2 convolutions, as DCGAN does, down to a map of at least 4 pixels a side: an
8x8 digit has one such step (4x4), 32x32 three, 64x64 four, 28x28 two (7x7).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

MIN_MAP_SIDE = 4


def image_size_pair(image_size: int | Sequence[int]) -> tuple[int, int]:
    """(height, width) from an int (square) or an [h, w] pair; both at least 1."""
    pair = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(pair) != 2 or not all(isinstance(side, int) and side >= 1 for side in pair):
        raise ValueError(f"image_size must be a positive int or [height, width], "
                         f"not {image_size!r}")
    return int(pair[0]), int(pair[1])


def plan_size(size: tuple[int, int]) -> int:
    """How many stride-2 steps keep both sides whole and the smaller at least MIN_MAP_SIDE."""
    steps = 0
    while all(side % 2 ** (steps + 1) == 0 for side in size) \
            and min(size) // 2 ** (steps + 1) >= MIN_MAP_SIDE:
        steps += 1
    return steps


def to_levels(images: torch.Tensor, levels: int) -> torch.Tensor:
    """Float images in [0, 1] -> long intensity levels 0..levels-1 (nearest level)."""
    return (images.clamp(0, 1) * (levels - 1)).round().long()


def from_levels(levels_tensor: torch.Tensor, levels: int) -> torch.Tensor:
    return levels_tensor.float() / (levels - 1)


def check_channels_and_levels(channels: int, levels: int | None = None) -> None:
    if not isinstance(channels, int) or channels < 1:
        raise ValueError(f"channels must be a positive int, not {channels!r}")
    if levels is not None and (not isinstance(levels, int) or not 2 <= levels <= 65536):
        raise ValueError(f"levels must be an int from 2 to 65536, not {levels!r}")


class ConvEncoder(nn.Module):
    """Image (N, C, H, W) in [0, 1] -> (N, out_features): a 3x3 stem, then stride-2 4x4
    convolutions doubling the width, LeakyReLU(0.2), optional batch norm (not on the stem)."""

    def __init__(self, channels: int, size: tuple[int, int], width: int, out_features: int,
                 batch_norm: bool) -> None:
        super().__init__()
        steps = plan_size(size)
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1), nn.LeakyReLU(0.2)]
        for step in range(steps):
            out = width * 2 ** (step + 1)
            layers += [nn.Conv2d(out // 2, out, 4, stride=2, padding=1, bias=not batch_norm),
                       nn.BatchNorm2d(out) if batch_norm else nn.Identity(), nn.LeakyReLU(0.2)]
        self.features = nn.Sequential(*layers, nn.Flatten())
        area = (size[0] // 2 ** steps) * (size[1] // 2 ** steps)
        self.head = nn.Linear(width * 2 ** steps * area, out_features)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images * 2 - 1))


class ConvDecoder(nn.Module):
    """Latent (N, D) -> (N, out_channels, H, W) unnormalised outputs: a linear map onto the
    smallest grid, then stride-2 4x4 transposed convolutions halving the width, ReLU, optional
    batch norm, and a 3x3 convolution onto `out_channels`."""

    def __init__(self, latent_dim: int, size: tuple[int, int], width: int, out_channels: int,
                 batch_norm: bool) -> None:
        super().__init__()
        steps = plan_size(size)
        self.start = (width * 2 ** steps, size[0] // 2 ** steps, size[1] // 2 ** steps)
        norm = nn.BatchNorm2d if batch_norm else (lambda _: nn.Identity())
        self.project = nn.Linear(latent_dim, self.start[0] * self.start[1] * self.start[2])
        layers: list[nn.Module] = [norm(self.start[0]), nn.ReLU()]
        for step in range(steps, 0, -1):
            wide = width * 2 ** step
            layers += [nn.ConvTranspose2d(wide, wide // 2, 4, stride=2, padding=1,
                                          bias=not batch_norm), norm(wide // 2), nn.ReLU()]
        self.body = nn.Sequential(*layers, nn.Conv2d(width, out_channels, 3, padding=1))

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.body(self.project(latents).view(-1, *self.start))


def prior_latents(num: int, latent_dim: int, generator: torch.Generator | None) -> torch.Tensor:
    """`num` draws from N(0, I), made on the CPU so a seed gives the same latents on any device."""
    return torch.randn(num, latent_dim, generator=generator)


def interpolation_latents(z0: torch.Tensor, z1: torch.Tensor, steps: int) -> torch.Tensor:
    """Evenly spaced points from z0 to z1 (both ends included), linearly: (N * steps, D) for
    (N, D) or (D,) ends, path by path."""
    if steps < 2:
        raise ValueError(f"an interpolation needs at least 2 steps, not {steps}")
    z0, z1 = torch.atleast_2d(z0), torch.atleast_2d(z1)
    weights = torch.linspace(0, 1, steps, device=z0.device).view(1, steps, 1)
    return (z0.unsqueeze(1) * (1 - weights) + z1.unsqueeze(1) * weights).flatten(0, 1)


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def decode_in_batches(decode: Callable[[torch.Tensor], torch.Tensor], latents: torch.Tensor,
                      device: torch.device, batch_size: int | None) -> torch.Tensor:
    """Images in [0, 1] on the CPU from `decode(latents on device)`, batch by batch."""
    chunks = latents.split(batch_size or max(1, len(latents)))
    return torch.cat([decode(chunk.to(device)).float().cpu() for chunk in chunks])


@contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode (no dropout, batch norm's running statistics) for the block, then back."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
