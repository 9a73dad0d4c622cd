"""The shared ground-truth index: the longest trailing run of path components wins."""

from __future__ import annotations

from pathlib import PurePath

from cvtool.core.results import Record
from cvtool.io.coco import ResultCollector
from cvtool.io.matching import TailIndex


def test_longest_tail_wins_and_the_first_duplicate_is_kept() -> None:
    index: TailIndex[str] = TailIndex()
    for key, value in ((("a.png",), "short"), (("val", "a.png"), "long"),
                       (("val", "a.png"), "second"), ((), "empty")):
        index.add(key, value)
    assert index.find(PurePath("/data/val/a.png").parts) == "long"
    assert index.find(PurePath("/data/train/a.png").parts) == "short"
    assert index.find(PurePath("/data/b.png").parts) is None
    assert len(index) == 2


def test_coco_collector_matches_by_file_name_among_many_entries() -> None:
    images = [{"id": n, "file_name": f"other/{n}.png"} for n in range(20_000)]
    images.append({"id": 7_000_000, "file_name": "val/0001.png"})
    warnings: list[str] = []
    collector = ResultCollector({"images": images}, warnings.append)
    detection = {"index": 1, "label": "x", "score": 0.9, "box": [0, 0, 2, 2]}
    for path in ("/somewhere/val/0001.png", "/somewhere/val/0002.png"):
        collector.write(Record(path, "detect", "m", 4, 4, payload={"detections": [detection]}))
    assert collector.image_ids == [7_000_000]
    assert [r["image_id"] for r in collector.results] == [7_000_000]
    assert warnings == ["/somewhere/val/0002.png is not in --gt; its detections are left out"]
