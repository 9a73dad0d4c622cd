"""Exported models run by ONNX Runtime or OpenVINO in the place of a torch module.

`open_export` gives the model loaders what they build the same `LoadedModel` from as for a
registry model or checkpoint: categories and preprocessing from the export's metadata, and a
`RuntimeModule`, called with the tensors the torch module would be called with and returning what
it would return. So classify, detect, segment-instance and segment-semantic (and their writers,
evaluation, Ray engine and Python predictors) run exports with no code of their own.

Files are read into memory first (regular files only) and handed to the runtime as bytes: an
ONNX file's external-data references and an IR's paths are never followed. The runtimes run on
the CPU; `--precision bf16|fp16` needs OpenVINO and a CPU that has the instructions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cvtool.core.context import Warn
from cvtool.core.files import open_regular
from cvtool.core.results import InputError, one_line
from cvtool.core.status import ResourceUnavailable, UsageError
from cvtool.models.exported import (
    METADATA_KEY,
    OPENVINO_FILE,
    checked_metadata,
    exported_format,
    require,
)

OPENVINO_PRECISIONS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}


def read_file(path: Path) -> bytes:
    try:
        with open_regular(path) as file:
            return file.read()
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror or error}") from None


def threads() -> int:
    return torch.get_num_threads()


class OnnxEngine:
    """An ONNX Runtime session on the CPU."""

    kind = "onnx"

    def __init__(self, model: bytes, source: str) -> None:
        ort = require("onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # its warnings are about graph rewrites, not the user's
        try:
            self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        except Exception as error:  # noqa: BLE001 - onnxruntime raises its own untyped errors
            raise UsageError(f"{source} is not a model ONNX Runtime can run: "
                             f"{one_line(error)[:300]}") from None
        self.input_name = self.session.get_inputs()[0].name
        self.precision = "fp32"

    def metadata(self) -> str | None:
        return self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)

    def prepare(self, device: torch.device, precision: str, warn: Warn) -> None:
        if device.type != "cpu":
            raise ResourceUnavailable(f"--device {device}: cvtool runs ONNX models with ONNX "
                                      "Runtime on the CPU; use --device cpu")
        if precision != "fp32":
            raise UsageError(f"--precision {precision}: ONNX Runtime runs this model in fp32 on "
                             "the CPU; export with --format openvino for bf16 or fp16")

    def run(self, array: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {self.input_name: array})

    def info(self) -> dict[str, Any]:
        import onnxruntime

        return {"runtime": "onnxruntime", "runtime_version": onnxruntime.__version__,
                "runtime_precision": self.precision}


class OpenVinoEngine:
    """An OpenVINO model, compiled for the CPU once the precision is known."""

    kind = "openvino"

    def __init__(self, model: Any, source: str) -> None:
        import openvino as ov

        self.core, self.model, self.source = ov.Core(), model, source
        self.compiled: Any = None
        self.precision = "fp32"

    def metadata(self) -> str | None:
        if not self.model.has_rt_info([METADATA_KEY]):
            return None
        return str(self.model.get_rt_info([METADATA_KEY]).astype(str))

    def prepare(self, device: torch.device, precision: str, warn: Warn) -> None:
        if device.type != "cpu":
            raise ResourceUnavailable(f"--device {device}: cvtool runs OpenVINO models on the "
                                      "CPU; use --device cpu")
        capabilities = self.core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        if precision != "fp32" and precision.upper() not in capabilities:
            warn(f"this CPU has no native {precision} for OpenVINO; {self.source} runs in fp32")
            precision = "fp32"
        config = {"INFERENCE_PRECISION_HINT": OPENVINO_PRECISIONS[precision],
                  "INFERENCE_NUM_THREADS": threads(), "PERFORMANCE_HINT": "LATENCY"}
        try:
            self.compiled = self.core.compile_model(self.model, "CPU", config)
        except Exception as error:  # noqa: BLE001
            raise UsageError(f"OpenVINO cannot compile {self.source}: "
                             f"{one_line(error)[:300]}") from None
        self.request = self.compiled.create_infer_request()
        self.precision = precision

    def run(self, array: np.ndarray) -> list[np.ndarray]:
        if self.compiled is None:
            self.prepare(torch.device("cpu"), "fp32", lambda message: None)
        results = self.request.infer({0: array})
        return [np.array(results[output]) for output in self.compiled.outputs]

    def info(self) -> dict[str, Any]:
        import openvino

        return {"runtime": "openvino", "runtime_version": openvino.__version__,
                "runtime_precision": self.precision}


class RuntimeModule:
    """An export standing in for the torch module it was made from.

    classify, segment-semantic, generate: called with an (N, ...) float tensor, returns the
    graph's first output as a tensor; a graph exported for batch 1 runs image by image.
    detect, segment-instance: called with a list of (3, H, W) images, returns one dict per image
    (boxes, labels, scores, masks, as torchvision's detectors do). Rows scoring at or under the
    detector's own score threshold are dropped, as eager PyTorch never returns them. An image
    whose outputs no detector could give (a NaN or inverted box, one far outside the image, a
    label that is no category or no integer, masks of another size than the image) comes back
    as an InputError for its record: a tampered graph never reaches the writers.
    """

    def __init__(self, engine: OnnxEngine | OpenVinoEngine, meta: dict[str, Any],
                 source: str) -> None:
        self.engine, self.meta, self.source = engine, meta, source
        self.batch = meta["input"]["batch"]
        self.detector = meta["task"] in ("detect", "segment-instance")

    def to(self, *_args: Any, **_kwargs: Any) -> RuntimeModule:
        return self  # the runtime decides where it runs (`prepare_runtime`)

    def eval(self) -> RuntimeModule:
        return self

    def prepare_runtime(self, device: torch.device, precision: str, warn: Warn) -> None:
        self.engine.prepare(device, precision, warn)

    @property
    def runtime_info(self) -> dict[str, Any]:
        return self.engine.info()

    def __call__(self, inputs: Any) -> Any:
        if self.detector:
            return [self._detect(image) for image in inputs]
        return self._batched(inputs)

    def _batched(self, batch: torch.Tensor) -> torch.Tensor:
        array = _array(batch)
        step = self.batch or len(array)  # exports take batch 1, or any batch
        chunks = []
        for start in range(0, len(array), step):
            chunk = array[start:start + step]
            output = self._run(chunk)[0]
            self._expect(output.ndim == (2 if self.meta["task"] == "classify" else 4)
                         and len(output) == len(chunk) and self._channels_fit(output), output)
            chunks.append(output)
        return torch.from_numpy(np.concatenate(chunks))

    def _channels_fit(self, output: np.ndarray) -> bool:
        if self.meta["task"] == "generate":
            return True
        classes = len(self.meta["categories"])
        return output.shape[1] == classes or (self.meta["task"] == "segment-semantic"
                                              and output.shape[1] == 1 and classes == 2)

    def _detect(self, image: torch.Tensor) -> dict[str, torch.Tensor] | InputError:
        outputs = dict(zip(self.meta["outputs"], self._run(_array(image))))
        count = len(outputs["scores"])
        self._expect(outputs["boxes"].shape == (count, 4) and outputs["labels"].shape == (count,)
                     and outputs["scores"].ndim == 1 and ("masks" not in outputs or (
                         outputs["masks"].ndim == 4 and len(outputs["masks"]) == count)),
                     outputs["boxes"])
        keep = outputs["scores"] > self.meta["detection"]["score_thresh"]
        kept = {name: np.ascontiguousarray(value[keep]) for name, value in outputs.items()}
        if problem := _detection_problem(kept, image.shape[-2:], len(self.meta["categories"])):
            return InputError("InvalidModelOutput", f"{self.source} gave {problem}; no "
                              "detector does, so its graph is not what its metadata says")
        kept["labels"] = kept["labels"].astype(np.int64)
        return {name: torch.from_numpy(value) for name, value in kept.items()}

    def _run(self, array: np.ndarray) -> list[np.ndarray]:
        try:
            return self.engine.run(array)
        except Exception as error:  # noqa: BLE001 - the runtimes raise their own kinds
            raise UsageError(f"{self.source} failed in {self.engine.kind}: "
                             f"{one_line(error)[:300]} (its graph does not take the input its "
                             "metadata describes)") from None

    def _expect(self, fits: bool, output: np.ndarray) -> None:
        if not fits:
            raise UsageError(f"{self.source}: the graph's output (shape {list(output.shape)}) "
                             f"does not fit its {self.meta['task']} metadata")


def _detection_problem(outputs: dict[str, np.ndarray], size: Any, classes: int) -> str | None:
    """What makes one image's kept detections impossible, or None. Boxes may pass the image's
    edge by 1% (resizing back to the input's size rounds), no more: eager detectors clip."""
    height, width = int(size[0]), int(size[1])
    boxes, labels, scores = outputs["boxes"], outputs["labels"], outputs["scores"]
    if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
        return "a box or score that is NaN or infinite"
    slack = 1 + 0.01 * max(height, width)
    if ((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])).any():
        return "an inverted box (x2 < x1 or y2 < y1)"
    if (boxes.min(initial=0) < -slack or boxes[:, 0::2].max(initial=0) > width + slack
            or boxes[:, 1::2].max(initial=0) > height + slack):
        return f"a box outside the {width}x{height} image"
    if not (np.isfinite(labels).all() and (labels == np.round(labels)).all()
            and ((labels >= 0) & (labels < classes)).all()):
        return f"a label that is not one of the {classes} category indices"
    masks = outputs.get("masks")
    if masks is not None and len(masks) and masks.shape[1:] != (1, height, width):
        return (f"masks of {masks.shape[-1]}x{masks.shape[-2]} for a {width}x{height} image")
    return None


def _array(tensor: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(tensor.detach().to("cpu", torch.float32).numpy())


def open_engine(model: str) -> tuple[OnnxEngine | OpenVinoEngine, Path]:
    """The runtime for the export `model` names, and the file holding its parameters."""
    fmt = exported_format(model)
    path = Path(model)
    require(fmt)  # a missing runtime is exit 3 before anything is read
    if fmt == "onnx":
        data = read_file(path)
        refuse_external_data(data, model)
        return OnnxEngine(data, model), path
    xml = path / OPENVINO_FILE if path.is_dir() else path
    weights = xml.with_suffix(".bin")
    if not weights.is_file():
        raise UsageError(f"{xml} needs its weights file {weights.name} beside it")
    return OpenVinoEngine(read_openvino(read_file(xml), read_file(weights), model), model), weights


def refuse_external_data(data: bytes, source: str) -> None:
    """An ONNX graph whose tensors live in other files is refused (UsageError): ONNX Runtime
    would read each `location` relative to the current directory, wherever it points. Only a
    file that mentions the word is parsed to look (cvtool's exports never hold it)."""
    if b"location" not in data:
        return
    import onnx

    try:
        graph = onnx.load_model_from_string(data).graph  # reads no other file
    except Exception as error:  # noqa: BLE001 - protobuf's DecodeError and kin
        raise UsageError(f"{source} is not an ONNX model: {one_line(error)[:200]}") from None
    for tensor in _tensors(graph):
        if tensor.data_location == onnx.TensorProto.EXTERNAL or tensor.external_data:
            where = next((entry.value for entry in tensor.external_data
                          if entry.key == "location"), "?")
            raise UsageError(f"{source} keeps tensor {tensor.name!r} in an external file "
                             f"({where!r}); cvtool runs only self-contained ONNX files and "
                             "never reads another file an ONNX file names")


def _tensors(graph: Any) -> Any:
    """Every tensor in an ONNX graph: initializers, constants in node attributes, subgraphs."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("g"):
                yield from _tensors(attribute.g)
            for subgraph in attribute.graphs:
                yield from _tensors(subgraph)


def read_openvino(xml: bytes, weights: bytes, source: str) -> Any:
    ov = require("openvino")
    try:
        return ov.Core().read_model(xml, ov.Tensor(np.frombuffer(weights, np.uint8)))
    except Exception as error:  # noqa: BLE001 - OpenVINO raises RuntimeError subclasses
        raise UsageError(f"{source} is not a model OpenVINO can read: "
                         f"{one_line(error)[:300]}") from None


@dataclass
class Export:
    """An export opened for a task: its stand-in module, checked metadata, parameters' file."""

    module: RuntimeModule
    meta: dict[str, Any]
    parameters: str

    @property
    def categories(self) -> list[str]:
        return list(self.meta["categories"])

    def segmentation_layout(self) -> tuple[int, int, str | None]:
        """input_multiple, min_input_side and encoder of a semantic segmenter's export."""
        layout = self.meta.get("segmentation") or {}
        return (_side(layout, "input_multiple", self.module.source),
                _side(layout, "min_input_side", self.module.source), layout.get("encoder"))


def open_export(model: str, task: str, weights: str, serves: tuple[str, ...]) -> Export:
    """`-m FILE.onnx | FILE.xml | DIR` opened for `task`, which `serves` tasks' exports serve."""
    if weights != "default":
        raise UsageError(f"--weights {weights} does not apply to {model}: an export carries "
                         "its own weights")
    engine, parameters = open_engine(model)
    meta = checked_metadata(engine.metadata(), model)
    if meta["task"] not in serves:
        raise UsageError(f"{model} is an exported {meta['task']} model; {task} needs one of "
                         f"{', '.join(serves)}")
    if task in ("detect", "segment-instance"):
        _score_thresh(meta, model)
    return Export(RuntimeModule(engine, meta, model), meta, str(parameters))


def _side(layout: dict[str, Any], key: str, source: str) -> int:
    value = layout.get(key, 1)
    if type(value) is not int or not 1 <= value <= 4096:
        raise UsageError(f"{source}: segmentation {key} must be an integer from 1 to 4096")
    return value


def _score_thresh(meta: dict[str, Any], source: str) -> None:
    detection = meta.get("detection")
    if not isinstance(detection, dict):
        raise UsageError(f"{source}: its metadata's \"detection\" must be an object with a "
                         "score_thresh")
    value = detection.get("score_thresh")
    if not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise UsageError(f"{source}: detection score_thresh must be a number in [0, 1)")
    needed = {"boxes", "labels", "scores"} | ({"masks"} if meta["task"] == "segment-instance"
                                              else set())
    if missing := needed - set(meta["outputs"]):
        raise UsageError(f"{source}: a {meta['task']} export needs outputs "
                         f"{', '.join(sorted(missing))}")
