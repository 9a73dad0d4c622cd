"""benchmark-device's parts without the CLI: FLOP formulas, peaks, statistics, speedups, gate."""

from __future__ import annotations

import pytest

from cvtool.core.status import UsageError
from cvtool.devicebench.cases import CONV_LAYERS, ConvShape, MatmulShape, build_cases, parse_sizes
from cvtool.devicebench.gate import evaluate, parse_requirement
from cvtool.devicebench.peaks import cpu_dtype_support, cpu_peak, gpu_peak, read_cpuinfo
from cvtool.devicebench.runner import BenchResult, add_speedups
from cvtool.devicebench.timing import Plan, Series, is_noisy, measure, median_iqr

# --- FLOP formulas against hand-computed cases -------------------------------------------


def test_matmul_flops_are_2mnk() -> None:
    assert MatmulShape(2, 3, 4).flops == 2 * 2 * 3 * 4 == 48
    assert MatmulShape(4096, 4096, 4096).flops == 137_438_953_472


def test_conv_flops_same_padding() -> None:
    # 1 image, 2->3 channels, 4x4, 3x3 kernel, pad 1: 4x4 out, each 2*9 MACs: 2*1*3*16*18.
    shape = ConvShape(n=1, cin=2, h=4, w=4, cout=3, kernel=3)
    assert shape.out_hw == (4, 4)
    assert shape.flops == 1728


def test_conv_flops_stride_and_depthwise() -> None:
    # Depthwise 3x3 stride 2 on 4 channels of 8x8: out 4x4, one input channel per filter.
    shape = ConvShape(n=1, cin=4, h=8, w=8, cout=4, kernel=3, stride=2, groups=4)
    assert shape.out_hw == (4, 4)
    assert shape.flops == 2 * 1 * 4 * 4 * 4 * 1 * 9 == 1152


def test_conv_flops_resnet50_layer1_3x3() -> None:
    # 64->64 3x3 at 56x56 is 115.6 million multiply-adds per image, the published figure.
    shape = ConvShape(1, *CONV_LAYERS["resnet50"]["r50.layer1.3x3"])
    assert shape.flops == 2 * 115_605_504


def test_strided_1x1_output_size() -> None:
    assert ConvShape(1, 8, 7, 7, 8, kernel=1, stride=2).out_hw == (4, 4)


def test_sizes_grammar() -> None:
    sizes = parse_sizes(["matmul=128,64x32x16", "conv2d=tiny.3x3"])
    cases = build_cases(("matmul", "conv2d"), sizes, (1, 8))
    assert [c.name for c in cases] == ["square_128", "mm_64x32x16", "tiny.3x3.b1", "tiny.3x3.b8"]
    assert cases[1].shape == MatmulShape(64, 32, 16)


@pytest.mark.parametrize("spec", ["matmul", "dense=5", "matmul=abc", "conv2d=resnet18"])
def test_bad_sizes_list_the_valid_ones(spec: str) -> None:
    with pytest.raises(UsageError) as error:
        build_cases(("matmul", "conv2d"), {"matmul": ("64",), "conv2d": ("tiny",),
                                           **parse_sizes([spec])}, (1,))
    assert "valid" in error.value.message or "expected" in error.value.message


# --- peaks ---------------------------------------------------------------------------------

CPUINFO = "model name\t: Test Xeon\ncpu MHz\t\t: 2000.000\nflags\t\t: fpu avx2 fma avx512f {}\n"


def test_gpu_peaks_by_name() -> None:
    assert gpu_peak("NVIDIA H100 80GB HBM3", "bfloat16").tflops == 989.4
    assert gpu_peak("NVIDIA H100 PCIe", "float32").tflops == 51.2
    assert gpu_peak("NVIDIA H200", "tf32").tflops == 494.7
    assert gpu_peak("Some Future GPU", "float16") is None


