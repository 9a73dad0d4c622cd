"""Peak arithmetic rates: a datasheet table for GPUs, a computed figure for the CPU.

Percent of peak is only as honest as the peak, so every figure carries its source.
GPU figures are NVIDIA's dense (no 2:4 sparsity) tensor-core rates at boost clock;
`float32` is the plain FP32 (CUDA core) rate, since TF32 is off in that mode.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Peak:
    tflops: float
    source: str


# Matched in order against torch.cuda.get_device_name(): specific names before their prefixes.
GPU_PEAKS: tuple[tuple[str, dict[str, float], str], ...] = (
    ("H200", {"float32": 67.0, "tf32": 494.7, "bfloat16": 989.4, "float16": 989.4},
     "NVIDIA H200 SXM datasheet (dense)"),
    ("H100 PCIe", {"float32": 51.2, "tf32": 378.0, "bfloat16": 756.0, "float16": 756.0},
     "NVIDIA H100 PCIe datasheet (dense)"),
    ("H100 NVL", {"float32": 60.0, "tf32": 417.5, "bfloat16": 835.5, "float16": 835.5},
     "NVIDIA H100 NVL datasheet (dense)"),
    ("H100", {"float32": 67.0, "tf32": 494.7, "bfloat16": 989.4, "float16": 989.4},
     "NVIDIA H100 SXM5 datasheet (dense)"),
    ("A100", {"float32": 19.5, "tf32": 156.0, "bfloat16": 312.0, "float16": 312.0},
     "NVIDIA A100 datasheet (dense)"),
    ("L40S", {"float32": 91.6, "tf32": 183.0, "bfloat16": 362.05, "float16": 362.05},
     "NVIDIA L40S datasheet (dense)"),
    ("L4", {"float32": 30.3, "tf32": 60.0, "bfloat16": 121.0, "float16": 121.0},
     "NVIDIA L4 datasheet (dense)"),
)


def gpu_peak(device_name: str, dtype: str) -> Peak | None:
    for key, table, source in GPU_PEAKS:
        if key in device_name:
            return Peak(table[dtype], source) if dtype in table else None
    return None


@dataclass(frozen=True)
class CpuInfo:
    model: str
    mhz: float | None
    mhz_source: str
    flags: frozenset[str]


# FLOP per cycle per core, assuming two FMA pipes (true of recent Xeon Gold/Platinum and
# AMD Zen); one-pipe parts reach half. Keyed by dtype, first matching ISA flag wins.
FLOPS_PER_CYCLE: dict[str, tuple[tuple[str, int], ...]] = {
    "float32": (("avx512f", 64), ("avx2", 32), ("asimd", 16)),
    "bfloat16": (("amx_bf16", 1024), ("avx512_bf16", 128)),
    "float16": (("amx_fp16", 1024), ("avx512_fp16", 128)),
}


def read_cpuinfo(cpuinfo: str | None = None, max_freq_khz: str | None = None) -> CpuInfo:
    """Model, clock and ISA flags from Linux's /proc/cpuinfo (empty elsewhere)."""
    cpuinfo = _read("/proc/cpuinfo") if cpuinfo is None else cpuinfo
    if max_freq_khz is None:
        max_freq_khz = _read("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    model = _field(cpuinfo, r"model name|Processor|Hardware") or "unknown CPU"
    flags = frozenset((_field(cpuinfo, r"flags|Features") or "").split())
    if max_freq_khz.strip().isdigit():
        return CpuInfo(model, int(max_freq_khz) / 1000, "cpufreq cpuinfo_max_freq", flags)
    mhz = _field(cpuinfo, r"cpu MHz")
    return CpuInfo(model, float(mhz) if mhz else None, "/proc/cpuinfo 'cpu MHz'", flags)


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _field(text: str, names: str) -> str | None:
    match = re.search(rf"^(?:{names})\s*:\s*(.*)$", text, re.MULTILINE)
    return match.group(1).strip() if match else None


def cpu_flops_per_cycle(cpu: CpuInfo, dtype: str) -> tuple[int, str] | None:
    for flag, flops in FLOPS_PER_CYCLE.get(dtype, ()):
        if flag in cpu.flags:
            return flops, flag
    return None


def cpu_peak(cpu: CpuInfo, dtype: str, threads: int) -> Peak | None:
    """Computed: threads x clock x FLOP/cycle of the widest ISA the flags show."""
    per_cycle = cpu_flops_per_cycle(cpu, dtype)
    if per_cycle is None or cpu.mhz is None:
        return None
    flops, flag = per_cycle
    source = (f"computed: {threads} core{'s' if threads > 1 else ''} x {cpu.mhz / 1000:.2f} "
              f"GHz ({cpu.mhz_source}; turbo can exceed it) x {flops} FLOP/cycle ({flag}, "
              "two FMA pipes assumed)")
    return Peak(threads * cpu.mhz * 1e6 * flops / 1e12, source)


def cpu_dtype_support(cpu: CpuInfo, dtype: str) -> str | None:
    """None when the CPU computes `dtype` natively, else why it is skipped.

    torch emulates bfloat16/float16 on CPUs without those instructions at a few GFLOP/s,
    which would turn a benchmark into an hour-long wait and measure nothing useful.
    """
    if dtype == "float32":
        return None
    if dtype == "tf32":
        return "TF32 is a tensor-core mode of NVIDIA GPUs"
    if cpu_flops_per_cycle(cpu, dtype) is None:
        flags = " / ".join(flag for flag, _ in FLOPS_PER_CYCLE[dtype])
        return f"no native {dtype} arithmetic ({flags} absent); torch would emulate it"
    return None
