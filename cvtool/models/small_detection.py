"""A small Faster / Mask R-CNN that trains on a CPU: plain convolutions, a 3-level FPN.

torchvision's detectors assume ImageNet-sized backbones (ResNet-50, MobileNetV3); on 128-pixel
scenes with 16-48 pixel objects a few plain 3x3 convolutions see enough. The backbone gives
stride 4, 8 and 16 maps (`width`, 2 `width`, 4 `width` channels), a feature pyramid brings them
to `width * 2` channels, and everything after that is torchvision's own: RPN, RoIAlign, the box
head and, with `masks=True`, the mask head. At the default width it has about 1.7M parameters.

`small_rcnn` takes JSON-serialisable kwargs, so a checkpoint names
`cvtool.models.small_detection:small_rcnn` and `build_architecture` rebuilds it.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


class PlainConvBackbone(nn.Module):
    """Pairs of 3x3 conv + batch norm + ReLU, the first of each pair with stride 2."""

    def __init__(self, width: int) -> None:
        super().__init__()
        from torchvision.ops import FeaturePyramidNetwork

        widths = (width // 2, width, width * 2, width * 4)
        stages, in_channels = [], 3
        for channels in widths:
            stages.append(nn.Sequential(_conv(in_channels, channels, 2), _conv(channels, channels)))
            in_channels = channels
        self.stages = nn.ModuleList(stages)
        self.out_channels = width * 2
        self.fpn = FeaturePyramidNetwork(list(widths[1:]), self.out_channels)

    def forward(self, images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        features, x = OrderedDict(), images
        for index, stage in enumerate(self.stages):
            x = stage(x)
            if index >= 1:  # strides 4, 8, 16
                features[str(index - 1)] = x
        return self.fpn(features)


def _conv(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


def small_rcnn(num_classes: int, masks: bool = True, width: int = 32, min_size: int = 128,
               max_size: int = 213, anchor_sizes: tuple[int, ...] = (16, 32, 64),
               detections_per_image: int = 100) -> nn.Module:
    """Mask R-CNN (or, with `masks=False`, Faster R-CNN) on the plain-conv backbone.

    `num_classes` counts the background. Images are resized so the short side is `min_size`
    (the long side at most `max_size`) and boxes and masks mapped back, as in torchvision.
    """
    from torchvision.models.detection import FasterRCNN, MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.ops import MultiScaleRoIAlign

    backbone = PlainConvBackbone(width)
    channels = backbone.out_channels
    levels = ["0", "1", "2"]
    anchors = AnchorGenerator(tuple((size,) for size in anchor_sizes),
                              ((0.5, 1.0, 2.0),) * len(anchor_sizes))
    kwargs = dict(
        min_size=min_size, max_size=max_size, rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=600, rpn_post_nms_top_n_train=300,
        rpn_pre_nms_top_n_test=300, rpn_post_nms_top_n_test=100,
        rpn_batch_size_per_image=128, box_batch_size_per_image=128,
        box_detections_per_img=detections_per_image,
        box_roi_pool=MultiScaleRoIAlign(levels, 7, 2),
        box_head=TwoMLPHead(channels * 7 * 7, 256),
        box_predictor=FastRCNNPredictor(256, num_classes))
    if not masks:
        return FasterRCNN(backbone, **kwargs)
    return MaskRCNN(backbone, **kwargs,
                    mask_roi_pool=MultiScaleRoIAlign(levels, 14, 2),
                    mask_head=MaskRCNNHeads(channels, [channels] * 4, 1),
                    mask_predictor=MaskRCNNPredictor(channels, channels, num_classes))
