"""Artifacts are written off the model's thread, yet a record goes out only once its files exist."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

from cvtool.cli import run_cli
from cvtool.context import Environment
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
