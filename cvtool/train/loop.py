"""The one training loop every trainer shares (EpochTrainer), and its classifier (Trainer).

Epoch N shuffles with a generator seeded by (seed, N) and the global RNG (dropout,
augmentation) is part of the saved state, so a resumed run retraces an uninterrupted one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from cvtool.core.device import autocast
from cvtool.core.status import UsageError
from cvtool.train import distributed
from cvtool.train.optim import data_loss, lr_factor, make_optimizer, penalty, warmup_factor
from cvtool.train.state import TrainingState


@dataclass
class Evaluation:
    loss: float
    accuracy: float
    predictions: list[int]
    labels: list[int]


EpochDone = Callable[[TrainingState, bool], None]


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """Loss scaling where fp16 needs it (CUDA); a pass-through everywhere else."""
    return torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and precision == "fp16")


def optimizer_step(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                   loss: torch.Tensor) -> None:
    """One update from `loss`, the same in every trainer."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


def require_finite(loss: torch.Tensor, what: str, advice: str) -> torch.Tensor:
    """`loss`, unless it is NaN or infinite: then a one-line error saying what to change."""
    if not math.isfinite(loss.item()):
        raise UsageError(f"the {what} loss became {loss.item()}; {advice}")
    return loss


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


@dataclass(frozen=True)
class IterationSettings:
    """What the iteration-level trainers (detection, segmentation, generative) share."""

    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "cosine"
    warmup: int = 0  # iterations of linear warm-up
    epochs: int = 10
    batch_size: int = 8
    seed: int = 0
    precision: str = "fp32"
    workers: int = 0  # DataLoader worker processes (0: load in the training process)
    sync_bn: bool = False  # under torchrun: batch norm over the global batch


def data_loader(dataset: Dataset, settings: IterationSettings, **kwargs: Any) -> DataLoader:
    """The loader every trainer uses: `settings.workers` processes decode files (none for data
    already in memory). Each epoch's loader seeds its workers from its own generator, so a
    resumed run, with the same workers, draws what an uninterrupted one did."""
    workers = 0 if getattr(dataset, "in_memory", False) else settings.workers
    return DataLoader(dataset, batch_size=kwargs.pop("batch_size", settings.batch_size),
                      num_workers=workers, persistent_workers=False, **kwargs)


def batches(loader: DataLoader) -> Iterator[Any]:
    """`loader`'s batches; a UsageError raised in a worker (a file that will not decode) comes
    back as cvtool's one line, not as the worker's traceback."""
    try:
        yield from loader
    except Exception as error:  # noqa: BLE001 - re-raised, reworded only for UsageError
        text = str(error)
        if "Caught UsageError in DataLoader worker" not in text:
            raise
        raise UsageError(text.strip().splitlines()[-1].partition("UsageError: ")[2]) from None


class EpochTrainer:
    """The epoch driver of the trainers that score on a val split after each epoch.

    Subclasses say what a batch's losses are (`losses`: the "loss" entry is minimised, the others
    are logged) and how the model scores (`evaluate`: named figures, `score_key` picks the best
    epoch). The learning rate is a pure function of the iteration: warm-up times the per-epoch
    schedule; each epoch shuffles with its own seeded generator, so a resumed run retraces an
    uninterrupted one.
    """

    score_key = "score"
    epoch = 0  # the epoch being trained or evaluated

    def __init__(self, model: nn.Module, settings: IterationSettings, device: torch.device,
                 train_set: Dataset, collate_fn: Callable | None = None,
                 objective: Callable[[nn.Module], nn.Module] | None = None) -> None:
        model = model.to(device)
        if distributed.WORLD.distributed and settings.sync_bn:
            model = distributed.convert_sync_batch_norm(model, device)
        self.model, self.settings, self.device = model, settings, device
        self.train_set, self.collate_fn = train_set, collate_fn
        trainable = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(settings.optimizer, trainable, settings.lr,
                                        settings.weight_decay)
        self.scaler = grad_scaler(device, settings.precision)
        # What `losses` runs the training forward through: the model, or the module
        # `objective(model)` whose forward computes the losses (a generative model's); under
        # torchrun, DDP over it (gradients averaged across ranks). `model` itself is what is
        # evaluated and saved.
        forward = model if objective is None else objective(model)
        if objective is not None:  # a GAN's step leaves one player's parameters unused
            setattr(forward, distributed.UNUSED_PARAMETERS, True)
        self.train_module = (distributed.replicate(forward, device)
                             if distributed.WORLD.distributed else forward)

    def losses(self, batch: Any) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def evaluate(self, module: nn.Module) -> dict[str, float]:
        raise NotImplementedError

    def fit(self, state: TrainingState, epoch_done: EpochDone,
            batch_done: Callable[[], None] = lambda: None) -> TrainingState:
        """Train the remaining epochs. Under torchrun, rank 0 alone evaluates (the whole val
        set, once) and commits each epoch; every rank gets its figures, so all decide alike."""
        for epoch in range(state.epoch + 1, self.settings.epochs + 1):
            started = time.perf_counter()
            self.epoch = epoch  # evaluate() may name files after it
            losses = self._train_epoch(epoch, batch_done)
            figures = distributed.on_main(lambda: self.evaluate(self.model))
            improved = state.best_epoch == 0 or figures[self.score_key] > state.best_score
            if improved:
                state.best_epoch, state.best_score = epoch, figures[self.score_key]
            state.epoch = epoch
            state.history.append({"epoch": epoch, **losses, **figures,
                                  "seconds": round(time.perf_counter() - started, 3)})
            distributed.on_main(lambda: epoch_done(state, improved))
        return state

    def step(self, batch: Any, share: float = 1.0) -> dict[str, float]:
        """One optimisation step on `batch`; returns the losses as numbers. `share` weights the
        loss under torchrun (`distributed.RankShare.loss_share`)."""
        with autocast(self.device, self.settings.precision):
            parts = self.losses(batch)
        loss = require_finite(parts["loss"].float(), "training",
                              f"lower --lr (now {self.settings.lr}) or raise --warmup")
        optimizer_step(self.optimizer, self.scaler, loss * share if share != 1.0 else loss)
        return {key: float(value.detach()) for key, value in parts.items()}

    def _train_epoch(self, epoch: int, batch_done: Callable[[], None]) -> dict[str, float]:
        settings = self.settings
        seed = settings.seed * 100_003
        # One permutation of the training set per epoch, seeded by (seed, epoch); under
        # torchrun each rank takes every WORLD.size-th example of it, so the ranks' batches
        # together are the batch one process takes. The generator seeds loader workers.
        share = distributed.RankShare(len(self.train_set), settings.batch_size, seed, epoch)
        loader = data_loader(self.train_set, settings, collate_fn=self.collate_fn,
                             batch_size=distributed.local_batch_size(settings.batch_size),
                             sampler=share,
                             generator=torch.Generator().manual_seed(seed + epoch))
        self.model.train()
        totals: dict[str, float] = {}
        first_step = (epoch - 1) * len(loader)
        base = settings.lr * lr_factor(settings.schedule, epoch - 1, settings.epochs)
        lr, seen = base, 0
        for index, batch in enumerate(batches(loader)):
            lr = base * warmup_factor(first_step + index, settings.warmup)
            set_lr(self.optimizer, lr)
            size = len(batch[0])
            for key, value in self.step(batch, share.loss_share(index, size)).items():
                name = "train_loss" if key == "loss" else key
                totals[name] = totals.get(name, 0.0) + value * size
            seen += size
            batch_done()
        totals = distributed.sum_over_ranks({**totals, "examples seen": seen})
        seen = totals.pop("examples seen")
        return {"lr": lr, **{key: value / max(1, seen) for key, value in totals.items()}}


