"""Which devices are present, which dtypes each computes, and the precision flags per dtype.

An absent device is a finding, not an error: it is reported with the reason torch gives.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from cvtool.devicebench.cases import DTYPES
from cvtool.devicebench.peaks import CpuInfo, Peak, cpu_dtype_support, cpu_peak, gpu_peak

DEVICES = ("cpu", "cuda", "mps")
PROBE_SIDE = 256
EMULATION_SLOWDOWN = 2.0


@dataclass
class DeviceInfo:
    kind: str
    present: bool
    name: str = ""
    reason: str = ""
    dtypes: list[str] = field(default_factory=list)
    skipped_dtypes: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        if not self.present:
            return {"present": False, "reason": self.reason}
        return {"present": True, "name": self.name, "dtypes": self.dtypes,
                "skipped_dtypes": self.skipped_dtypes, **self.details}


def available_cores() -> int:
    """Cores this process may run on (the affinity mask, as in a container or under taskset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity masks
        return os.cpu_count() or 1


def probe(kind: str, cpu: CpuInfo, dtypes: tuple[str, ...]) -> DeviceInfo:
    info = {"cpu": _probe_cpu, "cuda": _probe_cuda, "mps": _probe_mps}[kind](cpu)
    if info.present:
        for dtype in dtypes:
            reason = _unsupported(info, cpu, dtype)
            if reason is None:
                info.dtypes.append(dtype)
            else:
                info.skipped_dtypes[dtype] = reason
    return info


def _probe_cpu(cpu: CpuInfo) -> DeviceInfo:
    return DeviceInfo("cpu", True, cpu.model, details={"cores": available_cores()})


def _probe_cuda(cpu: CpuInfo) -> DeviceInfo:
    import torch

    if torch.version.cuda is None:
        return DeviceInfo("cuda", False, reason="this torch build has no CUDA support")
    if not torch.cuda.is_available():
        return DeviceInfo("cuda", False, reason=f"torch (CUDA {torch.version.cuda}) finds no "
                          "CUDA device or driver")
    props = torch.cuda.get_device_properties(0)
    details = {"capability": f"{props.major}.{props.minor}",
               "memory_gib": round(props.total_memory / 2**30, 1),
               "multiprocessors": props.multi_processor_count,
               "l2_cache_mib": round(getattr(props, "L2_cache_size", 0) / 2**20, 1)}
    return DeviceInfo("cuda", True, props.name, details=details)


def _probe_mps(cpu: CpuInfo) -> DeviceInfo:
    import torch

    if not torch.backends.mps.is_built():
        return DeviceInfo("mps", False, reason="this torch build has no MPS support (macOS only)")
    if not torch.backends.mps.is_available():
        return DeviceInfo("mps", False, reason="MPS is built but unavailable (macOS < 12.3 "
                          "or no Metal GPU)")
    return DeviceInfo("mps", True, "Apple Metal GPU (MPS)")


def _unsupported(info: DeviceInfo, cpu: CpuInfo, dtype: str) -> str | None:
    import torch

    if info.kind == "cpu":
        return cpu_dtype_support(cpu, dtype) or _cpu_emulates(dtype)
    if info.kind == "mps":
        return "TF32 is an NVIDIA mode" if dtype == "tf32" else _mps_refuses(dtype)
    major, _ = torch.cuda.get_device_capability(0)
    if dtype == "tf32" and major < 8:
        return "TF32 needs compute capability 8.0 (Ampere) or later"
    if dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
        return "this GPU has no native bfloat16"
    return None


def _cpu_emulates(dtype: str) -> str | None:
    """The ISA flag is not proof that torch's kernels use it: a reduced-precision product
    slower than float32 is an emulation, and timing it at full size could take hours."""
    import torch

    if dtype in ("float32", "tf32"):
        return None
    saved = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: the ratio of kernels, not of thread contention
    try:
        seconds = {d: _product_seconds(torch_dtype(d)) for d in ("float32", dtype)}
    finally:
        torch.set_num_threads(saved)
    if seconds[dtype] > EMULATION_SLOWDOWN * seconds["float32"]:
        return (f"torch computes {dtype} {seconds[dtype] / seconds['float32']:.0f}x slower "
                "than float32 here: emulated, not native")
    return None


def _product_seconds(dtype: Any) -> float:
    import torch

    a = torch.ones(PROBE_SIDE, PROBE_SIDE, dtype=dtype)
    a @ a  # first call: allocation and kernel selection
    start = time.perf_counter()
    a @ a
    return time.perf_counter() - start


def _mps_refuses(dtype: str) -> str | None:
    """MPS support for a dtype depends on the macOS version: ask it with a tiny product."""
    import torch

    try:
        ones = torch.ones(2, 2, device="mps", dtype=torch_dtype(dtype))
        (ones @ ones).cpu()
    except (RuntimeError, TypeError) as error:
        return f"MPS refused {dtype}: {error}"
    return None


def device_peak(info: DeviceInfo, cpu: CpuInfo, dtype: str, threads: int | None) -> Peak | None:
    if info.kind == "cpu":
        return cpu_peak(cpu, dtype, threads or 1)
    return gpu_peak(info.name, dtype) if info.kind == "cuda" else None


def torch_dtype(dtype: str) -> Any:
    import torch

    return {"float32": torch.float32, "tf32": torch.float32,
            "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


@contextmanager
def precision(dtype: str) -> Iterator[None]:
    """TF32 on for `tf32` only, so `float32` is strict IEEE single precision everywhere."""
    import torch

    saved = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("high" if dtype == "tf32" else "highest")
    torch.backends.cudnn.allow_tf32 = dtype == "tf32"
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(saved[0])
        torch.backends.cudnn.allow_tf32 = saved[1]


def precision_flags() -> dict[str, Any]:
    """The flags each dtype runs under, read back from torch rather than restated."""
    import torch

    flags: dict[str, Any] = {}
    for dtype in DTYPES:
        with precision(dtype):
            flags[dtype] = {"float32_matmul_precision": torch.get_float32_matmul_precision(),
                            "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
                            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32}
    matmul = torch.backends.cuda.matmul
    flags["fp16_reduced_precision_reduction"] = matmul.allow_fp16_reduced_precision_reduction
    flags["bf16_reduced_precision_reduction"] = matmul.allow_bf16_reduced_precision_reduction
    return flags
