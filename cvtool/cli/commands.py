"""Command bodies behind the CLI: validate options, build a task, stream its records.

Kept apart from `cli.py` so the Typer layer stays a thin declaration of options.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cvtool.cli.options import InferenceOptions
from cvtool.core.context import Environment
from cvtool.core.options import ClassifyOptions, DetectOptions, GenerateOptions, SegmentOptions
from cvtool.core.results import counted
from cvtool.core.status import ExitStatus, QualityBelowBar, UsageError
from cvtool.core.tasks import TASKS

RECORD_FORMATS = ("table", "jsonl", "csv")
DETECTION_FORMATS = (*RECORD_FORMATS, "coco")


def resolve_format(env: Environment, fmt: str | None, allowed: tuple[str, ...]) -> str:
    """`table` for people at a terminal, `jsonl` for pipes and files, unless asked otherwise."""
    if fmt is None:
        return "table" if env.stdout_isatty else "jsonl"
    if fmt not in allowed:
        raise UsageError(f"invalid --format {fmt!r} here; expected one of {', '.join(allowed)}")
    return fmt


def classify(env: Environment, sources: list[str], common: InferenceOptions,
             options: ClassifyOptions, *, gt: Path | None = None, label_map: Path | None = None,
             evaluate: bool = False, fail_under: list[str] | None = None) -> int:
    fmt = resolve_format(env, common.format, RECORD_FORMATS)
    engine = check_inputs(sources, common)
    bars = quality_bars("classify", fail_under, evaluate)
    for flag, given in (("--gt", gt), ("--label-map", label_map)):
        if given is not None and not evaluate:
            raise UsageError(f"{flag} goes with --eval; add --eval to score the run")
    if engine is not None and options.draft:
        raise UsageError("--draft decodes on the local engine only: Ray's decoding tasks decode "
                         "every pixel; leave out one of --draft and --engine ray")
    from cvtool.inference.predictors import Classifier
    from cvtool.io.writers import make_writer

    if not evaluate:
        missing = _missing_only(
            env, sources, common, Classifier.task, options.model,
            lambda: make_writer(fmt, env.stdout, Classifier.task, env.no_color))
        if missing is not None:
            return missing
    writer = make_writer(fmt, env.stdout, Classifier.task, env.no_color)
    predictor = Classifier(on_driver(options, engine), warn=env.warn, offline=env.offline)
    metrics = None
    if evaluate:
        from cvtool.inference import eval_report
        from cvtool.inference.scoring import ClassificationScore, LabelSource
        from cvtool.io.writers import TeeWriter

        score = ClassificationScore(LabelSource(predictor.categories, gt, label_map), env.warn)
        writer, metrics = TeeWriter(writer, score), lambda: score.report(env.stderr)
        pictures = lambda found, title: eval_report.classification(  # noqa: E731
            found, score, title)
    return _stream(env, sources, common, predictor, writer,
                   {"batch_size": options.batch_size, "topk": options.topk, "tta": options.tta,
                    "gt": gt and str(gt), "label_map": label_map and str(label_map)},
                   metrics, engine=engine, options=options, bars=bars,
                   pictures=pictures if evaluate else None)


def quality_bars(task: str, fail_under: list[str] | None,
                 evaluate: bool) -> list[tuple[str, float]]:
    """--fail-under's bars, checked before any model loads."""
    if not fail_under:
        return []
    if not evaluate:
        raise UsageError("--fail-under needs --eval: the bars are on the run's metrics")
    from cvtool.inference.scoring import parse_bars

    return parse_bars(task, fail_under)


def _missing_only(env: Environment, sources: list[str], common: InferenceOptions, task: str,
                  model: Any, make_writer: Callable[[], Any]) -> int | None:
    """Where every input named is a file that does not exist (a mistyped path), their error
    records and exit 1 without loading the model: the missing file is what to fix, not, say,
    the model's uncached weights. None otherwise (also under --output, whose run directory
    records its model, and with stdin or globs, which are listed as the run goes)."""
    import glob

    from cvtool.core.results import Record
    from cvtool.inference.runner import Tally, stream_records

    if common.output is not None or "-" in sources or any(
            glob.has_magic(source) or os.path.lexists(source) for source in sources):
        return None
    listed = list(read_sources(env, sources, common.null))
    if not listed or any(source.error is None for source in listed):
        return None
    from cvtool.inference import runs

    name = model if isinstance(model, str) else ",".join(model)
    records = (Record(path=source.path, task=task, model=name, error=source.error)
               for source in runs.in_shard(listed, runs.parse_shard(common.shard)))
    tally = Tally()  # the writer only now: a CSV writer prints its header when made
    stream_records(env, records, make_writer(), tally, common.max_failures)
    _summarise(env, tally)
    return tally.status()


