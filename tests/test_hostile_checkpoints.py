"""Hostile checkpoints through every loader: exit 2 with one line, and nothing they ask for runs.

Each case copies a real house checkpoint of the command's task and rewrites its sidecar, so the
task checks pass and the hostile field is what the loader meets.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from cvtool.models.registry import get_spec
from tests.clirun import cvtool

SAMPLE = "sample_images/digits/digit_0_0078.png"
# command, base house model, extra arguments
LOADERS = {
    "classify": ("digits-cnn", [SAMPLE]),
    "detect": ("shapes-maskrcnn", [SAMPLE]),
    "segment-instance": ("shapes-maskrcnn", [SAMPLE]),
    "segment-semantic": ("shapes-unet", [SAMPLE]),
    "generate": ("digits-gan", ["--num", "1"]),
}


def _copy(tmp_path: Path, house: str) -> tuple[Path, dict]:
    spec = get_spec(house)
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(spec.checkpoint_path, run / "best.safetensors")
    return run, json.loads(spec.checkpoint_path.with_suffix(".json").read_text())


def _run(command: str, run: Path, tmp_path: Path):
    extra = LOADERS[command][1]
    if command == "generate":
        return cvtool("generate", "-m", run, "--grid", tmp_path / "grid.png", *extra)
    return cvtool(command, *extra, "-m", run, "--device", "cpu", "--format", "jsonl")


def _marker_command(marker: Path) -> dict:
    return {"command": f"touch {marker}"}


HOSTILE_ARCHITECTURES = {
    "attribute walk": lambda m: {"builder": "torchvision.models.resnet:torch.os.system",
                                 "kwargs": _marker_command(m)},
    "plain os": lambda m: {"builder": "os:system", "kwargs": _marker_command(m)},
    "own module walk": lambda m: {"builder": "cvtool.models.small:os.system",
                                  "kwargs": _marker_command(m)},
    "subprocess": lambda m: {"builder": "subprocess:getoutput",
                             "kwargs": {"cmd": f"touch {m}"}},
    "not an object": lambda m: f"os:system touch {m}",
    "kwargs not an object": lambda m: {"builder": "cvtool.models.small:cnn",
                                       "kwargs": [f"touch {m}"]},
}


@pytest.mark.parametrize("command", list(LOADERS))
@pytest.mark.parametrize("case", list(HOSTILE_ARCHITECTURES))
def test_hostile_builders_run_nothing(tmp_path: Path, command: str, case: str) -> None:
    run, meta = _copy(tmp_path, LOADERS[command][0])
    marker = tmp_path / "pwned"
    meta["architecture"] = HOSTILE_ARCHITECTURES[case](marker)
    (run / "best.json").write_text(json.dumps(meta))
    result = _run(command, run, tmp_path)
    assert result.code == 2, result.stderr
    assert not marker.exists()
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "grid.png").exists()


@pytest.mark.parametrize("kwargs, message", [
    ({"channels": [1000000, 1000000]}, "must be an integer from 1 to 8192"),
    ({"channels": [8192, 8192, 8192]}, "does not belong to these tensors"),
    ({"num_classes": "10"}, "must be an integer"),
    ({"num_classes": True}, "must be an integer"),
    ({"channels": [32] * 100}, "list of 0 to 64"),
    ({"activation": "os.system"}, "must be one of"),
    ({"dropout": float("nan")}, "NaN is not JSON"),  # the JSON reader refuses it first
    ({"__class__": 1}, "takes no kwarg"),
])
def test_hostile_kwargs_are_refused_before_allocation(tmp_path: Path, kwargs: dict,
                                                      message: str) -> None:
    run, meta = _copy(tmp_path, "digits-cnn")
    meta["architecture"]["kwargs"].update(kwargs)
    (run / "best.json").write_text(json.dumps(meta))
    result = _run("classify", run, tmp_path)
    assert result.code == 2 and message in result.stderr, result.stderr


@pytest.mark.parametrize("change, message", [
    (lambda m: m.update(classes=m["classes"][:5]), "lists 5 classes"),
    (lambda m: m.update(classes={"0": "zero"}), "classes must be a list"),
    (lambda m: m.update(classes=[0] * 10), "classes must be a list"),
    (lambda m: m["preprocessing"].update(std=[0, 0, 0]), "std must be above 0"),
    (lambda m: m["preprocessing"].update(mean="abc"), "mean must be 1 to 4"),
    (lambda m: m["preprocessing"].update(resize_size=10 ** 9), "resize_size must be"),
    (lambda m: m["preprocessing"].update(interpolation="os"), "interpolation must be"),
    (lambda m: m.update(preprocessing=[]), "preprocessing is missing"),
    (lambda m: m.update(format_version=[1] * 10 ** 4), "format_version"),
])
def test_hostile_sidecar_fields_are_exit_2(tmp_path: Path, change, message: str) -> None:
    run, meta = _copy(tmp_path, "digits-cnn")
    change(meta)
    (run / "best.json").write_text(json.dumps(meta))
    result = _run("classify", run, tmp_path)
    assert result.code == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("command", list(LOADERS))
def test_hostile_generative_block_is_exit_2(tmp_path: Path, command: str) -> None:
    run, meta = _copy(tmp_path, LOADERS[command][0])
    meta["generative"] = ["pixelcnn"]
    meta["task"] = {"x": 1}
    (run / "best.json").write_text(json.dumps(meta))
    assert _run(command, run, tmp_path).code == 2


@pytest.mark.parametrize("corrupt, message", [
    (lambda t: {k: (v.to(__import__("torch").int32) if v.is_floating_point() else v)
                for k, v in t.items()}, "needs floating point"),
    (lambda t: {k: v * float("nan") if v.is_floating_point() else v for k, v in t.items()},
     "NaN or infinite"),
])
def test_unusable_tensors_are_refused_at_load(tmp_path: Path, corrupt, message: str) -> None:
    run, meta = _copy(tmp_path, "digits-cnn")
    (run / "best.json").write_text(json.dumps(meta))
    save_file(corrupt(load_file(run / "best.safetensors")), run / "best.safetensors")
    result = _run("classify", run, tmp_path)
    assert result.code == 2 and message in result.stderr, result.stderr
    assert result.stdout == ""  # refused at load: no per-input records


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf"), "inf and -inf"])
def test_one_non_finite_value_is_found_and_huge_finite_ones_pass(bad) -> None:
    import torch

    from cvtool.core.status import UsageError
    from cvtool.models.checkpoint import check_tensors

    huge = torch.full((4, 3), 3e38)  # finite, but their sum overflows float32
    check_tensors({"w": huge}, {"w": huge}, "test")
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        tensor = torch.zeros(1000, dtype=dtype)
        if bad == "inf and -inf":
            tensor[3], tensor[900] = float("inf"), float("-inf")
        else:
            tensor[517] = bad
        with pytest.raises(UsageError, match="NaN or infinite"):
            check_tensors({"w": tensor}, {"w": tensor}, "test")
