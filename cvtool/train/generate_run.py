"""`cvtool train generate`: a PixelCNN, VAE or GAN on digits or an image folder.

Data: `digits` (the classify trainer's seeded split: its train part is learnt, its val part is
the held-out test set) or `DIR/train/<class>/*` (`DIR/val/...` or `--val-split`), as float images
in [0, 1] at the data's own size (`--image-size` to change it) and channels (1 when every image
is grey, else 3). After each epoch: PixelCNN's val NLL in bits per dimension, the VAE's val
ELBO (nats per image) with its reconstruction and KL terms, and for digits `fid_digits` of
`--fid-samples` samples against the held-out digits; a sample grid from fixed draws goes to
samples/epoch-NNNN.png and samples.png. best.* is the epoch with the lowest val NLL (PixelCNN),
the highest val ELBO (VAE), or for the GAN the lowest FID (the latest epoch without digits).
The summary adds, for digits, `fid_digits` of 1000 samples of the best checkpoint beside the
real-vs-real floor for the same sample size.

The GAN's two players share one Adam (betas 0.5, 0.999 as in DCGAN; the other families use
torch's defaults) with the discriminator's step first: parameters without a gradient are left
alone by the step, so each player's update touches only its own parameters, and the run state
saves one optimiser like every other run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from cvtool.core.context import Environment
from cvtool.core.device import autocast, seed_everything
from cvtool.data.classification import DIGITS, digits_split, read_image_folder
from cvtool.generative import gan, pixelcnn, vae
from cvtool.generative.checkpoint import BUILDERS, describe
from cvtool.generative.images import write_grid
from cvtool.models.checkpoint import build_architecture
from cvtool.train import distributed
from cvtool.train.config import GenerateConfig
from cvtool.train.loop import EpochTrainer, IterationSettings, optimizer_step, require_finite
from cvtool.train.session import finish_run, parameters, start_run, train_epochs

DIGIT_LEVELS = 17  # the digits' own 0..16
GRID_SAMPLES = 64
GRID_SEED = 12345
SUMMARY_FID_SAMPLES = 1000
EVAL_BATCH = 256
FIGURES = {"pixelcnn": ["nll_bits_per_dim"], "vae": ["elbo", "val_reconstruction", "val_kl"],
           "gan": []}
AXES = {"nll_bits_per_dim": "held-out NLL (bits/dim)", "elbo": "held-out ELBO (nats/image)",
        "val_reconstruction": "reconstruction (nats/image)", "val_kl": "KL (nats/image)",
        "fid_digits": "fid_digits (lower is better)"}


class Images(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor]:
        return (self.images[index],)


def train_generate(env: Environment, config: GenerateConfig | None, run_dir: Path,
                   resume: bool, force: bool, device: str, threads: int | None) -> dict[str, Any]:
    """Train (or, with `resume`, continue) the run in `run_dir`; returns its summary."""
    config, target = start_run(env, run_dir, resume, force, config, GenerateConfig, device, threads)
    train, val, description = load_images(config)
    seed_everything(config.seed)
    channels, size = train.shape[1], list(train.shape[2:])
    levels = config.levels or (DIGIT_LEVELS if config.data == DIGITS else 256)
    kwargs: dict[str, Any] = {"channels": channels, "image_size": size, "width": config.width}
    if config.model == "pixelcnn":
        kwargs.update(levels=levels, layers=config.layers, gated=True, dropout=config.dropout)
    elif config.model == "vae":
        kwargs.update(levels=levels, latent_dim=config.latent_dim,
                      prior_components=config.prior_components)
    else:
        kwargs.update(latent_dim=config.latent_dim)
    architecture = {"builder": BUILDERS[config.model], "kwargs": kwargs}
    module = build_architecture({"architecture": architecture})
    meta = {"task": "generate", "architecture": architecture, "generative": describe(module),
            "training": {"config": config.to_dict(), "data": description}}
    if distributed.WORLD.distributed:
        # The model is rank 0's on every rank (DDP broadcasts it); the noise each rank draws
        # (a VAE's reparameterisation, a GAN's latents) must differ, or the ranks' fakes repeat.
        torch.manual_seed(config.seed * 1000 + distributed.WORLD.rank)
    trainer = GenerativeTrainer(module, config, train, val, target, run_dir)
    introduction = (f"{config.model}: {parameters(module) / 1e6:.3f}M parameters, "
                    f"{len(train)} train and {len(val)} held-out images of {channels}x"
                    f"{size[0]}x{size[1]}")
    state = train_epochs(env, run_dir, trainer, config, meta, (resume, force), trainer.figure_keys,
                         introduction)
    details: dict[str, Any] = {"parameters": parameters(module), "val_images": len(val)}
    # For digits the summary's fid_digits is that of 1000 samples of best.* (metrics.jsonl has
    # each epoch's over --fid-samples).
    if config.data == DIGITS:
        details.update(distributed.on_main(lambda: _final_fid(run_dir, config, env)))
    return finish_run(env, run_dir, state, trainer.panels, trainer.figure_keys, details)


def load_images(config: GenerateConfig) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """(train, held-out) float images in [0, 1], (N, C, H, W), and their description."""
    if config.data == DIGITS:
        train, val, _ = digits_split(config.seed, config.val_split)
        split = "stratified"
    else:
        train, val, _, split = read_image_folder(Path(config.data), config.val_split,
                                                 config.seed, min_classes=1)
    size = config.image_size or max(train[0].load().size)
    tensors = [_to_tensor([example.load() for example in part], size) for part in (train, val)]
    grey = all(bool((t[:, 0:1] == t).all()) for t in tensors)
    if grey:
        tensors = [t[:, :1] for t in tensors]
    description = {"data": config.data, "split": split, "seed": config.seed,
                   "image_size": size, "channels": 1 if grey else 3,
                   "counts": {"train": len(train), "val": len(val)}}
    return tensors[0], tensors[1], description


def _to_tensor(images: list, size: int) -> torch.Tensor:
    from torchvision.transforms.v2 import functional as F

    converted = []
    for image in images:
        tensor = F.to_dtype(F.to_image(image), torch.float32, scale=True)
        if tuple(tensor.shape[-2:]) != (size, size):
            tensor = F.resize(tensor, [size, size], antialias=True).clamp(0, 1)
        converted.append(tensor)
    return torch.stack(converted)


class Objective(nn.Module):
    """A family's training losses as one module's forward (a GAN's: the player's, as asked),
    which is what DDP can wrap under torchrun: each rank's gradients are averaged over the
    ranks in that player's backward, as for the other trainers' models."""

    def __init__(self, model: nn.Module, family: str) -> None:
        super().__init__()
        self.model, self.family = model, family

    def forward(self, images: torch.Tensor, player: str = "") -> dict[str, torch.Tensor]:
        if self.family == "gan":
            losses = (gan.discriminator_losses if player == "discriminator"
                      else gan.generator_losses)
            return losses(self.model, images)
        return (pixelcnn.training_losses if self.family == "pixelcnn"
                else vae.training_losses)(self.model, images)


class GenerativeTrainer(EpochTrainer):
    def __init__(self, model: nn.Module, config: GenerateConfig, train: torch.Tensor,
                 val: torch.Tensor, device: torch.device, run_dir: Path) -> None:
        settings = IterationSettings(
            optimizer=config.optimizer, lr=config.resolved_lr, weight_decay=config.weight_decay,
            schedule=config.schedule, warmup=config.warmup, epochs=config.epochs,
            batch_size=config.batch_size, seed=config.seed, precision=config.precision)
        super().__init__(model, settings, device, Images(train),
                         objective=lambda module: Objective(module, config.model))
        if config.model == "gan" and config.optimizer == "adam":
            for group in self.optimizer.param_groups:
                group["betas"] = (0.5, 0.999)
        self.family, self.val, self.run_dir = config.model, val, run_dir
        self.digits = config.data == DIGITS
        self.fid_samples = config.fid_samples
        self.figure_keys = FIGURES[self.family] + (["fid_digits"] if self.digits else [])
        self.score_key = "score"
        losses = (("discriminator_loss", "generator_loss") if self.family == "gan"
                  else ("train_loss",))
        # One axis per quantity, each with its unit: ELBO, KL and FID differ by 100x.
        self.panels = (("train loss", losses),
                       *((AXES.get(key, key), (key,)) for key in self.figure_keys))
        self.classifier = None

    def losses(self, batch: tuple[torch.Tensor]) -> dict[str, torch.Tensor]:
        parts = self.train_module(batch[0].to(self.device))
        # Train-set figures, apart from the held-out ones evaluate() reports under plain names.
        return {key if key == "loss" else f"train_{key}": value for key, value in parts.items()}

    def step(self, batch: tuple[torch.Tensor], share: float = 1.0) -> dict[str, float]:
        if self.family != "gan":
            return super().step(batch, share)
        images = batch[0].to(self.device)
        numbers: dict[str, float] = {}
        for player in ("discriminator", "generator"):
            with autocast(self.device, self.settings.precision):
                parts = self.train_module(images, player)
            loss = require_finite(parts["loss"].float(), player, "lower --lr")
            if share != 1.0:  # this rank's part of the global batch (see EpochTrainer.step)
                loss = loss * share
            if player == "generator":  # only the generator's parameters may move now
                loss.backward()
                self.model.discriminator.zero_grad(set_to_none=True)
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.optimizer.zero_grad(set_to_none=True)
            else:
                optimizer_step(self.optimizer, self.scaler, loss)
            numbers.update({f"{player}_{key}": float(value.detach())
                            for key, value in parts.items()})
        numbers["loss"] = numbers["generator_loss"]
        return numbers

    @torch.no_grad()
    def evaluate(self, module: nn.Module) -> dict[str, float]:
        module.eval()
        figures: dict[str, float] = {}
        if self.family == "pixelcnn":
            bits = [pixelcnn.bits_per_dim(module, _levels(chunk, module))
                    for chunk in self._val_chunks()]
            figures["nll_bits_per_dim"] = float(torch.cat(bits).mean())
            figures["score"] = -figures["nll_bits_per_dim"]
        elif self.family == "vae":
            generator = torch.Generator().manual_seed(0)
            terms = [vae.elbo(module, chunk, generator=generator) for chunk in self._val_chunks()]
            elbo, reconstruction, kl = (torch.cat(parts).mean() for parts in zip(*terms))
            figures.update(elbo=float(elbo), val_reconstruction=float(reconstruction),
                           val_kl=float(kl), score=float(elbo))
        samples = generate(module, self.family, GRID_SAMPLES, GRID_SEED)
        write_grid(self.run_dir / "samples" / f"epoch-{self.epoch:04d}.png", samples)
        write_grid(self.run_dir / "samples.png", samples)
        if self.digits:
            figures["fid_digits"] = self._fid(module, self.fid_samples)
            if self.family == "gan":
                figures["score"] = -figures["fid_digits"]
        figures.setdefault("score", float(self.epoch))  # a GAN without digits: the latest is best
        module.train()
        return figures

    def _val_chunks(self) -> list[torch.Tensor]:
        return [chunk.to(self.device) for chunk in self.val.split(EVAL_BATCH)]

    def _fid(self, module: nn.Module, num: int) -> float:
        from cvtool.generative.fid import fid_digits
        from cvtool.models.classification import load_classifier

        self.classifier = self.classifier or load_classifier("digits-cnn")
        samples = generate(module, self.family, num, self.settings.seed)
        return fid_digits(samples, classifier=self.classifier, seed=self.settings.seed)


def _levels(images: torch.Tensor, module: nn.Module) -> torch.Tensor:
    from cvtool.generative.layers import to_levels

    return to_levels(images, module.levels)


def generate(module: nn.Module, family: str, num: int, seed: int) -> torch.Tensor:
    """`num` samples in [0, 1] on the CPU, from a generator seeded with `seed`."""
    generator = torch.Generator().manual_seed(seed)
    sampler = {"pixelcnn": pixelcnn.sample, "vae": vae.sample, "gan": gan.sample}[family]
    return sampler(module, num, generator=generator, batch_size=EVAL_BATCH)


def _final_fid(run_dir: Path, config: GenerateConfig, env: Environment) -> dict[str, Any]:
    """fid_digits of 1000 samples of best.*, beside the real-vs-real floor at that size, and
    the share of each digit among the samples as digits-cnn classifies them."""
    from cvtool.generative.checkpoint import load_generative
    from cvtool.generative.fid import digit_shares, fid_digits, real_floor
    from cvtool.models.classification import load_classifier

    loaded = load_generative(str(run_dir / "best.safetensors"))
    classifier = load_classifier("digits-cnn")
    samples = generate(loaded.module, config.model, SUMMARY_FID_SAMPLES, config.seed)
    fid = fid_digits(samples, classifier=classifier, seed=config.seed,
                     val_split=config.val_split)
    floor = real_floor(SUMMARY_FID_SAMPLES, seed=config.seed, val_split=config.val_split,
                       classifier=classifier)
    shares = digit_shares(samples, classifier)
    env.log(f"fid_digits {fid:.3f} over {SUMMARY_FID_SAMPLES} samples; real-vs-real floor "
            f"{floor:.3f} (ratio {fid / floor:.2f})")
    return {"fid_digits": fid, "fid_samples": SUMMARY_FID_SAMPLES, "fid_real_floor": floor,
            "fid_ratio": fid / floor,
            "digit_shares": [round(float(share), 4) for share in shares]}
