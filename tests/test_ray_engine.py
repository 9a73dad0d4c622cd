"""`--engine ray` on a real local Ray (2 CPUs, a capped object store, no dashboard), one per
module: for every inference task, the Ray engine's records, error records, artifacts, metrics
and warnings equal the local engine's; --shard, --max-failures and --resume compose with it."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import ray

from cvtool.core.results import record_path
from cvtool.inference.runs import shard_of
from tests.clirun import ROOT, cvtool, same

DIGITS = sorted((ROOT / "sample_images" / "digits").glob("*.png"))


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, object_store_memory=96 * 2**20, include_dashboard=False,
             log_to_driver=False, logging_level=logging.ERROR)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six shapes scenes with COCO and mask ground truth; one scene's mask removed (a warning),
    and beside the images a file that is not an image."""
    data = tmp_path_factory.mktemp("shapes") / "data"
    result = cvtool("data", "shapes", data, "--num", "0", "--val-num", "6", "--seed", "5", "-q")
    assert result.code == 0, result.stderr
    masks = sorted((data / "val" / "masks").iterdir())
    masks[-1].unlink()
    return data


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and p.name not in ("run.json", ".cvtool-owner"))


def _in(result, output: Path) -> list[dict]:
    """The records with their -o directory (in artifact paths) written as OUT."""
    return json.loads(json.dumps(result.records()).replace(str(output), "OUT"))


def _warnings(stderr: str) -> list[str]:
    return sorted(line for line in stderr.splitlines() if line.startswith("warning:"))


TASKS = {
    "classify": lambda data: (["-m", "digits-cnn", "--topk", "3"], DIGITS[:6]),
    "detect": lambda data: (["-m", "shapes-maskrcnn", "--gt",
                             data / "annotations" / "val.json", "--eval"],
                            sorted((data / "images" / "val").glob("*.png"))),
    "segment-instance": lambda data: (["-m", "shapes-maskrcnn"],
                                      sorted((data / "images" / "val").glob("*.png"))),
    "segment-semantic": lambda data: (["-m", "shapes-unet", "--gt-masks", data / "val" / "masks",
                                       "--eval"],
                                      sorted((data / "val" / "images").glob("*.png"))),
}


@pytest.mark.parametrize("task", TASKS)
def test_ray_engine_equals_the_local_engine(task: str, scenes: Path, tmp_path: Path) -> None:
    options, images = TASKS[task](scenes)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    odd = tmp_path / os.fsdecode(b"caf\xe9.png")  # a name that is not UTF-8
    shutil.copy(images[0], odd)
    inputs = [*images[:3], bad, tmp_path / "missing.png", odd, *images[3:]]
    runs = {}
    for engine in ("local", "ray"):
        out = tmp_path / engine
        runs[engine] = cvtool(task, *inputs, *options, "--device", "cpu", "-b", "2", "-o", out,
                              "--format", "jsonl", "--engine", engine)
        assert runs[engine].code == 1, runs[engine].stderr  # the two bad inputs
    local, distributed = _in(runs["local"], tmp_path / "local"), _in(runs["ray"], tmp_path / "ray")
    assert len(distributed) == len(inputs)
    assert [record_path(r) for r in distributed] == [str(p) for p in inputs]
    assert same(distributed, local)
    errors = [r["error"]["type"] for r in distributed if not r["ok"]]
    assert errors == [r["error"]["type"] for r in local if not r["ok"]]
    assert len(errors) == 2
    assert _lines(tmp_path / "ray" / "records.jsonl") == runs["ray"].records()
    assert _files(tmp_path / "ray") == _files(tmp_path / "local")  # artifacts, by the actors
    info = {e: json.loads((tmp_path / e / "run.json").read_text()) for e in runs}
    assert info["ray"]["engine"]["name"] == "ray" and info["ray"]["counts"]["inputs"] == 9
    if "metrics" in info["local"]:
        assert same(info["ray"]["metrics"], info["local"]["metrics"])
    assert _warnings(runs["ray"].stderr) == _warnings(runs["local"].stderr)
    if task == "segment-semantic":  # the missing mask, warned of in an actor
        assert any("has no mask" in line for line in _warnings(runs["ray"].stderr))
    if "metrics" in info["local"]:  # the worst cases, gathered from the actors
        tables = [(tmp_path / e / "report.html").read_text().partition(
            '<table id="worst-cases">')[2].split("</table>")[0] for e in runs]
        assert tables[0] == tables[1]
        if task == "segment-semantic":  # every image has an mIoU
            assert tables[0].count("<tr>") > 2


