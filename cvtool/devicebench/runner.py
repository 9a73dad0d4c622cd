"""Run every (case, dtype) on every target in alternation and turn timings into results."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from cvtool.core.context import Warn
from cvtool.devicebench.cases import Case
from cvtool.devicebench.devices import DeviceInfo, device_peak, precision
from cvtool.devicebench.peaks import CpuInfo
from cvtool.devicebench.timing import (
    CpuTimer,
    CudaTimer,
    MpsTimer,
    Plan,
    Series,
    Timer,
    is_noisy,
    measure,
    median_iqr,
)
from cvtool.devicebench.workloads import TOLERANCE, make_workload, reference_error, transfer_ms

DEFAULT_FLUSH_BYTES = 256 * 2**20  # triton's do_bench cache buffer, when L2 size is unknown
# cuDNN autotuning picks the fastest algorithm per shape during the cold call, which is
# what a model in production runs; the cold call's time is reported on its own.
CUDNN_BENCHMARK = True


@dataclass(frozen=True)
class Target:
    device: str
    threads: int | None = None  # CPU intra-op threads; None for accelerators

    @property
    def label(self) -> str:
        return f"{self.device}:{self.threads}t" if self.threads else self.device


@dataclass
class Settings:
    cases: list[Case]
    dtypes: tuple[str, ...]
    threads: tuple[int, ...]
    plan: Plan
    flush_l2: bool = False
    seed: int = 0


@dataclass
class BenchResult:
    op: str
    case: str
    shape: dict[str, int]
    dtype: str
    device: str
    threads: int | None
    median_ms: float | None = None
    iqr_ms: float | None = None
    runs: int = 0
    calls_per_run: int = 0
    cold_ms: float | None = None
    flops: int = 0
    tflops: float | None = None
    peak_tflops: float | None = None
    pct_of_peak: float | None = None
    max_rel_error: float | None = None
    tolerance: float | None = None
    ok: bool = True
    noisy: bool = False
    transfer_ms: float | None = None
    speedup: float | None = None
    speedup_vs: str | None = None
    error: str | None = None
    samples_ms: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def targets_for(devices: dict[str, DeviceInfo], threads: tuple[int, ...]) -> list[Target]:
    targets: list[Target] = []
    for kind, info in devices.items():
        if info.present:
            targets += [Target(kind, t) for t in threads] if kind == "cpu" else [Target(kind)]
    return targets


def make_timers(targets: list[Target], devices: dict[str, DeviceInfo],
                flush_l2: bool) -> dict[Target, Timer]:
    timers: dict[Target, Timer] = {}
    for target in targets:
        if target.device == "cpu":
            timers[target] = CpuTimer(target.threads or 1)
        elif target.device == "cuda":
            l2 = int(devices["cuda"].details.get("l2_cache_mib", 0) * 2**20)
            timers[target] = CudaTimer((2 * l2 or DEFAULT_FLUSH_BYTES) if flush_l2 else 0)
        else:
            timers[target] = MpsTimer()
    return timers


def run_all(settings: Settings, devices: dict[str, DeviceInfo], cpu: CpuInfo,
            log: Warn) -> list[BenchResult]:
    import torch

    targets = targets_for(devices, settings.threads)
    timers = make_timers(targets, devices, settings.flush_l2)
    saved = torch.get_num_threads(), torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = CUDNN_BENCHMARK
    try:
        results = [r for case in settings.cases for dtype in settings.dtypes
                   for r in _run_targets(case, dtype, targets, devices, timers, settings, log)]
    finally:
        torch.set_num_threads(saved[0])
        torch.backends.cudnn.benchmark = saved[1]
    for result in results:
        peak = device_peak(devices[result.device], cpu, result.dtype, result.threads)
        if peak is not None and result.tflops is not None:
            result.peak_tflops = peak.tflops
            result.pct_of_peak = 100 * result.tflops / peak.tflops
    add_speedups(results)
    return results


def _run_targets(case: Case, dtype: str, targets: list[Target], devices: dict[str, DeviceInfo],
                 timers: dict[Target, Timer], settings: Settings,
                 log: Warn) -> list[BenchResult]:
    chosen = [t for t in targets if dtype in devices[t.device].dtypes]
    if not chosen:
        return []
    log(f"{case.op} {case.name} {dtype}: {', '.join(t.label for t in chosen)}")
    return run_case(case, dtype, chosen, timers, settings)


def run_case(case: Case, dtype: str, targets: list[Target], timers: dict[Target, Timer],
             settings: Settings) -> list[BenchResult]:
    """One workload per device, shared by its targets; a runtime failure becomes a record."""
    try:
        with precision(dtype):
            return _measure_case(case, dtype, targets, timers, settings)
    except RuntimeError as error:  # out of memory, or a kernel the backend lacks
        return [BenchResult(case.op, case.name, case.shape_dict(), dtype, t.device, t.threads,
                            flops=case.shape.flops, ok=False, error=str(error).splitlines()[0])
                for t in targets]


def _measure_case(case: Case, dtype: str, targets: list[Target], timers: dict[Target, Timer],
                  settings: Settings) -> list[BenchResult]:
    devices = dict.fromkeys(t.device for t in targets)
    workloads = {d: make_workload(case, dtype, d, settings.seed) for d in devices}
    series = [Series(timers[t], workloads[t.device].call) for t in targets]
    measure(series, settings.plan)
    errors = {device: reference_error(w, w.call()) for device, w in workloads.items()}
    copies = {device: transfer_ms(w, _synchronizer(device))
              for device, w in workloads.items() if device != "cpu"}
    return [_result(case, dtype, t, s, errors[t.device], copies.get(t.device))
            for t, s in zip(targets, series)]


def _synchronizer(device: str) -> Callable[[], None]:
    import torch

    return torch.cuda.synchronize if device == "cuda" else torch.mps.synchronize


def _result(case: Case, dtype: str, target: Target, series: Series, error: float,
            copy_ms: float | None) -> BenchResult:
    median, iqr = median_iqr(series.samples_ms)
    flops = case.shape.flops
    return BenchResult(
        case.op, case.name, case.shape_dict(), dtype, target.device, target.threads,
        median_ms=median, iqr_ms=iqr, runs=len(series.samples_ms),
        calls_per_run=series.calls_per_run, cold_ms=series.cold_ms, flops=flops,
        tflops=flops / (median * 1e-3) / 1e12, max_rel_error=error, tolerance=TOLERANCE[dtype],
        ok=error <= TOLERANCE[dtype], noisy=is_noisy(median, iqr), transfer_ms=copy_ms,
        samples_ms=series.samples_ms)


def add_speedups(results: list[BenchResult]) -> None:
    """Speedup over the CPU with the most threads on the same case: same dtype if the CPU ran
    it, else float32 (the CPU's own way to compute what tf32/bf16/fp16 compute)."""
    cpu: dict[tuple[str, str], BenchResult] = {}
    for r in results:
        best = cpu.get((r.case, r.dtype))
        if r.device == "cpu" and r.median_ms and (best is None or r.threads > best.threads):
            cpu[(r.case, r.dtype)] = r
    for r in results:
        base = cpu.get((r.case, r.dtype)) or cpu.get((r.case, "float32"))
        if base is not None and r.median_ms:
            r.speedup = base.median_ms / r.median_ms
            r.speedup_vs = f"cpu:{base.dtype}:{base.threads}t"
