"""Command bodies behind the CLI: validate options, build a task, stream its records.

Kept apart from `cli.py` so the Typer layer stays a thin declaration of options.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cvtool.context import Environment
from cvtool.status import ExitStatus, UsageError

RECORD_FORMATS = ("table", "jsonl", "csv")
DETECTION_FORMATS = (*RECORD_FORMATS, "coco")


def resolve_format(env: Environment, fmt: str | None, allowed: tuple[str, ...]) -> str:
    """`table` for people at a terminal, `jsonl` for pipes and files, unless asked otherwise."""
    if fmt is None:
        return "table" if env.stdout_isatty else "jsonl"
    if fmt not in allowed:
        raise UsageError(f"invalid --format {fmt!r} here; expected one of {', '.join(allowed)}")
    return fmt


def claim_output(env: Environment, output: Path | None) -> None:
    """Own `--output DIR` for this run: two runs never interleave run.json or artifacts."""
    if output is not None:
        env.own_directory(output, "--output")


def classify(env: Environment, sources: list[str], models: list[str], weights: list[str], *,
             topk: int, tta: bool, device: str, precision: str, batch_size: int, workers: int,
             threads: int | None, fmt: str | None, output: Path | None, null: bool,
             max_pixels: int | None, fail_fast: bool, seed: int) -> int:
    fmt = resolve_format(env, fmt, RECORD_FORMATS)
    check_inputs(sources, output, max_pixels)
    from cvtool.runner import Tally, run_info, stream_records, write_run_json
    from cvtool.tasks import classify as task
    from cvtool.writers import make_writer

    claim_output(env, output)
    target, settings = prepare_device(env, device, precision, threads, seed)
    options = task.ClassifyOptions(models=models, weights=weights, topk=topk, tta=tta,
                                   precision=precision, batch_size=batch_size, workers=workers,
                                   fail_fast=fail_fast, max_pixels=max_pixels)
    loop, loaded = task.build(options, target, env.offline, env.warn)
    tally = Tally()
    writer = make_writer(fmt, env.stdout, task.TASK, env.no_color)
    stream_records(env, loop.run(read_sources(env, sources, null)), writer, tally)
    settings.update(batch_size=batch_size, topk=topk, tta=tta)
    if output is not None:
        models_info = [_model_info(m) for m in loaded]
        write_run_json(output, run_info(task.TASK, models_info, settings, tally))
    _summarise(env, tally)
    return tally.status()


def check_inputs(sources: list[str], output: Path | None, max_pixels: int | None) -> None:
    from cvtool.decode import check_max_pixels

    check_max_pixels(max_pixels)
    if not sources:
        raise UsageError("no inputs: give image files, directories, quoted globs, or - for stdin")


def prepare_device(env: Environment, device: str, precision: str, threads: int | None,
                   seed: int) -> tuple[Any, dict[str, Any]]:
    """Threads, seed, the device and precision every inference command sets up the same way;
    returns the device and the settings run.json records about them."""
    from cvtool import device as devices

    devices.autocast_dtype(precision)
    threads = devices.set_threads(threads)
    devices.seed_everything(seed)
    target = devices.resolve_device(device)
    if warning := devices.precision_warning(target, precision):
        env.warn(warning)
    return target, {"device": str(target), "device_name": devices.describe_device(target),
                    "precision": precision, "threads": threads, "seed": seed}


def read_sources(env: Environment, sources: list[str], null: bool) -> Any:
    from cvtool.sources import iter_sources

    return iter_sources(sources, env.stdin if "-" in sources else None, null)


def _model_info(loaded: Any) -> dict[str, Any]:
    return {"name": loaded.name, "weights_file": loaded.weights_file,
            "weights_sha256": loaded.weights_sha256, "classes": len(loaded.categories)}


def _summarise(env: Environment, tally: Any) -> None:
    counts = tally.to_dict()
    env.log(f"{counts['inputs']} inputs, {counts['failed']} failed, {counts['seconds']:.2f} s "
            f"({counts['inputs_per_second'] or 0:.1f}/s)")


def models(env: Environment, args: list[str], fmt: str | None,
           encoder: str | None = None) -> int:
    from cvtool import registry

    if args[:1] == ["pull"]:
        if len(args) != 2:
            raise UsageError("usage: cvtool models pull NAME [--encoder ENCODER]")
        return _pull(env, registry.get_spec(args[1]), encoder)
    if encoder is not None:
        raise UsageError("--encoder goes with `cvtool models pull smp:<arch>`")
    if len(args) > 1:
        raise UsageError("usage: cvtool models [TASK] | cvtool models pull NAME")
    task = args[0] if args else None
    if task is not None and task not in registry.TASKS:
        raise UsageError(f"unknown task {task!r}; expected one of {', '.join(registry.TASKS)}")
    from cvtool.models.weights import describe

    rows = [describe(spec) for spec in registry.list_models(task)]
    _write_rows(env, rows, resolve_format(env, fmt, RECORD_FORMATS))
    return ExitStatus.SUCCESS


def _pull(env: Environment, spec: Any, encoder: str | None) -> int:
    from cvtool.models.weights import pull

    if encoder is not None and spec.source != "smp":
        raise UsageError(f"--encoder applies to smp:<arch> models only, not to {spec.name}")
    path = pull(spec, offline=env.offline, encoder=encoder)
    env.log(f"{spec.name}: weights cached at {path}")
    print(path, file=env.stdout, flush=True)
    return ExitStatus.SUCCESS


def _write_rows(env: Environment, rows: list[dict[str, Any]], fmt: str) -> None:
    from cvtool.writers import write_rows

    write_rows(env.stdout, rows, fmt, env.no_color)


def detect(env: Environment, task_name: str, sources: list[str], model: str, weights: str, *,
           conf: float, classes: list[str], gt: Path | None, evaluate: bool, save_crops: bool,
           device: str, precision: str, batch_size: int, workers: int, threads: int | None,
           fmt: str | None, output: Path | None, null: bool, max_pixels: int | None,
           fail_fast: bool, seed: int) -> int:
    """`detect` and `segment-instance`: records, a COCO results list, metrics, artifacts."""
    fmt = resolve_format(env, fmt, DETECTION_FORMATS)
    check_inputs(sources, output, max_pixels)
    if evaluate and gt is None:
        raise UsageError("--eval needs --gt annotations.json to compare against")
    if save_crops and output is None:
        raise UsageError("--save-crops needs --output DIR to write the crops to")
    from cvtool import coco
    from cvtool.runner import Tally, run_info, stream_records, write_run_json
    from cvtool.tasks import detect as task
    from cvtool.writers import TeeWriter, make_writer

    ground_truth = coco.load_ground_truth(gt, env.warn) if gt is not None else None
    claim_output(env, output)
    target, settings = prepare_device(env, device, precision, threads, seed)
    options = task.DetectOptions(
        task=task_name, model=model, weights=weights, conf=conf, classes=classes,
        precision=precision, batch_size=batch_size, workers=workers, fail_fast=fail_fast,
        max_pixels=max_pixels, output=output, save_crops=save_crops)
    loop, loaded = task.build(options, target, env.offline, env.warn)
    collector = coco.ResultCollector(ground_truth, env.warn)
    writer = make_writer(fmt, env.stdout, task_name, env.no_color, collector)
    writer = writer if fmt == "coco" or not evaluate else TeeWriter(writer, collector)
    tally = Tally()
    stream_records(env, loop.run(read_sources(env, sources, null)), writer, tally)
    settings.update(batch_size=batch_size, conf=conf, classes=classes, gt=gt and str(gt),
                    mask_threshold=task.MASK_THRESHOLD)
    if evaluate:
        settings["metrics"] = _evaluate(env, task_name, ground_truth, collector)
    if output is not None:
        write_run_json(output, run_info(task_name, [_model_info(loaded)], settings, tally))
    _summarise(env, tally)
    return tally.status()


def _evaluate(env: Environment, task_name: str, ground_truth: dict[str, Any],
              collector: Any) -> dict[str, dict[str, float]]:
    from cvtool import coco

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
                         env.stderr)


def generate(env: Environment, model: str | None, *, num: int, seed: int, output: Path | None,
             grid: Path | None, temperature: float | None, interpolate: bool, steps: int | None,
             device: str, batch_size: int, threads: int | None, force: bool) -> int:
    """Samples (or interpolations) as PNGs, a grid, run.json, and one JSON summary on stdout."""
    check_generate_options(model=model, num=num, output=output, grid=grid, temperature=temperature,
                           interpolate=interpolate, steps=steps, batch_size=batch_size,
                           force=force)
    from cvtool.ownership import require_empty
    from cvtool.runner import Tally, run_info, write_run_json
    from cvtool.tasks import generate as task
    from cvtool.writers import strict_json

    claim_output(env, output)
    if output is not None and not force:
        require_empty(output, "--output", "use --force to write into it anyway")

    options = task.GenerateOptions(model=model, num=num, seed=seed, output=output, grid=grid,
                                   temperature=temperature, interpolate=interpolate,
                                   steps=steps or 8, batch_size=batch_size)
    loaded = task.load(options)
    target, settings = prepare_device(env, device, "fp32", threads, seed)
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


def check_generate_options(*, model: str | None, num: int, output: Path | None, grid: Path | None,
                           temperature: float | None, interpolate: bool, steps: int | None,
                           batch_size: int, force: bool) -> None:
    """The checks that need no model: each failure is one line and exit 2."""
    problems = [(model is None, "--model is required: a generative house model name "
                                "(`cvtool models generate`), checkpoint or run directory"),
                (num < 1, f"--num must be at least 1, not {num}"),
                (batch_size < 1, f"--batch-size must be at least 1, not {batch_size}"),
                (temperature is not None and not temperature > 0,
                 f"--temperature must be above 0, not {temperature}"),
                (steps is not None and not interpolate, "--steps needs --interpolate"),
                (steps is not None and steps < 2, f"--steps must be at least 2, not {steps}"),
                (output is None and grid is None,
                 "nothing to write: give --output DIR and/or --grid FILE"),
                (grid is not None and grid.suffix.lower() != ".png",
                 f"--grid {grid} must end in .png"),
                (grid is not None and grid.is_dir(), f"--grid {grid} is a directory")]
    for failed, message in problems:
        if failed:
            raise UsageError(message)


def segment_semantic(env: Environment, sources: list[str], model: str, weights: str, *,
                     encoder: str | None, gt_masks: Path | None, evaluate: bool,
                     ignore_index: int, device: str, precision: str, batch_size: int,
                     workers: int, threads: int | None, fmt: str | None, output: Path | None,
                     null: bool, max_pixels: int | None, fail_fast: bool, seed: int) -> int:
    """`segment-semantic`: records with class pixel counts, mask PNGs and overlays, mIoU."""
    fmt = resolve_format(env, fmt, RECORD_FORMATS)
    check_inputs(sources, output, max_pixels)
    if evaluate and gt_masks is None:
        raise UsageError("--eval needs --gt-masks DIR to compare against")
    if gt_masks is not None and not evaluate:
        raise UsageError("--gt-masks is only read by --eval; add --eval")
    from cvtool.runner import Tally, run_info, stream_records, write_run_json
    from cvtool.tasks import segment_semantic as task
    from cvtool.writers import make_writer

    claim_output(env, output)
    target, settings = prepare_device(env, device, precision, threads, seed)
    options = task.SegmentOptions(
        model=model, weights=weights, encoder=encoder, precision=precision,
        batch_size=batch_size, workers=workers, fail_fast=fail_fast, max_pixels=max_pixels,
        output=output, gt_masks=gt_masks, ignore_index=ignore_index)
    loop, loaded, evaluation = task.build(options, target, env.offline, env.warn)
    writer = make_writer(fmt, env.stdout, task.TASK, env.no_color)
    tally = Tally()
    stream_records(env, loop.run(read_sources(env, sources, null)), writer, tally)
    settings.update(batch_size=batch_size, gt_masks=gt_masks and str(gt_masks))
    if evaluation is not None:
        settings["metrics"] = evaluation.report(env.stderr)
    if output is not None:
        info = {**_model_info(loaded), "encoder": loaded.encoder}
        write_run_json(output, run_info(task.TASK, [info], settings, tally))
    _summarise(env, tally)
    return tally.status()
