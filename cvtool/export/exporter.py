"""`cvtool export`: a model as ONNX or OpenVINO IR, verified against eager PyTorch first.

ONNX comes from torch.onnx's TorchScript-based exporter (`dynamo=False`): it is the one that
exports every family cvtool serves (torchvision's R-CNNs, LR-ASPP and cvtool's small CNNs fail
torch.export here), with dynamic batch, height and width where asked. OpenVINO IR comes from
OpenVINO's own PyTorch frontend (see `OpenVinoArtifact`). Both see the same `Graph`, with batch
norms folded into their convolutions first (`cvtool.models.fold`). The runtime then loads the
graph from memory and its outputs are compared with the unfolded eager model's on real images
(`cvtool.export.verify`); only an export within tolerance is written, atomically, with its
metadata and verification figures inside it.
"""

from __future__ import annotations

import copy
import hashlib
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cvtool.core.context import Warn
from cvtool.core.results import one_line
from cvtool.core.status import UsageError
from cvtool.export import ExportOptions, require_runtime, verify
from cvtool.export.exportable import Exportable, load_source
from cvtool.io.writers import strict_json, write_bytes
from cvtool.models.exported import METADATA_KEY, OPENVINO_FILE, exported_format
from cvtool.models.fold import fold_batch_norms
from cvtool.models.runtimes import OnnxEngine, OpenVinoEngine, RuntimeModule


def run_export(options: ExportOptions, warn: Warn, log: Callable[[str], None]) -> dict:
    """Export, verify and write `options.model`; the summary says what was done and measured.
    Beyond tolerance nothing is written and the summary's `verified` is False."""
    started = time.perf_counter()
    fmt = require_runtime(options)
    output = Path(options.output)
    _check_output(output, fmt, options)
    if options.threads is not None:
        torch.set_num_threads(options.threads)
    if exported_format(options.model):
        raise UsageError(f"{options.model} is already an export; export the model it came from")
    source = load_source(options, warn)
    folded = copy.deepcopy(source.module)
    source.meta["folded_batch_norms"] = fold_batch_norms(
        folded, lambda module: source.call(module, source.inputs[0][1]))
    log(f"exporting {source.name} ({source.task}) to {fmt}; "
        f"{source.meta['folded_batch_norms']} batch norms folded")
    if fmt != "onnx":
        source.meta["opset"] = None  # OpenVINO converts from PyTorch itself
    graph = Graph(folded, source)
    with tempfile.TemporaryDirectory(prefix=".cvtool-export-", dir=output.parent) as work:
        artifact = (OnnxArtifact(graph, source, options.opset, Path(work)) if fmt == "onnx"
                    else OpenVinoArtifact(graph, source))
        artifact.describe(source.meta)
        engine = artifact.engine(source.name)
        if options.verify:
            log(f"verifying against eager PyTorch on {len(source.inputs)} inputs")
            checked = check(source, RuntimeModule(engine, source.meta, source.name))
        else:
            warn("--no-verify: the export's outputs were not compared with eager PyTorch; it "
                 "was only loaded by the runtime")
            checked = {"skipped": True}
        source.meta["verification"] = checked
        summary = _summary(source, options, fmt, checked)
        if not checked.get("skipped") and not checked["passed"]:
            summary["seconds"] = round(time.perf_counter() - started, 3)
            return summary
        artifact.describe(source.meta)
        written = artifact.write(output, Path(work))
    summary.update(written, seconds=round(time.perf_counter() - started, 3))
    return summary


def _check_output(output: Path, fmt: str, options: ExportOptions) -> None:
    if fmt == "openvino" and output.suffix.lower() != ".xml":
        if output.is_dir() and any(output.iterdir()) and not options.force:
            raise UsageError(f"-o {output}: the directory is not empty; give --force to "
                             "replace its model")
        if output.exists() and not output.is_dir():
            raise UsageError(f"-o {output} is a file; OpenVINO writes model.xml into a "
                             "directory, or name FILE.xml")
        output.parent.mkdir(parents=True, exist_ok=True)
        return
    if output.is_dir():
        raise UsageError(f"-o {output} is a directory; name the file to write")
    if output.exists() and not options.force:
        raise UsageError(f"-o {output} exists; give --force to replace it")
    output.parent.mkdir(parents=True, exist_ok=True)


def _summary(source: Exportable, options: ExportOptions, fmt: str,
             checked: dict[str, Any]) -> dict[str, Any]:
    return {"model": source.name, "task": source.task, "format": fmt, "output": options.output,
            "opset": source.meta["opset"], "input": source.meta["input"],
            "outputs": source.meta["outputs"],
            "folded_batch_norms": source.meta["folded_batch_norms"],
            "verified": bool(checked.get("passed")), "verification": checked}


