"""Hostile inputs, round 2 (issue 30): nothing written or read through a planted link, no read
outside a run directory, no hang on link loops, no markup or escapes reaching the terminal,
stdout for records only, and one-line errors with documented statuses for tampered run
directories, sidecars and exports. Each case is the kind of defect, tried on real files.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cvtool.models.registry import get_spec
from tests.clirun import ROOT, cvtool, cvtool_process

DIGIT = ROOT / "sample_images/digits/digit_0_0078.png"
SHAPE = ROOT / "sample_images/shapes/shapes_05.png"
VICTIM_BYTES = b"the victim's own bytes\n"


@pytest.fixture()
def victim(tmp_path: Path) -> Path:
    path = tmp_path / "victim.txt"
    path.write_bytes(VICTIM_BYTES)
    return path


def _one_line_error(stderr: str, *phrases: str) -> None:
    lines = [line for line in stderr.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    for phrase in phrases:
        assert phrase in lines[0], stderr


def _digits_run(tmp_path: Path, name: str = "run") -> Path:
    run = tmp_path / name
    done = cvtool("classify", DIGIT, "-m", "digits-cnn", "-o", run)
    assert done.code == 0, done.stderr
    return run


# 1. Links planted in an output directory ----------------------------------------------------

def test_a_planted_lock_link_is_refused_and_the_victim_untouched(tmp_path: Path,
                                                                  victim: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / ".cvtool.lock").symlink_to(victim)
    done = cvtool("classify", DIGIT, "-m", "digits-cnn", "-o", out)
    assert done.code == 2
    _one_line_error(done.stderr, ".cvtool.lock", "symbolic link")
    assert victim.read_bytes() == VICTIM_BYTES


@pytest.mark.parametrize("name", ["records.jsonl", "records.positions", "run.json"])
def test_planted_record_links_on_resume_are_refused(tmp_path: Path, victim: Path,
                                                    name: str) -> None:
    run = _digits_run(tmp_path)
    (run / name).unlink()
    (run / name).symlink_to(victim)
    done = cvtool("classify", DIGIT, ROOT / "sample_images/digits", "-m", "digits-cnn",
                  "-o", run, "--resume")
    assert done.code == 2, done.stderr
    _one_line_error(done.stderr, name, "symbolic link")
    assert victim.read_bytes() == VICTIM_BYTES


def test_a_linked_artifact_folder_is_refused_and_nothing_lands_elsewhere(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "segsym"
    out.mkdir()
    (out / "masks").symlink_to(elsewhere, target_is_directory=True)
    done = cvtool("segment-semantic", SHAPE, "-m", "shapes-unet", "-o", out)
    assert done.code == 2, done.stderr
    _one_line_error(done.stderr, "masks", "symbolic link")
    assert list(elsewhere.iterdir()) == []


def test_a_linked_training_state_folder_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = tmp_path / "train"
    run.mkdir()
    (run / "state").symlink_to(elsewhere, target_is_directory=True)
    done = cvtool("train", "classify", "--data", "digits", "--model", "linear", "--epochs", "1",
                  "-o", run, "--force")
    assert done.code == 2, done.stderr
    assert "symbolic link" in done.stderr and list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("planted", ["config.json link", "metrics.jsonl fifo"])
def test_train_resume_follows_no_planted_file(tmp_path: Path, victim: Path, planted: str) -> None:
    run = tmp_path / "train"
    first = cvtool("train", "classify", "--data", "digits", "--model", "linear", "--epochs", "1",
                   "-o", run)
    assert first.code == 0, first.stderr
    if planted == "config.json link":
        (run / "config.json").unlink()
        (run / "config.json").symlink_to(victim)
    else:
        shutil.rmtree(run / "state")
        (run / "metrics.jsonl").unlink()
        os.mkfifo(run / "metrics.jsonl")
    done = cvtool_process("train", "classify", "--resume", run, "--epochs", "2", timeout=120)
    if planted == "config.json link":
        assert done.code == 2, done.stderr
        _one_line_error(done.stderr, "config.json", "symbolic link")
    else:  # no state and no readable metrics: a fresh start, not a wait on the FIFO
        assert done.code == 0, done.stderr
    assert victim.read_bytes() == VICTIM_BYTES


# 2. ONNX external data ----------------------------------------------------------------------

@pytest.mark.parametrize("location", ["secret.bin", "../secret.bin"])
def test_onnx_external_data_is_never_read(tmp_path: Path, location: str,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    models = tmp_path / "work" / "models"
    models.mkdir(parents=True)
    weight = helper.make_tensor("w", TensorProto.FLOAT, [1], [0.0])
    weight.ClearField("float_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "4")):
        weight.external_data.add(key=key, value=value)
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
                              [weight])
    model = models / "m.onnx"
    onnx.save(helper.make_model(graph), str(model))
    for secret in (tmp_path / "work" / "secret.bin", tmp_path / "secret.bin"):
        secret.write_bytes(b"\x00\x00\x80\x3f")
    monkeypatch.chdir(tmp_path / "work")
    done = cvtool("classify", DIGIT, "-m", model)
    assert done.code == 2
    _one_line_error(done.stderr, "external file", location)


# 3. Paths read back from records ------------------------------------------------------------

@pytest.fixture()
def semantic_shards(tmp_path: Path) -> list[Path]:
    runs = []
    for shard in ("1/2", "2/2"):
        run = tmp_path / f"shard{shard[0]}"
        done = cvtool("segment-semantic", ROOT / "sample_images/shapes", "-m", "shapes-unet",
                      "-o", run, "--shard", shard, "-q")
        assert done.code == 0, done.stderr
        runs.append(run)
    return runs


def _point_first_mask_at(run: Path, target: str) -> None:
    lines = (run / "records.jsonl").read_text().splitlines()
    record = json.loads(lines[0])
    record["mask_path"] = target
    (run / "records.jsonl").write_text("\n".join([json.dumps(record), *lines[1:]]) + "\n")


def _gt_masks(tmp_path: Path) -> Path:
    shapes = tmp_path / "gt"
    done = cvtool("data", "shapes", shapes, "--num", "2", "--val-num", "1")
    assert done.code == 0, done.stderr
    return next(shapes.glob("**/masks"))


@pytest.mark.parametrize("kind", ["outside", "fifo", "link out"])
def test_merge_reads_masks_only_inside_their_run(tmp_path: Path, semantic_shards: list[Path],
                                                 kind: str) -> None:
    run = semantic_shards[0]
    if kind == "outside":
        target = "/etc/passwd"
    elif kind == "fifo":
        os.mkfifo(run / "masks" / "pipe.png")
        target = str(run / "masks" / "pipe.png")
    else:
        (run / "masks" / "out.png").symlink_to("/etc/passwd")
        target = str(run / "masks" / "out.png")
    _point_first_mask_at(run, target)
    done = cvtool_process("merge", *semantic_shards, "-o", tmp_path / "merged", "--gt-masks",
                          _gt_masks(tmp_path), "--eval", timeout=120)
    assert done.code == 2, done.stderr
    _one_line_error(done.stderr, "records.jsonl")


# 4. Link loops under a glob -----------------------------------------------------------------

def test_a_glob_over_a_link_loop_ends(tmp_path: Path) -> None:
    top = tmp_path / "loop"
    (top / "a").mkdir(parents=True)
    shutil.copy(DIGIT, top / "a" / "x.png")
    (top / "a" / "up").symlink_to("..", target_is_directory=True)
    (top / "back").symlink_to(top, target_is_directory=True)
    done = cvtool_process("classify", f"{top}/**/*.png", "-m", "digits-cnn", timeout=90)
    assert done.code == 0, done.stderr
    assert [record["path"] for record in done.records()] == [str(top / "a" / "x.png")]


def test_a_glob_streams_its_first_match_before_walking_the_rest(tmp_path: Path) -> None:
    from cvtool.io.sources import iter_sources

    top = tmp_path / "many"
    for index in range(3):
        (top / f"d{index}").mkdir(parents=True)
        shutil.copy(DIGIT, top / f"d{index}" / "x.png")
    stream = iter_sources([f"{top}/**/*.png"])
    first = next(stream)
    shutil.rmtree(top / "d2")  # a sorted-up-front expansion would already hold d2's match
    assert first.path == str(top / "d0" / "x.png")
    assert [source.path for source in stream] == [str(top / "d1" / "x.png")]


# 5. Markup and escapes ----------------------------------------------------------------------

HOSTILE_NAMES = ["x[/]close.png", "[bold]b.png", "[link=https:evil]l.png",
                 "esc\x1b]0;pwned\x07.png", "clear\x1b[2J.png", "bell\x07.png"]


def test_markup_and_escapes_in_names_and_labels_are_shown_not_run(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in HOSTILE_NAMES:
        (folder / name).parent.mkdir(exist_ok=True)  # `x[/]close.png`: a folder `x[`
        shutil.copy(DIGIT, folder / name)
    model = tmp_path / "model"
    model.mkdir()
    spec = get_spec("digits-cnn")
    shutil.copy(spec.checkpoint_path, model / "best.safetensors")
    meta = json.loads(spec.checkpoint_path.with_suffix(".json").read_text())
    meta["classes"] = ["[/]", "[bold]", "\x1b]0;title\x07", "\x1b[2J", "[link=http://x]",
                       *meta["classes"][5:]]
    (model / "best.json").write_text(json.dumps(meta))
    done = cvtool("classify", folder, "-m", model, "--format", "table", "--topk", "5",
                  "--max-failures", "100")
    assert done.code == 0, done.stderr
    assert "\x1b" not in done.stdout and "\x07" not in done.stdout
    for visible in ("x[/]close.png", "[bold]b.png", "[link=https:evil]l.png",
                    "esc\\x1b]0;pwned\\x07.png", "clear\\x1b[2J.png", "[/]", "\\x1b[2J"):
        assert visible in done.stdout, done.stdout
    # jsonl keeps the exact names: data, not terminal text
    records = cvtool("classify", folder, "-m", model, "--format", "jsonl").records()
    assert {str(Path(record["path"]).relative_to(folder)) for record in records} == \
        set(HOSTILE_NAMES)


def test_escapes_in_error_messages_are_shown(tmp_path: Path) -> None:
    bad = tmp_path / "e\x1b[31mvil.png"
    bad.write_bytes(b"not an image")
    done = cvtool("classify", bad, "-m", "digits-cnn", "--format", "table")
    assert done.code == 1
    assert "\x1b" not in done.stdout + done.stderr and "e\\x1b[31mvil.png" in done.stdout


# 6. Closed streams --------------------------------------------------------------------------

def _shell(command: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", command], capture_output=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_with_stderr_closed_stdout_holds_records_only() -> None:
    done = _shell(f"{sys.executable} -m cvtool classify {DIGIT} no-such.png -m digits-cnn 2>&-")
    assert done.returncode == 1
    lines = done.stdout.decode().splitlines()
    assert len(lines) == 2 and all(json.loads(line)["path"] for line in lines)


@pytest.mark.parametrize("args", [["classify", str(DIGIT), "-m", "digits-cnn"],
                                  ["classify", str(DIGIT), "-m", "digits-cnn", "--format",
                                   "table"], ["models", "--format", "jsonl"]])
def test_with_stdout_closed_the_run_is_exit_3(args: list[str]) -> None:
    done = _shell(f"{sys.executable} -m cvtool {' '.join(args)} >&-")
    assert done.returncode == 3, done.stderr
    assert b"standard output is closed" in done.stderr and b"Traceback" not in done.stderr


def test_what_libraries_print_during_a_command_goes_to_stderr(tmp_path: Path) -> None:
    """The guard Ray's raylet messages meet: a library's print() inside a command."""
    script = ("import builtins, cvtool.inference.classify as c\n"
              "original = c.build\n"
              "def noisy(*a, **k):\n"
              "    print('(raylet) A worker died or was killed while executing a task')\n"
              "    return original(*a, **k)\n"
              "c.build = noisy\n"
              "from cvtool.cli.app import main\n"
              f"main(['classify', {str(DIGIT)!r}, '-m', 'digits-cnn'])\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["ok"] for line in done.stdout.decode().splitlines()] == [True]
    assert b"A worker died" in done.stderr


# 8. Tampered exports ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def detector_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("onnxruntime")
    path = tmp_path_factory.mktemp("export") / "maskrcnn.onnx"
    done = cvtool("export", "shapes-maskrcnn", "-o", path, "-q")
    assert done.code == 0, done.stderr
    return path


def _with_metadata(source: Path, target: Path, text: str) -> Path:
    import onnx

    proto = onnx.load(str(source))
    for entry in proto.metadata_props:
        if entry.key == "cvtool":
            entry.value = text
    onnx.save(proto, str(target))
    return target


def _metadata_of(path: Path) -> dict:
    import onnx

    return json.loads({e.key: e.value for e in onnx.load(str(path)).metadata_props}["cvtool"])


@pytest.mark.parametrize("case", ["deep", "digits", "detection string", "nan"])
def test_tampered_export_metadata_is_one_line_exit_2(detector_export: Path, tmp_path: Path,
                                                     case: str) -> None:
    meta = _metadata_of(detector_export)
    text = {"deep": json.dumps({**meta, "x": 0})[:-1] + ', "y": ' + "[" * 100_000
            + "]" * 100_000 + "}",
            "digits": json.dumps(meta)[:-1] + ', "y": ' + "9" * 5001 + "}",
            "detection string": json.dumps({**meta, "detection": "fast"}),
            "nan": json.dumps(meta)[:-1] + ', "y": NaN}'}[case]
    if len(text) > 150_000:
        text = json.dumps(meta)[:-1] + ', "y": ' + "[" * 70 + "]" * 70 + "}"
    edited = _with_metadata(detector_export, tmp_path / "edited.onnx", text)
    done = cvtool("detect", SHAPE, "-m", edited)
    assert done.code == 2, done.stderr
    _one_line_error(done.stderr, str(edited))


def _corrupt_output(source: Path, target: Path, output: str, factor: list[float],
                    add: list[float] | None = None) -> Path:
    """The export with its `output` multiplied by `factor` (and `add` added, as floats): a
    tampered graph whose metadata still says it is the house detector. The graph's output
    is renamed; the metadata names outputs by position, so it still reads as `output`."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    proto = onnx.load(str(source))
    graph = proto.graph
    graph.initializer.append(numpy_helper.from_array(np.array(factor, np.float32), "factor"))
    graph.initializer.append(numpy_helper.from_array(np.array(add or [0.0], np.float32),
                                                     "offset"))
    declared = next(o for o in graph.output if o.name == output)
    raw = output
    if declared.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        graph.node.append(helper.make_node("Cast", [raw], [f"{raw}_f"],
                                           to=onnx.TensorProto.FLOAT))
        raw = f"{raw}_f"
        declared.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    graph.node.append(helper.make_node("Mul", [raw, "factor"], [f"{output}_scaled"]))
    graph.node.append(helper.make_node("Add", [f"{output}_scaled", "offset"],
                                       [f"{output}_bad"]))
    declared.name = f"{output}_bad"
    onnx.save(proto, str(target))
    return target


