"""classify through the real entry point: sources, formats, awkward inputs, exit codes."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.clirun import ROOT, cvtool, cvtool_process

ARCH = "mobilenet_v3_small"  # the smallest fast torchvision classifier: keeps tests quick


@pytest.fixture(scope="session")
def weights_file(tmp_path_factory) -> Path:

    path = tmp_path_factory.mktemp("weights") / f"{ARCH}.pth"
    torch.save(_peaked_state_dict(seed=0), path)
    return path


def _peaked_state_dict(seed: int) -> dict:
    """Random weights with sharper batch-norm statistics: scores far from uniform."""
    from torchvision.models import get_model

    torch.manual_seed(seed)
    state = get_model(ARCH).state_dict()
    for key, value in state.items():
        if key.endswith("running_var"):
            value.fill_(0.2)
    return state


@pytest.fixture(scope="session")
def images(tmp_path_factory) -> Path:
    """A small tree: nested dirs, upper-case extensions, a non-image file to skip."""
    root = tmp_path_factory.mktemp("images")
    (root / "sub").mkdir()
    for i, name in enumerate(["b.png", "a.JPG", "sub/c.jpeg"]):
        Image.new("RGB", (64 + 16 * i, 48), (40 * i, 200 - 50 * i, 90)).save(root / name)
    (root / "notes.txt").write_text("not an image")
    return root


def classify(weights_file: Path, *args: str, stdin: bytes = b""):
    return cvtool("classify", "-m", ARCH, "--weights", str(weights_file), "-q", *args, stdin=stdin)


def test_directory_is_recursive_sorted_and_images_only(weights_file, images):
    result = classify(weights_file, str(images))
    assert result.code == 0, result.stderr
    paths = [Path(r["path"]).relative_to(images).as_posix() for r in result.records()]
    assert paths == ["a.JPG", "b.png", "sub/c.jpeg"]


def test_file_glob_and_stdin_sources(weights_file, images):
    by_file = classify(weights_file, str(images / "b.png")).records()
    by_glob = classify(weights_file, str(images / "**" / "*.jpeg")).records()
    lines = f"{images / 'b.png'}\n{images / 'sub' / 'c.jpeg'}\n".encode()
    by_stdin = classify(weights_file, "-", stdin=lines).records()
    by_null = classify(weights_file, "-", "--null", stdin=lines.replace(b"\n", b"\0")).records()
    assert [r["path"] for r in by_file] == [str(images / "b.png")]
    assert [Path(r["path"]).name for r in by_glob] == ["c.jpeg"]
    assert [r["path"] for r in by_stdin] == [r["path"] for r in by_null]
    assert [Path(r["path"]).name for r in by_stdin] == ["b.png", "c.jpeg"]
    # Same image, other batch composition: equal up to float32 kernel rounding.
    assert [p["index"] for p in by_stdin[0]["predictions"]] == \
        [p["index"] for p in by_file[0]["predictions"]]
    assert [p["score"] for p in by_stdin[0]["predictions"]] == pytest.approx(
        [p["score"] for p in by_file[0]["predictions"]], rel=1e-5)


def test_record_schema_and_scores(weights_file, images):
    record = classify(weights_file, str(images / "b.png"), "--topk", "3").records()[0]
    assert set(record) == {"path", "ok", "task", "model", "width", "height", "predictions"}
    assert (record["ok"], record["task"], record["model"]) == (True, "classify", ARCH)
    assert (record["width"], record["height"]) == (64, 48)
    scores = [p["score"] for p in record["predictions"]]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True)
    assert all(isinstance(p["label"], str) and p["label"] for p in record["predictions"])
    assert 0 < sum(scores) <= 1


def test_csv_and_table_formats(weights_file, images):
    rows = list(csv.DictReader(io.StringIO(
        classify(weights_file, str(images), "--format", "csv", "--topk", "2").stdout)))
    assert len(rows) == 6 and [r["rank"] for r in rows[:2]] == ["1", "2"]
    assert {r["ok"] for r in rows} == {"true"}  # as JSON spells it, not Python's True
    jsonl = classify(weights_file, str(images), "--topk", "2").records()
    # Two runs: which inputs share a batch depends on decode timing, and float32 rounds
    # differently per batch, so the last digits may differ.
    assert float(rows[0]["score"]) == pytest.approx(jsonl[0]["predictions"][0]["score"],
                                                    rel=1e-6)
    table = classify(weights_file, str(images), "--format", "table", "--topk", "1")
    assert table.code == 0 and jsonl[0]["predictions"][0]["label"] in table.stdout
    assert not table.stdout.lstrip().startswith("{")


def test_predictions_match_plain_torchvision_forward(weights_file):
    from torchvision.models import get_model, get_model_weights

    photo = ROOT / "sample_images" / "photos"
    path = sorted(p for p in photo.iterdir() if p.suffix == ".jpg")[0]
    model = get_model(ARCH)
    model.load_state_dict(torch.load(weights_file, weights_only=True))
    transforms = get_model_weights(ARCH).DEFAULT.transforms()
    with torch.inference_mode():
        probs = model.eval()(transforms(Image.open(path).convert("RGB"))[None]).softmax(1)[0]
    record = classify(weights_file, str(path), "--topk", "1000").records()[0]
    got = {p["index"]: p["score"] for p in record["predictions"]}
    assert [got[i] for i in range(1000)] == pytest.approx(probs.tolist(), rel=1e-4, abs=1e-7)
    assert max(got, key=got.get) == int(probs.argmax())


def test_awkward_inputs_become_error_records(weights_file, awkward_dir):
    from tests.awkward import EXPECTED_OK

    result = cvtool_process("classify", "-m", ARCH, "--weights", weights_file, awkward_dir)
    assert result.code == 1, result.stderr
    assert "Traceback" not in result.stderr
    records = result.records()  # every stdout line is valid JSON
    got = {os.path.relpath(r["path"], awkward_dir): r["ok"] for r in records}
    assert got == EXPECTED_OK
    assert all(r["ok"] == ("predictions" in r) for r in records)
    assert all(not r["ok"] or len(r["predictions"]) == 5 for r in records)
    assert all(r["ok"] or set(r["error"]) == {"type", "message"} for r in records)
    assert {r["error"]["type"] for r in records if not r["ok"]} >= {
        "EmptyFile", "UnidentifiedImage", "DecompressionBomb", "TruncatedImage"}


def test_fail_fast_stops_at_first_bad_input(weights_file, tmp_path, images):
    (tmp_path / "a_bad.png").write_text("<html></html>")
    Image.open(images / "b.png").save(tmp_path / "b_good.png")
    records = classify(weights_file, str(tmp_path), "--fail-fast").records()
    assert [r["ok"] for r in records] == [False]
    both = classify(weights_file, str(tmp_path))
    assert both.code == 1 and [r["ok"] for r in both.records()] == [False, True]


def test_missing_input_is_a_record_not_a_crash(weights_file, images):
    result = classify(weights_file, str(images / "nope.jpg"), str(images / "b.png"))
    assert result.code == 1
    first, second = result.records()
    assert first["ok"] is False and first["error"]["type"] == "FileNotFoundError"
    assert second["ok"] is True


@pytest.mark.parametrize("args, code, needle", [
    (["-m", "resnet5O"], 2, "resnet50"),
    (["--device", "cuda"], 3, "CUDA"),
    (["--precision", "fp8"], 2, "precision"),
    (["--format", "coco"], 2, "format"),
    (["--topk", "0"], 2, "topk"),
])
def test_usage_and_resource_errors(weights_file, images, args, code, needle):
    if "--device" in args and torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    result = cvtool("classify", str(images), "--weights", str(weights_file), *args)
    assert result.code == code, result.stderr
    assert needle in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_no_inputs_is_a_usage_error():
    result = cvtool("classify")
    assert result.code == 2 and "no inputs" in result.stderr


def test_default_weights_offline_and_uncached_exit_3(images, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("CVTOOL_OFFLINE", "1")
    result = cvtool("classify", str(images), "-m", ARCH)
    assert result.code == 3
    assert "cvtool models pull" in result.stderr and "--weights" in result.stderr


def test_weights_none_warns_and_is_seeded(images):
    first = cvtool("classify", str(images / "b.png"), "-m", ARCH, "--weights", "none")
    again = cvtool("classify", str(images / "b.png"), "-m", ARCH, "--weights", "none")
    other = cvtool("classify", str(images / "b.png"), "-m", ARCH, "--weights", "none",
                   "--seed", "1")
    assert first.code == 0 and "meaningless" in first.stderr
    assert first.records() == again.records() != other.records()


def test_tta_and_ensemble_average_probabilities(weights_file, images, tmp_path):
    plain = classify(weights_file, str(images / "b.png"), "--topk", "1000").records()[0]
    tta = classify(weights_file, str(images / "b.png"), "--topk", "1000", "--tta").records()[0]
    assert tta["predictions"] != plain["predictions"]
    other = tmp_path / "other.pth"
    torch.save(_peaked_state_dict(seed=1), other)
    alone = cvtool("classify", str(images / "b.png"), "-m", ARCH, "--weights", str(other),
                   "--topk", "1000").records()[0]
    both = cvtool("classify", str(images / "b.png"), "-m", ARCH, "-m", ARCH, "--weights",
                  str(weights_file), "--weights", str(other), "--topk", "1000").records()[0]
    score = {p["index"]: p["score"] for p in plain["predictions"]}
    score_other = {p["index"]: p["score"] for p in alone["predictions"]}
    assert both["model"] == f"{ARCH}+{ARCH}"
    for p in both["predictions"][:10]:
        assert p["score"] == pytest.approx((score[p["index"]] + score_other[p["index"]]) / 2,
                                           rel=1e-5)


def test_bf16_runs_in_bf16_and_stays_close_to_fp32(weights_file, images):
    def full(precision: str) -> list[dict[int, float]]:
        records = classify(weights_file, str(images), "--precision", precision,
                           "--topk", "1000").records()
        return [{p["index"]: p["score"] for p in r["predictions"]} for r in records]

    for fp32, bf16 in zip(full("fp32"), full("bf16")):
        distance = sum(abs(fp32[i] - bf16[i]) for i in fp32) / 2  # total variation
        assert 0 < distance < 0.2  # changed by bf16 rounding, not ignored; still close


def test_run_json_records_the_run(weights_file, images, tmp_path):
    out = tmp_path / "out"
    result = classify(weights_file, str(images), "-o", str(out), "--seed", "7")
    run = json.loads((out / "run.json").read_text())
    assert result.code == 0
    assert run["counts"]["inputs"] == 3 and run["counts"]["failed"] == 0
    assert run["seed"] == 7 and run["device"] == "cpu" and run["precision"] == "fp32"
    model = run["models"][0]
    assert model["weights_file"] == str(weights_file)
    import hashlib
    assert model["weights_sha256"] == hashlib.sha256(weights_file.read_bytes()).hexdigest()
    # no temp files left behind
    assert sorted(p.name for p in out.iterdir()) == ["records.jsonl", "records.positions",
                                                      "run.json"]


def _spawn(args: list, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "cvtool", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def test_closed_pipe_ends_quietly(weights_file, images):
    proc = _spawn(["classify", "-m", ARCH, "--weights", weights_file, "-b", "1",
                   *[images] * 20])
    first = proc.stdout.readline()
    proc.stdout.close()  # the reader goes away, like `| head -1`
    _, err = proc.communicate(timeout=120)
    assert json.loads(first)["ok"] is True
    assert proc.returncode == 141 and b"Traceback" not in err


def test_ctrl_c_exits_130_with_complete_lines(weights_file, images):
    # As a terminal's Ctrl-C reaches a foreground job: where pytest itself runs as a background
    # job (`pytest &`), the shell made it ignore SIGINT, its children inherit that, and Python
    # then installs no KeyboardInterrupt handler at all.
    proc = _spawn(["classify", "-m", ARCH, "--weights", weights_file, "-b", "1", "-"],
                  stdin=subprocess.PIPE,
                  preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    proc.stdin.write(f"{images / 'b.png'}\n".encode())
    proc.stdin.flush()
    line = proc.stdout.readline()  # one record is out; cvtool now waits for more paths
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and b"Traceback" not in err, err.decode()
    assert all(json.loads(x) for x in (line + out).splitlines())


def test_a_registry_name_wins_over_a_local_folder_of_that_name(tmp_path, monkeypatch) -> None:
    """`-m digits-cnn` is the registry's model even where ./digits-cnn exists; `./digits-cnn`
    (a separator) and names outside the registry (`myrun`) are paths."""
    import json
    import shutil

    from cvtool.models.registry import get_spec

    house = get_spec("digits-cnn").checkpoint_path
    meta = json.loads(house.with_suffix(".json").read_text())
    meta["classes"] = [f"local_{label}" for label in meta["classes"]]
    for folder in ("digits-cnn", "myrun"):
        (tmp_path / folder).mkdir()
        shutil.copy(house, tmp_path / folder / "best.safetensors")
        (tmp_path / folder / "best.json").write_text(json.dumps(meta))
    digit = Path(__file__).resolve().parents[1] / "sample_images/digits/digit_0_0078.png"
    monkeypatch.chdir(tmp_path)
    labels = {model: cvtool("classify", digit, "-m", model, "--topk", "1", "--format",
                            "jsonl").records()[0]["predictions"][0]["label"]
              for model in ("digits-cnn", "./digits-cnn", "myrun")}
    assert labels == {"digits-cnn": "0", "./digits-cnn": "local_0", "myrun": "local_0"}
