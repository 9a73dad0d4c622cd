"""The Python API: predictors built from plain options, typed records out. The CLI stands on
these same objects.

    import cvtool

    classifier = cvtool.Classifier(model="digits-cnn", device="cpu")
    for record in classifier.predict(["photo.jpg", pil_image, numpy_array]):
        print(record.path, record.ok and record.top.label)

`predict` yields one record per input, in input order; an input that cannot be read or
processed is an error record (`ok` False, `error` set), never an exception. Building a
predictor raises `cvtool.CvtoolError` (a `UsageError`, `ResourceUnavailable`) for options or
models that cannot work. Warnings go through Python's `warnings` as `CvtoolWarning`.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from types import TracebackType
from typing import Any, ClassVar

from cvtool.core.context import Environment, Warn, offline_from_environment
from cvtool.core.options import (
    ClassifyOptions,
    DetectOptions,
    GenerateOptions,
    PredictorOptions,
    SegmentOptions,
)
from cvtool.core.results import Record
from cvtool.core.status import CvtoolWarning
from cvtool.io.sources import Source, input_sources


def python_warning(message: str) -> None:
    warnings.warn(message, CvtoolWarning, stacklevel=3)


class Predictor:
    """What every inference predictor shares: options, device, the batch loop, `predict`."""

    task: ClassVar[str]
    options_type: ClassVar[type[PredictorOptions]]

    def __init__(self, options: PredictorOptions | None = None, /, *, warn: Warn | None = None,
                 offline: bool | None = None, own_output: bool = True, **kwargs: Any) -> None:
        """`own_output=False`: another process holds the output directory's lock (the Ray
        engine's driver, for its actors) and this one writes artifacts into it."""
        if options is None:
            options = self.options_type(**kwargs)
        elif kwargs:
            raise TypeError("give an options object or keyword options, not both")
        elif not isinstance(options, self.options_type):
            raise TypeError(f"{type(self).__name__} takes {self.options_type.__name__}, "
                            f"not {type(options).__name__}")
        from cvtool.core.device import prepare_device
        from cvtool.io.decode import check_max_pixels

        self.options = options
        self.warn = warn or python_warning
        self.offline = offline_from_environment() if offline is None else offline
        self.resources = ExitStack()  # the output directory's lock, held until close()
        self.counts: dict[str, int] = {}  # what the model side counts for run.json
        check_max_pixels(options.max_pixels)
        if options.output_dir is not None:
            from cvtool.core.ownership import claim_directory, guarded

            self.resources.enter_context(claim_directory(options.output_dir, "--output")
                                         if own_output else guarded(options.output_dir))
        try:
            self.device, self.settings = prepare_device(
                options.device, options.precision, options.threads, options.seed, self.warn)
            if self.settings["precision"] != options.precision:  # auto, resolved here
                self.options = options = dataclasses.replace(
                    options, precision=self.settings["precision"])
            self.loop, self.loaded = self._build()
            runtime = False
            for loaded in _as_list(self.loaded):  # an export's runtime compiles for these
                if prepare := getattr(loaded.module, "prepare_runtime", None):
                    prepare(self.device, options.precision, self.warn)
                    runtime = True
            self._split_threads(runtime)
        except BaseException:
            self.resources.close()
            raise

    def _build(self) -> tuple[Any, Any]:
        raise NotImplementedError

    def _split_threads(self, runtime: bool) -> None:
        from cvtool.core.device import split_threads
        from cvtool.core.status import UsageError

        if runtime and (self.options.streams or 1) > 1:
            raise UsageError("--streams applies to PyTorch models; an exported model's runtime "
                             "divides its own threads")
        self.loop.streams, self.loop.stream_threads = split_threads(
            self.device, 1 if runtime else self.options.streams)
        self.settings["streams"] = self.loop.streams

    def predict(self, inputs: Any, *, keep_images: bool = True) -> Iterator[Record]:
        """Records for `inputs`, one per input, in order, as each batch finishes.

        `inputs`: a path, directory or glob (as on the command line), a `PIL.Image`, a numpy
        array (HWC uint8) or a torch tensor (CHW, uint8 or float in [0, 1]), or an iterable of
        them mixed. In-memory inputs are named `memory:N`, N their position in `inputs`.
        `keep_images`: each record keeps its decoded image, for `record.draw()`.
        """
        return self.run(input_sources(inputs), keep_images=keep_images)

    def run(self, sources: Iterable[Source], keep_images: bool = False) -> Iterator[Record]:
        """Records for already expanded sources (the CLI's path in)."""
        self.loop.keep_images = keep_images
        return self.loop.run(sources)

    def models_info(self) -> list[dict[str, Any]]:
        """What run.json records about the models."""
        return [model_info(loaded) for loaded in _as_list(self.loaded)]

    def evaluate(self, inputs: Any, ground_truth: Any = None, **options: Any) -> dict[str, Any]:
        """Predict `inputs` and score the records as `--eval` does (`cvtool.evaluate`)."""
        from cvtool.inference.scoring import evaluate

        records = self.predict(inputs, keep_images=False)
        if self.task == "classify":
            options.setdefault("categories", self.categories)
        return evaluate(records, ground_truth, warn=self.warn, **options)

    @property
    def categories(self) -> list[str]:
        """The labels the model predicts (an ensemble's members share them)."""
        return list(_as_list(self.loaded)[0].categories)

    def close(self) -> None:
        """Release the output directory's lock."""
        self.resources.close()

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.options!r})"


