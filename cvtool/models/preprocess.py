"""Model inputs from decoded images, with exactly the model's own transforms.

For torchvision weights the transform IS `weights.transforms()`; cvtool checkpoints (house models,
runs, timm's and efficientnet_lite0's preprocessing) get `ResizeCropNormalize`, torchvision's
`ImageClassification` preset computed the same way without importing torchvision: that import
(torchvision.ops pulls in torch._dynamo) costs more start-up than torch itself, for models that
need nothing else of it. Test-time augmentation reuses the transform's own resize, crop and
normalisation settings.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import TYPE_CHECKING, Any

from cvtool.core.status import UsageError

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image

TTA_VIEWS = 10  # four corners and the centre, each also flipped left-right


class Interpolation(str, Enum):
    """torchvision's InterpolationMode names (checkpoint meta stores `.value`)."""

    NEAREST = "nearest"
    NEAREST_EXACT = "nearest-exact"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    BOX = "box"
    HAMMING = "hamming"
    LANCZOS = "lanczos"


# PIL's resampling filters for each (torchvision's pil_modes_mapping).
_PIL_FILTERS = {"nearest": 0, "nearest-exact": 0, "bilinear": 2, "bicubic": 3, "box": 4,
                "hamming": 5, "lanczos": 1}


class ResizeCropNormalize:
    """torchvision's `ImageClassification(crop_size, resize_size, mean, std, interpolation)`:
    resize (the shorter side to `resize_size`, keeping the ratio, or to exactly [h, w]), centre
    crop (zero-padded where the crop is larger), to float in [0, 1], normalise. Computed as
    torchvision computes it for PIL images (tests/test_preprocess.py holds the two equal);
    anything else goes through torchvision's own preset."""

    antialias = True

    def __init__(self, *, crop_size: int | list[int], resize_size: int | list[int],
                 mean: list[float], std: list[float], interpolation: str = "bilinear") -> None:
        self.crop_size = [crop_size] if isinstance(crop_size, int) else list(crop_size)
        self.resize_size = [resize_size] if isinstance(resize_size, int) else list(resize_size)
        self.mean, self.std = list(mean), list(std)
        self.interpolation = Interpolation(interpolation)
        self._stats: tuple[torch.Tensor, torch.Tensor] | None = None  # mean, std as tensors

    def __call__(self, image: Any) -> torch.Tensor:
        from PIL import Image

        if not isinstance(image, Image.Image):
            return self.torchvision()(image)
        return self._normalised(self._cropped(self._resized(image)))

    def torchvision(self) -> Any:
        """The same preset as torchvision's ImageClassification object."""
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms._presets import ImageClassification

        preset = ImageClassification(crop_size=self.crop_size[0], resize_size=self.resize_size[0],
                                     mean=self.mean, std=self.std,
                                     interpolation=InterpolationMode(self.interpolation.value))
        preset.crop_size, preset.resize_size = list(self.crop_size), list(self.resize_size)
        return preset

    def _resized(self, image: Image) -> Image:
        width, height = image.size
        if len(self.resize_size) == 1:  # the shorter side, as torchvision rounds the longer
            short, long = (width, height) if width <= height else (height, width)
            new_short, new_long = self.resize_size[0], int(self.resize_size[0] * long / short)
            size = (new_short, new_long) if width <= height else (new_long, new_short)
        else:
            size = (self.resize_size[1], self.resize_size[0])
        if size == (width, height):
            return image
        return image.resize(size, _PIL_FILTERS[self.interpolation.value])

    def _cropped(self, image: Image) -> Image:
        from PIL import Image as PILImage

        crop_height, crop_width = (self.crop_size * 2)[:2] if len(self.crop_size) == 1 \
            else self.crop_size
        width, height = image.size
        if crop_width > width or crop_height > height:  # torchvision pads with zeros first
            left, top = max(0, (crop_width - width) // 2), max(0, (crop_height - height) // 2)
            right = max(0, (crop_width - width + 1) // 2)
            bottom = max(0, (crop_height - height + 1) // 2)
            padded = PILImage.new(image.mode, (width + left + right, height + top + bottom))
            padded.paste(image, (left, top))
            image, (width, height) = padded, padded.size
            if (width, height) == (crop_width, crop_height):
                return image
        top = int(round((height - crop_height) / 2.0))
        left = int(round((width - crop_width) / 2.0))
        return image.crop((left, top, left + crop_width, top + crop_height))

    def _normalised(self, image: Image) -> torch.Tensor:
        import numpy as np
        import torch

        array = np.array(image, copy=True)
        tensor = torch.as_tensor(array).view(image.size[1], image.size[0], -1).permute(2, 0, 1)
        tensor = tensor.to(torch.float32).div_(255)
        if self._stats is None:  # once, not per image (a copy made by copy.copy keeps them)
            self._stats = (torch.as_tensor(self.mean, dtype=torch.float32).view(-1, 1, 1),
                           torch.as_tensor(self.std, dtype=torch.float32).view(-1, 1, 1))
        mean, std = self._stats
        return tensor.sub_(mean).div_(std)

    def __repr__(self) -> str:
        return (f"ResizeCropNormalize(crop_size={self.crop_size}, resize_size="
                f"{self.resize_size}, mean={self.mean}, std={self.std}, "
                f"interpolation={self.interpolation.value})")


def grey_picture(size: int = 224) -> Image:
    """A mid-grey RGB square: an input to run a model on once (to fold its batch norms)."""
    from PIL import Image as PILImage

    return PILImage.new("RGB", (size, size), (128, 128, 128))


def classification_input(transforms: Callable[[Any], torch.Tensor], image: Image,
                         tta: bool = False) -> torch.Tensor:
    """(3, H, W) for one view, or (10, 3, H, W) for the ten-crop views of `--tta`."""
    if not tta:
        return transforms(image)
    return ten_crop(transforms, image)


def ten_crop(transforms: Any, image: Image) -> torch.Tensor:
    import torch
    import torchvision.transforms.functional as F

    _require_resize_crop(transforms)
    if isinstance(transforms, ResizeCropNormalize):
        transforms = transforms.torchvision()
    resized = F.resize(image, transforms.resize_size, interpolation=transforms.interpolation,
                       antialias=transforms.antialias)
    crops = F.ten_crop(resized, transforms.crop_size)
    return torch.stack([_normalize(transforms, crop) for crop in crops])


def _normalize(transforms: Any, crop: Image) -> torch.Tensor:
    # The tail of ImageClassification.forward, applied to an already cropped view.
    import torch
    import torchvision.transforms.functional as F

    tensor = F.convert_image_dtype(F.pil_to_tensor(crop), torch.float)
    return F.normalize(tensor, mean=transforms.mean, std=transforms.std)


def _require_resize_crop(transforms: Any) -> None:
    needed = ("resize_size", "crop_size", "mean", "std", "interpolation", "antialias")
    if not all(hasattr(transforms, name) for name in needed):
        raise UsageError("--tta needs a model whose preprocessing is resize, centre crop "
                         f"and normalise; this one uses {type(transforms).__name__}")