@pytest.mark.parametrize(("output", "factor", "add"), [
    ("boxes", [float("nan")], None), ("boxes", [1.0, 1.0, -1.0, -1.0], None),
    ("boxes", [1e30], None), ("labels", [1.0], [0.5]), ("labels", [1e6], None)])
def test_impossible_export_outputs_are_error_records(detector_export: Path, tmp_path: Path,
                                                     output: str, factor: list[float],
                                                     add: list[float] | None) -> None:
    edited = _corrupt_output(detector_export, tmp_path / "bad.onnx", output, factor, add)
    out = tmp_path / "out"
    done = cvtool("detect", SHAPE, "-m", edited, "--save-crops", "-o", out, "--format", "jsonl")
    assert done.code == 1, done.stderr
    (record,) = done.records()
    assert not record["ok"] and record["error"]["type"] in ("InvalidModelOutput", "NonFinite")
    assert not list(out.glob("crops/**/*.png")) and not list(out.glob("annotated/**/*.png"))


def test_masks_of_another_size_are_error_records(detector_export: Path, tmp_path: Path) -> None:
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    proto = onnx.load(str(detector_export))
    graph = proto.graph
    graph.initializer.append(numpy_helper.from_array(np.array([0, 0, 0, 0], np.int64),
                                                     "starts"))
    graph.initializer.append(numpy_helper.from_array(np.array([1 << 30, 1, 64, 64], np.int64),
                                                     "ends"))
    graph.node.append(helper.make_node("Slice", ["masks", "starts", "ends"], ["masks_bad"]))
    next(o for o in graph.output if o.name == "masks").name = "masks_bad"
    edited = tmp_path / "masks.onnx"
    onnx.save(proto, str(edited))
    for args in ([], ["-o", str(tmp_path / "out")]):
        done = cvtool("segment-instance", SHAPE, "-m", edited, "--format", "jsonl", *args)
        assert done.code == 1, done.stderr
        assert done.records()[0]["error"]["type"] == "InvalidModelOutput"


