"""cvtool: computer vision from the command line, on PyTorch, and from Python.

    import cvtool

    for record in cvtool.Classifier(model="digits-cnn").predict("sample_images/digits"):
        print(record.path, record.top.label if record.ok else record.error.message)

The public names load on first use: `import cvtool` imports neither torch nor a model.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any


def _version() -> str:
    """pyproject.toml's version, as the installed package's metadata has it (the one place it
    is written)."""
    from importlib import metadata

    try:
        return metadata.version("cvtool")
    except metadata.PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


__version__ = _version()

_PUBLIC = {
    "Classifier": "cvtool.inference.predictors",
    "Detector": "cvtool.inference.predictors",
    "InstanceSegmenter": "cvtool.inference.predictors",
    "SemanticSegmenter": "cvtool.inference.predictors",
    "Generator": "cvtool.inference.predictors",
    "GeneratedImage": "cvtool.inference.predictors",
    "export_model": "cvtool.export.api",
    "evaluate": "cvtool.inference.scoring",
    "train_classify": "cvtool.train.api",
    "train_detect": "cvtool.train.api",
    "train_segment_instance": "cvtool.train.api",
    "train_segment_semantic": "cvtool.train.api",
    "train_generate": "cvtool.train.api",
    "ClassifyOptions": "cvtool.core.options",
    "DetectOptions": "cvtool.core.options",
    "SegmentOptions": "cvtool.core.options",
    "GenerateOptions": "cvtool.core.options",
    "Record": "cvtool.core.results",
    "InputError": "cvtool.core.results",
    "Prediction": "cvtool.core.results",
    "ClassifyRecord": "cvtool.inference.records",
    "DetectionRecord": "cvtool.inference.records",
    "SemanticRecord": "cvtool.inference.records",
    "Detection": "cvtool.inference.records",
    "ClassPixels": "cvtool.inference.records",
    "CvtoolError": "cvtool.core.status",
    "UsageError": "cvtool.core.status",
    "ResourceUnavailable": "cvtool.core.status",
    "CvtoolWarning": "cvtool.core.status",
}
__all__ = ["__version__", "ClassPixels", "Classifier", "ClassifyOptions", "ClassifyRecord",
           "CvtoolError", "CvtoolWarning", "DetectOptions", "Detection", "DetectionRecord",
           "Detector", "GenerateOptions", "GeneratedImage", "Generator", "InputError",
           "InstanceSegmenter", "Prediction", "Record", "ResourceUnavailable", "SegmentOptions",
           "SemanticRecord", "SemanticSegmenter", "UsageError", "evaluate", "export_model",
           "train_classify",
           "train_detect", "train_generate", "train_segment_instance", "train_segment_semantic"]
assert set(__all__) == {"__version__", *_PUBLIC}

if TYPE_CHECKING:
    from cvtool.core.options import ClassifyOptions, DetectOptions, GenerateOptions, SegmentOptions
    from cvtool.core.results import InputError, Prediction, Record
    from cvtool.core.status import CvtoolError, CvtoolWarning, ResourceUnavailable, UsageError
    from cvtool.export.api import export_model
    from cvtool.inference.predictors import (
        Classifier,
        Detector,
        GeneratedImage,
        Generator,
        InstanceSegmenter,
        SemanticSegmenter,
    )
    from cvtool.inference.records import (
        ClassifyRecord,
        ClassPixels,
        Detection,
        DetectionRecord,
        SemanticRecord,
    )
    from cvtool.inference.scoring import evaluate
    from cvtool.train.api import (
        train_classify,
        train_detect,
        train_generate,
        train_segment_instance,
        train_segment_semantic,
    )


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'cvtool' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
