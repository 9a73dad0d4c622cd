"""Losses, regularisation, optimisers and learning-rate schedules, by the names the CLI uses."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

LOSSES = ("ce", "svm")
REGULARISERS = ("none", "l1", "l2")
OPTIMIZERS = ("sgd", "momentum", "adagrad", "rmsprop", "adam")
SCHEDULES = ("constant", "step", "cosine")
MOMENTUM = 0.9

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def data_loss(name: str) -> Loss:
    """Mean over the batch of the per-example loss of the notes."""
    if name == "ce":
        return F.cross_entropy
    if name == "svm":
        return multiclass_hinge
    raise ValueError(f"unknown loss {name!r}; choose from {', '.join(LOSSES)}")


def multiclass_hinge(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """L_i = sum over j != y_i of max(0, s_j - s_yi + 1): about C - 1 when all scores are ~0.

    torch's multi_margin_loss divides that sum by C; multiplying back gives the notes' loss.
    """
    return F.multi_margin_loss(scores, labels, margin=1.0) * scores.shape[1]


def expected_initial_loss(loss: str, num_classes: int) -> float:
    """The loss of near-zero scores: log C for softmax, C - 1 for the hinge loss."""
    return math.log(num_classes) if loss == "ce" else float(num_classes - 1)


def penalised_weights(model: nn.Module) -> list[torch.Tensor]:
    """The weights R(W) regularises: conv and linear weights, not biases or batch-norm scales."""
    return [module.weight for module in model.modules()
            if isinstance(module, (nn.Linear, nn.Conv2d)) and module.weight.requires_grad]


def penalty(model: nn.Module, reg: str, strength: float) -> torch.Tensor | float:
    """lambda R(W): L1 concentrates weight on few inputs, L2 spreads it (the notes)."""
    if reg == "none" or strength == 0:
        return 0.0
    if reg == "l1":
        return strength * sum(weight.abs().sum() for weight in penalised_weights(model))
    if reg == "l2":
        return strength * sum(weight.pow(2).sum() for weight in penalised_weights(model))
    raise ValueError(f"unknown regulariser {reg!r}; choose from {', '.join(REGULARISERS)}")


def make_optimizer(name: str, parameters: list[nn.Parameter], lr: float,
                   weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """`weight_decay` is torch's own (decoupled for adam, i.e. AdamW), on every parameter."""
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=lr, weight_decay=weight_decay)
    if name == "momentum":
        return torch.optim.SGD(parameters, lr=lr, momentum=MOMENTUM, weight_decay=weight_decay)
    if name == "adagrad":
        return torch.optim.Adagrad(parameters, lr=lr, weight_decay=weight_decay)
    if name == "rmsprop":
        return torch.optim.RMSprop(parameters, lr=lr, weight_decay=weight_decay)
    if name == "adam":
        if weight_decay:
            return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
        return torch.optim.Adam(parameters, lr=lr)
    raise ValueError(f"unknown optimizer {name!r}; choose from {', '.join(OPTIMIZERS)}")


def lr_factor(schedule: str, epoch: int, epochs: int) -> float:
    """The multiplier of the base learning rate during `epoch` (0-based).

    A pure function of the epoch: a resumed run needs no scheduler state to continue exactly.
    step: x0.1 from 1/2 and again from 3/4 of the run; cosine: from 1 down towards 0.
    """
    if schedule == "constant":
        return 1.0
    if schedule == "step":
        return 0.1 ** sum(epoch >= milestone for milestone in {epochs // 2, 3 * epochs // 4}
                          if milestone > 0)
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * epoch / max(1, epochs)))
    raise ValueError(f"unknown schedule {schedule!r}; choose from {', '.join(SCHEDULES)}")


def warmup_factor(step: int, warmup: int) -> float:
    """Linear warm-up over the first `warmup` iterations (0-based `step`), then 1."""
    return 1.0 if step >= warmup else (step + 1) / warmup
