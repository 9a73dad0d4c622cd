"""A convolutional variational autoencoder (Kingma and Welling, 2014) with a Gaussian latent.

Encoder q(z|x) = N(mean(x), diag(exp(log_var(x)))), prior p(z) = N(0, I), z drawn by the
reparameterisation z = mean + exp(log_var / 2) * eps, so gradients flow through the draw.

The decoder's likelihood p(x|z) is a categorical over `levels` intensity levels per subpixel,
the same discrete quantisation PixelCNN models (an image in [0, 1] is read as its nearest levels).
Bernoulli would not be a distribution over grey values and a continuous density is not a
probability, so neither bound would be comparable with PixelCNN's NLL; with the categorical the
ELBO bounds the same discrete log-likelihood, in nats, and bits per dimension compare directly.
Decoded and sampled images are the decoder's expected intensity (the mean of the categorical),
which is what VAE samples usually show; drawing every pixel independently would only add noise.

ELBO(x) = E_q[log p(x|z)] - KL(q(z|x) || p(z)): the reconstruction term by Monte Carlo, the KL
in closed form. `importance_log_likelihood` is the IWAE estimate
log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x), z_k ~ q(z|x), which tightens towards log p(x) as K
grows and is never below the ELBO in expectation.
"""

from __future__ import annotations

import math
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
    to_levels,
)

_LOG_2PI = math.log(2 * math.pi)


class VAE(nn.Module):
    family = "vae"

    def __init__(self, channels: int, levels: int, image_size: tuple[int, int],
                 latent_dim: int, width: int) -> None:
        super().__init__()
        check_channels_and_levels(channels, levels)
        self.channels, self.levels, self.image_size = channels, levels, image_size
        self.latent_dim = latent_dim
        self.encoder = ConvEncoder(channels, image_size, width, 2 * latent_dim, batch_norm=False)
        self.decoder = ConvDecoder(latent_dim, image_size, width, channels * levels,
                                   batch_norm=False)

    def posterior(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z|x)'s mean and log variance, each (N, latent_dim)."""
        mean, log_var = self.encoder(images).chunk(2, dim=1)
        return mean, log_var

    def logits(self, latents: torch.Tensor) -> torch.Tensor:
        """p(x|z)'s logits, (N, C, levels, H, W)."""
        return self.decoder(latents).unflatten(1, (self.channels, self.levels))


def vae(channels: int = 1, image_size: int | Sequence[int] = 8, levels: int = 256,
        latent_dim: int = 16, width: int = 32) -> VAE:
    """The checkpoint builder (`cvtool.generative.vae:vae`); kwargs are JSON."""
    size = image_size_pair(image_size)
    model = VAE(channels, levels, size, latent_dim, width)
    model.kwargs = {"channels": channels, "image_size": list(size), "levels": levels,
                    "latent_dim": latent_dim, "width": width}
    return model


def reparameterise(mean: torch.Tensor, log_var: torch.Tensor,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """z = mean + sigma * eps, eps ~ N(0, I) (from `generator`, a CPU generator, when given)."""
    if generator is None:
        noise = torch.randn_like(mean)
    else:
        noise = torch.randn(mean.shape, generator=generator).to(mean.device)
    return mean + (0.5 * log_var).exp() * noise


def reconstruction_log_likelihood(model: VAE, latents: torch.Tensor,
                                  x_levels: torch.Tensor) -> torch.Tensor:
    """log p(x|z) of each image in nats, (N,)."""
    per_subpixel = F.cross_entropy(model.logits(latents).float().transpose(1, 2), x_levels,
                                   reduction="none")
    return -per_subpixel.flatten(1).sum(1)


def kl_divergence(mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(log_var)) || N(0, I)) per image, in closed form, (N,)."""
    return 0.5 * (mean.pow(2) + log_var.exp() - 1 - log_var).sum(1)


def elbo(model: VAE, images: torch.Tensor, samples: int = 1,
         generator: torch.Generator | None = None
         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ELBO, reconstruction term, KL term) per image in nats, each (N,), for float images in
    [0, 1]; the reconstruction term averages `samples` draws of z."""
    x_levels = to_levels(images, model.levels)
    mean, log_var = model.posterior(images)
    reconstruction = torch.stack([
        reconstruction_log_likelihood(model, reparameterise(mean, log_var, generator), x_levels)
        for _ in range(samples)]).mean(0)
    kl = kl_divergence(mean, log_var)
    return reconstruction - kl, reconstruction, kl


@torch.no_grad()
def importance_log_likelihood(model: VAE, images: torch.Tensor, samples: int = 100,
                              generator: torch.Generator | None = None) -> torch.Tensor:
    """The IWAE estimate of log p(x) per image in nats, (N,), from `samples` draws of q(z|x)."""
    x_levels = to_levels(images, model.levels)
    mean, log_var = model.posterior(images)
    log_weights = []
    for _ in range(samples):
        latents = reparameterise(mean, log_var, generator)
        log_prior = -0.5 * (latents.pow(2) + _LOG_2PI).sum(1)
        log_posterior = -0.5 * ((latents - mean).pow(2) / log_var.exp() + log_var
                                + _LOG_2PI).sum(1)
        log_weights.append(reconstruction_log_likelihood(model, latents, x_levels)
                           + log_prior - log_posterior)
    return torch.stack(log_weights).logsumexp(0) - math.log(samples)


def training_losses(model: VAE, batch: torch.Tensor,
                    generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """One batch of float images in [0, 1], (N, C, H, W) on the model's device.

    `loss` (to minimise) is the negative ELBO in nats per dimension, averaged over the batch;
    `elbo`, `reconstruction` and `kl` are per-image means in nats, detached, for the report.
    """
    bound, reconstruction, kl = elbo(model, batch, generator=generator)
    return {"loss": -bound.mean() / batch[0].numel(), "elbo": bound.detach().mean(),
            "reconstruction": reconstruction.detach().mean(), "kl": kl.detach().mean()}


def decode(model: VAE, latents: torch.Tensor) -> torch.Tensor:
    """The decoder's expected image in [0, 1] for each latent, (N, C, H, W)."""
    values = torch.linspace(0, 1, model.levels, device=latents.device).view(1, 1, -1, 1, 1)
    return (model.logits(latents).float().softmax(dim=2) * values).sum(2)


@torch.no_grad()
def sample(model: VAE, num: int, *, generator: torch.Generator | None = None,
           batch_size: int | None = None) -> torch.Tensor:
    """`num` images in [0, 1] on the CPU, decoded from prior draws made on the CPU."""
    latents = prior_latents(num, model.latent_dim, generator)
    with evaluating(model):
        return decode_in_batches(lambda z: decode(model, z), latents, model_device(model),
                                 batch_size)


@torch.no_grad()
def interpolate(model: VAE, z0: torch.Tensor, z1: torch.Tensor, steps: int,
                batch_size: int | None = None) -> torch.Tensor:
    """Images along the straight lines from z0 to z1 ((D,) or (N, D) each), path by path:
    (N * steps, C, H, W) on the CPU, both ends included."""
    latents = interpolation_latents(z0, z1, steps)
    with evaluating(model):
        return decode_in_batches(lambda z: decode(model, z), latents, model_device(model),
                                 batch_size)
