"""`cvtool benchmark-device` end to end on this CPU machine, always with --quick shapes."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cvtool.devicebench import workloads
from cvtool.devicebench.cases import Case
from tests.clirun import cvtool

ROOT = Path(__file__).resolve().parents[1]
CONTRACT_KEYS = {"op", "shape", "dtype", "device", "threads", "median_ms", "iqr_ms", "runs",
                 "tflops", "pct_of_peak", "max_rel_error", "speedup"}
FAST = ("--quick", "--dtypes", "float32", "--sizes", "matmul=64", "--sizes", "conv2d=tiny.dw3x3")


def run(*args: str) -> tuple[int, str, str]:
    """Through cvtool's real entry point, in-process."""
    result = cvtool("benchmark-device", *args)
    return result.code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def quick_json() -> dict:
    code, out, _ = run("--quick", "--devices", "cpu,cuda,mps", "--format", "json")
    assert code == 0
    return json.loads(out)


def test_json_schema(quick_json: dict) -> None:
    assert list(quick_json)[:3] == ["environment", "devices", "results"]
    env = quick_json["environment"]
    for key in ("torch", "python", "device_names", "cpu_cores", "cpu_threads_measured",
                "precision_flags"):
        assert key in env
    assert env["precision_flags"]["float32"]["cudnn_allow_tf32"] is False
    assert env["precision_flags"]["tf32"]["cuda_matmul_allow_tf32"] is True
    assert {r["op"] for r in quick_json["results"]} == {"matmul", "conv2d"}
    for result in quick_json["results"]:
        assert CONTRACT_KEYS <= set(result)
        assert result["ok"] and result["median_ms"] > 0 and result["runs"] >= 3
        # Each dtype is held to its own bound (bf16/fp16 run natively on AMX CPUs).
        assert result["tolerance"] == workloads.TOLERANCE[result["dtype"]]
        assert result["iqr_ms"] >= 0 and result["max_rel_error"] <= result["tolerance"]


def test_cpu_is_timed_with_one_thread_and_all_cores(quick_json: dict) -> None:
    cores = quick_json["environment"]["cpu_cores"]
    threads = {r["threads"] for r in quick_json["results"] if r["device"] == "cpu"}
    assert threads == {1, cores}
    all_cores = [r for r in quick_json["results"] if r["threads"] == cores]
    assert all(r["speedup"] == pytest.approx(1.0) for r in all_cores)


def test_cpu_peak_is_stated_with_its_source(quick_json: dict) -> None:
    from cvtool.devicebench.peaks import cpu_flops_per_cycle, read_cpuinfo

    peaks = quick_json["devices"]["cpu"]["peaks"]
    cpu = read_cpuinfo()
    if cpu_flops_per_cycle(cpu, "float32") is None or cpu.mhz is None:
        assert "float32" not in peaks  # no known ISA or clock: no made-up peak
        return
    flops, flag = cpu_flops_per_cycle(cpu, "float32")
    assert "computed" in peaks["float32"]["source"] and flag in peaks["float32"]["source"]
    assert peaks["float32"]["tflops_per_core"] == pytest.approx(cpu.mhz * 1e6 * flops / 1e12,
                                                                rel=1e-3)


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.skipif(_has_cuda(), reason="tests the machine without a GPU")
def test_absent_gpu_is_reported_not_an_error(quick_json: dict) -> None:
    cuda = quick_json["devices"]["cuda"]
    assert cuda["present"] is False and cuda["reason"]
    assert {r["device"] for r in quick_json["results"]} == {"cpu"}
    code, out, err = run(*FAST, "--devices", "cuda", "--format", "json")
    assert code == 0 and json.loads(out)["results"] == []
    assert "cuda: absent" in err