class Classifier(Predictor):
    """Top-k classes with softmax probabilities; several models make an ensemble."""

    task = "classify"
    options_type = ClassifyOptions
    options: ClassifyOptions

    def _build(self) -> tuple[Any, Any]:
        from cvtool.inference import classify

        return classify.build(self.options, self.device, self.offline, self.warn,
                              recheck=self.settings.get("precision_asked") == "auto",
                              counts=self.counts)

    def models_info(self) -> list[dict[str, Any]]:
        # The labels too: `cvtool compare --bootstrap` matches --eval's labels to them.
        return [{**info, "categories": list(loaded.categories)}
                for info, loaded in zip(super().models_info(), _as_list(self.loaded))]


class Detector(Predictor):
    """Boxes, labels and scores (`Detector`); with masks: `InstanceSegmenter`."""

    task = "detect"
    options_type = DetectOptions
    options: DetectOptions

    def __init__(self, options: DetectOptions | None = None, /, *, warn: Warn | None = None,
                 offline: bool | None = None, own_output: bool = True, **kwargs: Any) -> None:
        if options is None:
            kwargs.setdefault("task", self.task)
        if (options.task if options is not None else kwargs["task"]) != self.task:
            raise TypeError(f"{type(self).__name__} runs task {self.task!r}")
        super().__init__(options, warn=warn, offline=offline, own_output=own_output, **kwargs)

    def _build(self) -> tuple[Any, Any]:
        from cvtool.inference import detect

        return detect.build(self.options, self.device, self.offline, self.warn)


class InstanceSegmenter(Detector):
    """Detections with a COCO RLE mask each (`detection.mask` decodes it)."""

    task = "segment-instance"


PREDICTORS: dict[str, type[Predictor]] = {}  # by task, filled below


class SemanticSegmenter(Predictor):
    """A class for every pixel: `record.mask`, per-class pixel counts, overlays."""

    task = "segment-semantic"
    options_type = SegmentOptions
    options: SegmentOptions

    def _build(self) -> tuple[Any, Any]:
        from cvtool.inference import segment_semantic

        loop, loaded, self.evaluation = segment_semantic.build(
            self.options, self.device, self.offline, self.warn)
        return loop, loaded

    def evaluate(self, inputs: Any, ground_truth: Any = None, **options: Any) -> dict[str, Any]:
        """mIoU, per-class IoU and pixel accuracy of `inputs` against the options' gt_masks
        (masks are scored as they are made, so `ground_truth` must be left out)."""
        import io

        from cvtool.core.status import UsageError

        if self.evaluation is None or ground_truth is not None or options:
            raise UsageError("SemanticSegmenter scores against its own gt_masks: build it with "
                             "gt_masks=DIR and call evaluate(inputs)")
        for _ in self.predict(inputs, keep_images=False):
            pass
        return self.evaluation.report(io.StringIO())

    def models_info(self) -> list[dict[str, Any]]:
        # The labels too (a few dozen at most): `cvtool merge --eval` scores classes by them.
        return [{**model_info(self.loaded), "encoder": self.loaded.encoder,
                 "categories": list(self.loaded.categories)}]


PREDICTORS.update({kind.task: kind for kind in (Classifier, Detector, InstanceSegmenter,
                                                SemanticSegmenter)})


def model_info(loaded: Any) -> dict[str, Any]:
    return {"name": loaded.name, "weights_file": loaded.weights_file,
            "weights_sha256": loaded.weights_sha256, "classes": len(loaded.categories),
            "folded_batch_norms": loaded.folded_batch_norms,
            **getattr(loaded.module, "runtime_info", {})}


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


@dataclasses.dataclass
class GeneratedImage:
    """One sample (or one step of an interpolation path) of a `Generator`."""

    name: str  # the file name `cvtool generate -o DIR` gives it
    index: int  # the sample, or the interpolation path
    step: int | None  # the step along the path; None for samples
    image: Any = dataclasses.field(repr=False)  # PIL image, "L" (grey) or "RGB"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "index": self.index, "step": self.step,
                "width": self.image.width, "height": self.image.height}


class Generator:
    """Samples from a generative checkpoint (PixelCNN, VAE, GAN)."""

    def __init__(self, options: GenerateOptions | None = None, /, **kwargs: Any) -> None:
        if options is None:
            options = GenerateOptions(**kwargs)
        elif kwargs:
            raise TypeError("give an options object or keyword options, not both")
        from cvtool.core.device import prepare_device
        from cvtool.inference import generate

        self.options = options
        generate.check_options(options)
        self.loaded = generate.load(options)
        self.device, self.settings = prepare_device(options.device, "fp32", options.threads,
                                                    options.seed, python_warning)

    def predict(self, num: int | None = None, *, seed: int | None = None,
                interpolate: bool | None = None, steps: int | None = None,
                temperature: float | None = None) -> Iterator[GeneratedImage]:
        """`num` samples (or, with `interpolate`, `num` paths of `steps` images); the same seed
        on the same device gives the same pixels. Unset arguments come from the options."""
        from cvtool.inference import generate

        changes: dict[str, Any] = {key: value for key, value in (("num", num), ("seed", seed),
                   ("interpolate", interpolate), ("steps", steps),
                   ("temperature", temperature)) if value is not None}
        options = dataclasses.replace(self.options, **changes)
        generate.check_options(options)
        generate.check_family(self.loaded, options)
        images = generate.generate(Environment(quiet=True), self.loaded, options, self.device)
        names = generate.file_names(options)
        for number, (name, image) in enumerate(zip(names, generate.to_images(images))):
            index, step = divmod(number, options.steps) if options.interpolate else (number, None)
            yield GeneratedImage(name, index, step, image)

    def __repr__(self) -> str:
        return f"Generator({self.options!r})"
