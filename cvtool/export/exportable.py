"""What `cvtool export` exports, per task: the eager model, its verification inputs, its metadata.

The model is loaded as the inference commands load it (registry name, `--weights`, cvtool
checkpoint or run directory), so the export computes what `cvtool classify|detect|...` computes
and its metadata carries the same categories and preprocessing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cvtool import __version__
from cvtool.core.context import Warn
from cvtool.core.status import UsageError
from cvtool.export import ExportOptions
from cvtool.models.exported import FORMAT, FORMAT_VERSION
from cvtool.models.loading import LoadedModel, looks_like_path

IMAGES = Path(__file__).with_name("images")
LATENT_BATCHES = (1, 5)  # generative exports are verified on these batch sizes
DETECTION_TASKS = ("detect", "segment-instance")


@dataclass
class Exportable:
    """What is exported: the eager model, its inputs for tracing and checking, its metadata."""

    task: str
    name: str
    module: nn.Module  # eval mode, CPU, fp32
    inputs: list[tuple[str, Any]]  # (name, the module's input) per verification input
    input_name: str
    axes: dict[int, str]  # the input's dynamic axes
    outputs: list[str]
    meta: dict[str, Any] = field(default_factory=dict)

    def call(self, module: Any, given: Any) -> Any:
        """The forward pass in one form for eager and runtime modules: detectors take one
        image and give its dict; segmenters give their logits."""
        if self.task in DETECTION_TASKS:
            return module([given])[0]
        output = module(given)
        return output["out"] if isinstance(output, dict) else output


def load_source(options: ExportOptions, warn: Warn) -> Exportable:
    task = model_task(options.model)
    if options.image_size is not None and task != "classify":
        raise UsageError("--image-size applies to classifiers; detectors and segmenters are "
                         "exported with dynamic height and width")
    if options.dynamic_batch and task in DETECTION_TASKS:
        raise UsageError("--dynamic-batch: torchvision's detectors export soundly only for one "
                         "image at a time (dynamic height and width); batches run image by image")
    if task == "generate":
        source = _generative(options)
    else:
        images = verification_images(options.verify_images, warn)
        source = {"classify": _classifier, "segment-semantic": _segmenter}.get(
            task, _detector)(options, task, images, warn)
    source.meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "task": source.task,
                   "model": options.model, **source.meta, "outputs": source.outputs,
                   "cvtool_version": __version__, "torch_version": torch.__version__,
                   "opset": options.opset}
    return source


def model_task(model: str) -> str:
    if looks_like_path(model):
        from cvtool.models.checkpoint import checkpoint_meta

        return str(checkpoint_meta(Path(model)).get("task"))
    from cvtool.models.registry import get_spec

    return get_spec(model).task


def verification_images(given: list[str] | None, warn: Warn) -> list[tuple[str, Any]]:
    from cvtool.inference.pipeline import decode_source
    from cvtool.io.sources import input_sources

    sources = input_sources(given if given else [str(IMAGES)])
    images = []
    for source in sources:
        image, error = decode_source(source, None)
        if error is not None:
            warn(f"{source.path}: {error.message}; it is left out of the verification")
        else:
            images.append((Path(source.path).name if not given else source.path, image))
    if not images:
        raise UsageError("no verification image could be read; give --verify-images")
    return images


def _weights(loaded: LoadedModel) -> dict[str, Any]:
    return {"source_weights": loaded.weights_file, "source_weights_sha256": loaded.weights_sha256}


def _classifier(options: ExportOptions, task: str, images: list[tuple[str, Any]],
                warn: Warn) -> Exportable:
    from cvtool.models.classification import load_classifier

    loaded = load_classifier(options.model, options.weights, warn=warn)
    transforms = loaded.transforms
    if options.image_size is not None:
        transforms = _resized(transforms, options.image_size)
    preprocessing = classification_preprocessing(transforms)
    inputs = [(name, transforms(image)[None]) for name, image in images]
    height, width = inputs[0][1].shape[-2:]
    batch = None if options.dynamic_batch else 1
    return Exportable(task, loaded.name, loaded.module.eval(), inputs, "image",
                      {0: "batch"} if options.dynamic_batch else {}, ["logits"],
                      {"categories": loaded.categories, "preprocessing": preprocessing,
                       "input": {"batch": batch, "height": int(height), "width": int(width)},
                       **_weights(loaded)})


def _resized(transforms: Any, size: list[int]) -> Any:
    """The classifier's preprocessing for a crop of `size`, resized in the same proportion."""
    import copy

    if len(size) not in (1, 2) or not all(16 <= side <= 4096 for side in size):
        raise UsageError(f"invalid --image-size {size}; give a side or height and width, 16 to "
                         "4096 pixels")
    crop = list(size) * (3 - len(size))
    changed = copy.copy(transforms)
    scale = transforms.resize_size[0] / transforms.crop_size[0]
    changed.crop_size = crop
    changed.resize_size = [round(min(crop) * scale)]
    return changed