class Graph(nn.Module):
    """The model as both exporters see it: one input tensor in (a detector's one image), its
    outputs out as a tuple in the metadata's order."""

    def __init__(self, module: nn.Module, source: Exportable) -> None:
        super().__init__()
        self.module, self.task, self.outputs = module, source.task, source.outputs

    def forward(self, given: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.task in ("detect", "segment-instance"):
            found = self.module([given])[0]
            return tuple(found[name] for name in self.outputs)
        output = self.module(given)
        if isinstance(output, dict):
            return tuple(output[name] for name in self.outputs)
        return (output,)


class OnnxArtifact:
    """torch.onnx's TorchScript-based exporter; the file is held in memory until written."""

    def __init__(self, graph: Graph, source: Exportable, opset: int, work: Path) -> None:
        import onnx

        path = work / "model.onnx"
        axes = {source.input_name: source.axes}
        if source.axes.get(0) == "batch":
            axes.update({name: {0: "batch"} for name in source.outputs})
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the tracer's notes on Python control flow
                torch.onnx.export(graph, (source.inputs[0][1],), str(path), dynamo=False,
                                  opset_version=opset, input_names=[source.input_name],
                                  output_names=source.outputs, dynamic_axes=axes,
                                  do_constant_folding=True)
        except Exception as error:  # noqa: BLE001 - the exporter raises many kinds
            raise UsageError(f"{source.name} cannot be exported to ONNX opset {opset}: "
                             f"{one_line(error)[:400]}") from None
        self.proto = onnx.load(str(path))

    def describe(self, meta: dict[str, Any]) -> None:
        for entry in list(self.proto.metadata_props):
            if entry.key == METADATA_KEY:
                self.proto.metadata_props.remove(entry)
        self.proto.metadata_props.add(key=METADATA_KEY, value=strict_json(meta))
        self.data = self.proto.SerializeToString()

    def engine(self, name: str) -> OnnxEngine:
        return OnnxEngine(self.data, name)

    def write(self, output: Path, _work: Path) -> dict[str, Any]:
        write_bytes(output, self.data)
        return {"bytes": len(self.data), "sha256": hashlib.sha256(self.data).hexdigest()}


class OpenVinoArtifact:
    """OpenVINO's own PyTorch frontend. Converted from ONNX instead, the R-CNNs return one row
    of uninitialised memory for an image with no detections (OpenVINO 2026.4); from PyTorch,
    they return none, as eager PyTorch does."""

    def __init__(self, graph: Graph, source: Exportable) -> None:
        import openvino as ov

        example = source.inputs[0][1]
        shape = [-1 if axis in source.axes else side for axis, side in enumerate(example.shape)]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.model = ov.convert_model(graph.eval(), example_input=(example,),
                                              input=[ov.PartialShape(shape)])
        except Exception as error:  # noqa: BLE001
            raise UsageError(f"OpenVINO cannot convert {source.name}: "
                             f"{one_line(error)[:400]}") from None

    def describe(self, meta: dict[str, Any]) -> None:
        self.model.set_rt_info(strict_json(meta), [METADATA_KEY])

    def engine(self, name: str) -> OpenVinoEngine:
        return OpenVinoEngine(self.model, name)

    def write(self, output: Path, work: Path) -> dict[str, Any]:
        import openvino as ov

        xml = output if output.suffix.lower() == ".xml" else output / OPENVINO_FILE
        xml.parent.mkdir(exist_ok=True)
        saved = work / "model.xml"
        ov.save_model(self.model, str(saved), compress_to_fp16=False)
        for path in (saved.with_suffix(".bin"), saved):
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        # The weights first: the .xml appears only once its .bin is in place.
        os.replace(saved.with_suffix(".bin"), xml.with_suffix(".bin"))
        os.replace(saved, xml)
        data = xml.with_suffix(".bin").read_bytes()
        return {"bytes": len(data) + xml.stat().st_size, "xml": str(xml),
                "sha256": hashlib.sha256(data).hexdigest()}


def check(source: Exportable, runtime: RuntimeModule) -> dict[str, Any]:
    """The runtime's outputs against the eager model's on every verification input."""
    result = verify.Comparison()
    with torch.inference_mode():
        for name, given in source.inputs:
            compare_one(source, runtime, name, given, result)
        if source.task == "classify" and source.axes.get(0) == "batch" and len(source.inputs) > 1:
            batch = torch.cat([given for _, given in source.inputs])
            names = [f"{name} (batch)" for name, _ in source.inputs]
            verify.compare_classify(names, source.call(source.module, batch), runtime(batch),
                                    result)
    return result.summary()


def compare_one(source: Exportable, runtime: RuntimeModule, name: str, given: Any,
                result: verify.Comparison) -> None:
    eager = source.call(source.module, given)
    exported = source.call(runtime, given)  # type: ignore[arg-type]
    if source.task == "classify":
        verify.compare_classify([name], eager, exported, result)
    elif source.task == "segment-semantic":
        verify.compare_semantic(name, eager, exported, result)
    elif source.task == "generate":
        verify.compare_images(name, eager, exported, result)
    else:
        verify.compare_detections(name, eager, exported, result)
