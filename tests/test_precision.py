"""`--precision auto`: bf16 where the device computes it natively (AVX512-BF16 / AMX CPUs, bf16
GPUs), fp32 elsewhere, recorded in run.json; and bf16's top-1 agrees with fp32's on the sample
sets (checked whatever this CPU is: where bf16 is emulated it is slower, not different)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.clirun import ROOT, cvtool


def test_auto_picks_bf16_exactly_where_it_is_native(tmp_path: Path) -> None:
    import torch

    from cvtool.core.device import native_bf16, resolve_precision

    cpu = torch.device("cpu")
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert native_bf16(cpu) == native
    assert resolve_precision(cpu, "auto") == ("bf16" if native else "fp32")
    assert resolve_precision(cpu, "fp16") == "fp16"
    done = cvtool("classify", ROOT / "sample_images" / "digits", "-m", "digits-cnn",
                  "--precision", "auto", "-o", tmp_path / "run")
    assert done.code == 0, done.stderr
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["precision"] == ("bf16" if native else "fp32")
    assert run["precision_asked"] == "auto"
    wrong = cvtool("classify", ROOT / "sample_images" / "digits", "-m", "digits-cnn",
                   "--precision", "fastest")
    assert wrong.code == 2 and "auto" in wrong.stderr


NEAR_TIE = 0.02  # fp32's top-2 probabilities this close: bf16's rounding decides the order


@pytest.mark.parametrize(("folder", "model"), [("photos", "efficientnet_lite0"),
                                               ("digits", "digits-cnn")])
def test_bf16_top1_agrees_with_fp32_on_the_sample_sets(folder: str, model: str) -> None:
    """Every input whose fp32 top-1 is decisive keeps it under bf16. (On the photos, chelsea.jpg
    is a near-tie: tiger cat 0.3708, Egyptian cat 0.3698 in fp32; bf16 swaps them, so the
    photos agree 7 of 8.)"""
    runs = {}
    for precision in ("fp32", "bf16"):
        done = cvtool("classify", ROOT / "sample_images" / folder, "-m", model,
                      "--precision", precision, "--topk", "2")
        assert done.code == 0, done.stderr
        runs[precision] = done.records()
    decisive = [(a, b) for a, b in zip(runs["fp32"], runs["bf16"])
                if a["predictions"][0]["score"] - a["predictions"][1]["score"] >= NEAR_TIE]
    assert len(decisive) >= len(runs["fp32"]) - 1
    assert all(a["predictions"][0]["index"] == b["predictions"][0]["index"]
               for a, b in decisive)
