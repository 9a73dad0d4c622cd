"""The training loop's parts on tiny in-memory data: sanity checks, batch-norm folding, and every
optimiser, activation, init and training option changing what is trained."""

from __future__ import annotations

import math

import pytest
import torch

from cvtool.models.small import cnn, fold_batch_norm, mlp
from cvtool.train import sanity
from cvtool.train.architectures import build_classifier
from cvtool.train.config import ClassifyConfig
from cvtool.train.loop import Trainer, loop_settings
from cvtool.train.state import TrainingState

SHAPE, CLASSES = (3, 8, 8), 10


class Items:
    """Map-style dataset of (image, int label), as the data layer hands them out."""

    def __init__(self, count: int, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.images = torch.randn(count, *SHAPE, generator=generator)
        self.labels = torch.arange(count) % CLASSES

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])


def _model(**options):
    config = ClassifyConfig(data="unused", **options)
    torch.manual_seed(0)
    module, _ = build_classifier(config, SHAPE, CLASSES, offline=True, warn=print)
    return module, config


def _trained(**options) -> dict[str, torch.Tensor]:
    module, config = _model(**{"model": "mlp", "epochs": 2, "batch_size": 16, **options})
    settings = loop_settings({**config.to_dict(), "lr": config.resolved_lr})
    trainer = Trainer(module, settings, torch.device("cpu"), Items(64), Items(20, seed=1))
    trainer.fit(TrainingState(), lambda state, improved: None)
    return {key: value.clone() for key, value in module.state_dict().items()}


@pytest.mark.parametrize("loss, expected", [("ce", math.log(CLASSES)), ("svm", CLASSES - 1)])
def test_initial_loss_lands_on_log_c_and_c_minus_1(loss, expected):
    module, config = _model(model="linear", loss=loss)  # auto init: small weights
    report = sanity.initial_loss(module, sanity.first_examples(Items(100), 100),
                                 loop_settings({**config.to_dict(), "lr": 0.1}), CLASSES)
    assert report["expected_initial_loss"] == pytest.approx(expected)
    assert report["initial_loss"] == pytest.approx(expected, rel=0.02)
    assert report["initial_loss_agrees"]


def test_initial_loss_disagrees_with_large_weights():
    module, config = _model(model="linear", init="large")
    report = sanity.initial_loss(module, sanity.first_examples(Items(100), 100),
                                 loop_settings({**config.to_dict(), "lr": 0.1}), CLASSES)
    assert not report["initial_loss_agrees"]


@pytest.mark.parametrize("options", [{"model": "linear", "loss": "svm", "reg": "l2",
                                      "reg_strength": 0.1},
                                     {"model": "mlp", "activation": "tanh"},
                                     {"model": "cnn", "batch_norm": True, "activation": "elu"}])
def test_gradient_check_passes(options):
    module, config = _model(**options)
    report = sanity.gradient_check(module, sanity.first_examples(Items(8), 8),
                                   loop_settings({**config.to_dict(), "lr": 0.1}), seed=0)
    assert report["passed"], report
    assert report["checked"] >= 4


@pytest.mark.parametrize("init, trend", [("small", "vanish"), ("large", "explode"),
                                         ("kaiming", None)])
def test_layer_statistics_flag_vanishing_and_exploding(init, trend):
    module, config = _model(model="mlp", depth=4, width=64, init=init)
    report = sanity.layer_statistics(module, sanity.first_examples(Items(64), 64),
                                     loop_settings({**config.to_dict(), "lr": 0.1}))
    assert len(report["layers"]) == 9  # 5 linear layers, 4 activations
    flags = " ".join(report["flags"])
    assert (trend in flags) if trend else not flags


def test_overfitting_a_tiny_subset_reaches_near_zero_loss():
    module, config = _model(model="cnn", batch_norm=True)
    report = sanity.overfit_tiny_subset(module, sanity.first_examples(Items(20), 20),
                                        loop_settings({**config.to_dict(), "lr": 0.01}))
    assert report["passed"] and report["final_loss"] <= sanity.OVERFIT_LOSS


@pytest.mark.parametrize("builder, kwargs", [
    (cnn, {"channels": [8, 16]}), (mlp, {"hidden": [32, 32]})])
def test_folding_batch_norm_keeps_outputs_and_loads_without_it(builder, kwargs):
    torch.manual_seed(0)
    trained = builder(SHAPE, CLASSES, batch_norm=True, **kwargs)
    for _ in range(3):  # move the running statistics away from 0 and 1
        trained(torch.randn(16, *SHAPE) * 3 + 1)
    with torch.no_grad():
        for module in trained.modules():
            if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                module.weight.uniform_(0.5, 2)
                module.bias.uniform_(-1, 1)
    images = torch.randn(5, *SHAPE)
    folded = fold_batch_norm(trained)
    plain = builder(SHAPE, CLASSES, batch_norm=False, **kwargs).eval()
    plain.load_state_dict(folded.state_dict())
    with torch.no_grad():
        expected = trained.eval()(images)
        assert torch.allclose(folded(images), expected, atol=1e-5)
        assert torch.allclose(plain(images), expected, atol=1e-5)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())


OPTIONS = {
    "optimizer": ["sgd", "momentum", "adagrad", "rmsprop", "adam"],
    "activation": ["sigmoid", "tanh", "relu", "leaky_relu", "elu"],
    "init": ["small", "large", "xavier", "kaiming"],
    "loss": ["ce", "svm"],
    "reg": ["none", "l1", "l2"],
    "schedule": ["constant", "step", "cosine"],
    "batch_norm": [False, True],
    "dropout": [0.0, 0.5],
    "precision": ["fp32", "bf16"],
}


@pytest.mark.parametrize("option", OPTIONS)
def test_every_option_changes_what_is_trained(option):
    extra = {"reg_strength": 0.01} if option == "reg" else {}
    if option == "schedule":
        extra = {"epochs": 4}
    results = [_trained(**{option: value, **extra}) for value in OPTIONS[option]]
    for i, first in enumerate(results):
        for second in results[i + 1:]:
            assert any(not torch.equal(first[key], second[key]) for key in first
                       if key in second), option


def test_training_is_reproducible_with_a_seed():
    first, second = _trained(dropout=0.3), _trained(dropout=0.3)
    assert all(torch.equal(first[key], second[key]) for key in first)
