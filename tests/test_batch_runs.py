"""Batch runs: DIR/records.jsonl, --resume after a real kill -9, --shard K/N, --max-failures,
and plain progress lines where stderr is a log."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cvtool.inference.runs import shard_of
from tests.clirun import ROOT, cvtool, same

DIGITS = sorted((ROOT / "sample_images" / "digits").glob("*.png"))
SHAPES = sorted((ROOT / "sample_images" / "shapes").glob("shapes_*.png"))


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]



def test_records_jsonl_holds_what_stdout_got(tmp_path: Path) -> None:
    result = cvtool("classify", *DIGITS[:5], tmp_path / "missing.png", "-m", "digits-cnn",
                    "-o", tmp_path / "run", "--format", "jsonl")
    assert result.code == 1
    assert _lines(tmp_path / "run" / "records.jsonl") == result.records()
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["complete"] is True and info["counts"]["inputs"] == 6
    assert info["options"]["model"] == "digits-cnn" and "device" not in info["options"]


def test_an_earlier_run_is_never_overwritten(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert cvtool("classify", *DIGITS[:2], "-m", "digits-cnn", "-o", out).code == 0
    before = (out / "records.jsonl").read_bytes()
    again = cvtool("classify", *DIGITS[:2], "-m", "digits-cnn", "-o", out)
    assert again.code == 2 and "--resume" in again.stderr
    assert (out / "records.jsonl").read_bytes() == before
    changed = cvtool("classify", *DIGITS[:2], "-m", "digits-cnn", "--topk", "2", "-o", out,
                     "--resume")
    assert changed.code == 2 and "topk 5 then, 2 now" in changed.stderr
    assert cvtool("classify", *DIGITS[:2], "-m", "digits-cnn", "--resume").code == 2


def _scenes(folder: Path, count: int) -> Path:
    folder.mkdir()
    for number in range(count):
        shutil.copy(SHAPES[number % len(SHAPES)], folder / f"scene_{number:03d}.png")
    return folder


def test_resume_after_kill_gives_one_record_per_input_as_an_uninterrupted_run(
        tmp_path: Path) -> None:
    scenes = _scenes(tmp_path / "scenes", 60)
    args = [sys.executable, "-m", "cvtool", "segment-semantic", str(scenes), "-m",
            "shapes-unet", "--device", "cpu", "-b", "2", "--format", "jsonl"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    whole = subprocess.run([*args, "-o", str(tmp_path / "whole")], env=env, check=True,
                           capture_output=True, text=True)
    killed = tmp_path / "killed"
    process = subprocess.Popen([*args, "-o", str(killed)], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    records = killed / "records.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if records.exists() and len(records.read_bytes().splitlines()) >= 10:
            break
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    written = len(records.read_text().splitlines())
    assert 10 <= written < 60, "the run finished before it could be killed"
    with open(records, "a") as handle:  # as if the kill cut a line short
        handle.write('{"path": "' + str(scenes / "scene_059.png"))
    resumed = subprocess.run([*args, "-o", str(killed), "--resume"], env=env,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert len(resumed.stdout.splitlines()) == 60 - written  # only the rest was processed
    expected = {r["path"]: r for r in _lines(tmp_path / "whole" / "records.jsonl")}
    got = _lines(records)
    assert sorted(r["path"] for r in got) == sorted(expected)  # each input exactly once
    for record in got:
        assert same({**record, "mask_path": None}, {**expected[record["path"]],
                                                     "mask_path": None})
    assert len(list((killed / "masks").rglob("*.png"))) == 60
    counts = json.loads((killed / "run.json").read_text())["counts"]
    assert counts["inputs"] == 60 and counts["this_run"]["inputs"] == 60 - written
    assert len(whole.stdout.splitlines()) == 60


def test_shards_cover_every_input_once_however_listed(tmp_path: Path) -> None:
    listed = [str(path) for path in DIGITS]
    ways = {"files": listed, "reversed": listed[::-1],
            "folder": [str(ROOT / "sample_images" / "digits")],
            "glob": [str(ROOT / "sample_images" / "digits" / "*.png")]}
    for name, sources in ways.items():
        seen: list[str] = []
        for index in (1, 2, 3):
            result = cvtool("classify", *sources, "-m", "digits-cnn", "--shard", f"{index}/3")
            assert result.code == 0, result.stderr
            seen += [record["path"] for record in result.records()]
        assert sorted(seen) == sorted(listed), name
    stdin = "\n".join(listed).encode()
    piped = [record["path"] for index in (1, 2)
             for record in cvtool("classify", "-", "-m", "digits-cnn", "--shard",
                                  f"{index}/2", stdin=stdin).records()]
    assert sorted(piped) == sorted(listed)
    for bad in ("0/3", "4/3", "a/b", "3"):
        assert cvtool("classify", *listed, "-m", "digits-cnn", "--shard", bad).code == 2


def test_shards_are_balanced_at_ten_thousand_inputs() -> None:
    sizes = [0] * 4
    for number in range(10_000):
        sizes[shard_of(f"images/{number // 100:03d}/frame_{number:06d}.jpg", 4) - 1] += 1
    assert max(abs(size - 2500) for size in sizes) <= 0.05 * 2500


def test_failure_budget_stops_and_says_what_was_left(tmp_path: Path) -> None:
    missing = [tmp_path / f"missing_{n}.png" for n in range(3)]
    inputs = [DIGITS[0], *missing, *DIGITS[1:4]]
    result = cvtool("classify", *inputs, "-m", "digits-cnn", "--max-failures", "2",
                    "--workers", "0", "-o", tmp_path / "run")
    assert result.code == 1
    assert [r["ok"] for r in result.records()] == [True, False, False]
    assert "stopped after 2 failed inputs" in result.stderr
    assert "4 inputs left unprocessed" in result.stderr
    assert json.loads((tmp_path / "run" / "run.json").read_text())["complete"] is False
    rest = cvtool("classify", *inputs, "-m", "digits-cnn", "--workers", "0", "-o",
                  tmp_path / "run", "--resume")
    assert len(rest.records()) == 4 and len(_lines(tmp_path / "run" / "records.jsonl")) == 7
    assert rest.code == 1  # the whole run's status: its first part failed three inputs


@pytest.mark.parametrize("quiet", [False, True])
def test_progress_lines_where_stderr_is_a_log(quiet: bool, monkeypatch) -> None:
    monkeypatch.setenv("CVTOOL_PROGRESS_SECONDS", "0")
    result = cvtool("classify", *DIGITS[:4], "-m", "digits-cnn", *(["-q"] if quiet else []))
    lines = [line for line in result.stderr.splitlines() if line.startswith("progress: ")]
    assert len(lines) == (0 if quiet else 4)
    assert "\r" not in result.stderr
    if not quiet:
        assert lines[-1].startswith("progress: 4 inputs, 0 failed, ")


@pytest.fixture(scope="module")
def scenes_with_truth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("shapes") / "data"
    result = cvtool("data", "shapes", data, "--num", "0", "--val-num", "12", "--seed", "3", "-q")
    assert result.code == 0, result.stderr
    return data


def test_merged_shards_equal_one_run_with_its_eval(scenes_with_truth: Path,
                                                   tmp_path: Path) -> None:
    data = scenes_with_truth
    images, masks = data / "val" / "images", data / "val" / "masks"
    whole = cvtool("segment-semantic", images, "-m", "shapes-unet", "--device", "cpu", "-o",
                   tmp_path / "whole", "--gt-masks", masks, "--eval")
    assert whole.code == 0, whole.stderr
    for index in (1, 2, 3):
        assert cvtool("segment-semantic", images, "-m", "shapes-unet", "--device", "cpu",
                      "--shard", f"{index}/3", "-o", tmp_path / f"s{index}").code == 0
    merged = cvtool("merge", tmp_path / "s3", tmp_path / "s1", tmp_path / "s2", "-o",
                    tmp_path / "merged", "--gt-masks", masks, "--eval")
    assert merged.code == 0, merged.stderr
    expected = _lines(tmp_path / "whole" / "records.jsonl")
    got = _lines(tmp_path / "merged" / "records.jsonl")
    assert [r["path"] for r in got] == [r["path"] for r in expected]  # input order
    assert [r["path"] for r in merged.records()] == [r["path"] for r in expected]
    info = json.loads((tmp_path / "merged" / "run.json").read_text())
    single = json.loads((tmp_path / "whole" / "run.json").read_text())
    assert info["metrics"] == single["metrics"] and info["counts"]["inputs"] == 12
    assert [run["shard"] for run in info["merged"]] == [[3, 3], [1, 3], [2, 3]]


def test_merged_detection_shards_score_as_one_run(scenes_with_truth: Path,
                                                  tmp_path: Path) -> None:
    data = scenes_with_truth
    images, truth = data / "images" / "val", data / "annotations" / "val.json"
    whole = cvtool("detect", images, "-m", "shapes-maskrcnn", "--device", "cpu", "-o",
                   tmp_path / "whole", "--gt", truth, "--eval", "--format", "coco")
    for index in (1, 2):
        assert cvtool("detect", images, "-m", "shapes-maskrcnn", "--device", "cpu", "--shard",
                      f"{index}/2", "-o", tmp_path / f"d{index}").code == 0
    merged = cvtool("merge", tmp_path / "d1", tmp_path / "d2", "-o", tmp_path / "merged",
                    "--gt", truth, "--eval", "--format", "coco")
    assert merged.code == 0, merged.stderr
    single = json.loads((tmp_path / "whole" / "run.json").read_text())["metrics"]
    joined = json.loads((tmp_path / "merged" / "run.json").read_text())["metrics"]
    assert joined["bbox"] == pytest.approx(single["bbox"], abs=1e-6)
    assert len(json.loads(merged.stdout)) == len(json.loads(whole.stdout))


def test_merge_refuses_what_is_not_one_run(tmp_path: Path) -> None:
    for name, topk in (("a", "5"), ("b", "3")):
        assert cvtool("classify", *DIGITS[:4], "-m", "digits-cnn", "--topk", topk, "-o",
                      tmp_path / name).code == 0
    different = cvtool("merge", tmp_path / "a", tmp_path / "b", "-o", tmp_path / "m1")
    assert different.code == 2 and "topk" in different.stderr
    overlapping = cvtool("merge", tmp_path / "a", tmp_path / "a", "-o", tmp_path / "m2")
    assert overlapping.code == 2 and "both" in overlapping.stderr
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert cvtool("merge", tmp_path / "a", "-o", tmp_path / "full").code == 2
    assert cvtool("merge", tmp_path / "nothing", "-o", tmp_path / "m3").code == 2
