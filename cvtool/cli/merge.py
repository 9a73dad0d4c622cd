"""`cvtool merge`: shard (or resumed) run directories joined as one run, in input order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cvtool.cli.commands import (
    DETECTION_FORMATS,
    RECORD_FORMATS,
    detection_pictures,
    detection_writer,
    eval_title,
    evaluate_detections,
    quality_bars,
    resolve_format,
    write_pictures,
)
from cvtool.core.context import Environment
from cvtool.core.results import counted, one_line
from cvtool.core.status import QualityBelowBar, UsageError


def merge(env: Environment, directories: list[Path], output: Path, *, fmt: str | None,
          gt: Path | None, gt_masks: Path | None, evaluate: bool,
          label_map: Path | None = None, fail_under: list[str] | None = None,
          confusion_iou: float = 0.5) -> int:
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
    _check_evaluation(task, gt, gt_masks, label_map, evaluate)
    bars = quality_bars(task, fail_under, evaluate)
    env.own_directory(output, "--output")
    require_empty(output, "--output", "merge into a new or empty directory")
    metrics = pictures = None
    if detection:
        from cvtool.io import coco

        ground_truth = coco.load_ground_truth(gt, env.warn) if gt is not None else None
        writer, collector = detection_writer(env, fmt, task, ground_truth, evaluate)
        if evaluate:
            details: dict[str, Any] = {}
            metrics = lambda: evaluate_detections(  # noqa: E731
                env, task, ground_truth, collector, confusion_iou, details)
            pictures = detection_pictures(collector, details)
    else:
        writer = make_writer(fmt, env.stdout, task, env.no_color)
        if evaluate and task == "classify":
            writer, metrics, pictures = _classification_evaluation(
                env, loaded[0].info, gt, label_map, writer)
        elif evaluate:
            metrics, pictures = _semantic_evaluation(env, loaded[0].info, gt_masks, pairs)
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
    below: list[str] = []
    if metrics is not None:
        info["metrics"] = metrics()
        if bars:
            from cvtool.inference.scoring import below_bars

            below = below_bars(task, info["metrics"], bars)
            info["gate"] = {"bars": dict(bars), "passed": not below, "below": below}
        write_pictures(env, output, pictures(info["metrics"], eval_title(
            task, info.get("models") or [], info.get("gate"))), info.get("gate"))
    write_run_json(output, info)
    env.log(f"merged {counted(len(loaded), 'run')}: {counted(tally.total, 'input')}, "
            f"{tally.failed} failed")
    if below:
        raise QualityBelowBar(f"quality below the bar: {'; '.join(below)}")
    return tally.status()


def _check_evaluation(task: str, gt: Path | None, gt_masks: Path | None,
                      label_map: Path | None, evaluate: bool) -> None:
    """Which ground truth each task's runs take: COCO (--gt) for detections, --gt-masks for
    semantic masks, and for classify an optional labels.csv (--gt) and --label-map."""
    detection = task in ("detect", "segment-instance")
    if evaluate and detection and gt is None:
        raise UsageError("--eval needs --gt annotations.json to compare against")
    if evaluate and task == "segment-semantic" and gt_masks is None:
        raise UsageError("--eval needs --gt-masks DIR to compare against")
    for flag, given, applies in (("--gt", gt, task != "segment-semantic"),
                                 ("--gt-masks", gt_masks, task == "segment-semantic"),
                                 ("--label-map", label_map, task == "classify")):
        if given is not None and not applies:
            raise UsageError(f"{flag} does not apply to {task} runs")
    if task == "classify" and not evaluate and (gt or label_map) is not None:
        raise UsageError("--gt and --label-map of classify runs go with --eval")


def _classification_evaluation(env: Environment, info: dict[str, Any], gt: Path | None,
                               label_map: Path | None, writer: Any) -> tuple[Any, Any, Any]:
    """The merged records scored as one classify --eval scores its records, against the
    categories the runs' model recorded."""
    from cvtool.inference import eval_report
    from cvtool.inference.scoring import ClassificationScore, LabelSource
    from cvtool.io.writers import TeeWriter

    categories = (info.get("models") or [{}])[0].get("categories")
    if not isinstance(categories, list) or not categories:
        raise UsageError("these runs do not record their model's categories (made by an older "
                         "cvtool); run classify --eval over the inputs instead")
    score = ClassificationScore(LabelSource([str(c) for c in categories], gt, label_map),
                                env.warn)
    return (TeeWriter(writer, score), lambda: score.report(env.stderr),
            lambda found, title: eval_report.classification(found, score, title))


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
    from cvtool.inference import eval_report

    return (lambda: evaluation.report(env.stderr),
            lambda found, title: eval_report.semantic(found, evaluation, title))
