"""Model inputs from decoded images, with exactly the model's own transforms.

For torchvision weights the transform IS `weights.transforms()`; cvtool checkpoints rebuild the
same `ImageClassification` class from their stored preprocessing. Test-time augmentation reuses
that transform's own resize, crop and normalisation settings.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cvtool.core.status import UsageError

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image

TTA_VIEWS = 10  # four corners and the centre, each also flipped left-right


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
