"""`cvtool export`: a model as ONNX or OpenVINO IR, verified against eager PyTorch first.

`exporter` runs it (`api`: from Python), `exportable` loads what is exported per task, `fold` folds
batch norms, `verify` compares the runtime's outputs with eager PyTorch's. What an export file
holds and how inference runs one: `cvtool.models.exported` and `cvtool.models.runtimes`. No
torch here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cvtool.core.options import PlainData
from cvtool.core.status import ResourceUnavailable, UsageError
from cvtool.models.exported import FORMATS, INSTALL, require


@dataclass(kw_only=True)
class ExportOptions(PlainData):
    """What `cvtool export` (and `cvtool.export_model`) is asked to do."""

    model: str
    output: str
    weights: str = "default"
    format: str | None = None  # onnx | openvino; None: from the output's suffix, else onnx
    opset: int = 18
    image_size: list[int] | None = None  # classifiers: [side] or [height, width]
    dynamic_batch: bool = False
    encoder: str | None = None  # smp models
    verify: bool = True
    verify_images: list[str] | None = None  # None: the bundled verification images
    threads: int | None = None
    force: bool = False  # replace an existing output


def output_format(options: ExportOptions) -> str:
    suffix = Path(options.output).suffix.lower()
    implied = {".onnx": "onnx", ".xml": "openvino"}.get(suffix)
    chosen = options.format or implied or "onnx"
    if chosen not in FORMATS:
        raise UsageError(f"invalid --format {chosen!r}; expected one of {', '.join(FORMATS)}")
    if implied is not None and implied != chosen:
        raise UsageError(f"-o {options.output} names a {implied} file, but --format is {chosen}")
    if chosen == "onnx" and implied is None:
        raise UsageError(f"-o {options.output}: an ONNX export is one file ending in .onnx")
    return chosen


def require_runtime(options: ExportOptions) -> str:
    """The export's format, once its runtime (and, for ONNX, the onnx package that writes the
    metadata) is known to be installed: exit 3 naming the extra otherwise, before torch loads."""
    fmt = output_format(options)
    require(fmt)
    if fmt == "onnx":
        try:
            import onnx  # noqa: F401
        except ImportError:
            raise ResourceUnavailable(f"ONNX export needs the onnx package: {INSTALL['onnx']}") \
                from None
    return fmt
