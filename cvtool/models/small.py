"""The course's small classifiers (linear, MLP, CNN) as builders with JSON-serialisable kwargs.

A checkpoint names `cvtool.models.small:cnn` and its kwargs; `build_architecture` rebuilds the
same module. Every block is `Sequential(layer, norm, activation[, pool])` where `norm` is
`Identity` without batch norm: folding batch norm into the layer (`fold_batch_norm`) then gives
exactly the module the builder makes with `batch_norm=False`, so exports load with plain kwargs.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU, "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
}
INITS = ("small", "large", "xavier", "kaiming")
# The gain each activation needs to keep the variance of its outputs (torch.nn.init's table).
_GAIN_NAMES = {"sigmoid": "sigmoid", "tanh": "tanh", "relu": "relu",
               "leaky_relu": "leaky_relu", "elu": "selu"}


def linear(input_shape: Sequence[int], num_classes: int) -> nn.Sequential:
    """Scores = W x + b on the flattened image: the linear SVM / softmax classifier."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes))


def mlp(input_shape: Sequence[int], num_classes: int, hidden: Sequence[int],
        activation: str = "relu", batch_norm: bool = False, dropout: float = 0.0) -> nn.Sequential:
    """Fully connected hidden layers of the given widths, then the linear scores."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for size in hidden:
        layers.append(_block(nn.Linear(width, size), nn.BatchNorm1d(size), batch_norm, activation))
        layers.append(nn.Dropout(dropout))
        width = size
    return nn.Sequential(*layers, nn.Linear(width, num_classes))


def cnn(input_shape: Sequence[int], num_classes: int, channels: Sequence[int],
        activation: str = "relu", batch_norm: bool = False, dropout: float = 0.0) -> nn.Sequential:
    """3x3 convolutions; 2x2 max-pooling while the map is at least 4 pixels on a side, so even
    8x8 digits keep a 2x2 map; global average pooling, dropout and the linear scores."""
    in_channels, height, width = input_shape
    layers: list[nn.Module] = []
    for out_channels in channels:
        conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        block = _block(conv, nn.BatchNorm2d(out_channels), batch_norm, activation)
        if min(height, width) >= 4:
            block.append(nn.MaxPool2d(2))
            height, width = height // 2, width // 2
        layers.append(block)
        in_channels = out_channels
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                         nn.Linear(in_channels, num_classes))


def _block(layer: nn.Module, norm: nn.Module, batch_norm: bool, activation: str) -> nn.Sequential:
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose from {', '.join(ACTIVATIONS)}")
    return nn.Sequential(layer, norm if batch_norm else nn.Identity(), ACTIVATIONS[activation]())


def initialise(module: nn.Module, scheme: str, activation: str = "relu") -> None:
    """The notes' weight initialisations; biases start at zero.

    small: N(0, 0.01^2), the scores start near 0 (the initial-loss checks rely on it);
    large: N(0, 1), activations and gradients explode; xavier and kaiming scale the hidden
    layers by fan-in and start the score layer (the last) at N(0, 0.01^2) as `small` does:
    scaled for a ReLU it feeds no ReLU, and its scores would start spread out, the first loss
    well above log C (2.6-3.9 for 10 classes against 2.30, with batch norm).
    """
    if scheme not in INITS:
        raise ValueError(f"unknown init {scheme!r}; choose from {', '.join(INITS)}")
    gain_name = _GAIN_NAMES[activation]
    layers = [m for m in module.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    for index, layer in enumerate(layers):
        score_layer = index == len(layers) - 1 and scheme in ("xavier", "kaiming")
        _initialise_weight(layer.weight, "small" if score_layer else scheme, gain_name)
        nn.init.zeros_(layer.bias)


def _initialise_weight(weight: torch.Tensor, scheme: str, gain_name: str) -> None:
    if scheme == "small":
        nn.init.normal_(weight, std=0.01)
    elif scheme == "large":
        nn.init.normal_(weight, std=1.0)
    elif scheme == "xavier":
        nn.init.xavier_normal_(weight, gain=nn.init.calculate_gain(gain_name))
    else:
        nonlinearity = "leaky_relu" if gain_name == "leaky_relu" else "relu"
        nn.init.kaiming_normal_(weight, nonlinearity=nonlinearity)


@torch.no_grad()
def fold_batch_norm(module: nn.Module) -> nn.Module:
    """An eval-mode copy with every batch norm fused into the conv/linear layer before it.

    Inference then costs no more than without batch norm (the notes); outputs are unchanged up
    to float rounding. The BatchNorm becomes Identity, so the keys match `batch_norm=False`.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

    folded = copy.deepcopy(module).eval()
    for block in folded.modules():
        if not isinstance(block, nn.Sequential):
            continue
        for index in range(1, len(block)):
            layer, norm = block[index - 1], block[index]
            # Any batch norm: also the synchronised ones distributed training converts to.
            if isinstance(layer, nn.Conv2d) and isinstance(norm, nn.modules.batchnorm._BatchNorm):
                block[index - 1] = fuse_conv_bn_eval(layer, norm)
            elif isinstance(layer, nn.Linear) and isinstance(norm,
                                                             nn.modules.batchnorm._BatchNorm):
                block[index - 1] = fuse_linear_bn_eval(layer, norm)
            else:
                continue
            block[index] = nn.Identity()
    return folded