@dataclass(frozen=True)
class LoopSettings(IterationSettings):
    """The classifiers' settings: the shared ones with a classifier's defaults, and its loss."""

    optimizer: str = "adam"
    lr: float = 1e-3
    schedule: str = "constant"
    epochs: int = 10
    batch_size: int = 64
    loss: str = "ce"
    reg: str = "none"
    reg_strength: float = 0.0
    compile: bool = False


class Trainer(EpochTrainer):
    """Every neural classifier: linear, MLP, CNN and torchvision nets, on (image, label) data;
    the best epoch is the one with the highest val accuracy."""

    score_key = "val_accuracy"

    def __init__(self, model: nn.Module, settings: LoopSettings, device: torch.device,
                 train: Dataset, val: Dataset) -> None:
        super().__init__(model, settings, device, train)
        self.val = val
        self.loss = data_loss(settings.loss)
        # Only the training forward is compiled; evaluation runs the module as it is.
        self.forward = (torch.compile(self.train_module) if settings.compile
                        else self.train_module)

    def objective(self, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Data loss plus lambda R(W): what the optimiser minimises."""
        settings = self.settings
        return self.loss(scores.float(), labels) + penalty(self.model, settings.reg,
                                                           settings.reg_strength)

    def losses(self, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        images, labels = (tensor.to(self.device) for tensor in batch)
        scores = self.forward(images)
        return {"loss": self.objective(scores, labels),
                "train_accuracy": (scores.argmax(1) == labels).float().mean()}

    def evaluate(self, module: nn.Module) -> dict[str, float]:
        evaluation = self.evaluation(module, self.val)
        require_finite(torch.tensor(evaluation.loss), "validation",
                       f"the model diverged: lower --lr (now {self.settings.lr})")
        return {"val_loss": evaluation.loss, "val_accuracy": evaluation.accuracy}

    @torch.no_grad()
    def evaluation(self, module: nn.Module, dataset: Dataset) -> Evaluation:
        """Mean data loss, accuracy and the predicted class of every example, in order."""
        module.eval()
        total_loss, predictions, labels = 0.0, [], []
        batch_size = max(256, self.settings.batch_size)
        for images, batch_labels in batches(data_loader(dataset, self.settings,
                                                        batch_size=batch_size)):
            images, batch_labels = images.to(self.device), batch_labels.to(self.device)
            with autocast(self.device, self.settings.precision):
                scores = module(images)
            total_loss += float(self.loss(scores.float(), batch_labels)) * len(batch_labels)
            predictions += scores.argmax(1).tolist()
            labels += batch_labels.tolist()
        correct = sum(p == t for p, t in zip(predictions, labels))
        return Evaluation(total_loss / max(1, len(labels)), correct / max(1, len(labels)),
                          predictions, labels)


def loop_settings(config: dict[str, Any]) -> LoopSettings:
    """The loop's part of a run's config.json."""
    return LoopSettings(**{key: config[key] for key in LoopSettings.__dataclass_fields__
                           if key in config})
