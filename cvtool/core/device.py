"""Devices, precision, threads and seeds: the one place that decides where and how tensors run."""

from __future__ import annotations

import contextlib
import random
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from cvtool.core.context import Warn
from cvtool.core.status import ResourceUnavailable, UsageError

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = "auto|cpu|cuda|cuda:N|mps"
PRECISIONS = ("fp32", "bf16", "fp16")
AUTO = "auto"  # inference: bf16 where the device computes it natively, else fp32
_DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def resolve_device(spec: str) -> torch.device:
    """`auto` picks CUDA, then MPS, then the CPU; naming an absent device is exit 3."""
    import torch

    if not _DEVICE_PATTERN.match(spec):
        raise UsageError(f"invalid --device {spec!r}; expected {DEVICE_CHOICES}")
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _mps_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda":
        _check_cuda(device)
    elif device.type == "mps" and not _mps_available():
        raise ResourceUnavailable("--device mps: no MPS device is present on this machine")
    return device


def _check_cuda(device: torch.device) -> None:
    import torch

    if not torch.cuda.is_available():
        raise ResourceUnavailable(f"--device {device}: no CUDA device is present on this machine")
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise ResourceUnavailable(f"--device {device}: only {count} CUDA device(s) are present")


def _mps_available() -> bool:
    import torch

    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def autocast_dtype(precision: str) -> torch.dtype | None:
    import torch

    if precision not in PRECISIONS:
        raise UsageError(f"invalid --precision {precision!r}; "
                         f"expected one of {', '.join(PRECISIONS)}")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Mixed precision for the forward pass; fp32 runs as it is."""
    import torch

    dtype = autocast_dtype(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bfloat16 in hardware: CPUs with AVX512-BF16 or AMX, CUDA
    devices that have bf16 (Ampere on), not emulated."""
    import torch

    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    if device.type == "cpu":
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    return False


def resolve_precision(device: torch.device, precision: str) -> str:
    """`--precision auto`: bf16 on native-bf16 devices, fp32 elsewhere; others as given."""
    if precision != AUTO:
        return precision
    return "bf16" if native_bf16(device) else "fp32"


def precision_warning(device: torch.device, precision: str) -> str | None:
    """Why the asked-for precision will be slow here, if it will: CPUs without native
    bfloat16/float16 instructions (AVX512-BF16, AMX, AVX512-FP16) emulate them."""
    import torch

    if device.type != "cpu" or precision == "fp32":
        return None
    supported = (torch.ops.mkldnn._is_mkldnn_bf16_supported() if precision == "bf16"
                 else torch.ops.mkldnn._is_mkldnn_fp16_supported())
    if supported:
        return None
    return (f"this CPU has no native {precision} instructions; --precision {precision} is "
            "emulated and runs slower than fp32 here")


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_threads(threads: int | None) -> int:
    """Set torch's intra-op thread count when given; return the count in force."""
    import torch

    if threads is not None:
        if threads < 1:
            raise UsageError(f"invalid thread count {threads}; expected at least 1")
        torch.set_num_threads(threads)
    return torch.get_num_threads()


CPU_STREAMS = 2  # measured: bench/detect_throughput.py, bench/classify_throughput.py


def split_threads(device: torch.device, streams: int | None) -> tuple[int, int]:
    """(streams, torch threads for each): how many batches run through the model at once
    (`streams`; None: two on a CPU, one elsewhere), each on an equal share of the CPU threads
    in force. On 2 cores two 1-thread streams beat one 2-thread stream for every model
    measured (the R-CNN detectors 1.4x, a small U-Net 1.6x, EfficientNet-Lite0 1.25x,
    resnet50 fp32 1.07x; resnet50 bf16 on AMX even)."""
    import torch

    if streams is None:
        streams = CPU_STREAMS if device.type == "cpu" else 1
    threads = torch.get_num_threads()
    streams = min(streams, threads) if device.type == "cpu" else streams
    return streams, max(1, threads // streams)


@contextlib.contextmanager
def stream_pool(streams: int, threads: int) -> Iterator[Any]:
    """A pool of `streams` threads, each running torch on `threads` CPU threads; the calling
    thread keeps its own count (torch's setting is per thread once a thread has used it)."""
    from concurrent.futures import ThreadPoolExecutor

    import torch

    own = torch.get_num_threads()
    try:
        with ThreadPoolExecutor(streams, thread_name_prefix="cvtool-stream",
                                initializer=torch.set_num_threads, initargs=(threads,)) as pool:
            yield pool
    finally:
        torch.set_num_threads(own)  # and the default for threads started later


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels, so wall-clock timings cover the work itself."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def describe_device(device: torch.device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


def prepare_device(device: str, precision: str, threads: int | None, seed: int,
                   warn: Warn) -> tuple[torch.device, dict[str, Any]]:
    """Threads, seed, the device and precision every predictor sets up the same way; returns
    the device and the settings run.json records about them (`precision` as chosen: `auto`
    resolved, and then `precision_asked: auto`)."""
    if precision not in (*PRECISIONS, AUTO):
        raise UsageError(f"invalid --precision {precision!r}; "
                         f"expected one of {', '.join((*PRECISIONS, AUTO))}")
    threads = set_threads(threads)
    seed_everything(seed)
    target = resolve_device(device)
    chosen = resolve_precision(target, precision)
    if warning := precision_warning(target, chosen):
        warn(warning)
    settings = {"device": str(target), "device_name": describe_device(target),
                "precision": chosen, "threads": threads, "seed": seed}
    if precision == AUTO:
        settings["precision_asked"] = AUTO
    return target, settings
