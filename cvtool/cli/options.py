"""Options the commands share, declared once: the aliases every command uses for the same flag,
and the inference options as one Typer declaration and one dataclass (`InferenceOptions`).

A flag means one thing everywhere: `--threads N` is torch's CPU threads, `-o/--output DIR` a
directory, `--format` the shape of what goes to stdout. Where a command needs something else it
has its own name (`benchmark-device --thread-counts 1,all`, `--save-json FILE`).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import typer

from cvtool.core.options import PredictorOptions
from cvtool.core.status import UsageError

# The aliases every command shares.
Quiet = Annotated[bool, typer.Option(
    "--quiet", "-q", help="Only errors on stderr: no logs, progress or warnings.")]
Debug = Annotated[bool, typer.Option(help="Show tracebacks.")]
Seed = Annotated[int, typer.Option(help="Seed for everything random (e.g. --weights none).")]
Device = Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N | mps")]
Threads = Annotated[Optional[int], typer.Option(help="CPU threads for torch.", show_default=False)]
OutputDir = Annotated[Optional[Path], typer.Option(
    "--output", "-o", help="Directory for artifacts and run.json.", show_default=False)]


# The quality gate every scored command shares (cvtool/inference/scoring.py).
FailUnder = Annotated[Optional[list[str]], typer.Option(
    "--fail-under", metavar="METRIC=VALUE", help="With --eval: exit 4 (after writing every "
    "record) when METRIC is below VALUE; repeatable. classify: top1, top5, macro_f1, ..., "
    "class:LABEL/recall; detect: map, map50, class:LABEL/AP; segment-instance: segm_map; "
    "segment-semantic: miou, class:LABEL/iou.", show_default=False)]
ConfusionIou = Annotated[float, typer.Option(
    min=0.0, max=1.0, help="With --eval: the box IoU at which the confusion matrix (and the "
    "worst-case gallery under --output) counts a detection as finding an object.")]


@dataclass(kw_only=True)
class InferenceOptions(PredictorOptions):
    """The options every inference command takes: the predictor's 10, how the command talks to
    the terminal (4), how a batch run is cut and continued (3), and where it runs (4)."""

    format: str | None = None  # table | jsonl | csv (| coco); None: table on a terminal
    null: bool = False  # paths on stdin are NUL-separated
    quiet: bool = False
    debug: bool = False
    # Batch runs (cvtool/inference/runs.py): continue -o DIR, one shard of the inputs, and a
    # failure budget.
    resume: bool = False
    shard: str | None = None
    max_failures: int | None = None
    # Where the run's model runs: this process, or a Ray cluster's actors
    # (cvtool/inference/ray_engine.py).
    engine: str = "local"
    actors: int = 1
    gpus_per_actor: float = 0.0
    ray_address: str | None = None

    def ray(self) -> Any:
        """The Ray engine's options (`RayOptions`), or None for the local engine."""
        if self.engine not in ENGINES:
            raise UsageError(f"invalid --engine {self.engine!r}; expected one of "
                             f"{', '.join(ENGINES)}")
        ray_only = [flag for flag, given in (("--actors", self.actors != 1),
                                             ("--gpus-per-actor", self.gpus_per_actor != 0),
                                             ("--ray-address", self.ray_address is not None))
                    if given]
        if self.engine == "local":
            if ray_only:
                raise UsageError(f"{', '.join(ray_only)} goes with --engine ray")
            return None
        from cvtool.inference.ray_engine import RayOptions

        return RayOptions(self.ray_address, self.actors, self.gpus_per_actor)

    def predictor(self) -> dict[str, Any]:
        """The fields a predictor's options take."""
        return {item.name: getattr(self, item.name)
                for item in dataclasses.fields(PredictorOptions)}


