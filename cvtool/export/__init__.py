"""`cvtool export`: a model as ONNX or OpenVINO IR, verified against eager PyTorch first.

`exporter` runs it, `sources` loads what is exported per task, `fold` folds batch norms,
`verify` compares the runtime's outputs with eager PyTorch's. What an export file holds and how
inference runs one: `cvtool.models.exported` and `cvtool.models.runtimes`. No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cvtool.core.options import PlainData
from cvtool.core.status import UsageError
from cvtool.models.exported import FORMATS


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


def export_model(model: str, output: str | Path, **options: Any) -> dict[str, Any]:
    """`cvtool export MODEL -o OUTPUT` from Python: the summary it prints, as a dict.

        summary = cvtool.export_model("shapes-unet", "unet.onnx")
        segmenter = cvtool.SemanticSegmenter(model="unet.onnx")

    `options` are `ExportOptions`' fields. Raises `cvtool.UsageError` (a model or output that
    cannot work, a verification beyond tolerance: nothing is written then) or
    `cvtool.ResourceUnavailable` (the runtime is not installed). Warnings are `CvtoolWarning`s.
    """
    from cvtool.export.exporter import run_export
    from cvtool.inference.predictors import python_warning

    summary = run_export(ExportOptions(model=model, output=str(output), **options),
                         python_warning, lambda message: None)
    checked = summary["verification"]
    if not checked.get("skipped") and not checked["passed"]:
        raise UsageError(f"the export differs from eager PyTorch beyond tolerance "
                         f"({checked['failures'][0]}); nothing was written")
    return summary
