"""Hostile training data and run directories: exit 2 or a warning naming the file, never exit 70;
resume picks the newest usable state; a full disk is exit 3 and resumable."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cvtool.core.status import UsageError
from cvtool.data.detection import CocoDataset, load_detection_data
from tests.clirun import cvtool
from tests.test_hostile_inputs import fill

# A constant rate: a 2-epoch run extended to 3 then matches a straight 3-epoch one.
LINEAR = ("train", "classify", "--data", "digits", "--model", "linear", "--schedule", "constant",
          "--device", "cpu", "-q")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shapes") / "data"
    result = cvtool("data", "shapes", root, "--num", "6", "--val-num", "2", "--seed", "5", "-q")
    assert result.code == 0, result.stderr
    return root


def _broken(shapes: Path, tmp_path: Path, change) -> Path:
    root = tmp_path / "data"
    shutil.copytree(shapes, root)
    train_file = root / "annotations" / "train.json"
    train = json.loads(train_file.read_text())
    change(train)
    train_file.write_text(json.dumps(train))
    return root


def _first(key: str, value):
    def change(train: dict) -> None:
        train["annotations"][0][key] = value
    return change


SKIPPED_ANNOTATIONS = {
    "polygon of two points": _first("segmentation", [[1, 2, 3, 4]]),
    "polygon of odd length": _first("segmentation", [[1, 2, 3, 4, 5, 6, 7]]),
    "polygon of strings": _first("segmentation", [["a", "b", "c", "d", "e", "f"]]),
    "RLE that is not RLE": _first("segmentation", {"size": [128, 128], "counts": "\x01\x02"}),
    "RLE runs past the mask": _first("segmentation", {"size": [128, 128],
                                                      "counts": [0, 10 ** 9]}),
    "RLE of another size": _first("segmentation", {"size": [4, 4], "counts": [16]}),
    "RLE size of strings": _first("segmentation", {"size": ["a", "b"], "counts": "PP"}),
    "unknown category": _first("category_id", 7),
    "boolean category": _first("category_id", True),
}


@pytest.mark.parametrize("case", list(SKIPPED_ANNOTATIONS))
def test_bad_annotations_are_skipped_with_a_warning(shapes: Path, tmp_path: Path,
                                                    case: str) -> None:
    root = _broken(shapes, tmp_path, SKIPPED_ANNOTATIONS[case])
    warnings: list[str] = []
    data = load_detection_data(str(root), masks=True, warn=warnings.append)
    assert any("train.json: skipped 1 annotations" in w for w in warnings), warnings
    dataset = CocoDataset(data.train, masks=True, augment=False, vflip=False)
    for index in range(len(dataset)):  # every kept mask decodes
        _, target = dataset[index]
        assert target["masks"].shape[0] == target["boxes"].shape[0]


@pytest.mark.parametrize("file_name", ["../../../etc/hostname", "/etc/hostname",
                                       "sub/../../annotations/train.json"])
def test_file_names_outside_images_are_skipped(shapes: Path, tmp_path: Path,
                                               file_name: str) -> None:
    def change(train: dict) -> None:
        train["images"][0]["file_name"] = file_name
    root = _broken(shapes, tmp_path, change)
    warnings: list[str] = []
    data = load_detection_data(str(root), masks=True, warn=warnings.append)
    assert any("skipped 1 images" in w and "points outside" in w for w in warnings), warnings
    assert all(str(sample.path).startswith(str(root / "images")) for sample in
               data.train.samples)


@pytest.mark.parametrize("change, message", [
    (lambda t: t["categories"].append({"id": 10 ** 9, "name": "huge"}),
     "category id 1000000000 is outside 1-100000"),
    (lambda t: t.update(categories=[{"id": "1"}]), "integer \"id\""),
    (lambda t: t.update(annotations=[]), "nothing to train on"),
    (lambda t: t.update(annotations={"a": 1}), "\"annotations\" is not a list"),
    (lambda t: [a.update(category_id=99) for a in t["annotations"]], "nothing to train on"),
])
def test_unusable_training_data_is_exit_2(shapes: Path, tmp_path: Path, change,
                                          message: str) -> None:
    root = _broken(shapes, tmp_path, change)
    result = cvtool("train", "segment-instance", "--data", root, "--epochs", "1", "--device",
                    "cpu", "-q", "-o", tmp_path / "run")
    assert result.code == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2  # a skip warning, then the error
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def linear_runs(tmp_path_factory) -> dict[str, Path]:
    """A 2-epoch run (to damage) and an uninterrupted 3-epoch one (the reference)."""
    base = tmp_path_factory.mktemp("linear")
    runs = {"two": base / "two", "three": base / "three"}
    for name, epochs in (("two", "2"), ("three", "3")):
        result = cvtool(*LINEAR, "--epochs", epochs, "-o", runs[name])
        assert result.code == 0, result.stderr
    return runs


def _copy_run(linear_runs: dict[str, Path], tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(linear_runs["two"], run)
    return run


def _history(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def _resume(run: Path, *extra: str, quiet: bool = True):
    """Resume with `-q` unless the test reads warnings (which `-q` silences)."""
    return cvtool("train", "classify", "--resume", run, "--device", "cpu",
                  *(["-q"] if quiet else []), *extra)


@pytest.mark.parametrize("config", ["{not json", "[]", '{"config": 3}',
                                    '{"config": {"data": "digits", "epochs": "3"}}',
                                    '{"config": {"data": "digits", "lr": "0.1"}}',
                                    '{"config": {"data": "digits", "epochs": 1e400}}'])
def test_a_bad_config_json_is_exit_2(linear_runs, tmp_path: Path, config: str) -> None:
    run = _copy_run(linear_runs, tmp_path)
    (run / "config.json").write_text(config)
    result = _resume(run, "--epochs", "3")
    assert result.code == 2 and "cannot use its config.json" in result.stderr, result.stderr


def test_a_stray_newest_state_is_passed_over(linear_runs, tmp_path: Path) -> None:
    run = _copy_run(linear_runs, tmp_path)
    state = run / "state"
    shutil.copy(state / "epoch-0002.json", state / "epoch-0009.json")  # no tensors beside it
    result = _resume(run, "--epochs", "3", quiet=False)
    assert result.code == 0, result.stderr
    assert "passing over" in result.stderr and "epoch-0009" in result.stderr
    assert _history(run) == _history(linear_runs["three"])
    assert sorted(p.name for p in state.iterdir()) == ["epoch-0003.json",
                                                       "epoch-0003.safetensors"]


@pytest.mark.parametrize("damage", [
    lambda meta: meta.update(epoch="2"),
    lambda meta: meta.update(history=[{"epoch": 1}]),
    lambda meta: meta.update(optimizer=[]),
    lambda meta: meta["optimizer"].update(scalars={"x": {"step": 1}}),
])
def test_a_damaged_only_state_needs_force(linear_runs, tmp_path: Path, damage) -> None:
    run = _copy_run(linear_runs, tmp_path)
    sidecar = run / "state" / "epoch-0002.json"
    meta = json.loads(sidecar.read_text())
    damage(meta)
    sidecar.write_text(json.dumps(meta))
    result = _resume(run, "--epochs", "3")
    assert result.code == 2 and "holds no usable state" in result.stderr, result.stderr
    forced = _resume(run, "--epochs", "3", "--force")
    assert forced.code == 0, forced.stderr
    assert _history(run) == _history(linear_runs["three"])  # trained again from epoch 1


def test_a_deleted_state_is_refused_without_force(linear_runs, tmp_path: Path) -> None:
    run = _copy_run(linear_runs, tmp_path)
    shutil.rmtree(run / "state")
    result = _resume(run)
    assert result.code == 2 and "--force" in result.stderr
    assert len(_history(run)) == 2  # nothing was overwritten


def test_a_full_disk_stops_training_resumably(linear_runs, small_disk: Path) -> None:
    run = small_disk / "run"
    shutil.copytree(linear_runs["two"], run)
    fill(small_disk)
    result = _resume(run, "--epochs", "3")
    assert result.code == 3, result.stderr
    assert "no space left on device writing" in result.stderr
    assert not list(run.rglob("*.tmp")) and not list(run.rglob(".*.tmp"))
    (small_disk / "filler").unlink()
    again = _resume(run, "--epochs", "3")
    assert again.code == 0, again.stderr
    assert _history(run) == _history(linear_runs["three"])


def test_training_state_loader_rejects_foreign_tensors(linear_runs, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    run = _copy_run(linear_runs, tmp_path)
    tensors_path = run / "state" / "epoch-0002.safetensors"
    tensors = load_file(tensors_path)
    tensors = {key.replace("model.", "model.x"): value for key, value in tensors.items()}
    save_file(tensors, tensors_path)
    result = _resume(run, "--epochs", "3", quiet=False)
    assert result.code == 2 and "do not fit this run's model" in result.stderr
    assert isinstance(UsageError("x"), Exception)