# The same 21 for Typer, in the order --help lists them.
INFERENCE_OPTIONS: dict[str, Any] = {
    "device": Device,
    "precision": Annotated[Literal["fp32", "bf16", "fp16", "auto"], typer.Option(
        help="auto: bf16 where the device computes it natively (AVX512-BF16 / AMX CPUs, bf16 "
             "GPUs), else fp32; classify re-runs bf16's near-ties in fp32.")],
    "batch_size": Annotated[int, typer.Option("--batch-size", "-b", min=1)],
    "workers": Annotated[int, typer.Option(
        min=0, help="Decoding threads (0: decode in the main thread).")],
    "threads": Threads,
    "streams": Annotated[Optional[int], typer.Option(
        min=1, help="Batches in the model at once on a CPU, each on its share of --threads  "
                    "[default: 2 on a CPU, 1 on a GPU]", show_default=False)],
    "format": Annotated[Optional[Literal["table", "jsonl", "csv", "coco"]], typer.Option(
        "--format", help="coco: detect and segment-instance only  [default: table on a "
                         "terminal, else jsonl]", show_default=False)],
    "output": OutputDir,
    "null": Annotated[bool, typer.Option("--null", "-0", help="Paths on stdin are NUL-separated.")],
    "max_pixels": Annotated[Optional[int], typer.Option(
        help="Reject images with more pixels than this (decompression-bomb guard).",
        show_default=False)],
    "fail_fast": Annotated[bool, typer.Option(help="Stop at the first input that fails.")],
    "seed": Seed,
    "quiet": Quiet,
    "debug": Debug,
    "resume": Annotated[bool, typer.Option(
        "--resume", help="Continue the run in --output DIR: inputs that have a record in "
                         "DIR/records.jsonl are skipped.")],
    "shard": Annotated[Optional[str], typer.Option(
        metavar="K/N", help="Process shard K of N (1-based): a fixed, disjoint part of the "
                            "inputs, by a hash of each path.", show_default=False)],
    "max_failures": Annotated[Optional[int], typer.Option(
        min=1, help="Stop once this many inputs have failed (exit 1).", show_default=False)],
    "engine": Annotated[Literal["local", "ray"], typer.Option(
        help="Run the model here, or on Ray (pip install \"cvtool[ray]\").")],
    "actors": Annotated[int, typer.Option(help="--engine ray: predictor actors.")],
    "gpus_per_actor": Annotated[float, typer.Option(help="--engine ray: GPUs for each actor.")],
    "ray_address": Annotated[Optional[str], typer.Option(
        metavar="auto|HOST:PORT", help="--engine ray: the cluster to join  [default: "
        "RAY_ADDRESS, else a new local Ray]", show_default=False)],
}
ENGINES = ("local", "ray")
assert set(INFERENCE_OPTIONS) == {item.name for item in dataclasses.fields(InferenceOptions)}


def inference_command(options_type: type[PredictorOptions]) -> Callable[[Callable], Callable]:
    """Give a command the 21 shared options: the decorated function declares only its own
    parameters plus `common: InferenceOptions`; Typer sees them all, with the defaults of
    `InferenceOptions` (the batch size of `options_type`)."""
    defaults = {item.name: item.default for item in dataclasses.fields(InferenceOptions)}
    defaults["batch_size"] = next(item.default for item in dataclasses.fields(options_type)
                                  if item.name == "batch_size")

    def decorate(body: Callable) -> Callable:
        hints = typing.get_type_hints(body, include_extras=True)
        own = [parameter.replace(annotation=hints[parameter.name])
               for parameter in inspect.signature(body).parameters.values()
               if parameter.name != "common"]
        shared = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                                    default=defaults[name])
                  for name, annotation in INFERENCE_OPTIONS.items()]

        @functools.wraps(body)
        def command(**kwargs: Any) -> Any:
            common = InferenceOptions(**{name: kwargs.pop(name) for name in INFERENCE_OPTIONS})
            return body(**kwargs, common=common)

        command.__signature__ = inspect.Signature([*own, *shared])  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in [*own, *shared]}
        del command.__wrapped__  # Typer must read the new signature, not the body's
        return command

    return decorate


# What a value is called in --help, by its Python type: Typer 0.29 prints the annotation itself
# (`<list[str]>`, `<int range>`), which tells a user nothing they can type.
METAVARS = {int: "N", float: "X", str: "TEXT", Path: "PATH", bool: "BOOL"}


def readable_help(command: Any) -> Any:
    """Name the values of every option and argument of `command` (and its subcommands) the
    way users write them (`N`, `TEXT`, `PATH`), where the declaration gave no metavar and the
    type is not a choice (Typer lists those itself: `<fp32|bf16|fp16|auto>`); returns it."""
    for sub in getattr(command, "commands", {}).values():
        readable_help(sub)
    for param in command.params:
        described = getattr(param, "type_descriptor", None)
        if described is None or described.is_choice or getattr(param, "is_flag", False):
            continue
        if param.param_type_name == "argument":
            param.metavar = param.metavar or param.name.upper()  # click adds "..." for nargs=-1
            param.display_type_rich = lambda ctx: None  # the name says it; no type after it
        elif param.metavar is None:
            kind = described.annotation
            if described.is_list and typing.get_args(kind):
                kind = typing.get_args(kind)[0]
            kind = next((arg for arg in typing.get_args(kind) if arg is not type(None)), kind)
            param.metavar = "PATH" if described.is_path else METAVARS.get(kind, "VALUE")
    return command