# 9. Tampered checkpoint sidecars ------------------------------------------------------------

@pytest.mark.parametrize("tail", ['"x": ' + "[" * 100_000 + "]" * 100_000,
                                  '"x": ' + "7" * 5000, '"x": 1e999'])
def test_tampered_sidecars_are_one_line_exit_2(tmp_path: Path, tail: str) -> None:
    spec = get_spec("digits-cnn")
    model = tmp_path / "model"
    model.mkdir()
    shutil.copy(spec.checkpoint_path, model / "best.safetensors")
    text = spec.checkpoint_path.with_suffix(".json").read_text().rstrip()
    (model / "best.json").write_text(text[:-1] + ", " + tail + "}")
    done = cvtool("classify", DIGIT, "-m", model)
    assert done.code == 2, done.stderr
    _one_line_error(done.stderr, "best.json")


# 10. Tampered run directories ---------------------------------------------------------------

RUN_JSON_CASES = {
    "options string": lambda info: {**info, "options": "fast"},
    "options list": lambda info: {**info, "options": [1, 2]},
    "options null": lambda info: {**info, "options": None},
    "task list": lambda info: {**info, "task": ["classify"]},
    "not an object": lambda info: [info],
}


@pytest.mark.parametrize("case", [*RUN_JSON_CASES, "deep"])
@pytest.mark.parametrize("command", ["resume", "merge"])
def test_tampered_run_json_is_exit_2_naming_it(tmp_path: Path, case: str, command: str) -> None:
    run = _digits_run(tmp_path)
    info = json.loads((run / "run.json").read_text())
    text = ("[" * 100_000 + "]" * 100_000 if case == "deep"
            else json.dumps(RUN_JSON_CASES[case](info)))
    (run / "run.json").write_text(text)
    done = (cvtool("classify", DIGIT, "-m", "digits-cnn", "-o", run, "--resume")
            if command == "resume" else cvtool("merge", run, "-o", tmp_path / "merged"))
    assert done.code == 2, done.stderr
    _one_line_error(done.stderr, "run.json")


