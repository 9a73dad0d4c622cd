"""PixelCNN (van den Oord et al., 2016): an explicit likelihood, one subpixel at a time.

p(x) = prod over pixels in raster order, and over channels R, G, B within a pixel, of a softmax
over `levels` intensity levels. Masked convolutions keep every output from seeing its own
subpixel or any later one: type A (first layer) hides the current pixel's own channel and the
later ones, type B (all further layers) lets a channel see itself, as its features already only
hold what it may see. For colour, each layer's feature maps are split into R, G and B groups, so
R is predicted from earlier pixels, G also from this pixel's R, B also from its R and G (the
paper's channel masks): the channels are modelled jointly, not independently.

Two layouts, one output head (two 1x1 type-B layers onto channels x levels logits):

- residual (the first paper's): a 7x7 type-A convolution, then `layers` residual blocks (1x1,
  3x3, 1x1 type-B convolutions, ReLU, optional dropout). Stacked masked 3x3 kernels leave a
  blind spot: the pixels up and to the right of the current one that no path reaches.
- gated (van den Oord et al., 2016b, "Conditional Image Generation with PixelCNN Decoders"),
  what `cvtool train generate` builds: two stacks per layer. The vertical stack convolves the
  rows above and the current row (kernel (k//2 + 1) x k); the horizontal stack the pixels left
  of the current one in its row (kernel 1 x (k//2 + 1), its last column masked like the centre
  of a type A or B kernel) and receives the vertical stack's features shifted down one row, so
  every pixel above (at any column within reach) and every pixel to the left is seen: no blind
  spot. Each stack's output is the gated activation tanh(a) * sigmoid(b); the horizontal stack
  adds a 1x1 convolution of it (dropout first) to its input, a residual connection. The first
  layer uses kernel `kernel_size`, the rest 3, so the receptive field grows one pixel a side
  per layer.

Neither ever looks ahead, which is what the likelihood needs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cvtool.generative.layers import (
    check_channels_and_levels,
    evaluating,
    from_levels,
    image_size_pair,
    model_device,
    to_levels,
)

Progress = Callable[[int, int], None]  # (subpixel steps done, total steps)


def colour_groups(num_channels: int, colours: int) -> torch.Tensor:
    """The colour each of a layer's channels belongs to: contiguous blocks, R first."""
    return torch.arange(num_channels) * colours // num_channels


def causal_mask(out_channels: int, in_channels: int, kernel_size: int, mask_type: str,
                colours: int) -> torch.Tensor:
    """1 where a weight may connect: rows above, the centre row left of centre, and at the
    centre only earlier colours (A) or earlier and the same colour (B)."""
    mask = torch.ones(out_channels, in_channels, kernel_size, kernel_size)
    centre = kernel_size // 2
    mask[:, :, centre, centre + 1:] = 0
    mask[:, :, centre + 1:] = 0
    mask[:, :, centre, centre] = centre_mask(colour_groups(out_channels, colours),
                                             colour_groups(in_channels, colours), mask_type)
    return mask


def centre_mask(out_groups: torch.Tensor, in_groups: torch.Tensor, mask_type: str) -> torch.Tensor:
    """(out, in) 1 where an output of colour group g may see this pixel's input of group h:
    h < g (type A) or h <= g (type B)."""
    out_groups, in_groups = out_groups[:, None], in_groups[None, :]
    return (out_groups > in_groups if mask_type == "A" else out_groups >= in_groups).float()


