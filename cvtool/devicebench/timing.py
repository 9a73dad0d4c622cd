"""Timers per device and the alternating measurement loop.

Method, after torch.utils.benchmark and triton.testing.do_bench: the first (cold) call is
timed on its own, a few warm-up calls follow, then timed blocks of several calls each so a
block outlasts the timer's resolution and launch jitter. GPU blocks are bracketed by device
events (CUDA) or synchronisations (MPS), so asynchronous launches are not mistaken for
finished work. Targets take turns block by block, so clock or thermal drift hits all alike.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MIN_RUNS = 3  # fewest blocks behind a median and an IQR
NOISY_IQR_FRACTION = 0.10
# The GPU spin before each CUDA block (see CudaTimer): at least 1 ms, at most 100 ms, in
# cycles at about 2 GHz (a slower clock only lengthens the spin, which is harmless).
MIN_SPIN_S, MAX_SPIN_S = 1e-3, 0.1
SPIN_CYCLES_PER_S = 2e9


@dataclass(frozen=True)
class Plan:
    warmup: int = 3
    repeats: int = 15
    block_ms: float = 10.0
    max_time_s: float = 3.0


class CpuTimer:
    """Host clock around a block, with torch's intra-op thread count set for it."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self.single_call_blocks = False

    def block(self, fn: Callable[[], Any], calls: int) -> float:
        import torch

        if torch.get_num_threads() != self.threads:
            # Resizing the thread pool costs the next call a pool start-up, not kernel time.
            torch.set_num_threads(self.threads)
            fn()
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        return (time.perf_counter() - start) * 1e3 / calls


class CudaTimer:
    """CUDA events around the block; with `flush_bytes`, L2 is overwritten before each call.

    Before the start event the GPU is given a spin kernel lasting longer than the host takes
    to enqueue the block, so the events bracket GPU work alone: without it, a host slowed by
    Python, cuBLAS heuristics or CPU threads busy with the CPU's turn would leave the GPU
    idle between the events, and that idle time would be reported as kernel time. The spin
    also keeps the clocks up after the GPU waited through the CPU's blocks.
    """

    def __init__(self, flush_bytes: int = 0) -> None:
        import torch

        self.flush = torch.empty(flush_bytes, dtype=torch.uint8, device="cuda") if flush_bytes \
            else None
        self.single_call_blocks = self.flush is not None
        self.enqueue_s = MIN_SPIN_S

    def block(self, fn: Callable[[], Any], calls: int) -> float:
        import torch

        start, end = (torch.cuda.Event(enable_timing=True) for _ in range(2))
        if self.flush is not None:
            self.flush.zero_()  # outside the events: the flush is not part of the kernel
        spin_s = min(max(MIN_SPIN_S, 2 * self.enqueue_s), MAX_SPIN_S)
        torch.cuda._sleep(int(spin_s * SPIN_CYCLES_PER_S))
        host_start = time.perf_counter()
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        self.enqueue_s = time.perf_counter() - host_start
        end.synchronize()
        return start.elapsed_time(end) / calls


class MpsTimer:
    """MPS has no L2 control; synchronising before and after bounds the block exactly."""

    single_call_blocks = False

    def block(self, fn: Callable[[], Any], calls: int) -> float:
        import torch

        torch.mps.synchronize()
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        torch.mps.synchronize()
        return (time.perf_counter() - start) * 1e3 / calls


Timer = CpuTimer | CudaTimer | MpsTimer


@dataclass
class Series:
    """One target's measurements of one workload."""

    timer: Timer
    fn: Callable[[], Any]
    cold_ms: float = 0.0
    calls_per_run: int = 1
    samples_ms: list[float] = field(default_factory=list)
    spent_s: float = 0.0

    def done(self, plan: Plan) -> bool:
        enough = len(self.samples_ms) >= MIN_RUNS and self.spent_s >= plan.max_time_s
        return len(self.samples_ms) >= plan.repeats or enough

    def take(self) -> None:
        per_call = self.timer.block(self.fn, self.calls_per_run)
        self.samples_ms.append(per_call)
        self.spent_s += per_call * self.calls_per_run / 1e3


def prepare(series: Series, plan: Plan) -> None:
    """Cold call, warm-up, then the block size from the last warm call's time."""
    series.cold_ms = series.timer.block(series.fn, 1)
    warm_ms = series.cold_ms
    for _ in range(plan.warmup):
        warm_ms = series.timer.block(series.fn, 1)
    if not series.timer.single_call_blocks:
        series.calls_per_run = max(1, math.ceil(plan.block_ms / max(warm_ms, 1e-6)))


def measure(all_series: list[Series], plan: Plan) -> None:
    """Round-robin one block per target until each has its runs or spent its time."""
    for series in all_series:
        prepare(series, plan)
    while pending := [s for s in all_series if not s.done(plan)]:
        for series in pending:
            series.take()


def median_iqr(samples: list[float]) -> tuple[float, float]:
    """Median and interquartile range (the 'inclusive' quartiles of torch.utils.benchmark)."""
    if len(samples) == 1:
        return samples[0], 0.0
    q1, _, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return statistics.median(samples), q3 - q1


def is_noisy(median_ms: float, iqr_ms: float) -> bool:
    return median_ms > 0 and iqr_ms / median_ms > NOISY_IQR_FRACTION
