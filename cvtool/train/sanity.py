"""The notes' sanity checks, run on copies of the freshly initialised model before training.

- initial loss beside its expected value (log C for softmax, C - 1 for the hinge loss);
- a numeric gradient check of a few weights, in float64 (centred differences);
- per-layer activation and gradient statistics, flagging vanishing or exploding values;
- with --sanity, overfitting a tiny subset to near-zero loss.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from cvtool.train.loop import LoopSettings
from cvtool.train.optim import data_loss, expected_initial_loss, make_optimizer, penalty

INITIAL_LOSS_TOLERANCE = 0.15  # relative; kaiming-initialised nets land within a few percent
GRADIENT_CHECK_TOLERANCE = 1e-4  # relative; kinks (ReLU, hinge, max-pool) allow some slack
GRADIENT_CHECK_ENTRIES = 4  # per checked weight tensor (the first and the last layer)
VANISHING, EXPLODING = 1e-3, 1e2  # std of a layer's outputs or of a weight's gradient
OVERFIT_EXAMPLES, OVERFIT_STEPS, OVERFIT_LOSS = 20, 300, 0.01
_ACTIVATION_TYPES = (nn.Sigmoid, nn.Tanh, nn.ReLU, nn.LeakyReLU, nn.ELU)


def first_examples(dataset: Dataset, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    items = [dataset[index] for index in range(min(count, len(dataset)))]
    return torch.stack([image for image, _ in items]), torch.tensor([label for _, label in items])


def initial_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor],
                 settings: LoopSettings, num_classes: int) -> dict[str, Any]:
    """The data loss before any update, as training's first step sees it (train mode)."""
    images, labels = batch
    with torch.no_grad():
        scores = copy.deepcopy(model).cpu().train()(images)
    observed = float(data_loss(settings.loss)(scores, labels))
    expected = expected_initial_loss(settings.loss, num_classes)
    return {"initial_loss": observed, "expected_initial_loss": expected,
            "initial_loss_agrees": abs(observed - expected) <= INITIAL_LOSS_TOLERANCE * expected}


def gradient_check(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor],
                   settings: LoopSettings, seed: int, step: float = 1e-6) -> dict[str, Any]:
    """Autograd against (f(w + h) - f(w - h)) / 2h on a few weights, in float64, eval mode
    (no dropout noise)."""
    double = copy.deepcopy(model).cpu().double().eval()
    images, labels = batch[0][:8].double(), batch[1][:8]
    loss = data_loss(settings.loss)

    def objective() -> torch.Tensor:
        return loss(double(images), labels) + penalty(double, settings.reg, settings.reg_strength)

    weights = [module.weight for module in double.modules()
               if isinstance(module, (nn.Linear, nn.Conv2d))]
    checked = [weights[0], weights[-1]] if len(weights) > 1 else weights
    double.zero_grad()
    objective().backward()
    generator = torch.Generator().manual_seed(seed)
    errors = [_relative_error(weight, int(index), objective, step) for weight in checked
              for index in torch.randint(weight.numel(), (GRADIENT_CHECK_ENTRIES,),
                                         generator=generator)]
    worst = max(errors)
    return {"checked": len(errors), "max_relative_error": worst,
            "passed": worst <= GRADIENT_CHECK_TOLERANCE}


def _relative_error(weight: nn.Parameter, index: int, objective: Any, step: float) -> float:
    analytic = float(weight.grad.view(-1)[index])
    flat = weight.data.view(-1)
    original = float(flat[index])
    with torch.no_grad():
        flat[index] = original + step
        plus = float(objective())
        flat[index] = original - step
        minus = float(objective())
        flat[index] = original
    numeric = (plus - minus) / (2 * step)
    return abs(analytic - numeric) / max(abs(analytic) + abs(numeric), 1e-8)


def layer_statistics(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor],
                     settings: LoopSettings) -> dict[str, Any]:
    """Mean and std of each layer's outputs and of each weight's gradient on one batch."""
    probe = copy.deepcopy(model).cpu().train()
    rows: dict[str, dict[str, Any]] = {}
    hooks = [module.register_forward_hook(_recorder(rows, name))
             for name, module in probe.named_modules()
             if isinstance(module, (nn.Linear, nn.Conv2d, *_ACTIVATION_TYPES))]
    loss = data_loss(settings.loss)(probe(batch[0]), batch[1])
    loss.backward()
    for hook in hooks:
        hook.remove()
    for name, module in probe.named_modules():
        # Layers called functionally (attention's out_proj) record no output: left out.
        if isinstance(module, (nn.Linear, nn.Conv2d)) and name in rows \
                and module.weight.grad is not None:
            rows[name]["gradient_std"] = float(module.weight.grad.std())
    layers = list(rows.values())
    return {"layers": layers, "flags": [flag for row in layers for flag in _flags(row)]}


def _recorder(rows: dict[str, dict[str, Any]], name: str) -> Any:
    def record(module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        output = output.detach()
        rows[name] = {"layer": name, "kind": type(module).__name__,
                      "activation_mean": float(output.mean()),
                      "activation_std": float(output.std())}
    return record


def _flags(row: dict[str, Any]) -> list[str]:
    flags = []
    for key, what in (("activation_std", "activations"), ("gradient_std", "gradients")):
        value = row.get(key)
        if value is not None and not VANISHING <= value <= EXPLODING:
            trend = "vanish" if value < VANISHING else "explode"
            flags.append(f"{row['layer']} ({row['kind']}): {what} {trend} (std {value:.2e})")
    return flags


def overfit_tiny_subset(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor],
                        settings: LoopSettings) -> dict[str, Any]:
    """Train a copy on a few examples without regularisation: the loss should reach ~0."""
    probe = copy.deepcopy(model).cpu().train()
    images, labels = batch[0][:OVERFIT_EXAMPLES], batch[1][:OVERFIT_EXAMPLES]
    optimizer = make_optimizer(settings.optimizer, list(probe.parameters()), settings.lr)
    loss_fn = data_loss(settings.loss)
    for step in range(1, OVERFIT_STEPS + 1):
        loss = loss_fn(probe(images), labels)
        if loss.item() <= OVERFIT_LOSS:
            break
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    final = loss.item()
    return {"examples": len(labels), "steps": step, "final_loss": final,
            "passed": final <= OVERFIT_LOSS}