RECORD_LINES = {"a number": "42", "no path": '{"ok": true, "task": "classify", "model": "m"}',
                "no task": '{"ok": true, "path": "a.png", "model": "m"}',
                "list path": '{"ok": true, "path": ["a"], "task": "classify", "model": "m"}',
                "dict path": '{"ok": true, "path": {}, "task": "classify", "model": "m"}',
                "deep": "[" * 100_000 + "]" * 100_000,
                "huge number": '{"ok": true, "path": ' + "1" * 5001 + "}"}


@pytest.mark.parametrize("case", RECORD_LINES)
@pytest.mark.parametrize("command", ["resume", "merge"])
def test_tampered_records_lines_are_exit_2_naming_file_and_line(tmp_path: Path, case: str,
                                                                command: str) -> None:
    run = _digits_run(tmp_path)
    with open(run / "records.jsonl", "a") as handle:
        handle.write(RECORD_LINES[case] + "\n")
    with open(run / "records.positions", "a") as handle:
        handle.write("1\n")
    done = (cvtool("classify", DIGIT, "-m", "digits-cnn", "-o", run, "--resume")
            if command == "resume" else cvtool("merge", run, "-o", tmp_path / "merged"))
    assert done.code == 2, done.stderr
    _one_line_error(done.stderr, "records.jsonl line 2")


