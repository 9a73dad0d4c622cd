"""What `--eval -o DIR` draws and reports (issue 31, items 2 and 3), `merge --eval` of classify
shards, and report.html in a real headless Chromium: no request leaves the page, its tables
and pictures render, the inputs' markup stays text."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cvtool.io.coco_confusion import confusion
from tests.clirun import ROOT, cvtool
from tests.headless import Chromium, find_chromium

DIGITS = sorted((ROOT / "sample_images" / "digits").glob("*.png"))
HOSTILE = "<img src=x onerror=fetch(1)>"  # a legal file name (no slash) that is markup
PICTURES = ("confusion_matrix.png", "per_class.png", "worst_cases.png")


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample digits in class folders; the 7s filed under 1 (two confident mistakes),
    one of them under a file name that is HTML markup."""
    top = tmp_path_factory.mktemp("labelled") / "digits"
    for path in DIGITS:
        label = path.name.split("_")[1]
        (top / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, top / label / path.name)
    sevens = sorted(top.glob("7/*.png"))
    shutil.move(sevens[0], top / "1" / sevens[0].name)
    shutil.move(sevens[1], top / "1" / f"{HOSTILE}.png")
    return top


def _png(path: Path) -> Image.Image:
    with Image.open(path) as image:
        image.load()
        assert image.format == "PNG" and min(image.size) > 50, path
        return image.copy()


