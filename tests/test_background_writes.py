"""Artifacts are written off the model's thread, yet a record goes out only once its files exist."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

from cvtool.cli.app import run_cli
from cvtool.core.context import Environment
from tests.clirun import ROOT, _Bytes

SHAPES = sorted((ROOT / "sample_images" / "shapes").glob("shapes_*.png"))


class CheckingStdout(io.StringIO):
    """Checks, as each record line is written, that the files it names are already there."""

    def __init__(self, output: Path) -> None:
        super().__init__()
        self.output, self.checked = output, 0

    def write(self, text: str) -> int:
        for line in text.splitlines():
            record = json.loads(line)
            if "mask_path" in record:
                assert os.path.isfile(record["mask_path"])
                overlay = self.output / "overlays" / Path(record["path"]).relative_to(ROOT)
                assert overlay.is_file()
            else:  # the annotated image mirrors the input's path under the output
                assert (self.output / Path(record["path"]).relative_to(ROOT)).is_file()
            self.checked += 1
        return super().write(text)


def _run(*args: object, output: Path) -> CheckingStdout:
    stdout = CheckingStdout(output)
    env = Environment(stdin=_Bytes(b""), stdout=stdout, stderr=io.StringIO())
    assert run_cli([str(a) for a in args], env) == 0, env.stderr.getvalue()
    # pycocotools' numpy-2 deprecation note, raised on the writer threads, is not the user's
    assert "warning" not in env.stderr.getvalue()
    return stdout


def test_semantic_records_follow_their_masks_and_overlays(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)  # outputs mirror the inputs' paths relative to here
    out = tmp_path / "out"
    stdout = _run("segment-semantic", *SHAPES, "-m", "shapes-unet", "--device", "cpu", "-b", "2",
                  "-o", out, "--format", "jsonl", output=out)
    assert stdout.checked == len(SHAPES)


def test_detection_records_follow_their_annotated_images(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    out = tmp_path / "out"
    stdout = _run("detect", *SHAPES, "-m", "shapes-maskrcnn", "--device", "cpu", "-b", "2",
                  "-o", out, "--format", "jsonl", "--save-crops", output=out)
    assert stdout.checked == len(SHAPES)
    assert list((out / "crops").rglob("*.png"))


def test_writer_threads_yield_to_the_model() -> None:
    import sys
    import threading

    from cvtool.io.writers import WRITER_NICENESS, BackgroundWrites

    if not sys.platform.startswith("linux"):
        return  # per-thread nice is Linux's; elsewhere writers keep the normal priority
    seen: list[int] = []
    writes = BackgroundWrites()
    writes.submit("a", lambda: seen.append(os.getpriority(os.PRIO_PROCESS,
                                                          threading.get_native_id())))
    assert writes.done("a", wait=True)
    writes.close()
    assert seen == [min(os.getpriority(os.PRIO_PROCESS, 0) + WRITER_NICENESS, 19)]


def test_atomic_writes_make_files_as_open_would(tmp_path: Path) -> None:
    from cvtool.io.writers import write_artifact, write_json

    previous = os.umask(0o027)
    try:
        write_artifact(tmp_path / "new" / "deep" / "a.png", b"png")
        write_json(tmp_path / "b.json", {"x": 1})
    finally:
        os.umask(previous)
    for path in (tmp_path / "new" / "deep" / "a.png", tmp_path / "b.json"):
        assert path.stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "new" / "deep" / "a.png").read_bytes() == b"png"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.png", "b.json", "deep", "new"]


def test_labels_drawn_from_the_cache_match_labels_drawn_directly() -> None:
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    from cvtool.io.annotate import text_mask

    cached = text_mask("cat 0.88", 14)
    assert text_mask("cat 0.88", 14) is cached  # rendered once
    font = ImageFont.load_default(14)
    left, top, right, bottom = font.getbbox("cat 0.88")
    direct = Image.new("L", (right - left, bottom - top))
    ImageDraw.Draw(direct).text((-left, -top), "cat 0.88", fill=255, font=font)
    assert np.array_equal(np.asarray(cached), np.asarray(direct))


def test_libraries_deprecation_notes_stay_off_stderr(tmp_path: Path) -> None:
    """pycocotools' numpy-2 copy-keyword deprecation, raised on every mask decode while the
    annotated images are drawn, is not the user's to read (a real process: pytest's own
    warning filters do not apply there)."""
    from tests.clirun import cvtool_process

    result = cvtool_process("segment-instance", SHAPES[5], "-m", "shapes-maskrcnn", "--device",
                            "cpu", "-o", tmp_path / "out", "--format", "jsonl")
    assert result.code == 0, result.stderr
    assert result.records()[0]["detections"]
    assert "warning" not in result.stderr, result.stderr
