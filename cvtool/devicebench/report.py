"""The benchmark's outputs: the JSON document, CSV rows, a rich table, atomic file writes."""

from __future__ import annotations

import csv
import io
import json
import platform
import sys
from typing import IO, Any

from rich.console import Console
from rich.table import Table

from cvtool import __version__
from cvtool.devicebench.devices import DeviceInfo, device_peak
from cvtool.devicebench.peaks import CpuInfo
from cvtool.devicebench.runner import CUDNN_BENCHMARK, BenchResult

CSV_COLUMNS = ("op", "case", "shape", "dtype", "device", "threads", "median_ms", "iqr_ms",
               "runs", "calls_per_run", "cold_ms", "flops", "tflops", "peak_tflops",
               "pct_of_peak", "max_rel_error", "tolerance", "ok", "noisy", "transfer_ms",
               "speedup", "speedup_vs", "error")


def environment(devices: dict[str, DeviceInfo], threads: tuple[int, ...],
                options: dict[str, Any]) -> dict[str, Any]:
    """Versions, device names, thread counts and TF32 flags: what a reader needs to trust or
    reproduce the numbers."""
    import torch

    from cvtool.devicebench.devices import available_cores, precision_flags

    return {
        "cvtool": __version__, "python": sys.version.split()[0], "torch": torch.__version__,
        "cuda_runtime": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
        "platform": platform.platform(),
        "device_names": {k: d.name for k, d in devices.items() if d.present},
        "cpu_cores": available_cores(), "cpu_threads_measured": list(threads),
        "torch_default_threads": torch.get_num_threads(),
        "cudnn_benchmark": CUDNN_BENCHMARK,
        "precision_flags": precision_flags(), "options": options,
    }


def device_block(devices: dict[str, DeviceInfo], cpu: CpuInfo) -> dict[str, Any]:
    block = {}
    for kind, info in devices.items():
        entry = info.as_dict()
        if info.present:
            peaks = {dtype: device_peak(info, cpu, dtype, 1) for dtype in info.dtypes}
            unit = "tflops_per_core" if kind == "cpu" else "tflops"
            entry["peaks"] = {dtype: {unit: p.tflops, "source": p.source}
                              for dtype, p in peaks.items() if p is not None}
        block[kind] = entry
    return block


def summary(results: list[BenchResult]) -> list[dict[str, Any]]:
    """Per device and dtype: the best throughput, where it was reached, the best speedup."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for r in results:
        if not r.ok or r.tflops is None:
            continue
        row = rows.setdefault((r.device, r.dtype), {"device": r.device, "dtype": r.dtype,
                                                    "best_tflops": 0.0, "max_speedup": None})
        if r.tflops > row["best_tflops"]:
            row.update(best_tflops=r.tflops, best_case=r.case, threads=r.threads,
                       pct_of_peak=r.pct_of_peak)
        if r.speedup is not None and r.device != "cpu":
            row["max_speedup"] = max(row["max_speedup"] or 0.0, r.speedup)
    return list(rows.values())


def to_json(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2) + "\n"


def to_csv(results: list[BenchResult]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    for r in results:
        shape = " ".join(f"{k}={v}" for k, v in r.shape.items())
        writer.writerow({**r.as_dict(), "shape": shape})
    return buffer.getvalue()


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def write_table(results: list[BenchResult], devices: dict[str, DeviceInfo], out: IO[str],
                no_color: bool) -> None:
    table = Table(title="benchmark-device", caption=_absent_caption(devices))
    for column in ("op", "case", "dtype", "device", "median ms", "IQR %", "runs",
                   "TFLOP/s", "% peak", "speedup", "rel err", "ok"):
        table.add_column(column, justify="left" if column in ("op", "case") else "right")
    for r in results:
        iqr_pct = 100 * r.iqr_ms / r.median_ms if r.median_ms else None
        table.add_row(r.op, r.case, r.dtype, _target(r), _fmt(r.median_ms, ".4g"),
                      _fmt(iqr_pct, ".1f"), str(r.runs), _fmt(r.tflops, ".3g"),
                      _fmt(r.pct_of_peak, ".1f"), _fmt(r.speedup, ".2f"),
                      _fmt(r.max_rel_error, ".1e"), "yes" if r.ok else "NO")
    Console(file=out, no_color=no_color, width=160).print(table)


def _target(r: BenchResult) -> str:
    return f"{r.device}:{r.threads}t" if r.threads else r.device


def _absent_caption(devices: dict[str, DeviceInfo]) -> str:
    return "; ".join(f"{k}: absent ({d.reason})" for k, d in devices.items() if not d.present)