def on_driver(options: Any, engine: Any) -> Any:
    """The predictor options this process builds with: as given, or, under --engine ray, on
    the CPU (this process only checks the options and models; the actors run them)."""
    import dataclasses

    return options if engine is None else dataclasses.replace(options, device="cpu")


def _stream(env: Environment, sources: list[str], common: InferenceOptions, predictor: Any,
            writer: Any, settings: dict[str, Any],
            metrics: Callable[[], dict[str, Any]] | None = None, *, engine: Any = None,
            options: Any = None, bars: list[tuple[str, float]] | None = None,
            pictures: Callable[[dict[str, Any], str], Any] | None = None) -> int:
    """Every inference command's run: records streamed to `writer` (and to DIR/records.jsonl
    under --output), the summary line, and run.json (with `metrics()`, when given, in it);
    under --output, `pictures(metrics, title)`'s plots and report.html (`eval_report`).
    Under --engine ray (`engine`), Ray's actors build their predictors from `options`."""
    from cvtool.inference import runs
    from cvtool.inference.runner import Tally, run_info, stream_records, write_run_json
    from cvtool.io.writers import TeeWriter

    shard = runs.parse_shard(common.shard)
    output = predictor.options.output_dir
    with predictor:
        settings = {**predictor.settings, **settings, "shard": list(shard) if shard else None,
                    "options": runs.deciding_options(predictor.options)}
        if engine is not None:  # the actors' device, not this process's
            settings.update(device=options.device, device_name=None, threads=options.threads,
                            engine=engine.to_dict())
        listed = read_sources(env, sources, common.null)
        records_file = None
        if output is not None:
            records_file = runs.RecordsFile(output, predictor.task, settings["options"],
                                            common.resume, shard)
            listed, writer = records_file.pending(listed), TeeWriter(writer, records_file)
            write_run_json(output, {**run_info(predictor.task, predictor.models_info(),
                                               settings, Tally()), "complete": False})
        else:
            listed = runs.in_shard(listed, shard)
        seen: set[str] = set()  # this run's inputs, for the count a --max-failures stop leaves
        if common.max_failures is not None:
            writer = TeeWriter(writer, _PathsSeen(seen))
        tally = Tally()
        stopped = stream_records(env, _records(env, predictor, listed, engine, options), writer,
                                 tally, common.max_failures)
        below: list[str] = []
        if metrics is not None:
            settings["metrics"] = metrics()
            if bars:
                from cvtool.inference.scoring import below_bars

                below = below_bars(predictor.task, settings["metrics"], bars)
                settings["gate"] = {"bars": dict(bars), "passed": not below, "below": below}
            if output is not None and pictures is not None:
                write_pictures(env, output, pictures(settings["metrics"], eval_title(
                    predictor.task, predictor.models_info(), settings.get("gate"))),
                               settings.get("gate"))
        if engine is None:  # Ray's actors count on their own machines
            settings.update(predictor.counts)
        if output is not None:
            info = run_info(predictor.task, predictor.models_info(), settings, tally)
            info["counts"] = _whole_run(records_file.earlier, info["counts"])
            write_run_json(output, {**info, "complete": not stopped})
    _summarise(env, tally)
    if stopped:
        done = seen | (records_file.done if records_file is not None else set())
        if "-" in sources:
            left = "the rest of standard input was not read"
        else:
            listing = runs.in_shard(read_sources(env, sources, common.null), shard)
            left = (f"{counted(sum(s.path not in done for s in listing), 'input')} "
                    "left unprocessed")
        again = "; --resume continues the run" if output is not None else ""
        env.log(f"stopped after {counted(tally.failed, 'failed input')} (--max-failures "
                f"{common.max_failures}): {left}{again}")
    if below:  # every record and file is written: now the verdict
        raise QualityBelowBar(f"quality below the bar: {'; '.join(below)}")
    if records_file is not None and records_file.earlier["failed"]:
        return ExitStatus.PARTIAL  # the whole run's status: an earlier part of it failed some
    return tally.status()


