"""`detect --gt` with a COCO-sized ground truth costs what a small one does.

The same 100 fresh shapes scenes are detected (shapes-maskrcnn, --format coco) against two
ground-truth files: 200 image entries and 20,000 (the 100 real ones plus fillers under other
folders, as a COCO val file holds many images that are not among a run's inputs). Target: the
20,000-entry run at most 1.15x the 200-entry one. Whole processes, alternated, median.

    python bench/gt_matching.py [--images 100] [--entries 20000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from common import cvtool_seconds, machine_line, shapes_scenes


def ground_truth(real: dict, entries: int) -> dict:
    fillers = [{"id": 10_000_000 + n, "file_name": f"other/{n // 1000:02d}/{n:06d}.png",
                "width": 128, "height": 128} for n in range(entries - len(real["images"]))]
    return {**real, "images": real["images"] + fillers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--entries", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = shapes_scenes(Path(tmp) / "shapes", args.images)
        real = json.loads((data / "annotations" / "val.json").read_text())
        files = {}
        for entries in (200, args.entries):
            files[entries] = Path(tmp) / f"gt_{entries}.json"
            files[entries].write_text(json.dumps(ground_truth(real, entries)))
        seconds: dict[int, list[float]] = {entries: [] for entries in files}
        for _ in range(args.repeats):
            for entries, path in files.items():
                seconds[entries].append(cvtool_seconds(
                    "detect", str(data / "images" / "val"), "-m", "shapes-maskrcnn", "--gt",
                    str(path), "--format", "coco", "--device", "cpu", "-q"))
    print(f"gt matching: {args.images} images, {machine_line()}")
    small = statistics.median(seconds[200])
    for entries, times in seconds.items():
        median = statistics.median(times)
        print(f"  --gt with {entries:>6} image entries: {median:6.2f} s "
              f"(runs {', '.join(f'{t:.2f}' for t in times)})  ratio {median / small:.3f}")


if __name__ == "__main__":
    main()
