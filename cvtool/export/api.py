"""`cvtool.export_model`: `cvtool export` from Python."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cvtool.core.status import UsageError
from cvtool.export import ExportOptions, require_runtime


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

    chosen = ExportOptions(model=model, output=str(output), **options)
    require_runtime(chosen)
    summary = run_export(chosen, python_warning, lambda message: None)
    checked = summary["verification"]
    if not checked.get("skipped") and not checked["passed"]:
        raise UsageError(f"the export differs from eager PyTorch beyond tolerance "
                         f"({checked['failures'][0]}); nothing was written")
    return summary
