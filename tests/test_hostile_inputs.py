"""Hostile inputs for the inference commands: odd names, special files, full disks, bad options.

Every line cvtool writes must parse as strict RFC 8259 JSON (no NaN, valid UTF-8), a FIFO never
blocks the batch, and a full disk is exit 3 with nothing half-written.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cvtool.models.registry import get_spec
from tests.clirun import ROOT, cvtool

DIGIT = ROOT / "sample_images/digits/digit_0_0078.png"
BAD_NAME = b"caf\xff\xfe.png"  # not UTF-8


def strict_lines(raw: bytes) -> list[dict]:
    """Parse as a strict reader would: UTF-8 or fail, and NaN/Infinity are errors."""
    def refuse(constant: str) -> None:
        raise ValueError(f"non-standard JSON constant {constant}")
    text = raw.decode("utf-8", errors="strict")
    return [json.loads(line, parse_constant=refuse) for line in text.splitlines()]


def _process(*args: str, stdin: bytes = b"", timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cvtool", *map(str, args)], input=stdin,
                          capture_output=True, timeout=timeout, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.fixture()
def odd_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(DIGIT, os.path.join(os.fsencode(folder), BAD_NAME))
    shutil.copy(DIGIT, folder / "plain.png")
    return folder


def test_undecodable_names_are_strict_utf8_with_exact_bytes(odd_folder: Path,
                                                            tmp_path: Path) -> None:
    done = cvtool("classify", odd_folder, "-m", "digits-cnn", "--format", "jsonl",
                  "-o", tmp_path / "out")
    assert done.code == 0, done.stderr
    odd, plain = strict_lines(done.stdout.encode("utf-8"))  # lone surrogates cannot encode
    assert "\ufffd" in odd["path"] and "path_bytes" not in plain
    assert base64.b64decode(odd["path_bytes"]) == os.fsencode(odd_folder) + b"/" + BAD_NAME
    assert odd["ok"] and odd["predictions"][0]["label"] == "0"
    run = json.loads((tmp_path / "out/run.json").read_bytes().decode("utf-8"))
    assert run["counts"]["ok"] == 2


def test_undecodable_names_from_stdin_and_argv(odd_folder: Path) -> None:
    name = os.fsencode(odd_folder) + b"/" + BAD_NAME
    piped = cvtool("classify", "-", "-m", "digits-cnn", "--format", "jsonl", stdin=name)
    [record] = strict_lines(piped.stdout.encode("utf-8"))
    assert base64.b64decode(record["path_bytes"]) == name and record["ok"]
    missing = cvtool("classify", os.fsdecode(name + b"x"), "-m", "digits-cnn",
                     "--format", "jsonl")
    [failed] = strict_lines(missing.stdout.encode("utf-8"))
    assert missing.code == 1 and failed["error"]["type"] == "FileNotFoundError"
    assert base64.b64decode(failed["path_bytes"]) == name + b"x"


def test_csv_and_table_stay_utf8(odd_folder: Path) -> None:
    done = cvtool("classify", odd_folder, "-m", "digits-cnn", "--format", "csv")
    header, first = done.stdout.encode("utf-8").decode("utf-8").splitlines()[:2]
    assert header.endswith(",path_bytes")
    assert first.split(",")[-1] and "\ufffd" in first
    table = cvtool("classify", odd_folder, "-m", "digits-cnn", "--format", "table")
    assert table.code == 0 and "result" in table.stdout.encode("utf-8").decode("utf-8")


def test_non_finite_scores_are_error_records(tmp_path: Path) -> None:
    spec = get_spec("digits-cnn")
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(spec.checkpoint_path, run / "best.safetensors")
    meta = json.loads(spec.checkpoint_path.with_suffix(".json").read_text())
    meta["preprocessing"]["std"] = [1e-45] * 3  # finite and positive, yet overflows to inf
    (run / "best.json").write_text(json.dumps(meta))
    done = cvtool("classify", DIGIT, "-m", run, "--format", "jsonl")
    [record] = strict_lines(done.stdout.encode("utf-8"))
    assert done.code == 1
    assert record["ok"] is False and record["error"]["type"] == "NonFiniteOutput"


def test_a_fifo_is_an_error_record_at_once(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(DIGIT, folder / "a.png")
    os.mkfifo(folder / "b.png")
    shutil.copy(DIGIT, folder / "c.png")
    # Inside a folder, then named after a good file (a separate process: a hang is a timeout).
    done = _process("classify", folder, folder / "a.png", folder / "b.png", "-m", "digits-cnn",
                    "--format", "jsonl", timeout=60)
    records = strict_lines(done.stdout)
    assert [r["path"].rsplit("/", 1)[1] for r in records] == ["a.png", "b.png", "c.png",
                                                              "a.png", "b.png"]
    for record in records:
        if record["path"].endswith("b.png"):
            assert record["error"] == {"type": "NotRegularFile",
                                       "message": "a fifo (named pipe), not a regular file"}
        else:
            assert record["ok"]
    assert done.returncode == 1


def test_finished_records_do_not_wait_behind_a_slow_input(tmp_path: Path) -> None:
    # stdin stays open after one path: that record must come out while cvtool still waits.
    process = subprocess.Popen(
        [sys.executable, "-m", "cvtool", "classify", "-", "-m", "digits-cnn", "--format",
         "jsonl"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        process.stdin.write(str(DIGIT).encode() + b"\n")
        process.stdin.flush()
        line = process.stdout.readline()  # blocks until the record is flushed
        assert json.loads(line)["ok"]
    finally:
        process.kill()
        process.wait()


def test_stdout_on_a_full_disk_is_exit_3() -> None:
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "cvtool", "classify", str(DIGIT), "-m",
                               "digits-cnn", "--format", "jsonl"], stdout=full,
                              stderr=subprocess.PIPE, cwd=ROOT, timeout=120,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    stderr = done.stderr.decode()
    assert done.returncode == 3, stderr
    assert stderr.strip().splitlines() == [
        "error: no space left on device writing standard output; no file was left "
        "half-written (training continues with --resume once there is room)"]


def test_output_on_a_full_disk_is_exit_3_with_no_partial_file(small_disk: Path) -> None:
    fill(small_disk)
    out = small_disk / "out"
    result = cvtool("classify", DIGIT, "-m", "digits-cnn", "-o", out, "--format", "jsonl")
    assert result.code == 3, result.stderr
    assert f"no space left on device writing {out / 'run.json'}" in result.stderr
    assert not out.exists()  # created by the run, left empty: removed


def fill(disk: Path) -> None:
    """Fill a small file system to the last byte."""
    with open(disk / "filler", "wb", buffering=0) as filler:
        for size in (1 << 16, 1 << 12, 1):
            try:
                while True:
                    filler.write(b"\0" * size)
            except OSError:
                continue


@pytest.mark.parametrize("value", ["0", "-1", str(2 * 89_478_485 + 1)])
def test_max_pixels_out_of_range_is_exit_2(value: str) -> None:
    result = cvtool("classify", DIGIT, "-m", "digits-cnn", "--max-pixels", value)
    assert result.code == 2 and "--max-pixels must be from 1 to 178956970" in result.stderr


def test_bombs_quote_one_limit(tmp_path: Path) -> None:
    from PIL import Image

    big = tmp_path / "big.png"
    Image.new("L", (20000, 10000)).save(big)  # 2e8 pixels: over Pillow's hard limit too
    small = tmp_path / "small.png"
    Image.new("L", (100, 100)).save(small)
    records = cvtool("classify", big, small, "-m", "digits-cnn", "--max-pixels", "5000",
                     "--format", "jsonl").records()
    assert [r["error"]["message"] for r in records] == [
        "200000000 pixels, over the limit of 5000",
        "100x100 is 10000 pixels, over the limit of 5000"]


def test_an_empty_directory_is_an_error_record(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    result = cvtool("classify", tmp_path / "empty", "-m", "digits-cnn", "--format", "jsonl")
    [record] = result.records()
    assert result.code == 1 and record["error"]["type"] == "NoImages"


def test_glob_matches_of_folders_without_images_are_not_errors(tmp_path: Path) -> None:
    (tmp_path / "a" / "sub").mkdir(parents=True)
    shutil.copy(DIGIT, tmp_path / "a" / "x.png")
    result = cvtool("classify", f"{tmp_path}/a/**", "-m", "digits-cnn", "--format", "jsonl")
    assert result.code == 0 and [r["ok"] for r in result.records()] == [True]


def test_over_long_names_say_so(tmp_path: Path) -> None:
    name = str(tmp_path / ("a" * 300 + ".png"))
    [record] = cvtool("classify", name, "-m", "digits-cnn", "--format", "jsonl").records()
    assert record["error"] == {"type": "OSError", "message": "file name too long"}


def test_permission_denied_is_not_file_not_found(tmp_path: Path) -> None:
    import tempfile

    top = Path(tempfile.mkdtemp(dir="/tmp"))
    try:
        top.chmod(0o755)
        locked = top / "locked"
        locked.mkdir()
        shutil.copy(DIGIT, locked / "x.png")
        locked.chmod(0)
        probe = ("import json; from cvtool.io.sources import iter_sources; "
                 f"print(json.dumps([s.error.__dict__ for s in iter_sources(['{locked}/x.png', "
                 f"'{locked}'])]))")
        command = [sys.executable, "-c", probe]
        if os.geteuid() == 0:  # root reads anything: look as nobody
            if shutil.which("setpriv") is None:
                pytest.skip("running as root without setpriv to drop privileges")
            command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=60,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == [
            {"type": "PermissionError", "message": "permission denied"}] * 2
    finally:
        (top / "locked").chmod(0o755)
        shutil.rmtree(top)


def test_library_warnings_become_one_line_warnings(tmp_path: Path) -> None:
    import io
    import struct

    from PIL import Image

    # A JPEG whose EXIF block claims a tag past its end: Pillow warns while orienting it.
    plain = io.BytesIO()
    Image.new("RGB", (8, 8)).save(plain, "JPEG")
    exif = (b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x05\x00"
            b"\x12\x01\x03\x00\x01\x00\x00\x00\x06\x00\x00\x00"
            b"\x0f\x01\x02\x00\xff\x00\x00\x00\xff\xff\x00\x00")
    jpeg = plain.getvalue()
    segment = b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif
    for name in ("a.jpg", "b.jpg"):
        (tmp_path / name).write_bytes(jpeg[:2] + segment + jpeg[2:])
    result = cvtool("classify", tmp_path, "-m", "digits-cnn", "--format", "jsonl")
    assert result.code == 0
    lines = result.stderr.splitlines()
    assert lines.count("warning: Corrupt EXIF data. Expecting to read 12 bytes but only got "
                       "0.") == 1  # once per run, whatever the number of images
    assert not any("site-packages" in line or "warnings.warn" in line for line in lines)


def test_pickled_weights_get_cvtools_own_message(tmp_path: Path) -> None:
    import torch

    path = tmp_path / "pickled.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "extra": Path("x")}, path)
    result = cvtool("classify", DIGIT, "-m", "resnet18", "--weights", path)
    assert result.code == 2
    assert "weights_only" not in result.stderr and "never unpickles" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_artifacts_on_a_full_disk_are_exit_3(small_disk: Path) -> None:
    fill(small_disk)
    shapes = sorted((ROOT / "sample_images" / "shapes").glob("shapes_*.png"))
    result = cvtool("segment-semantic", *shapes, "-m", "shapes-unet", "--device", "cpu",
                    "-o", small_disk / "out", "--format", "jsonl")
    assert result.code == 3, result.stderr
    assert "no space left on device writing" in result.stderr
    assert not [p for p in small_disk.rglob("*") if p.name.endswith(".tmp")]
