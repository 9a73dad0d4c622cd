"""`cvtool merge`: shard (or resumed) run directories joined as one run, in input order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cvtool.cli.commands import (
    DETECTION_FORMATS,
    RECORD_FORMATS,
    detection_writer,
    evaluate_detections,
    resolve_format,
)
from cvtool.core.context import Environment
from cvtool.core.results import counted, one_line
from cvtool.core.status import UsageError


def merge(env: Environment, directories: list[Path], output: Path, *, fmt: str | None,
          gt: Path | None, gt_masks: Path | None, evaluate: bool) -> int:
    """`cvtool merge`: shard (or resumed) run directories as one run, in input order."""
    from cvtool.core.ownership import require_empty
    from cvtool.core.results import record_from_dict
    from cvtool.inference import runs
    from cvtool.inference.runner import Tally, command_line, write_run_json
    from cvtool.io.writers import make_writer, strict_json, write_bytes

    if not directories:
        raise UsageError("give the run directories to merge (written with -o)")
    loaded = [runs.Run(directory) for directory in directories]
    pairs = runs.merged(loaded)
    records = [record for _, record in pairs]
    task = loaded[0].info["task"]
    detection = task in ("detect", "segment-instance")
    fmt = resolve_format(env, fmt, DETECTION_FORMATS if detection else RECORD_FORMATS)
    needed = "--gt annotations.json" if detection else "--gt-masks DIR"
    if evaluate and (gt if detection else gt_masks) is None:
        raise UsageError(f"--eval needs {needed} to compare against")
    if (gt is not None and not detection) or (gt_masks is not None and detection):
        raise UsageError(f"{'--gt' if gt is not None else '--gt-masks'} does not apply to {task} "
                         "runs")
    env.own_directory(output, "--output")
    require_empty(output, "--output", "merge into a new or empty directory")
    metrics = None
    if detection:
        from cvtool.io import coco

        ground_truth = coco.load_ground_truth(gt, env.warn) if gt is not None else None
        writer, collector = detection_writer(env, fmt, task, ground_truth, evaluate)
        if evaluate:
            metrics = lambda: evaluate_detections(env, task, ground_truth, collector)  # noqa: E731
    else:
        writer = make_writer(fmt, env.stdout, task, env.no_color)
        if evaluate:
            metrics = _semantic_evaluation(env, loaded[0].info, gt_masks, pairs)
    tally = Tally()
    try:
        for record in records:
            tally.total += 1
            tally.failed += not record["ok"]
            writer.write(record_from_dict(record))
    finally:
        writer.close()
    lines = "".join(strict_json(record) + "\n" for record in records)
    write_bytes(output / runs.RECORDS, lines.encode("utf-8"))
    write_bytes(output / runs.POSITIONS, "".join(f"{n}\n" for n in range(len(records))).encode())
    first = loaded[0].info
    info = {key: first.get(key) for key in ("cvtool_version", "task", "models", "options")}
    info.update(command=command_line(), shard=None,
                merged=[{"directory": str(run.directory), **run.info} for run in loaded],
                counts={"inputs": tally.total, "ok": tally.ok, "failed": tally.failed},
                complete=all(run.info.get("complete") for run in loaded))
    if metrics is not None:
        info["metrics"] = metrics()
    write_run_json(output, info)
    env.log(f"merged {counted(len(loaded), 'run')}: {counted(tally.total, 'input')}, "
            f"{tally.failed} failed")
    return tally.status()


def _semantic_evaluation(env: Environment, info: dict[str, Any], gt_masks: Path,
                         pairs: list[tuple[Any, dict[str, Any]]]) -> Any:
    """mIoU of the merged masks (read back from each record's mask_path) against --gt-masks,
    computed as one segment-semantic --eval computes it."""
    import numpy as np
    from PIL import Image

    from cvtool.inference.runs import open_artifact
    from cvtool.inference.segment_semantic import Evaluation
    from cvtool.io.masks import GroundTruthMasks

    categories = (info.get("models") or [{}])[0].get("categories")
    if not categories:
        raise UsageError("these runs do not record their classes (made by an older cvtool); "
                         "run segment-semantic --eval over the inputs instead")
    evaluation = Evaluation(GroundTruthMasks(gt_masks), categories,
                            info.get("options", {}).get("ignore_index", 255), env.warn)
    for run, record in pairs:
        if record["ok"] and record.get("mask_path"):
            with open_artifact(run, record, "mask_path") as file:
                try:
                    with Image.open(file) as mask:
                        pixels = np.asarray(mask)
                except (OSError, ValueError, SyntaxError) as error:
                    raise UsageError(f"{run.directory}: the mask of {record['path']!r} "
                                     f"cannot be read: {one_line(error)}") from None
            if pixels.ndim != 2 or pixels.size == 0 or pixels.max() >= len(categories):
                raise UsageError(f"{run.directory}: the mask of {record['path']!r} is not a "
                                 f"class-index mask of the run's {len(categories)} classes")
            evaluation.add(record["path"], pixels)
    return lambda: evaluation.report(env.stderr)
