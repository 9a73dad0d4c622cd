"""A convolutional variational autoencoder (Kingma and Welling, 2014) with a Gaussian latent.

Encoder q(z|x) = N(mean(x), diag(exp(log_var(x)))), z drawn by the reparameterisation
z = mean + exp(log_var / 2) * eps, so gradients flow through the draw. The prior p(z) is
N(0, I), or with `prior_components` K > 0 a mixture of K diagonal Gaussians learnt with the
rest (Tomczak and Welling, 2018, discuss why): the encoder's codes of real digits do not fill
N(0, I) evenly, and draws from the holes between them decode to blends no digit looks like; a
learnt mixture puts the prior's mass where the codes are, and its bound is no looser.

The decoder's likelihood p(x|z) is a categorical over `levels` intensity levels per subpixel,
the same discrete quantisation PixelCNN models (an image in [0, 1] is read as its nearest levels).
Bernoulli would not be a distribution over grey values and a continuous density is not a
probability, so neither bound would be comparable with PixelCNN's NLL; with the categorical the
ELBO bounds the same discrete log-likelihood, in nats, and bits per dimension compare directly.
Decoded and sampled images are the decoder's most likely image, each subpixel's modal level:
the categorical's mean blurs a pixel the decoder is unsure about (stroke or paper) into grey,
and drawing every pixel independently would only add noise.

ELBO(x) = E_q[log p(x|z)] - KL(q(z|x) || p(z)): the reconstruction term by Monte Carlo, the KL
in closed form for N(0, I) and for a mixture estimated at the same draws, log q(z|x) - log p(z).
`importance_log_likelihood` is the IWAE estimate
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
                 latent_dim: int, width: int, prior_components: int = 0) -> None:
        super().__init__()
        check_channels_and_levels(channels, levels)
        self.channels, self.levels, self.image_size = channels, levels, image_size
        self.latent_dim = latent_dim
        self.encoder = ConvEncoder(channels, image_size, width, 2 * latent_dim, batch_norm=False)
        self.decoder = ConvDecoder(latent_dim, image_size, width, channels * levels,
                                   batch_norm=False)
        self.prior = MixturePrior(prior_components, latent_dim) if prior_components else None

    def prior_log_prob(self, latents: torch.Tensor) -> torch.Tensor:
        """log p(z) of each latent, (N,)."""
        if self.prior is None:
            return gaussian_log_prob(latents, torch.zeros_like(latents), torch.zeros_like(latents))
        return self.prior.log_prob(latents)

    def draw_latents(self, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """`num` draws from the prior, (num, latent_dim) on the CPU, made on the CPU from
        `generator` so a seed gives the same latents on any device."""
        if self.prior is None:
            return prior_latents(num, self.latent_dim, generator)
        return self.prior.draw(num, generator)

    def posterior(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z|x)'s mean and log variance, each (N, latent_dim)."""
        mean, log_var = self.encoder(images).chunk(2, dim=1)
        return mean, log_var

    def logits(self, latents: torch.Tensor) -> torch.Tensor:
        """p(x|z)'s logits, (N, C, levels, H, W)."""
        return self.decoder(latents).unflatten(1, (self.channels, self.levels))


class MixturePrior(nn.Module):
    """p(z) = sum_k pi_k N(z; mu_k, diag(exp(log_var_k))), all learnt; the means start spread
    out as N(0, I) draws, the variances at 1 and the weights equal."""

    def __init__(self, components: int, latent_dim: int) -> None:
        super().__init__()
        self.means = nn.Parameter(torch.randn(components, latent_dim))
        self.log_vars = nn.Parameter(torch.zeros(components, latent_dim))
        self.logits = nn.Parameter(torch.zeros(components))

    def log_prob(self, latents: torch.Tensor) -> torch.Tensor:
        per_component = gaussian_log_prob(latents[:, None], self.means, self.log_vars)
        return (per_component + self.logits.log_softmax(0)).logsumexp(1)

    @torch.no_grad()
    def draw(self, num: int, generator: torch.Generator | None) -> torch.Tensor:
        weights = self.logits.detach().float().cpu().softmax(0)
        chosen = torch.multinomial(weights, num, replacement=True, generator=generator) \
            if num else torch.zeros(0, dtype=torch.long)
        noise = prior_latents(num, self.means.shape[1], generator)
        means, log_vars = self.means.float().cpu()[chosen], self.log_vars.float().cpu()[chosen]
        return means + (0.5 * log_vars).exp() * noise


def vae(channels: int = 1, image_size: int | Sequence[int] = 8, levels: int = 256,
        latent_dim: int = 16, width: int = 32, prior_components: int = 0) -> VAE:
    """The checkpoint builder (`cvtool.generative.vae:vae`); kwargs are JSON. A checkpoint made
    before the mixture prior does not name `prior_components`: N(0, I)."""
    size = image_size_pair(image_size)
    model = VAE(channels, levels, size, latent_dim, width, prior_components)
    model.kwargs = {"channels": channels, "image_size": list(size), "levels": levels,
                    "latent_dim": latent_dim, "width": width,
                    "prior_components": prior_components}
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


def gaussian_log_prob(latents: torch.Tensor, mean: torch.Tensor,
                      log_var: torch.Tensor) -> torch.Tensor:
    """log N(z; mean, diag(exp(log_var))), summed over the last dimension: log q(z|x) of each
    latent, (N,), and the prior's per-component densities alike."""
    return -0.5 * ((latents - mean).pow(2) / log_var.exp() + log_var + _LOG_2PI).sum(-1)


def elbo(model: VAE, images: torch.Tensor, samples: int = 1,
         generator: torch.Generator | None = None
         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ELBO, reconstruction term, KL term) per image in nats, each (N,), for float images in
    [0, 1]; both terms average `samples` draws of z (the KL is exact for N(0, I))."""
    x_levels = to_levels(images, model.levels)
    mean, log_var = model.posterior(images)
    draws = [reparameterise(mean, log_var, generator) for _ in range(samples)]
    reconstruction = torch.stack([reconstruction_log_likelihood(model, latents, x_levels)
                                  for latents in draws]).mean(0)
    if model.prior is None:
        kl = kl_divergence(mean, log_var)
    else:
        kl = torch.stack([gaussian_log_prob(latents, mean, log_var)
                          - model.prior_log_prob(latents) for latents in draws]).mean(0)
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
        log_weights.append(reconstruction_log_likelihood(model, latents, x_levels)
                           + model.prior_log_prob(latents)
                           - gaussian_log_prob(latents, mean, log_var))
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
    """The decoder's most likely image in [0, 1] for each latent, (N, C, H, W): every
    subpixel at its modal level."""
    return model.logits(latents).float().argmax(dim=2).float() / (model.levels - 1)


@torch.no_grad()
def sample(model: VAE, num: int, *, generator: torch.Generator | None = None,
           batch_size: int | None = None) -> torch.Tensor:
    """`num` images in [0, 1] on the CPU, decoded from prior draws made on the CPU."""
    latents = model.draw_latents(num, generator)
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
