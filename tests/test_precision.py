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
def test_auto_gives_fp32s_labels_on_the_sample_sets(folder: str, model: str,
                                                    tmp_path: Path) -> None:
    """`--precision bf16`: every input whose fp32 top-1 is decisive keeps it (on the photos
    chelsea.jpg is a near-tie, tiger cat 0.3708 / Egyptian cat 0.3698 in fp32, which bf16
    swaps). `--precision auto` re-runs bf16's near-ties in fp32: every label is fp32's, and
    run.json counts the re-runs (none where this CPU has no native bf16 and auto is fp32)."""
    import torch

    from cvtool.core.device import native_bf16

    runs = {}
    for precision in ("fp32", "bf16", "auto"):
        done = cvtool("classify", ROOT / "sample_images" / folder, "-m", model,
                      "--precision", precision, "--topk", "2", "-o", tmp_path / precision)
        assert done.code == 0, done.stderr
        runs[precision] = done.records()
    decisive = [(a, b) for a, b in zip(runs["fp32"], runs["bf16"])
                if a["predictions"][0]["score"] - a["predictions"][1]["score"] >= NEAR_TIE]
    assert len(decisive) >= len(runs["fp32"]) - 1
    assert all(a["predictions"][0]["index"] == b["predictions"][0]["index"]
               for a, b in decisive)
    assert [r["predictions"][0]["index"] for r in runs["auto"]] == [
        r["predictions"][0]["index"] for r in runs["fp32"]]
    run = json.loads((tmp_path / "auto" / "run.json").read_text())
    if native_bf16(torch.device("cpu")):
        close = sum(r["predictions"][0]["score"] - r["predictions"][1]["score"] < 0.06
                    for r in runs["bf16"])
        assert run["rechecked_in_fp32"] == close
        if folder == "photos":
            assert close >= 1  # chelsea at least: the re-check is what made auto agree
    else:
        assert "rechecked_in_fp32" not in run