def test_shard_failure_budget_and_resume_compose_with_ray(tmp_path: Path) -> None:
    folder = tmp_path / "digits"
    folder.mkdir()
    for path in DIGITS[:10]:
        shutil.copy(path, folder / path.name)
    broken = next(folder / f"broken_{n}.png" for n in range(100)
                  if shard_of(str(folder / f"broken_{n}.png"), 2) == 1)  # in the shard run
    broken.write_bytes(b"not an image")
    common = ["-m", "digits-cnn", "--device", "cpu", "-b", "2", "--shard", "1/2"]
    local = cvtool("classify", folder, *common, "-o", tmp_path / "local")
    out = tmp_path / "ray"
    stopped = cvtool("classify", folder, *common, "--engine", "ray", "--max-failures", "1",
                     "-o", out)
    assert stopped.code == 1 and "--max-failures 1" in stopped.stderr
    assert len(_lines(out / "records.jsonl")) < len(local.records())
    # Two actors on a 2-CPU Ray: they take less than a CPU each, so decoding still runs.
    resumed = cvtool("classify", folder, *common, "--engine", "ray", "--actors", "2", "-o", out,
                     "--resume")
    assert resumed.code == 1, resumed.stderr
    records = _lines(out / "records.jsonl")
    assert sorted(r["path"] for r in records) == sorted(r["path"] for r in local.records())
    by_path = {r["path"]: r for r in local.records()}
    assert all(same(r, by_path[r["path"]]) for r in records)
    info = json.loads((out / "run.json").read_text())
    assert info["counts"]["inputs"] == len(local.records()) and info["complete"] is True


def test_ray_options_go_with_the_ray_engine() -> None:
    result = cvtool("classify", *DIGITS[:1], "-m", "digits-cnn", "--actors", "2")
    assert result.code == 2 and "--actors goes with --engine ray" in result.stderr
    result = cvtool("classify", *DIGITS[:1], "-m", "digits-cnn", "--engine", "spark")
    assert result.code == 2 and "'local', 'ray'" in result.stderr


def test_without_ray_the_ray_engine_is_exit_3_naming_the_install() -> None:
    # A Python where `import ray` fails, as it does where the extra is not installed.
    code = ("import sys; sys.modules['ray'] = None; from cvtool.cli.app import main; "
            "sys.argv = ['cvtool', *sys.argv[1:]]; main()")
    done = subprocess.run([sys.executable, "-c", code, "classify", str(DIGITS[0]), "-m",
                           "digits-cnn", "--engine", "ray"], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert done.returncode == 3, done.stderr
    assert 'pip install "cvtool[ray]"' in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_an_actor_that_cannot_start_is_its_own_one_line_error(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA: the actors' --device cuda must fail")
    result = cvtool("classify", *DIGITS[:3], "-m", "digits-cnn", "--engine", "ray", "--device",
                    "cuda", "-o", tmp_path / "run")
    assert result.code == 3, result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: --engine ray: --device cuda: no CUDA device is present on this machine"]
    assert result.stdout == ""


def test_killed_actors_leave_stdout_to_records(tmp_path: Path) -> None:
    """Actors killed mid-run (kill -9, as the OOM killer does): Ray restarts them and says so
    on its own; whatever it says, every stdout line is still a record."""
    import time

    folder = tmp_path / "many"
    folder.mkdir()
    for number in range(120):
        shutil.copy(DIGITS[number % len(DIGITS)], folder / f"d{number:03}.png")
    with open(tmp_path / "stderr", "wb") as stderr_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "cvtool", "classify", str(folder), "-m", "digits-cnn",
             "--engine", "ray", "--actors", "2", "-b", "1"], stdout=subprocess.PIPE,
            stderr=stderr_file, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    first = process.stdout.readline()  # the actors are running
    killed = subprocess.run(["pkill", "-9", "-f", r"ray::MapWorker\(MapBatches\(PredictorActor"],
                            capture_output=True)
    started = time.monotonic()
    # The rest through the same buffered reader: readline may have read ahead past the first
    # line, and communicate() would read the pipe beneath it, losing that part.
    rest: list[bytes] = []
    reader = threading.Thread(target=lambda: rest.append(process.stdout.read()))
    reader.start()
    reader.join(timeout=300)
    if reader.is_alive():
        process.kill()
    process.wait(timeout=60)
    stderr = (tmp_path / "stderr").read_bytes()
    lines = [first, *rest[0].splitlines(keepends=True)]
    assert killed.returncode == 0 and time.monotonic() - started < 300
    assert process.returncode in (0, 1, 3), stderr.decode()
    records = [json.loads(line) for line in lines if line.strip()]
    assert records and all(record["task"] == "classify" for record in records)