@pytest.mark.parametrize("kind", ["directory", "fifo", "link to /dev/zero"])
@pytest.mark.parametrize("command", ["resume", "merge"])
def test_records_file_that_is_not_a_file_is_exit_2(tmp_path: Path, kind: str,
                                                   command: str) -> None:
    run = _digits_run(tmp_path)
    records = run / "records.jsonl"
    records.unlink()
    if kind == "directory":
        records.mkdir()
    elif kind == "fifo":
        os.mkfifo(records)
    else:
        records.symlink_to("/dev/zero")
    args = (["classify", DIGIT, "-m", "digits-cnn", "-o", run, "--resume"]
            if command == "resume" else ["merge", run, "-o", tmp_path / "merged"])
    done = cvtool_process(*args, timeout=60)
    assert done.code == 2, done.stderr
    _one_line_error(done.stderr, "records.jsonl")


# 11. Read-only file systems -----------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["classify", str(DIGIT), "-m", "digits-cnn", "-o", "{ro}/out"],
    ["export", "digits-cnn", "-o", "{ro}/d.onnx"],
    ["generate", "-m", "digits-gan", "--num", "1", "--grid", "{ro}/grid.png"],
    ["data", "shapes", "{ro}/shapes", "--num", "2", "--val-num", "1"],
])
def test_a_read_only_file_system_is_exit_3(read_only: Path, args: list[str]) -> None:
    if args[0] == "export":
        pytest.importorskip("onnxruntime")
    done = cvtool(*(arg.replace("{ro}", str(read_only)) for arg in args))
    assert done.code == 3, done.stderr
    _one_line_error(done.stderr, "cannot write", "read-only file system")