def eval_title(task: str, models: list[dict[str, Any]], gate: dict[str, Any] | None) -> str:
    names = ", ".join(str(model.get("name")) for model in models) or "?"
    verdict = "" if gate is None else " - gate passed" if gate["passed"] else " - BELOW THE BAR"
    return f"cvtool {task} --eval: {names}{verdict}"


def write_pictures(env: Environment, output: Path, pictures: Any,
                   gate: dict[str, Any] | None) -> None:
    from cvtool.inference import eval_report

    if gate is not None:
        pictures.summary += [(f"--fail-under {name}", f"{bar:g}") for name, bar in
                             gate["bars"].items()]
        pictures.summary.append(("gate", "; ".join(gate["below"]) or "passed"))
    written = eval_report.write(output, pictures)
    env.log(f"evaluation report: {output / eval_report.REPORT} ({', '.join(written[:-1])})")


def _records(env: Environment, predictor: Any, sources: Any, engine: Any,
             options: Any) -> Any:
    if engine is None:
        return predictor.run(sources)
    from cvtool.inference import ray_engine

    evaluation = getattr(predictor, "evaluation", None)
    return ray_engine.run(predictor.task, options, sources, engine, offline=env.offline,
                          warn=env.warn, absorb=evaluation.absorb if evaluation else None)


class _PathsSeen:
    """A record writer that only notes each record's path."""

    def __init__(self, seen: set[str]) -> None:
        self.seen = seen

    def write(self, record: Any) -> None:
        self.seen.add(record.path)

    def close(self) -> None:
        pass


def _whole_run(earlier: dict[str, int], now: dict[str, Any]) -> dict[str, Any]:
    """run.json's counts over every run into the directory (a --resume adds to them)."""
    if not earlier["inputs"]:
        return now
    return {**now, "inputs": earlier["inputs"] + now["inputs"],
            "ok": earlier["ok"] + now["ok"], "failed": earlier["failed"] + now["failed"],
            "this_run": now}


def check_inputs(sources: list[str], common: InferenceOptions) -> Any:
    """What needs no model: inputs given, --max-pixels, --shard and --resume well formed, and
    the engine there; returns the Ray engine's options (None: the local engine)."""
    from cvtool.inference.runs import parse_shard
    from cvtool.io.decode import check_max_pixels

    check_max_pixels(common.max_pixels)
    if not sources:
        raise UsageError("no inputs: give image files, directories, quoted globs, or - for stdin")
    parse_shard(common.shard)
    if common.resume and common.output is None:
        raise UsageError("--resume needs --output DIR: the run to continue")
    engine = common.ray()
    if engine is not None:
        from cvtool.inference.ray_engine import require_ray

        require_ray()
    return engine


def read_sources(env: Environment, sources: list[str], null: bool) -> Any:
    from cvtool.io.sources import iter_sources

    return iter_sources(sources, env.stdin if "-" in sources else None, null)


def _summarise(env: Environment, tally: Any) -> None:
    counts = tally.to_dict()
    env.log(f"{counted(counts['inputs'], 'input')}, {counts['failed']} failed, "
            f"{counts['seconds']:.2f} s "
            f"({counts['inputs_per_second'] or 0:.1f}/s)")


def models(env: Environment, args: list[str], fmt: str | None,
           encoder: str | None = None, weights: str | None = None,
           pattern: str | None = None) -> int:
    from cvtool.models import registry

    if args[:1] == ["pull"]:
        if len(args) != 2:
            raise UsageError("usage: cvtool models pull NAME [--encoder ENCODER | --weights W]")
        if pattern is not None:
            raise UsageError("--filter goes with the listing, not with pull")
        return _pull(env, registry.get_spec(args[1]), encoder, weights)
    if encoder is not None or weights is not None:
        raise UsageError("--encoder and --weights go with `cvtool models pull NAME`")
    if len(args) > 1:
        raise UsageError("usage: cvtool models [TASK] | cvtool models pull NAME")
    task = args[0] if args else None
    if task is not None and task not in TASKS:
        raise UsageError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    from cvtool.models.catalog import catalog

    rows = catalog(task, pattern, env.log)
    if not rows:
        env.log(f"no model matches {pattern!r}" if pattern else "no models")
    _write_rows(env, rows, resolve_format(env, fmt, RECORD_FORMATS))
    return ExitStatus.SUCCESS


