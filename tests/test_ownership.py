"""One process owns an output directory: a second is exit 2 naming the owner; a dead owner's lock
is stale; failed runs leave no empty directory behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cvtool.core.ownership import LOCK_NAME, claim_directory
from tests.clirun import ROOT, cvtool

DIGIT = "sample_images/digits/digit_0_0078.png"


def _train(run: Path, *extra: str) -> list[str]:
    return ["train", "classify", "--data", "digits", "--model", "linear", "--epochs", "2",
            "--device", "cpu", "-q", "-o", str(run), *extra]


def _wait_for_owner(run: Path, process: subprocess.Popen, seconds: float = 120) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        lock = run / LOCK_NAME
        if lock.exists() and (text := lock.read_text()):
            return text
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    raise AssertionError("the first run never took its lock")


def test_a_second_training_run_is_refused_while_the_first_runs(tmp_path: Path) -> None:
    run = tmp_path / "run"
    first = subprocess.Popen(
        [sys.executable, "-m", "cvtool", "train", "classify", "--data", "digits", "--model",
         "mlp", "--epochs", "500", "--device", "cpu", "-q", "-o", str(run)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        owner = _wait_for_owner(run, first)
        assert owner.startswith(f"pid {first.pid} ")
        second = cvtool(*_train(run, "--force"))
        assert second.code == 2 and f"is in use by pid {first.pid}" in second.stderr
        assert second.stdout == ""
        resumed = cvtool("train", "classify", "--resume", run, "--device", "cpu", "-q")
        assert resumed.code == 2 and "is in use" in resumed.stderr
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # The owner died without releasing: its lock file is stale and taken over.
    assert (run / LOCK_NAME).exists()
    again = cvtool(*_train(run, "--force"))
    assert again.code == 0, again.stderr
    assert not (run / LOCK_NAME).exists()


def test_inference_output_is_owned_too(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with claim_directory(out, "--output"):
        result = cvtool("classify", DIGIT, "-m", "digits-cnn", "-o", out)
        assert result.code == 2 and f"is in use by pid {os.getpid()}" in result.stderr
        assert result.stdout == "" and not (out / "run.json").exists()
    done = cvtool("classify", DIGIT, "-m", "digits-cnn", "-o", out)
    assert done.code == 0 and (out / "run.json").is_file()
    assert sorted(p.name for p in out.iterdir()) == ["records.jsonl", "records.positions",
                                                      "run.json"]


@pytest.mark.parametrize("command", [
    ["classify", DIGIT, "-m", "no_such_model"],
    ["detect", DIGIT, "-m", "no_such_model"],
    ["segment-semantic", DIGIT, "-m", "no_such_model"],
    ["generate", "-m", "no_such_model"],
    ["train", "classify", "--resume"],
])
def test_a_failed_run_leaves_no_empty_directory(tmp_path: Path, command: list[str]) -> None:
    out = tmp_path / "new" / "out"
    flag = [] if command[:2] == ["train", "classify"] else ["-o"]
    result = cvtool(*command, *flag, out)
    assert result.code == 2, result.stderr
    assert not out.exists()


def test_an_existing_empty_directory_is_kept(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    assert cvtool("classify", DIGIT, "-m", "no_such_model", "-o", out).code == 2
    assert out.is_dir() and list(out.iterdir()) == []


def test_a_file_in_the_way_is_exit_2(tmp_path: Path) -> None:
    (tmp_path / "out").write_text("x")
    result = cvtool("classify", DIGIT, "-m", "digits-cnn", "-o", tmp_path / "out")
    assert result.code == 2 and "not a directory" in result.stderr


_OWNER_WITH_CHILD = """
import os, sys, time
from cvtool.core.ownership import claim_directory
claim = claim_directory(sys.argv[1], "run directory")
if os.fork() == 0:          # a DataLoader worker: lives on after its parent is killed
    time.sleep(60)
    os._exit(0)
print("claimed", flush=True)
time.sleep(60)
"""


def test_a_forked_child_does_not_keep_a_killed_owners_lock(tmp_path: Path) -> None:
    run = tmp_path / "run"
    owner = subprocess.Popen([sys.executable, "-c", _OWNER_WITH_CHILD, str(run)], cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": str(ROOT)},
                             stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert owner.stdout.readline() == b"claimed\n"
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        # The child still runs; the directory is free at once all the same.
        with claim_directory(run, "run directory") as claim:
            assert (run / LOCK_NAME).read_text().startswith(f"pid {os.getpid()} ")
        assert claim.fd == -1
    finally:
        os.killpg(owner.pid, signal.SIGKILL)
