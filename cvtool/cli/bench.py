"""`cvtool benchmark-device`: the Typer command. torch is imported only once it runs.

Exit codes: 0 all results correct and every --fail-below requirement met; 1 a result failed
its float64 reference check, a case could not run, or a requirement was not met; 2 usage
error. Absent devices are reported in the output and are not errors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import typer

from cvtool.cli.options import Debug, Quiet
from cvtool.core.context import Environment, current, finish
from cvtool.core.status import ExitStatus, UsageError
from cvtool.devicebench.cases import (
    DEFAULT_SIZES,
    DTYPES,
    OPS,
    QUICK_SIZES,
    build_cases,
    parse_sizes,
)
from cvtool.devicebench.devices import DEVICES, available_cores
from cvtool.devicebench.gate import FORMAT, evaluate, parse_requirement
from cvtool.devicebench.timing import Plan

FORMATS = ("table", "json", "csv")
# --quick: tiny shapes and short runs, for CI smoke tests and this project's own tests.
QUICK_PLAN = Plan(warmup=1, repeats=5, block_ms=1.0, max_time_s=0.1)


def _choices(text: str, valid: tuple[str, ...], option: str) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    unknown = [c for c in chosen if c not in valid]
    if unknown or not chosen:
        raise UsageError(f"{option} {text!r}: unknown {', '.join(unknown) or 'empty list'}; "
                         f"valid: {', '.join(valid)}")
    return chosen


def _positive_ints(text: str, option: str, all_value: int | None = None) -> tuple[int, ...]:
    values = []
    for token in (t.strip() for t in text.split(",")):
        if all_value is not None and token == "all":
            values.append(all_value)
        elif token.isdigit() and int(token) > 0:
            values.append(int(token))
        else:
            hint = "positive integers or 'all'" if all_value else "positive integers"
            raise UsageError(f"{option} {text!r}: {token!r} is not valid; use {hint}")
    return tuple(dict.fromkeys(values))


def _plan(quick: bool, warmup: int | None, repeats: int | None, block_ms: float | None,
          max_time: float | None) -> Plan:
    base = QUICK_PLAN if quick else Plan()
    plan = Plan(warmup=base.warmup if warmup is None else warmup,
                repeats=base.repeats if repeats is None else repeats,
                block_ms=base.block_ms if block_ms is None else block_ms,
                max_time_s=base.max_time_s if max_time is None else max_time)
    if plan.warmup < 0 or plan.repeats < 1 or plan.block_ms <= 0 or plan.max_time_s < 0:
        raise UsageError("--warmup must be >= 0, --repeats >= 1, --block-ms > 0, "
                         "--max-time >= 0")
    return plan


# The command's options, declared once as Annotated aliases (as in cvtool/cli/app.py).
Ops = Annotated[str, typer.Option(help=f"Comma list of {', '.join(OPS)}.")]
Dtypes = Annotated[str, typer.Option(
    help="Comma list of float32 (strict, TF32 off), tf32, bfloat16, float16; each runs only "
         "where the device supports it.")]
Devices = Annotated[str, typer.Option(
    help="Comma list of cpu, cuda, mps; absent ones are reported, not errors.")]
Sizes = Annotated[Optional[list[str]], typer.Option(
    metavar="OP=TOKENS", help="OP=TOKEN[,TOKEN...], repeatable. matmul: square, layers, tiny, "
    "N, MxNxK; conv2d: resnet50, mobilenet_v2, tiny or a layer name.")]
BatchSizes = Annotated[Optional[str], typer.Option(
    help="conv2d batch sizes [default: 1,32; --quick: 1]")]
ThreadCounts = Annotated[str, typer.Option(
    help="CPU thread counts to measure: comma list of integers or 'all'. (Not --threads, "
         "which everywhere else sets torch's one thread count.)")]
Format = Annotated[Optional[Literal["table", "json", "csv"]], typer.Option(
    "--format", help="[default: table on a terminal, else json]", show_default=False)]
SaveJson = Annotated[Optional[Path], typer.Option(
    help="Also write the JSON document to this file (atomically). (Not -o, which everywhere "
         "else names a directory.)", show_default=False)]
Plot = Annotated[Optional[Path], typer.Option(help="Write a speedup and throughput chart (PNG).")]
FailBelow = Annotated[Optional[list[str]], typer.Option(
    metavar="SPEC", help=f"CI gate, repeatable: {FORMAT}; exit 1 when the best matching value "
    "is lower. METRIC: speedup, tflops, pct_of_peak.")]
FlushL2 = Annotated[bool, typer.Option(
    help="Overwrite the GPU L2 cache before every timed call (CUDA).")]
Warmup = Annotated[Optional[int], typer.Option(
    help="Warm-up calls after the cold one [default: 3; --quick: 1]")]
Repeats = Annotated[Optional[int], typer.Option(
    help="Timed runs per target [default: 15; --quick: 5]")]
BlockMs = Annotated[Optional[float], typer.Option(
    help="Shortest timed run; fast kernels repeat within it [default: 10; --quick: 1]")]
MaxTime = Annotated[Optional[float], typer.Option(
    help="Seconds per target and case after which it stops at 3 runs [default: 3; --quick: 0.1]")]
Seed = Annotated[int, typer.Option(help="Seed of the input generators.")]
Quick = Annotated[bool, typer.Option(help="Tiny shapes and short runs (CI smoke test).")]


def benchmark_device(
    ops: Ops = ",".join(OPS), dtypes: Dtypes = ",".join(DTYPES),
    devices: Devices = ",".join(DEVICES), sizes: Sizes = None, batch_sizes: BatchSizes = None,
    thread_counts: ThreadCounts = "1,all", output_format: Format = None,
    save_json: SaveJson = None,
    plot: Plot = None, fail_below: FailBelow = None, flush_l2: FlushL2 = False,
    warmup: Warmup = None, repeats: Repeats = None, block_ms: BlockMs = None,
    max_time: MaxTime = None, seed: Seed = 0, quick: Quick = False, quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """CPU vs GPU (vs MPS) timing of conv2d and matmul: median, IQR, TFLOP/s, % of peak.

    \b
    Example:
      cvtool benchmark-device --quick --plot bench.png
    """
    env = current(quiet, debug)
    fmt = output_format or ("table" if env.stdout_isatty else "json")
    _choices(fmt, FORMATS, "--format")
    chosen_ops = _choices(ops, OPS, "--ops")
    sizes_by_op = {**(QUICK_SIZES if quick else DEFAULT_SIZES), **parse_sizes(sizes or [])}
    batches = _positive_ints(batch_sizes or ("1" if quick else "1,32"), "--batch-sizes")
    options = {
        "ops": chosen_ops, "dtypes": _choices(dtypes, DTYPES, "--dtypes"),
        "devices": _choices(devices, DEVICES, "--devices"),
        "cases": build_cases(chosen_ops, sizes_by_op, batches),
        "threads": _positive_ints(thread_counts, "--thread-counts", available_cores()),
        "plan": _plan(quick, warmup, repeats, block_ms, max_time),
        "requirements": [parse_requirement(s) for s in fail_below or []],
        "flush_l2": flush_l2, "seed": seed, "format": fmt, "output": save_json, "plot": plot,
    }
    finish(_run, env, options)


def _run(env: Environment, options: dict[str, Any]) -> ExitStatus:
    from cvtool.devicebench.devices import probe
    from cvtool.devicebench.peaks import read_cpuinfo
    from cvtool.devicebench.report import device_block, environment, summary
    from cvtool.devicebench.runner import Settings, run_all

    cpu = read_cpuinfo()
    found = {kind: probe(kind, cpu, options["dtypes"]) for kind in options["devices"]}
    for kind, info in found.items():
        if not info.present:
            env.log(f"{kind}: absent ({info.reason})")
        for dtype, reason in info.skipped_dtypes.items():
            env.log(f"{kind}: skipping {dtype}: {reason}")
    settings = Settings(options["cases"], options["dtypes"], options["threads"],
                        options["plan"], options["flush_l2"], options["seed"])
    header = environment(found, settings.threads, _echo(options))
    results = run_all(settings, found, cpu, env.log)
    verdicts = evaluate(options["requirements"], results)
    document = {"environment": header,
                "devices": device_block(found, cpu),
                "results": [r.as_dict() for r in results],
                "summary": summary(results), "gate": verdicts}
    _emit(env, options, results, found, document)
    return _verdict(env, results, verdicts)


def _echo(options: dict[str, Any]) -> dict[str, Any]:
    """The resolved options as JSON values, for the environment block."""
    plan = options["plan"]
    return {"ops": list(options["ops"]), "dtypes": list(options["dtypes"]),
            "devices": list(options["devices"]), "cases": [c.name for c in options["cases"]],
            "warmup": plan.warmup, "repeats": plan.repeats, "block_ms": plan.block_ms,
            "max_time_s": plan.max_time_s, "flush_l2": options["flush_l2"],
            "seed": options["seed"], "fail_below": [r.text for r in options["requirements"]]}


def _emit(env: Environment, options: dict[str, Any], results: list[Any],
          found: dict[str, Any], document: dict[str, Any]) -> None:
    from cvtool.devicebench.report import to_csv, to_json, write_table
    from cvtool.io.writers import write_bytes

    if options["output"] is not None:
        write_bytes(options["output"], to_json(document).encode())
    if options["plot"] is not None:
        from cvtool.devicebench.plot import write_plot

        names = ", ".join(document["environment"]["device_names"].values())
        write_plot(results, options["plot"], f"benchmark-device: {names}")
    if options["format"] == "table":
        write_table(results, found, env.stdout, env.no_color)
    else:
        env.stdout.write(to_json(document) if options["format"] == "json" else to_csv(results))
    env.stdout.flush()


def _verdict(env: Environment, results: list[Any], verdicts: list[dict[str, Any]]) -> ExitStatus:
    for r in results:
        where = f"{r.op} {r.case} {r.dtype} on {r.device}"
        if r.error:
            env.warn(f"{where} failed: {r.error}")
        elif not r.ok:
            env.warn(f"{where}: max_rel_error {r.max_rel_error:.2e} exceeds {r.tolerance:.0e}")
        elif r.noisy:
            env.warn(f"{where}{f' ({r.threads}t)' if r.threads else ''}: IQR is "
                     f"{100 * r.iqr_ms / r.median_ms:.0f}% of the median; the timing is noisy")
    for verdict in verdicts:
        if not verdict["passed"]:
            env.warn(f"--fail-below {verdict['requirement']} not met (best: {verdict['best']})")
    failed = any(not r.ok for r in results) or any(not v["passed"] for v in verdicts)
    return ExitStatus.PARTIAL if failed else ExitStatus.SUCCESS