def _pull(env: Environment, spec: Any, encoder: str | None, weights: str | None) -> int:
    from cvtool.models import pull

    if encoder is not None and spec.source != "smp":
        raise UsageError(f"--encoder applies to smp:<arch> models only, not to {spec.name}")
    path = pull(spec, offline=env.offline, encoder=encoder, weights=weights)
    env.log(f"{spec.name}: weights cached at {path}")
    print(path, file=env.stdout, flush=True)
    return ExitStatus.SUCCESS


def _write_rows(env: Environment, rows: list[dict[str, Any]], fmt: str) -> None:
    from cvtool.io.writers import write_rows

    write_rows(env.stdout, rows, fmt, env.no_color)


def detect(env: Environment, sources: list[str], common: InferenceOptions,
           options: DetectOptions, *, gt: Path | None, evaluate: bool,
           fail_under: list[str] | None = None, confusion_iou: float = 0.5) -> int:
    """`detect` and `segment-instance`: records, a COCO results list, metrics, artifacts."""
    fmt = resolve_format(env, common.format, DETECTION_FORMATS)
    engine = check_inputs(sources, common)
    bars = quality_bars(options.task, fail_under, evaluate)
    if evaluate and gt is None:
        raise UsageError("--eval needs --gt annotations.json to compare against")
    if options.save_crops and options.output is None:
        raise UsageError("--save-crops needs --output DIR to write the crops to")
    from cvtool.inference.predictors import Detector, InstanceSegmenter
    from cvtool.io import coco
    from cvtool.models.detection import MASK_THRESHOLD

    ground_truth = coco.load_ground_truth(gt, env.warn) if gt is not None else None
    kind = InstanceSegmenter if options.task == "segment-instance" else Detector
    if not evaluate:
        missing = _missing_only(
            env, sources, common, options.task, options.model,
            lambda: detection_writer(env, fmt, options.task, None, False)[0])
        if missing is not None:
            return missing
    predictor = kind(on_driver(options, engine), warn=env.warn, offline=env.offline)
    writer, collector = detection_writer(env, fmt, options.task, ground_truth, evaluate)
    settings = {"batch_size": options.batch_size, "conf": options.conf,
                "classes": options.classes, "gt": gt and str(gt), "mask_threshold": MASK_THRESHOLD}
    details: dict[str, Any] = {}
    metrics = (lambda: evaluate_detections(env, options.task, ground_truth, collector,
                                           confusion_iou, details)) if evaluate else None
    return _stream(env, sources, common, predictor, writer, settings, metrics, engine=engine,
                   options=options, bars=bars,
                   pictures=detection_pictures(collector, details) if evaluate else None)


def detection_pictures(collector: Any, details: dict[str, Any]) -> Any:
    from cvtool.inference import eval_report

    return lambda found, title: eval_report.detection(found, details, collector.paths, title)


def detection_writer(env: Environment, fmt: str, task: str, ground_truth: Any,
                      evaluate: bool) -> tuple[Any, Any]:
    """The chosen format's writer, and the COCO collector that --format coco and --eval read
    (fed alongside the format's writer when it is not itself the collector)."""
    from cvtool.io import coco
    from cvtool.io.writers import TeeWriter, make_writer

    collector = coco.ResultCollector(ground_truth, env.warn)
    writer = make_writer(fmt, env.stdout, task, env.no_color, collector)
    return (writer if fmt == "coco" or not evaluate else TeeWriter(writer, collector)), collector


