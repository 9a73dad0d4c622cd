"""Inputs, the kernel call, the float64 reference check and the host-to-device copy time.

Inputs are drawn on the device itself from a seeded generator (normal, never zeros: some
kernels and some hardware run faster on zeros), so no copy hides in the setup.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cvtool.devicebench.cases import Case, ConvShape
from cvtool.devicebench.devices import torch_dtype

# Largest acceptable max|out - ref| / max|ref| per dtype. float32 is tight enough that TF32
# leaking in (about 5e-4) fails it; the others allow their output rounding and fp32
# accumulation in a different order.
TOLERANCE = {"float32": 1e-4, "tf32": 5e-3, "bfloat16": 2e-2, "float16": 5e-3}
# The reference is computed on a slice (first image, first rows): float64 on the CPU for a
# whole 4096^3 product would take longer than everything else together.
REFERENCE_ROWS = 256
TRANSFER_REPEATS = 5


@dataclass
class Workload:
    case: Case
    dtype: str
    device: str
    inputs: tuple[Any, ...]
    call: Callable[[], Any]


def make_workload(case: Case, dtype: str, device: str, seed: int) -> Workload:
    import torch

    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    dims = _input_dims(case)
    inputs = tuple(torch.randn(d, generator=generator, device=device, dtype=torch.float32)
                   .to(torch_dtype(dtype)) for d in dims)
    return Workload(case, dtype, device, inputs, _kernel(case, inputs))


def _input_dims(case: Case) -> tuple[tuple[int, ...], ...]:
    s = case.shape
    if isinstance(s, ConvShape):
        return (s.n, s.cin, s.h, s.w), (s.cout, s.cin // s.groups, s.kernel, s.kernel)
    return (s.m, s.k), (s.k, s.n)


def _kernel(case: Case, inputs: tuple[Any, ...]) -> Callable[[], Any]:
    import torch

    shape = case.shape
    if isinstance(shape, ConvShape):
        def conv() -> Any:
            return torch.nn.functional.conv2d(*inputs, stride=shape.stride,
                                              padding=shape.padding, groups=shape.groups)
        return conv
    return lambda: torch.matmul(*inputs)


def reference_error(workload: Workload, output: Any) -> float:
    """max|out - ref| / max|ref| on a slice, the reference in float64 from the same inputs.

    Normalising by the largest reference value, not element by element, keeps outputs near
    zero from reporting huge relative errors that say nothing about the kernel.
    """
    import torch

    first, second = (t.detach().to("cpu", torch.float64) for t in workload.inputs)
    shape = workload.case.shape
    if isinstance(shape, ConvShape):
        ref = torch.nn.functional.conv2d(first[:1], second, stride=shape.stride,
                                         padding=shape.padding, groups=shape.groups)
        got = output[:1]
    else:
        ref, got = first[:REFERENCE_ROWS] @ second, output[:REFERENCE_ROWS]
    return relative_error(got.to("cpu", torch.float64), ref)


def relative_error(got: Any, ref: Any) -> float:
    scale = ref.abs().max().item()
    diff = (got - ref).abs().max().item()
    return diff / scale if scale > 0 else diff


def transfer_ms(workload: Workload, synchronize: Callable[[], None]) -> float:
    """Median time to copy the inputs host-to-device, kept apart from the kernel's time."""
    host = [t.to("cpu") for t in workload.inputs]
    times = []
    for _ in range(TRANSFER_REPEATS):
        synchronize()
        start = time.perf_counter()
        for tensor in host:
            tensor.to(workload.device)
        synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)
