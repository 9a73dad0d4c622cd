"""cvtool checkpoints: safetensors + JSON sidecar, atomic, found from a file, sidecar or run dir."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cvtool.core.status import UsageError
from cvtool.models.checkpoint import build_architecture, load_checkpoint, save_checkpoint

META = {
    "task": "classify",
    "architecture": {"builder": "torchvision.models:mobilenet_v3_small",
                     "kwargs": {"num_classes": 3}},
    "classes": ["cat", "dog", "fox"],
    "preprocessing": {"resize_size": 72, "crop_size": 64, "mean": [0.5, 0.5, 0.5],
                      "std": [0.25, 0.25, 0.25], "interpolation": "bicubic"},
    "training": {"epochs": 2, "lr": 0.1},
}


def _state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return torch.nn.Linear(4, 3).state_dict()


def test_round_trip_preserves_values_and_meta(tmp_path: Path) -> None:
    state = _state()
    save_checkpoint(tmp_path / "best.safetensors", state, META)
    loaded, meta = load_checkpoint(tmp_path / "best.safetensors")
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[key], state[key]) for key in state)
    assert meta == {**META, "format": "cvtool-checkpoint", "format_version": 1}


def test_save_leaves_only_the_two_files(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "run" / "last.safetensors", _state(), META)
    save_checkpoint(tmp_path / "run" / "last.safetensors", _state(), META)  # overwrite
    assert sorted(path.name for path in (tmp_path / "run").iterdir()) == ["last.json",
                                                                         "last.safetensors"]


def test_unserialisable_meta_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        save_checkpoint(tmp_path / "best.safetensors", _state(), {"training": {"when": object()}})
    assert list(tmp_path.iterdir()) == []


def test_tied_weights_can_be_saved(tmp_path: Path) -> None:
    weight = torch.ones(2, 2)
    save_checkpoint(tmp_path / "tied.safetensors", {"a": weight, "b": weight}, META)
    loaded, _ = load_checkpoint(tmp_path / "tied.safetensors")
    assert torch.equal(loaded["a"], loaded["b"])


def test_sidecar_path_loads_the_same_checkpoint(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "best.safetensors", _state(), META)
    loaded, meta = load_checkpoint(tmp_path / "best.json")
    assert torch.equal(loaded["weight"], _state()["weight"]) and meta["classes"] == META["classes"]


def test_run_dir_prefers_best_then_last(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "last.safetensors", _state(), {**META, "training": {"epoch": 9}})
    assert load_checkpoint(tmp_path)[1]["training"] == {"epoch": 9}
    save_checkpoint(tmp_path / "best.safetensors", _state(), {**META, "training": {"epoch": 4}})
    assert load_checkpoint(tmp_path)[1]["training"] == {"epoch": 4}


def test_empty_run_dir_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="best.safetensors or last.safetensors"):
        load_checkpoint(tmp_path)


def test_missing_sidecar_is_a_usage_error(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "best.safetensors", _state(), META)
    (tmp_path / "best.json").unlink()
    with pytest.raises(UsageError, match="sidecar .* is missing"):
        load_checkpoint(tmp_path / "best.safetensors")


@pytest.mark.parametrize("sidecar", ['{"format": "something-else"}', "not json",
                                     '{"format": "cvtool-checkpoint", "format_version": 99}'])
def test_foreign_sidecar_is_a_usage_error(tmp_path: Path, sidecar: str) -> None:
    save_checkpoint(tmp_path / "best.safetensors", _state(), META)
    (tmp_path / "best.json").write_text(sidecar)
    with pytest.raises(UsageError, match="best.json"):
        load_checkpoint(tmp_path / "best.safetensors")


@pytest.mark.parametrize(("name", "problem"), [("missing.safetensors", "does not exist"),
                                              ("runs/exp1", "does not exist"),
                                              ("weights.pth", "is not a cvtool checkpoint")])
def test_other_paths_are_usage_errors(tmp_path: Path, name: str, problem: str) -> None:
    (tmp_path / "weights.pth").write_bytes(b"")
    with pytest.raises(UsageError, match=problem):
        load_checkpoint(tmp_path / name)


def test_corrupt_tensors_file_is_a_usage_error(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "best.safetensors", _state(), META)
    (tmp_path / "best.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(UsageError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path)


def test_build_architecture_follows_the_meta() -> None:
    module = build_architecture(META)
    assert module.classifier[-1].out_features == 3


@pytest.mark.parametrize("builder",
                         ["os:system", "torchvision.io:write_file", "torchvisionx.models:a",
                          "torchvision.models.resnet:torch.os.system",
                          "cvtool.models.small:os.system",
                          "torchvision.models:resnet18.__globals__"])
def test_build_architecture_refuses_untrusted_builders(builder: str) -> None:
    meta = {**META, "architecture": {"builder": builder, "kwargs": {"command": "true"}}}
    with pytest.raises(UsageError, match="not one cvtool writes"):
        build_architecture(meta)


def test_build_architecture_reports_bad_kwargs() -> None:
    architecture = {"builder": "torchvision.models:resnet18", "kwargs": {"nope": 1}}
    meta = {**META, "architecture": architecture}
    with pytest.raises(UsageError, match="takes no kwarg 'nope'"):
        build_architecture(meta)


def test_sidecar_is_readable_json(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "best.safetensors", _state(), META)
    assert json.loads((tmp_path / "best.json").read_text())["format"] == "cvtool-checkpoint"