class WeightMaskedConv2d(nn.Conv2d):
    """A convolution whose weights are multiplied by a fixed 0/1 `mask` (the weights' shape)
    at every call. Not persistent: the mask follows from the constructor, checkpoints hold
    weights only."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 mask: torch.Tensor, padding: int = 0) -> None:
        super().__init__(in_channels, out_channels, kernel_size, padding=padding)
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(inputs, self.weight * self.mask, self.bias)


class MaskedConv2d(WeightMaskedConv2d):
    """A same-size square convolution masked by `causal_mask` (type A or B)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, mask_type: str,
                 colours: int = 1) -> None:
        if mask_type not in ("A", "B") or kernel_size % 2 == 0:
            raise ValueError(f"need mask type A or B and an odd kernel, not {mask_type!r}, "
                             f"{kernel_size}")
        super().__init__(in_channels, out_channels, kernel_size,
                         causal_mask(out_channels, in_channels, kernel_size, mask_type, colours),
                         padding=kernel_size // 2)
        self.mask_type = mask_type


class ResidualBlock(nn.Module):
    def __init__(self, width: int, colours: int, dropout: float) -> None:
        super().__init__()
        half = width // 2
        self.body = nn.Sequential(
            nn.ReLU(), MaskedConv2d(width, half, 1, "B", colours),
            nn.ReLU(), MaskedConv2d(half, half, 3, "B", colours),
            nn.ReLU(), nn.Dropout(dropout), MaskedConv2d(half, width, 1, "B", colours))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features + self.body(features)


class GatedLayer(nn.Module):
    """One gated layer: (vertical, horizontal) features -> the same, each (N, width, H, W);
    the first layer (`first`) takes the image (N, colours, H, W) as both and masks type A."""

    def __init__(self, in_channels: int, width: int, kernel_size: int, colours: int,
                 first: bool, dropout: float) -> None:
        super().__init__()
        half = kernel_size // 2
        self.half, self.first = half, first
        self.vertical = nn.Conv2d(in_channels, 2 * width, (half + 1, kernel_size))
        self.link = nn.Conv2d(2 * width, 2 * width, 1)
        # The gate's halves a, b: channel i of each belongs to the same colour group; the
        # kernel's last column is the current pixel.
        gated = colour_groups(width, colours).repeat(2)
        inputs = torch.arange(in_channels) if first else colour_groups(in_channels, colours)
        mask = torch.ones(2 * width, in_channels, 1, half + 1)
        mask[:, :, 0, half] = centre_mask(gated, inputs, "A" if first else "B")
        self.horizontal = WeightMaskedConv2d(in_channels, 2 * width, (1, half + 1), mask)
        self.out = MaskedConv2d(width, width, 1, "B", colours)
        self.dropout = nn.Dropout(dropout)

    def forward(self, vertical: torch.Tensor, horizontal: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        half = self.half
        v = self.vertical(F.pad(vertical, (half, half, half, 0)))  # rows r - half .. r
        # Shifted down one row: what reaches the horizontal stack lies strictly above.
        above = F.pad(v, (0, 0, 1, 0))[:, :, :-1]
        h = self.horizontal(F.pad(horizontal, (half, 0, 0, 0))) + self.link(above)
        update = self.out(self.dropout(_gate(h)))
        return _gate(v), update if self.first else horizontal + update


def _gate(features: torch.Tensor) -> torch.Tensor:
    a, b = features.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


class PixelCNN(nn.Module):
    family = "pixelcnn"

    def __init__(self, channels: int, levels: int, image_size: tuple[int, int], width: int,
                 layers: int, kernel_size: int, dropout: float, gated: bool = False) -> None:
        super().__init__()
        check_channels_and_levels(channels, levels)
        if width < 2 * channels or layers < 0:
            raise ValueError(f"width must be at least 2 x channels ({2 * channels}) and layers "
                             f"at least 0, not {width}, {layers}")
        self.channels, self.levels, self.image_size = channels, levels, image_size
        self.gated = gated
        if gated:
            self.layers = nn.ModuleList(
                GatedLayer(channels if index == 0 else width, width,
                           kernel_size if index == 0 else 3, channels, index == 0, dropout)
                for index in range(layers + 1))
        else:
            self.input = MaskedConv2d(channels, width, kernel_size, "A", channels)
            self.blocks = nn.Sequential(*(ResidualBlock(width, channels, dropout)
                                          for _ in range(layers)))
        self.output = nn.Sequential(
            nn.ReLU(), MaskedConv2d(width, width, 1, "B", channels),
            nn.ReLU(), MaskedConv2d(width, channels * levels, 1, "B", channels))

    def forward(self, x_levels: torch.Tensor) -> torch.Tensor:
        """Levels (N, C, H, W), long -> logits (N, C, levels, H, W)."""
        return self.network(from_levels(x_levels, self.levels) * 2 - 1)

    def network(self, inputs: torch.Tensor) -> torch.Tensor:
        """Float inputs in [-1, 1], (N, C, H, W) -> logits (N, C, levels, H, W); differentiable
        in the inputs, which is how the masks are tested."""
        if self.gated:
            vertical = horizontal = inputs
            for layer in self.layers:
                vertical, horizontal = layer(vertical, horizontal)
            features = horizontal
        else:
            features = self.blocks(self.input(inputs))
        return self.output(features).unflatten(1, (self.channels, self.levels))


def pixelcnn(channels: int = 1, levels: int = 256, image_size: int | Sequence[int] = 8,
             width: int = 64, layers: int = 5, kernel_size: int = 7,
             dropout: float = 0.0, gated: bool = False) -> PixelCNN:
    """The checkpoint builder (`cvtool.generative.pixelcnn:pixelcnn`); kwargs are JSON. `gated`
    is False for checkpoints made before the gated layout (their JSON does not name it)."""
    size = image_size_pair(image_size)
    model = PixelCNN(channels, levels, size, width, layers, kernel_size, dropout, gated)
    model.kwargs = {"channels": channels, "levels": levels, "image_size": list(size),
                    "width": width, "layers": layers, "kernel_size": kernel_size,
                    "dropout": dropout, "gated": gated}
    return model


def nll(model: PixelCNN, x_levels: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of each image in nats, (N,), from its levels (N, C, H, W)."""
    logits = model(x_levels).float()
    per_subpixel = F.cross_entropy(logits.transpose(1, 2), x_levels, reduction="none")
    return per_subpixel.flatten(1).sum(1)


def bits_per_dim(model: PixelCNN, x_levels: torch.Tensor) -> torch.Tensor:
    """NLL of each image in bits per subpixel (dimension), (N,)."""
    return nll(model, x_levels) / (math.log(2) * x_levels[0].numel())


def training_losses(model: PixelCNN, batch: torch.Tensor) -> dict[str, torch.Tensor]:
    """One batch of float images in [0, 1], (N, C, H, W) on the model's device.

    `loss` (to minimise) is the mean NLL in nats per dimension; `nll_bits_per_dim` the same in
    bits, detached, for the report.
    """
    x_levels = to_levels(batch, model.levels)
    per_dim = nll(model, x_levels) / x_levels[0].numel()
    return {"loss": per_dim.mean(), "nll_bits_per_dim": per_dim.detach().mean() / math.log(2)}


@torch.no_grad()
def sample(model: PixelCNN, num: int, *, generator: torch.Generator | None = None,
           temperature: float = 1.0, batch_size: int | None = None,
           progress: Progress | None = None) -> torch.Tensor:
    """`num` images in [0, 1], (num, C, H, W) on the CPU, drawn subpixel by subpixel.

    Runs on the model's device in batches of `batch_size` (default: all at once). Each subpixel
    is drawn by inverting its softmax(logits / temperature) CDF at a uniform number drawn up
    front on the CPU from `generator`, so a seed gives the same images whatever the batch size.
    `progress(done, total)` is called after every subpixel step of every batch.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be above 0, not {temperature}")
    height, width = model.image_size
    uniforms = torch.rand(num, model.channels, height, width, generator=generator)
    batches = uniforms.split(batch_size or max(1, num)) if num else ()
    ticks = _Ticks(len(batches) * model.channels * height * width, progress)
    with evaluating(model):
        images = [_sample_batch(model, batch.to(model_device(model)), temperature, ticks)
                  for batch in batches]
    if not images:
        return torch.zeros(0, model.channels, height, width)
    return from_levels(torch.cat(images), model.levels)


class _Ticks:
    def __init__(self, total: int, progress: Progress | None) -> None:
        self.done, self.total, self.progress = 0, total, progress

    def __call__(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total)


def _sample_batch(model: PixelCNN, uniforms: torch.Tensor, temperature: float,
                  tick: Callable[[], None]) -> torch.Tensor:
    """One batch's levels, filled in raster order and channel by channel, on the CPU."""
    x_levels = torch.zeros(uniforms.shape, dtype=torch.long, device=uniforms.device)
    _, channels, height, width = uniforms.shape
    for row in range(height):
        for column in range(width):
            for channel in range(channels):
                logits = model(x_levels)[:, channel, :, row, column].float() / temperature
                cdf = logits.softmax(dim=1).cumsum(dim=1)
                point = uniforms[:, channel, row, column, None].contiguous()
                chosen = torch.searchsorted(cdf, point, right=True).clamp(max=model.levels - 1)
                x_levels[:, channel, row, column] = chosen.squeeze(1)
                tick()
    return x_levels.cpu()