def test_wrong_result_is_caught_by_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    real = workloads._kernel

    def off_by_one_percent(case: Case, inputs: tuple[Any, ...]) -> Callable[[], Any]:
        kernel = real(case, inputs)
        return lambda: kernel() * 1.01

    monkeypatch.setattr(workloads, "_kernel", off_by_one_percent)
    code, out, err = run(*FAST, "--thread-counts", "1", "--format", "json")
    results = json.loads(out)["results"]
    assert code == 1
    assert results and all(not r["ok"] and r["max_rel_error"] > 5e-3 for r in results)
    assert "exceeds" in err


@pytest.mark.parametrize("args, valid", [
    (("--ops", "conv3d"), "matmul, conv2d"),
    (("--dtypes", "float8"), "float32, tf32, bfloat16, float16"),
    (("--devices", "tpu"), "cpu, cuda, mps"),
    (("--sizes", "conv2d=resnet18"), "resnet50"),
    (("--sizes", "matmul=big"), "square"),
    (("--format", "xml"), "'table', 'json', 'csv'"),
    (("--thread-counts", "0"), "'all'"),
    (("--fail-below", "cuda:float16:speedup"), "METRIC=VALUE"),
])
def test_usage_errors_exit_2_listing_valid_values(args: tuple[str, ...], valid: str) -> None:
    code, out, err = run("--quick", *args)
    assert code == 2 and out == ""
    assert valid in err and "Traceback" not in err


def test_gate(tmp_path: Path) -> None:
    passing = run(*FAST, "--thread-counts", "1", "--fail-below", "cpu:float32:tflops=1e-9")
    assert passing[0] == 0
    code, out, err = run(*FAST, "--thread-counts", "1", "--format", "json",
                         "--fail-below", "cpu:float32:tflops=1e6",
                         "--fail-below", "cuda:float16:speedup=20")
    assert code == 1 and "not met" in err
    assert [v["passed"] for v in json.loads(out)["gate"]] == [False, False]


def test_csv_table_output_file_and_plot(tmp_path: Path) -> None:
    report, chart = tmp_path / "out" / "bench.json", tmp_path / "bench.png"
    code, out, _ = run(*FAST, "--thread-counts", "1", "--format", "csv", "--save-json", str(report),
                       "--plot", str(chart))
    assert code == 0
    header, *rows = out.splitlines()
    assert header.startswith("op,case,shape,dtype,device,threads,median_ms")
    assert len(rows) == 2 and rows[0].startswith("matmul,square_64,m=64 n=64 k=64,float32,cpu,1")
    assert json.loads(report.read_text())["results"]
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(report.parent.glob(".*tmp"))  # the atomic write left no temp file
    code, out, _ = run(*FAST, "--thread-counts", "1", "--format", "table", "--devices", "cpu,cuda")
    assert code == 0 and "square_64" in out and "TFLOP/s" in out


def test_module_import_does_not_load_torch() -> None:
    code = ("import sys, cvtool.cli.bench, cvtool.devicebench.report, cvtool.devicebench.gate; "
            "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, check=True)
    assert done.stdout.strip() == "False"


def test_real_entry_point() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from clirun import cvtool, cvtool_process

    result = cvtool("benchmark-device", *FAST, "--thread-counts", "1")
    assert result.code == 0
    assert json.loads(result.stdout)["results"][0]["op"] == "matmul"
    assert cvtool("benchmark-device", "--ops", "fft").code == 2
    process = cvtool_process("benchmark-device", "--help")
    assert process.code == 0 and "--fail-below" in process.stdout


def test_the_cpu_only_plot_states_the_clock_its_peak_assumes() -> None:
    from cvtool.devicebench.peaks import read_cpuinfo
    from cvtool.devicebench.plot import _peak_label

    cpu, label = read_cpuinfo(), _peak_label()
    if cpu.mhz is None:
        assert label == "% of this CPU's peak"
    else:
        assert f"at {cpu.mhz / 1000:.2f} GHz" in label
        assert ("turbo can pass 100%" in label) == cpu.mhz_source.startswith("/proc")
