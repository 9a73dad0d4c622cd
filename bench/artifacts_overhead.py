"""Writing artifacts costs the inference loop (almost) nothing: `detect -o DIR` and
`segment-semantic -o DIR` against the same commands without `-o`.

Fresh 128x128 shapes scenes (seed 99), shapes-maskrcnn and shapes-unet on the CPU, batch 8.
The figure is the loop's images/s (from the summary line cvtool prints on stderr: decoding,
model, records, and with -o the annotated images / masks and overlays), whole processes
alternated, median. Target: with -o at least 0.9x without.

    python bench/artifacts_overhead.py [--images 200] [--repeats 3]
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import ROOT, machine_line, shapes_scenes

COMMANDS = {"detect": ["detect", "-m", "shapes-maskrcnn"],
            "segment-semantic": ["segment-semantic", "-m", "shapes-unet"]}


def images_per_second(args: list[str]) -> float:
    done = subprocess.run([sys.executable, "-m", "cvtool", *args], cwd=ROOT, check=True,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return float(re.search(r"\(([\d.]+)/s\)", done.stderr.splitlines()[-1])[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = shapes_scenes(Path(tmp) / "shapes", args.images)
        images = str(data / "images" / "val")
        speeds: dict[tuple[str, bool], list[float]] = {}
        for _ in range(args.repeats):
            for name, command in COMMANDS.items():
                for with_output in (False, True):
                    out = Path(tmp) / "out"
                    shutil.rmtree(out, ignore_errors=True)
                    extra = ["-o", str(out)] if with_output else []
                    speeds.setdefault((name, with_output), []).append(images_per_second(
                        [*command, images, "--device", "cpu", "-b", "8", "--format", "jsonl",
                         *extra]))
    print(f"artifacts overhead: {args.images} scenes, {machine_line()}")
    for name in COMMANDS:
        plain = statistics.median(speeds[name, False])
        written = statistics.median(speeds[name, True])
        print(f"  {name:>16}: without -o {plain:6.1f} img/s, with -o {written:6.1f} img/s, "
              f"ratio {written / plain:.3f} (target >= 0.9)")


if __name__ == "__main__":
    main()