def test_matplotlib_is_silent_under_quiet_with_a_read_only_home(read_only: Path,
                                                                tmp_path: Path) -> None:
    env = {"HOME": str(read_only), "XDG_CONFIG_HOME": "", "XDG_CACHE_HOME": "",
           "MPLCONFIGDIR": ""}
    env = {key: value for key, value in env.items() if value} | {"XDG_CONFIG_HOME": ""}
    full = {key: value for key, value in {**os.environ, **env}.items()
            if key not in ("MPLCONFIGDIR", "XDG_CACHE_HOME") and value != ""}
    done = subprocess.run([sys.executable, "-m", "cvtool", "train", "classify", "--data",
                           "digits", "--model", "linear", "--epochs", "1", "-q", "-o",
                           str(tmp_path / "run")], capture_output=True, text=True, timeout=180,
                          cwd=ROOT, env={**full, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert (tmp_path / "run" / "curves.png").exists() or list((tmp_path / "run").glob("*.png"))


# 12. torchrun messages ----------------------------------------------------------------------

def test_a_usage_error_under_nproc_per_node_is_said_once(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    done = cvtool_process("train", "classify", "--data", empty, "--model", "cnn", "--epochs",
                          "1", "--nproc-per-node", "2", "-o", tmp_path / "run", timeout=240)
    assert done.code == 2, done.stderr
    _one_line_error(done.stderr, "has no class folders")
    assert "torch.distributed" not in done.stderr and "ChildFailedError" not in done.stderr


def test_a_lost_peer_is_not_an_internal_error() -> None:
    from cvtool.cli import process

    class DistBackendError(RuntimeError):
        pass

    os.environ["RANK"] = "1"
    try:
        assert process._lost_peers(DistBackendError("boom"))
        assert process._lost_peers(RuntimeError("[pair.cc:561] Connection closed by peer"))
        assert not process._lost_peers(RuntimeError("shape mismatch"))
    finally:
        del os.environ["RANK"]
    assert not process._lost_peers(RuntimeError("Connection closed by peer"))


# 13. train --resume with other options ------------------------------------------------------

def test_train_resume_refuses_options_that_differ(tmp_path: Path) -> None:
    run = tmp_path / "run"
    first = cvtool("train", "classify", "--data", "digits", "--model", "linear", "--epochs",
                   "1", "-o", run)
    assert first.code == 0, first.stderr
    done = cvtool("train", "classify", "--resume", run, "--model", "mlp", "--lr", "0.5",
                  "--batch-size", "7")
    assert done.code == 2, done.stderr
    _one_line_error(done.stderr, "--model 'linear' in the run, 'mlp' now", "--lr",
                    "--batch-size")
    same = cvtool("train", "classify", "--resume", run, "--model", "linear", "--data",
                  "digits", "--epochs", "2", "--threads", "1")
    assert same.code == 0, same.stderr
    assert json.loads(same.stdout)["epochs"] == 2


# 15. CVTOOL_OFFLINE spellings ---------------------------------------------------------------

@pytest.mark.parametrize(("value", "offline"), [
    ("", False), ("0", False), ("false", False), ("FALSE", False), ("no", False),
    ("off", False), (" 0 ", False), ("1", True), ("true", True), ("yes", True), ("on", True)])
def test_offline_spellings(monkeypatch: pytest.MonkeyPatch, value: str, offline: bool) -> None:
    from cvtool.core.context import offline_from_environment, offline_reason

    monkeypatch.setenv("CVTOOL_OFFLINE", value)
    assert offline_from_environment() is offline
    if offline:
        assert value.strip() in offline_reason()