def test_cpu_peak_is_computed_from_clock_and_isa() -> None:
    cpu = read_cpuinfo(CPUINFO.format(""), max_freq_khz="")
    peak = cpu_peak(cpu, "float32", threads=4)
    assert peak.tflops == pytest.approx(4 * 2.0e9 * 64 / 1e12)
    assert "avx512f" in peak.source and "2.00 GHz" in peak.source
    assert read_cpuinfo(CPUINFO.format(""), max_freq_khz="3500000").mhz == 3500.0


def test_cpu_low_precision_needs_native_instructions() -> None:
    plain = read_cpuinfo(CPUINFO.format(""), max_freq_khz="")
    amx = read_cpuinfo(CPUINFO.format("amx_bf16 avx512_bf16"), max_freq_khz="")
    assert "emulate" in cpu_dtype_support(plain, "bfloat16")
    assert cpu_dtype_support(amx, "bfloat16") is None
    assert cpu_peak(amx, "bfloat16", 1).tflops == pytest.approx(2.0e9 * 1024 / 1e12)
    assert cpu_dtype_support(amx, "tf32") is not None


# --- statistics and the alternation ----------------------------------------------------------


def test_median_and_iqr_match_torch_quantiles() -> None:
    median, iqr = median_iqr([1.0, 2.0, 3.0, 4.0, 100.0])
    assert (median, iqr) == (3.0, 2.0)  # inclusive quartiles 2 and 4, as torch.quantile
    assert is_noisy(3.0, 2.0) and not is_noisy(10.0, 0.9)


class FakeTimer:
    single_call_blocks = False

    def __init__(self, name: str, log: list[str], ms: float) -> None:
        self.name, self.log, self.ms = name, log, ms

    def block(self, fn: object, calls: int) -> float:
        self.log.append(self.name)
        return self.ms


def test_targets_alternate_and_slow_ones_stop_at_their_time_budget() -> None:
    log: list[str] = []
    fast = Series(FakeTimer("fast", log, 1.0), lambda: None)
    slow = Series(FakeTimer("slow", log, 400.0), lambda: None)
    measure([fast, slow], Plan(warmup=1, repeats=6, block_ms=4.0, max_time_s=1.0))
    timed = log[4:]  # after a cold and a warm-up call each
    assert timed[:6] == ["fast", "slow"] * 3
    assert len(fast.samples_ms) == 6 and len(slow.samples_ms) == 3
    assert fast.calls_per_run == 4 and slow.calls_per_run == 1


# --- speedups and the gate -------------------------------------------------------------------


def _result(device: str, dtype: str, ms: float, threads: int | None = None) -> BenchResult:
    return BenchResult("matmul", "square_64", {"m": 64}, dtype, device, threads, median_ms=ms,
                       tflops=1 / ms)


def test_speedup_is_over_the_cpu_with_most_threads_same_dtype_else_float32() -> None:
    results = [_result("cpu", "float32", 8.0, 1), _result("cpu", "float32", 4.0, 2),
               _result("cuda", "float32", 0.5), _result("cuda", "float16", 0.1)]
    add_speedups(results)
    assert [r.speedup for r in results] == [0.5, 1.0, 8.0, 40.0]
    assert results[3].speedup_vs == "cpu:float32:2t"


def test_gate_takes_the_best_matching_value() -> None:
    results = [_result("cpu", "float32", 4.0, 2), _result("cuda", "float16", 0.1)]
    add_speedups(results)
    verdicts = evaluate([parse_requirement("cuda:float16:speedup=20"),
                         parse_requirement("conv2d:cuda:*:tflops=1"),
                         parse_requirement("cpu:float32:tflops=1")], results)
    assert [v["passed"] for v in verdicts] == [True, False, False]
    assert verdicts[1]["best"] is None


@pytest.mark.parametrize("spec", ["cuda:float16:speedup", "cuda:float16=3",
                                  "gpu:float16:speedup=2", "cuda:fp8:speedup=2",
                                  "cuda:float16:latency=2", "cuda:float16:speedup=fast"])
def test_bad_gate_specs_are_usage_errors(spec: str) -> None:
    with pytest.raises(UsageError):
        parse_requirement(spec)
