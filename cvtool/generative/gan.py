"""A DCGAN-style GAN (Radford et al., 2016): no explicit density, a two-player game.

The generator maps z ~ N(0, I) through a linear layer onto a 4x4 (or so) map and stride-2
transposed convolutions with batch norm and ReLU up to the data's size, then a sigmoid to
[0, 1]. The discriminator mirrors it: stride-2 convolutions with LeakyReLU(0.2), batch norm on
all but the first, and one logit. Both follow the data's channels and image size, so 8x8 digits
get one up/down step and 64x64 images four (see `cvtool.generative.layers`).

Losses: the discriminator minimises binary cross-entropy, real images labelled 1 and generated
ones 0. The generator uses the non-saturating loss, BCE of D(G(z)) against 1, i.e.
-log sigmoid(D(G(z))): it pushes the discriminator's output on fakes toward 1, and its gradient
stays large exactly when the discriminator confidently rejects the fakes (early in training),
where the original minimax loss log(1 - sigmoid(D(G(z)))) saturates.

Sampling runs in eval mode: batch norm uses its running statistics, so an image depends only on
its own latent, never on the rest of the batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cvtool.generative.layers import (
    ConvDecoder,
    ConvEncoder,
    check_channels_and_levels,
    decode_in_batches,
    evaluating,
    image_size_pair,
    interpolation_latents,
    model_device,
    prior_latents,
)


class Generator(nn.Module):
    def __init__(self, channels: int, image_size: tuple[int, int], latent_dim: int,
                 width: int) -> None:
        super().__init__()
        self.decoder = ConvDecoder(latent_dim, image_size, width, channels, batch_norm=True)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decoder(latents))


class GAN(nn.Module):
    """Both players in one module, so one checkpoint holds the pair; sampling needs only
    `generator`, the training loop gives each player its own optimiser."""

    family = "gan"

    def __init__(self, channels: int, image_size: tuple[int, int], latent_dim: int,
                 width: int) -> None:
        super().__init__()
        check_channels_and_levels(channels)
        self.channels, self.image_size, self.latent_dim = channels, image_size, latent_dim
        self.generator = Generator(channels, image_size, latent_dim, width)
        self.discriminator = ConvEncoder(channels, image_size, width, 1, batch_norm=True)

    def draw_latents(self, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """`num` draws from z's prior N(0, I), (num, latent_dim), made on the CPU."""
        return prior_latents(num, self.latent_dim, generator)


def gan(channels: int = 1, image_size: int | Sequence[int] = 8, latent_dim: int = 64,
        width: int = 64) -> GAN:
    """The checkpoint builder (`cvtool.generative.gan:gan`); kwargs are JSON."""
    size = image_size_pair(image_size)
    model = GAN(channels, size, latent_dim, width)
    model.kwargs = {"channels": channels, "image_size": list(size), "latent_dim": latent_dim,
                    "width": width}
    return model


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """BCE with real labelled 1 and fake 0, averaged over both halves."""
    real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return (real + fake) / 2


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """The non-saturating loss: BCE of D(G(z)) against 1, mean of -log sigmoid(logit)."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def _fakes(model: GAN, num: int, device: torch.device,
           generator: torch.Generator | None) -> torch.Tensor:
    return model.generator(model.draw_latents(num, generator).to(device))


def discriminator_losses(model: GAN, batch: torch.Tensor,
                         generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """The discriminator's step on one batch of real float images in [0, 1], (N, C, H, W) on the
    model's device, against as many fakes (detached: no gradient reaches the generator).

    `loss` to minimise; `real_score` and `fake_score`, the mean D output (probability of
    "real") on each, detached.
    """
    with torch.no_grad():
        fakes = _fakes(model, len(batch), batch.device, generator)
    real_logits, fake_logits = model.discriminator(batch), model.discriminator(fakes)
    return {"loss": discriminator_loss(real_logits, fake_logits),
            "real_score": torch.sigmoid(real_logits.detach()).mean(),
            "fake_score": torch.sigmoid(fake_logits.detach()).mean()}


def generator_losses(model: GAN, batch: torch.Tensor,
                     generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """The generator's step: as many fakes as `batch` has images (only its size and device are
    used). Its backward also fills the discriminator's gradients: zero them before the
    discriminator's own step, as `optimizer.zero_grad()` at each step does.

    `loss` (non-saturating) to minimise; `fake_score` the mean D output on the fakes, detached.
    """
    fake_logits = model.discriminator(_fakes(model, len(batch), batch.device, generator))
    return {"loss": generator_loss(fake_logits),
            "fake_score": torch.sigmoid(fake_logits.detach()).mean()}


@torch.no_grad()
def sample(model: GAN, num: int, *, generator: torch.Generator | None = None,
           batch_size: int | None = None) -> torch.Tensor:
    """`num` images in [0, 1] on the CPU, generated from prior draws made on the CPU."""
    latents = model.draw_latents(num, generator)
    with evaluating(model):
        return decode_in_batches(model.generator, latents, model_device(model), batch_size)


@torch.no_grad()
def interpolate(model: GAN, z0: torch.Tensor, z1: torch.Tensor, steps: int,
                batch_size: int | None = None) -> torch.Tensor:
    """Images along the straight lines from z0 to z1 ((D,) or (N, D) each), path by path:
    (N * steps, C, H, W) on the CPU, both ends included."""
    latents = interpolation_latents(z0, z1, steps)
    with evaluating(model):
        return decode_in_batches(model.generator, latents, model_device(model), batch_size)
