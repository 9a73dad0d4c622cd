"""EfficientNet-Lite0 in plain torch: timm's `tf_efficientnet_lite0`, the same modules under the
same names, without importing timm (seconds of start-up for the default classifier).

As timm builds it for Google's TensorFlow checkpoint: TensorFlow's "same" padding on the
stride-2 convolutions (asymmetric, from the input's size), batch norm with eps 1e-3, ReLU6, no
squeeze-excitation, a stem of 32 and a head of 1280 channels. Stages (blocks, kernel, stride,
output channels; expansion 6 but the first): a depthwise-separable block, then inverted
residuals, with a skip where a block keeps its size. tests/test_pretrained.py holds its outputs
equal to timm's on the sample photos with the same weights.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# (blocks, kernel, stride, output channels) per stage; stage 0 is depthwise-separable.
STAGES = ((1, 3, 1, 16), (2, 3, 2, 24), (2, 5, 2, 40), (3, 3, 2, 80), (3, 5, 1, 112),
          (4, 5, 2, 192), (1, 3, 1, 320))
STEM, HEAD, EXPANSION, EPS = 32, 1280, 6, 1e-3


class SameConv2d(nn.Conv2d):
    """A strided convolution padded as TensorFlow's "same": as much as the stride needs, the
    odd pixel at the bottom and right."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, kernel, stride in zip(input.shape[-1:-3:-1], self.kernel_size[::-1],
                                        self.stride[::-1]):
            total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(input, pads))


def _conv(inputs: int, outputs: int, kernel: int, stride: int = 1,
          groups: int = 1) -> nn.Conv2d:
    if stride > 1:
        return SameConv2d(inputs, outputs, kernel, stride, groups=groups, bias=False)
    return nn.Conv2d(inputs, outputs, kernel, padding=kernel // 2, groups=groups, bias=False)


def _norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=EPS)


class DepthwiseSeparable(nn.Module):
    def __init__(self, inputs: int, outputs: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.conv_dw = _conv(inputs, inputs, kernel, stride, groups=inputs)
        self.bn1 = _norm(inputs)
        self.conv_pw = _conv(inputs, outputs, 1)
        self.bn2 = _norm(outputs)
        self.skip = stride == 1 and inputs == outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv_pw(F.relu6(self.bn1(self.conv_dw(x)))))
        return x + y if self.skip else y


class InvertedResidual(nn.Module):
    def __init__(self, inputs: int, outputs: int, kernel: int, stride: int) -> None:
        super().__init__()
        middle = inputs * EXPANSION
        self.conv_pw = _conv(inputs, middle, 1)
        self.bn1 = _norm(middle)
        self.conv_dw = _conv(middle, middle, kernel, stride, groups=middle)
        self.bn2 = _norm(middle)
        self.conv_pwl = _conv(middle, outputs, 1)
        self.bn3 = _norm(outputs)
        self.skip = stride == 1 and inputs == outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self.bn1(self.conv_pw(x)))
        y = self.bn3(self.conv_pwl(F.relu6(self.bn2(self.conv_dw(y)))))
        return x + y if self.skip else y


class EfficientNetLite0(nn.Module):
    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv_stem = _conv(3, STEM, 3, 2)
        self.bn1 = _norm(STEM)
        stages, channels = [], STEM
        for index, (blocks, kernel, stride, outputs) in enumerate(STAGES):
            kind = DepthwiseSeparable if index == 0 else InvertedResidual
            stage = []
            for block in range(blocks):
                stage.append(kind(channels, outputs, kernel, stride if block == 0 else 1))
                channels = outputs
            stages.append(nn.Sequential(*stage))
        self.blocks = nn.Sequential(*stages)
        self.conv_head = _conv(channels, HEAD, 1)
        self.bn2 = _norm(HEAD)
        self.classifier = nn.Linear(HEAD, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(F.relu6(self.bn1(self.conv_stem(x))))
        x = F.relu6(self.bn2(self.conv_head(x)))
        return self.classifier(x.mean((2, 3)))


def efficientnet_lite0(num_classes: int = 1000, pretrained: bool = False) -> EfficientNetLite0:
    """The registry's builder (`pretrained` is always False: cvtool loads the weights)."""
    if pretrained:
        raise ValueError("cvtool loads efficientnet_lite0's weights itself; build it untrained")
    return EfficientNetLite0(num_classes)