def test_classify_eval_writes_the_pictures_and_a_self_contained_report(
        labelled: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    done = cvtool("classify", labelled, "-m", "digits-cnn", "--eval", "-o", run,
                  "--fail-under", "top1=0.95")
    assert done.code == 4, done.stderr  # 18 of 20 right: below the bar, pictures still drawn
    assert f"evaluation report: {run / 'report.html'}" in done.stderr
    for name in PICTURES:
        _png(run / name)
    assert not (run / "pr_curves.png").exists()  # a detection picture
    gallery = np.asarray(_png(run / "worst_cases.png").convert("L"))
    assert gallery.std() > 20  # two digits drawn, not a blank sheet
    page = (run / "report.html").read_text()
    assert "BELOW THE BAR" in page and "top1 0.9000 is below the bar 0.95" in page
    assert HOSTILE not in page and "&lt;img src=x onerror=fetch(1)&gt;" in page
    assert "true 1, said 7" in page  # both mistakes listed, the most confident first
    assert page.count("<img ") == len(PICTURES)  # embedded, nothing linked
    assert "src=\"data:image/png;base64," in page and "<script" not in page


def test_worst_cases_are_the_most_confident_mistakes(labelled: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert cvtool("classify", labelled, "-m", "digits-cnn", "--eval", "-o", run).code == 0
    page = (run / "report.html").read_text()
    table = page.split('<table id="worst-cases">', 1)[1].split("</table>", 1)[0]
    rows = [row for row in table.split("<tr>")[2:]]
    assert len(rows) == 2
    confidences = [float(row.split("said 7 ")[1].split("<")[0]) for row in rows]
    assert confidences == sorted(confidences, reverse=True)


def _box(image_id: int, category: int, x: float, y: float, w: float = 10, h: float = 10,
         **extra: object) -> dict:
    return {"image_id": image_id, "category_id": category, "bbox": [x, y, w, h], **extra}


def test_detection_confusion_matrix_counts_by_hand() -> None:
    """Image 1: a cat found as a cat (and again: a duplicate), a dog found as a cat, a dog
    missed. Image 2: a crowd of cats with a detection inside it (ignored), a stray dog."""
    truth = {"images": [{"id": 1}, {"id": 2}],
             "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
             "annotations": [
                 {**_box(1, 3, 0, 0), "id": 1, "iscrowd": 0, "area": 100},
                 {**_box(1, 7, 50, 50), "id": 2, "iscrowd": 0, "area": 100},
                 {**_box(1, 7, 100, 100), "id": 3, "iscrowd": 0, "area": 100},
                 {**_box(2, 3, 0, 0, 40, 40), "id": 4, "iscrowd": 1, "area": 1600}]}
    results = [_box(1, 3, 0, 0, score=0.9), _box(1, 3, 1, 0, score=0.8),
               _box(1, 3, 51, 50, score=0.7), _box(2, 3, 5, 5, score=0.9),
               _box(2, 7, 200, 200, score=0.6)]
    summary, errors = confusion(truth, results, [1, 2], iou=0.5)
    assert summary["labels"] == ["cat", "dog", "background"]
    assert summary["counts"] == [[1, 0, 0],  # cat: found as cat
                                 [1, 0, 1],  # dog: once called a cat, once missed
                                 [1, 1, 0]]  # background: the duplicate cat, the stray dog
    by_image = {e.image_id: (e.misses, e.false_positives, e.confused) for e in errors}
    assert by_image == {1: (1, 1, 1), 2: (0, 1, 0)}
    # a stricter IoU: the shifted boxes (IoU 0.82) no longer match at 0.9
    strict, _ = confusion(truth, results, [1, 2], iou=0.9)
    assert strict["counts"][1] == [0, 0, 2] and strict["counts"][2] == [2, 1, 0]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shapes") / "data"
    done = cvtool("data", "shapes", out, "--num", "0", "--val-num", "12", "--seed", "3")
    assert done.code == 0, done.stderr
    return out


def test_segment_instance_eval_draws_pr_curves_and_the_background_matrix(
        shapes: Path, tmp_path: Path) -> None:
    runs = {}
    for iou in ("0.5", "0.95"):
        run = tmp_path / iou
        done = cvtool("segment-instance", shapes / "images" / "val", "-m", "shapes-maskrcnn",
                      "--gt", shapes / "annotations" / "val.json", "--eval", "--conf", "0.3",
                      "--confusion-iou", iou, "-o", run)
        assert done.code == 0, done.stderr
        runs[iou] = json.loads((run / "run.json").read_text())["metrics"]["confusion"]
        for name in (*PICTURES[:2], "pr_curves.png", "report.html"):
            assert (run / name).is_file(), name
    truth = json.loads((shapes / "annotations" / "val.json").read_text())
    objects = {c["id"]: 0 for c in truth["categories"]}
    for annotation in truth["annotations"]:
        objects[annotation["category_id"]] += 1
    for matrix in runs.values():
        counts = np.asarray(matrix["counts"])
        assert matrix["labels"][-1] == "background" and counts[-1, -1] == 0
        assert counts[:-1].sum(1).tolist() == [objects[k] for k in sorted(objects)]
    loose, strict = np.asarray(runs["0.5"]["counts"]), np.asarray(runs["0.95"]["counts"])
    assert strict[:-1, -1].sum() > loose[:-1, -1].sum()  # more misses at IoU 0.95
    pr = _png(tmp_path / "0.5" / "pr_curves.png")
    assert pr.size[0] > 400


def test_segment_semantic_eval_gallery_holds_the_lowest_miou(shapes: Path,
                                                            tmp_path: Path) -> None:
    run = tmp_path / "run"
    done = cvtool("segment-semantic", shapes / "val" / "images", "-m", "shapes-unet",
                  "--gt-masks", shapes / "val" / "masks", "--eval", "-o", run)
    assert done.code == 0, done.stderr
    for name in PICTURES:
        _png(run / name)
    page = (run / "report.html").read_text()
    table = page.split('<table id="worst-cases">', 1)[1].split("</table>", 1)[0]
    shown = [float(row.split("mIoU ")[1].split(" ")[0]) for row in table.split("<tr>")[2:]]
    assert len(shown) == 12 and shown == sorted(shown)
    metrics = json.loads((run / "run.json").read_text())["metrics"]
    assert min(shown) <= metrics["miou"] + 1e-9


def test_merge_eval_scores_classify_shards_as_one_run(labelled: Path, tmp_path: Path) -> None:
    whole = tmp_path / "whole"
    assert cvtool("classify", labelled, "-m", "digits-cnn", "--eval", "-o", whole).code == 0
    for shard in ("1/2", "2/2"):
        done = cvtool("classify", labelled, "-m", "digits-cnn", "--shard", shard,
                      "-o", tmp_path / shard.replace("/", "of"))
        assert done.code == 0, done.stderr
    merged = tmp_path / "merged"
    done = cvtool("merge", tmp_path / "1of2", tmp_path / "2of2", "-o", merged, "--eval",
                  "--fail-under", "top1=0.95")
    assert done.code == 4 and "top1 0.9000 is below the bar 0.95" in done.stderr
    one = json.loads((whole / "run.json").read_text())["metrics"]
    both = json.loads((merged / "run.json").read_text())
    # records.jsonl holds the scores as JSON prints them: ECE agrees to float precision
    assert both["metrics"].pop("ece") == pytest.approx(one.pop("ece"), abs=1e-9)
    assert both["metrics"] == one and both["gate"]["passed"] is False
    assert (merged / "report.html").is_file() and (merged / "worst_cases.png").is_file()
    assert cvtool("merge", tmp_path / "1of2", "-o", tmp_path / "m2", "--gt-masks",
                  labelled).code == 2


chromium = find_chromium()


@pytest.mark.skipif(chromium is None, reason="no Chromium here (Debian: apt-get install "
                    "chromium; .ci/run installs it)")
def test_report_renders_in_headless_chromium_without_leaving_its_folder(
        labelled: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert cvtool("classify", labelled, "-m", "digits-cnn", "--eval", "-o", run).code == 0
    page = run / "report.html"
    with Chromium(chromium) as browser:
        browser.open(page.as_uri())
        outside = [url for url in browser.requests
                   if not url.startswith("data:image/png;base64,") and url != page.as_uri()]
        assert outside == []
        rendered = browser.evaluate("""({
            tables: [...document.querySelectorAll('table')].map(t => [t.id, t.rows.length]),
            images: [...document.images].map(i => i.complete && i.naturalWidth > 0
                                                   && i.getBoundingClientRect().width > 100),
            hostile: [...document.querySelectorAll('td')].some(
                td => td.textContent.includes('<img src=x onerror=fetch(1)>')),
            top1: document.querySelector('#metrics').innerText.includes('0.9000')})""")
        shot = browser.screenshot(tmp_path / "report.png")
    assert dict(rendered["tables"]) == {"metrics": 7, "per-class": 11, "worst-cases": 3}
    assert rendered["images"] == [True] * len(PICTURES)
    assert rendered["hostile"] and rendered["top1"]
    picture = np.asarray(Image.open(tmp_path / "report.png").convert("L"))
    assert len(shot) > 10_000 and picture.shape[0] > 1000 and picture.std() > 10


def test_a_worst_case_input_gone_since_is_a_placeholder_not_an_error(labelled: Path,
                                                                      tmp_path: Path) -> None:
    folder = tmp_path / "digits"
    shutil.copytree(labelled, folder)
    shard = tmp_path / "shard"
    assert cvtool("classify", folder, "-m", "digits-cnn", "-o", shard).code == 0
    for path in folder.glob("1/*7*"):  # the misfiled sevens: the gallery's two entries
        path.unlink()
    (folder / "1" / f"{HOSTILE}.png").unlink()
    merged = tmp_path / "merged"
    done = cvtool("merge", shard, "-o", merged, "--eval")
    assert done.code == 0, done.stderr
    gallery = np.asarray(_png(merged / "worst_cases.png").convert("L"))
    assert (gallery == 230).mean() > 0.3  # grey placeholder tiles, saying why
    assert "true 1, said 7" in (merged / "report.html").read_text()
