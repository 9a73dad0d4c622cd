"""Exported models as files: which `-m` names one, and the metadata each carries.

An export is one ONNX file (`model.onnx`) or one OpenVINO IR (`model.xml` beside its
`model.bin`; `cvtool export -o DIR` writes `DIR/model.xml`). Either carries cvtool's metadata as
one JSON string under the key `cvtool` (ONNX `metadata_props`; OpenVINO `rt_info`):

    {"format": "cvtool-export", "format_version": 1,
     "task": "classify" | "detect" | "segment-instance" | "segment-semantic" | "generate",
     "model": "resnet50",                 # what was exported, as given to `cvtool export`
     "categories": ["tench", ...],        # index -> label
     "preprocessing": {...},              # as in a cvtool checkpoint (classify, semantic)
     "input": {"batch": 1 | null, "height": int | null, "width": int | null},  # null: dynamic
     "outputs": ["logits"],               # the graph's outputs, in order
     "detection": {"score_thresh": 0.05},             # detect / segment-instance
     "segmentation": {"input_multiple": 32, "min_input_side": 32, "encoder": "resnet34"},
     "generative": {...},                 # generate: the checkpoint's generative block
     "cvtool_version": "0.1.0", "torch_version": "2.14.1", "opset": 18 | null,
     "source_weights": "path" | null, "source_weights_sha256": "hex" | null,
     "folded_batch_norms": 53, "verification": {...}}

The metadata is untrusted input like any file cvtool reads: `checked_metadata` refuses what does
not fit before anything is built from it. No torch, no runtime here.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from cvtool.core import jsonfile
from cvtool.core.status import ResourceUnavailable, UsageError

FORMAT = "cvtool-export"
FORMAT_VERSION = 1
METADATA_KEY = "cvtool"
FORMATS = ("onnx", "openvino")
INSTALL = {"onnx": 'pip install "cvtool[onnx]"', "openvino": 'pip install "cvtool[openvino]"'}
OPENVINO_FILE = "model.xml"  # inside an export directory
TASKS = ("classify", "detect", "segment-instance", "segment-semantic", "generate")
MAX_METADATA_CHARS = 4 << 20
MAX_CATEGORIES = 100_000
RUNTIMES = {"onnx": "onnxruntime", "openvino": "openvino"}


def require(fmt: str) -> Any:
    """The runtime module for `fmt`, or exit 3 naming the install command. Checked before
    anything heavy is imported or read."""
    try:
        return importlib.import_module(RUNTIMES[fmt])
    except ImportError:
        raise ResourceUnavailable(f"{fmt} models need the {RUNTIMES[fmt]} runtime: "
                                  f"{INSTALL[fmt]}") from None


def exported_format(model: str) -> str | None:
    """"onnx" or "openvino" where `-m model` names an export, else None."""
    path = Path(model)
    if path.suffix.lower() == ".onnx":
        return "onnx"
    if path.suffix.lower() == ".xml" or (path.is_dir() and (path / OPENVINO_FILE).is_file()):
        return "openvino"
    return None


def checked_metadata(text: str | None, source: str) -> dict[str, Any]:
    """The metadata an export carries, refused (one UsageError line) unless it fits."""
    if text is None:
        raise UsageError(f"{source} carries no cvtool metadata; export the model with "
                         "`cvtool export` to run it here")
    if len(text) > MAX_METADATA_CHARS:
        raise UsageError(f"{source}: its cvtool metadata is over {MAX_METADATA_CHARS} characters")
    try:
        meta = jsonfile.loads(text)
    except jsonfile.UntrustedJSON as error:
        raise UsageError(f"{source}: its cvtool metadata is not JSON ({error})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UsageError(f"{source}: its metadata is not a cvtool export's "
                         f"(no \"format\": \"{FORMAT}\")")
    if meta.get("format_version") != FORMAT_VERSION:
        raise UsageError(f"{source}: export format_version {meta.get('format_version')!r}; this "
                         f"cvtool reads version {FORMAT_VERSION}")
    if meta.get("task") not in TASKS:
        raise UsageError(f"{source}: unknown task {str(meta.get('task'))[:40]!r}")
    categories = meta.get("categories")
    if meta["task"] != "generate" and not (
            isinstance(categories, list) and 0 < len(categories) <= MAX_CATEGORIES
            and all(isinstance(label, str) and len(label) <= 200 for label in categories)):
        raise UsageError(f"{source}: categories must be a list of 1 to {MAX_CATEGORIES} labels "
                         "(strings of up to 200 characters)")
    _check_input(meta.get("input"), source)
    outputs = meta.get("outputs")
    if not (isinstance(outputs, list) and outputs and all(isinstance(o, str) for o in outputs)):
        raise UsageError(f"{source}: outputs must be a list of output names")
    return meta


def _check_input(shape: Any, source: str) -> None:
    if not isinstance(shape, dict):
        raise UsageError(f"{source}: its metadata has no input shape")
    for key in ("batch", "height", "width"):
        value = shape.get(key)
        if value is not None and not (type(value) is int and 0 < value <= 1 << 16):
            raise UsageError(f"{source}: input {key} must be null or a positive integer")