def classification_preprocessing(transforms: Any) -> dict[str, Any]:
    return {"crop_size": _size(transforms.crop_size), "resize_size": _size(transforms.resize_size),
            "mean": list(transforms.mean), "std": list(transforms.std),
            "interpolation": transforms.interpolation.value}


def _size(size: Any) -> int | list[int] | None:
    if size is None:
        return None
    size = [int(side) for side in size]
    return size[0] if len(size) == 1 else size


def _segmenter(options: ExportOptions, task: str, images: list[tuple[str, Any]],
               warn: Warn) -> Exportable:
    from cvtool.inference.segment_semantic import pad_to
    from cvtool.models.segmentation import load_segmenter

    loaded = load_segmenter(options.model, options.weights, options.encoder, warn=warn)
    transforms = loaded.transforms
    inputs = [(name, pad_to(transforms(image), loaded.input_multiple,
                            loaded.min_input_side)[None]) for name, image in images]
    module = loaded.module.eval()
    with torch.inference_mode():
        output = module(inputs[0][1])
    outputs = list(output) if isinstance(output, dict) else ["logits"]
    preprocessing = {"resize_size": _size(transforms.resize_size), "mean": list(transforms.mean),
                     "std": list(transforms.std),
                     "interpolation": transforms.interpolation.value}
    return Exportable(task, loaded.name, module, inputs, "image",
                      {0: "batch", 2: "height", 3: "width"}, outputs,
                      {"categories": loaded.categories, "preprocessing": preprocessing,
                       "input": {"batch": None, "height": None, "width": None},
                       "segmentation": {"input_multiple": loaded.input_multiple,
                                        "min_input_side": loaded.min_input_side,
                                        "encoder": loaded.encoder},
                       **_weights(loaded)})


def _detector(options: ExportOptions, task: str, images: list[tuple[str, Any]],
              warn: Warn) -> Exportable:
    from cvtool.models.detection import load_detector

    loaded = load_detector(options.model, options.weights, task, warn=warn)
    inputs = [(name, loaded.transforms(image)) for name, image in images]
    # Traced on an image with detections, so every branch of the heads is in the graph.
    module = loaded.module.eval()
    with torch.inference_mode():
        found = [module([given])[0] for _, given in inputs]
    outputs = list(found[0])
    inputs = [inputs[i] for i in sorted(range(len(inputs)), key=lambda i: not len(
        found[i]["scores"]))]
    heads = getattr(module, "roi_heads", module)
    return Exportable(task, loaded.name, module, inputs, "image", {1: "height", 2: "width"},
                      outputs,
                      {"categories": loaded.categories,
                       "input": {"batch": 1, "height": None, "width": None},
                       "detection": {"score_thresh": float(getattr(heads, "score_thresh", 0.0))},
                       **_weights(loaded)})


class VaeDecoder(nn.Module):
    """A VAE's decoder as one graph: latents in, the most likely images in [0, 1] out."""

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        from cvtool.generative import vae

        return vae.decode(self.vae, latents)


def _generative(options: ExportOptions) -> Exportable:
    from cvtool.generative.checkpoint import load_generative

    if options.weights != "default":
        raise UsageError("--weights does not apply to generative models: their checkpoint "
                         "carries the weights")
    loaded = load_generative(options.model)
    if loaded.family == "pixelcnn":
        raise UsageError("a PixelCNN samples one pixel at a time in a Python loop, which no "
                         "single graph holds; export a VAE decoder or GAN generator")
    module = (VaeDecoder(loaded.module) if loaded.family == "vae"
              else loaded.module.generator).eval()
    generator = torch.Generator().manual_seed(0)
    dim = loaded.module.latent_dim
    inputs = [(f"{count} latents", torch.randn(count, dim, generator=generator))
              for count in LATENT_BATCHES]
    height, width = loaded.meta["generative"]["image_size"]
    return Exportable("generate", loaded.name, module, inputs, "latents", {0: "batch"}, ["images"],
                      {"generative": loaded.meta["generative"],
                       "input": {"batch": None, "height": None, "width": None},
                       "image": {"height": height, "width": width},
                       "source_weights": loaded.weights_file,
                       "source_weights_sha256": loaded.weights_sha256})