def evaluate_detections(env: Environment, task_name: str, ground_truth: dict[str, Any],
                        collector: Any, confusion_iou: float = 0.5,
                        details: dict[str, Any] | None = None) -> dict[str, Any]:
    from cvtool.io import coco

    if missing := len(ground_truth["images"]) - len(set(collector.image_ids)):
        env.warn(f"{missing} --gt images were not among the inputs (or failed); "
                 "metrics cover the images that were")
    iou_types: tuple[str, ...] = ("bbox",)
    if task_name == "segment-instance":
        if coco.has_segmentations(ground_truth):
            iou_types = ("bbox", "segm")
        else:
            env.warn("--gt annotations lack \"segmentation\": mask metrics are left out")
    return coco.evaluate(ground_truth, collector.results, collector.image_ids, iou_types,
                         env.stderr, per_class=True, confusion_iou=confusion_iou,
                         details=details)


def generate(env: Environment, options: GenerateOptions, *, steps_given: bool,
             force: bool) -> int:
    """Samples (or interpolations) as PNGs, a grid, run.json, and one JSON summary on stdout."""
    from cvtool.inference import generate as task

    task.check_options(options)
    check_generate_outputs(options, steps_given)
    from cvtool.core.device import prepare_device
    from cvtool.core.ownership import require_empty
    from cvtool.inference.runner import Tally, run_info, write_run_json
    from cvtool.io.writers import strict_json

    output = None if options.output is None else Path(options.output)
    if output is not None:
        env.own_directory(output, "--output")
        if not force:
            require_empty(output, "--output", "use --force to write into it anyway")
    loaded = task.load(options)
    target, settings = prepare_device(options.device, "fp32", options.threads, options.seed,
                                      env.warn)
    tally = Tally()
    images = task.generate(env, loaded, options, target)
    task.write_images(images, options)
    tally.total = len(images)
    settings.update(task.settings(options))
    if output is not None:
        write_run_json(output, run_info(task.TASK, [task.model_info(loaded)], settings, tally))
    summary = task.summary(loaded, options, len(images), settings["device"], tally.seconds)
    print(strict_json(summary), file=env.stdout, flush=True)
    return ExitStatus.SUCCESS


def check_generate_outputs(options: GenerateOptions, steps_given: bool) -> None:
    """The command line's own checks: something to write, and --steps only with --interpolate."""
    grid = None if options.grid is None else Path(options.grid)
    problems = [(steps_given and not options.interpolate, "--steps needs --interpolate"),
                (options.output is None and grid is None,
                 "nothing to write: give --output DIR and/or --grid FILE"),
                (grid is not None and grid.suffix.lower() != ".png",
                 f"--grid {grid} must end in .png"),
                (grid is not None and grid.is_dir(), f"--grid {grid} is a directory")]
    for failed, message in problems:
        if failed:
            raise UsageError(message)


def segment_semantic(env: Environment, sources: list[str], common: InferenceOptions,
                     options: SegmentOptions, *, evaluate: bool,
                     fail_under: list[str] | None = None) -> int:
    """`segment-semantic`: records with class pixel counts, mask PNGs and overlays, mIoU."""
    fmt = resolve_format(env, common.format, RECORD_FORMATS)
    engine = check_inputs(sources, common)
    bars = quality_bars("segment-semantic", fail_under, evaluate)
    if evaluate and options.gt_masks is None:
        raise UsageError("--eval needs --gt-masks DIR to compare against")
    if options.gt_masks is not None and not evaluate:
        raise UsageError("--gt-masks is only read by --eval; add --eval")
    from cvtool.inference.predictors import SemanticSegmenter
    from cvtool.io.writers import make_writer

    if not evaluate:
        missing = _missing_only(
            env, sources, common, SemanticSegmenter.task, options.model,
            lambda: make_writer(fmt, env.stdout, SemanticSegmenter.task, env.no_color))
        if missing is not None:
            return missing
    predictor = SemanticSegmenter(on_driver(options, engine), warn=env.warn, offline=env.offline)
    writer = make_writer(fmt, env.stdout, predictor.task, env.no_color)
    settings = {"batch_size": options.batch_size, "gt_masks": options.gt_masks}
    evaluation = predictor.evaluation
    if evaluation is None:
        return _stream(env, sources, common, predictor, writer, settings, engine=engine,
                       options=options)
    from cvtool.inference import eval_report

    return _stream(env, sources, common, predictor, writer, settings,
                   lambda: evaluation.report(env.stderr), engine=engine, options=options,
                   bars=bars, pictures=lambda found, title: eval_report.semantic(
                       found, evaluation, title))
