"""What `--eval` draws under `-o DIR`: the pictures a person reads after a scored run, and one
self-contained `report.html` holding them.

- `confusion_matrix.png`: counts and row-normalised shares side by side (classify: true class
  against predicted; detect / segment-instance: with a background row and column at
  `--confusion-iou`; segment-semantic: pixels).
- `per_class.png`: one horizontal bar group per class (precision / recall / F1, AP / AP50, or
  IoU), the worst classes first.
- `pr_curves.png` (detect, segment-instance): each class's precision over recall at IoU 0.50
  from COCOeval's accumulated `eval["precision"]`.
- `worst_cases.png`: the inputs that went worst, annotated: confident mistakes (classify),
  most misses + false positives + wrong labels (detections: ground truth green, found
  objects blue, false positives red), lowest per-image mIoU (ground truth beside prediction).
- `report.html`: the metrics, per-class table and every picture above, embedded as data: URIs
  (one file to attach to a CI job); no script, no external request (a Content-Security-Policy
  forbids any), every text from the inputs or the model escaped.

Pillow draws all but the PR curves (matplotlib); every file is written atomically.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from cvtool.core.results import InputFailure, shown
from cvtool.io.annotate import encoded
from cvtool.io.charts import bar_picture, confusion_picture, short
from cvtool.io.figures import new_figure, save_figure
from cvtool.io.writers import write_bytes

CONFUSION = "confusion_matrix.png"
PER_CLASS = "per_class.png"
PR_CURVES = "pr_curves.png"
WORST = "worst_cases.png"
REPORT = "report.html"
WORST_CASES = 12
MATRIX_CLASSES = 30  # beyond this many, the matrix shows the classes with the most errors
BAR_CLASSES = 40
TILE = 224  # thumbnail side in the gallery
PR_CLASSES = 20


@dataclass
class Case:
    """One gallery entry: the input, what went wrong, and how to draw it (may raise
    `InputFailure` when the input cannot be read back: a placeholder is drawn instead)."""

    path: str
    caption: str
    picture: Callable[[], Image.Image]


@dataclass
class Pictures:
    title: str
    confusion: tuple[list[str], np.ndarray, str]  # labels, counts [true, predicted], unit
    per_class: tuple[list[str], dict[str, list[float]], str]  # labels, series, what
    summary: list[tuple[str, str]]  # metric name, value (report.html's first table)
    rows: tuple[list[str], list[list[str]]]  # the per-class table: header, rows
    cases: list[Case]
    pr: tuple[list[str], np.ndarray, np.ndarray] | None = None  # labels, recall, precision[k]
    legend: list[tuple[tuple[int, int, int], str]] | None = None  # the gallery's colours


def write(output: Path, pictures: Pictures) -> list[str]:
    """Every picture and report.html into `output`; returns the files written."""
    written = []
    labels, counts, unit = pictures.confusion
    if len(labels):
        _confusion(output / CONFUSION, labels, counts, unit, pictures.title)
        written.append(CONFUSION)
    labels, series, what = pictures.per_class
    if labels:
        _per_class(output / PER_CLASS, labels, series, what)
        written.append(PER_CLASS)
    if pictures.pr is not None and len(pictures.pr[0]):
        _pr_curves(output / PR_CURVES, *pictures.pr)
        written.append(PR_CURVES)
    if pictures.cases:
        _gallery(output / WORST, pictures.cases, pictures.legend or [])
        written.append(WORST)
    _html(output, pictures, written)
    return [*written, REPORT]


# pictures ---------------------------------------------------------------------------------------

def _confusion(path: Path, labels: list[str], counts: np.ndarray, unit: str, title: str) -> None:
    counts = np.asarray(counts, dtype=np.int64)
    keep = np.arange(len(labels))
    note = ""
    if len(labels) > MATRIX_CLASSES:  # the classes most involved in errors
        errors = counts.sum(0) + counts.sum(1) - 2 * np.diag(counts)
        keep = np.sort(np.argsort(-errors, kind="stable")[:MATRIX_CLASSES])
        note = f" ({MATRIX_CLASSES} of {len(labels)} classes: the most errors)"
    counts = counts[np.ix_(keep, keep)]
    rows = counts.sum(1, keepdims=True)
    shares = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
    picture = confusion_picture([labels[k] for k in keep],
                                [(counts, unit, "count"), (shares, "share of the true row",
                                                           "share")], title + note)
    _save_png(path, picture)


def _per_class(path: Path, labels: list[str], series: dict[str, list[float]],
               what: str) -> None:
    first = next(iter(series.values()))
    order = np.argsort(np.asarray(first, dtype=np.float64), kind="stable")[:BAR_CLASSES]
    note = f" (the {BAR_CLASSES} lowest of {len(labels)})" if len(labels) > BAR_CLASSES else ""
    picture = bar_picture([labels[k] for k in order],
                          {name: [values[k] for k in order] for name, values in series.items()},
                          what, f"per class, the lowest first{note}")
    _save_png(path, picture)


def _save_png(path: Path, picture: Image.Image) -> None:
    write_bytes(path, encoded(picture, ".png"))


def _pr_curves(path: Path, labels: list[str], recall: np.ndarray, precision: np.ndarray) -> None:
    figure, axes = new_figure(1, 1, (7.0, 5.5))
    defined = [k for k in range(len(labels)) if (precision[k] > -1).any()]
    areas = {k: float(precision[k][precision[k] > -1].mean()) for k in defined}
    drawn = sorted(defined, key=lambda k: -areas[k])[:PR_CLASSES]
    for k in drawn:
        values = np.where(precision[k] > -1, precision[k], np.nan)
        axes.plot(recall, values, linewidth=1.5, label=f"{short(labels[k])} {areas[k]:.3f}")
    if len(drawn) > 1:
        mean = np.nanmean(np.where(precision[drawn] > -1, precision[drawn], np.nan), axis=0)
        axes.plot(recall, mean, color="black", linewidth=3,
                  label=f"all classes {np.nanmean(mean):.3f}")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.02)
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.grid(alpha=0.3)
    axes.set_title("precision-recall at IoU 0.50 (AP50 in the legend)")
    if drawn:
        axes.legend(fontsize="small", loc="lower left")
    save_figure(figure, path)


def _gallery(path: Path, cases: list[Case],
             legend: list[tuple[tuple[int, int, int], str]]) -> None:
    from cvtool.io.annotate import text_mask

    columns = min(4, len(cases))
    rows = math.ceil(len(cases) / columns)
    caption_height = 34
    header = 24 if legend else 0
    sheet = Image.new("RGB", (max(columns * (TILE + 8) + 8, 16 + 130 * len(legend)),
                              header + rows * (TILE + caption_height + 8) + 8), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for number, (rgb, name) in enumerate(legend):
        left = 8 + 130 * number
        draw.rectangle((left, 8, left + 14, 20), outline=rgb, width=3)
        sheet.paste((0, 0, 0), (left + 20, 8), text_mask(name, 12))
    for number, case in enumerate(cases):
        try:
            picture = case.picture()
        except InputFailure as failure:
            picture = _placeholder(f"cannot read: {failure.error.message}")
        picture.thumbnail((TILE, TILE))
        left = 8 + (number % columns) * (TILE + 8)
        top = header + 8 + (number // columns) * (TILE + caption_height + 8)
        sheet.paste(picture, (left + (TILE - picture.width) // 2,
                              top + (TILE - picture.height) // 2))
        lines = [short(Path(case.path).name, 34), short(case.caption, 34)]
        for line_number, line in enumerate(lines):
            sheet.paste((0, 0, 0), (left, top + TILE + 3 + 15 * line_number),
                        text_mask(line, 12))
    _save_png(path, sheet)


def _placeholder(message: str) -> Image.Image:
    from cvtool.io.annotate import text_mask

    tile = Image.new("RGB", (TILE, TILE), (230, 230, 230))
    tile.paste((90, 90, 90), (6, TILE // 2 - 6), text_mask(short(message, 32), 12))
    return tile


def _factor(size: tuple[int, int]) -> float:
    return max(1.0, TILE / max(size))


def scaled(picture: Image.Image) -> Image.Image:
    """A small input enlarged to the thumbnail's size (8x8 digits become visible): nearest
    for pixel art enlarged twice or more, bicubic otherwise."""
    factor = _factor(picture.size)
    if factor == 1.0:
        return picture
    size = (round(picture.width * factor), round(picture.height * factor))
    return picture.resize(size, Image.Resampling.NEAREST if factor >= 2
                          else Image.Resampling.BICUBIC)


def draw_boxes(picture: Image.Image, boxes: Sequence[tuple[Sequence[float], tuple[int, int, int]]]
               ) -> Image.Image:
    """COCO xywh boxes in their colours on the enlarged input, lines wide enough to survive
    the thumbnail."""
    factor = _factor(picture.size)
    canvas = scaled(picture.convert("RGB"))
    draw = ImageDraw.Draw(canvas)
    width = max(2, round(max(canvas.size) / TILE * 2))
    for (x, y, w, h), rgb in boxes:
        draw.rectangle((x * factor, y * factor, (x + w) * factor, (y + h) * factor),
                       outline=rgb, width=width)
    return canvas


# report.html ------------------------------------------------------------------------------------

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.5em 0; }
code { background: #f3f3f3; padding: 0 0.2em; }
"""
# Nothing may leave the page: no script, no request; the pictures are data: URIs.
_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _html(output: Path, pictures: Pictures, written: list[str]) -> None:
    def cell(value: str, tag: str = "td") -> str:
        return f"<{tag}>{html.escape(value)}</{tag}>"

    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f'<meta http-equiv="Content-Security-Policy" content="{_POLICY}">',
             f"<title>{html.escape(pictures.title)}</title><style>{_STYLE}</style></head><body>",
             f"<h1>{html.escape(pictures.title)}</h1>", '<table id="metrics">',
             "<tr><th>metric</th><th>value</th></tr>"]
    parts += [f"<tr>{cell(name)}{cell(value)}</tr>" for name, value in pictures.summary]
    parts.append("</table>")
    header, rows = pictures.rows
    if rows:
        parts += ["<h2>Per class</h2>", '<table id="per-class">',
                  "<tr>" + "".join(cell(name, "th") for name in header) + "</tr>"]
        parts += ["<tr>" + "".join(cell(value) for value in row) + "</tr>" for row in rows]
        parts.append("</table>")
    titles = {CONFUSION: "Confusion matrix", PER_CLASS: "Per-class bars",
              PR_CURVES: "Precision-recall curves", WORST: "Worst cases"}
    for name in written:
        data = base64.b64encode((output / name).read_bytes()).decode("ascii")
        parts += [f"<h2>{titles[name]}</h2>",
                  f'<img alt="{html.escape(titles[name])}" src="data:image/png;base64,{data}">']
    if pictures.cases:
        parts += ['<table id="worst-cases">', "<tr><th>input</th><th>what went wrong</th></tr>"]
        parts += [f"<tr>{cell(shown(case.path))}{cell(shown(case.caption))}</tr>"
                  for case in pictures.cases]
        parts.append("</table>")
    parts.append("</body></html>\n")
    write_bytes(output / REPORT, "\n".join(parts).encode("utf-8"))


# helpers ----------------------------------------------------------------------------------------

def number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "-" if value < 0 or math.isnan(value) else f"{value:.4f}"
    return str(value)


# what each task shows ---------------------------------------------------------------------------

def _input(path: str) -> Image.Image:
    from cvtool.io.decode import load_image

    return load_image(path)


def classification(metrics: dict[str, Any], score: Any, title: str) -> Pictures:
    """From `scoring.ClassificationScore`: its inputs' labels, predictions and confidences."""
    rows = metrics.get("per_class") or []
    labels = [row["label"] for row in rows]
    categories = score.labels.categories
    wrong = [i for i, (truth, top) in enumerate(zip(score.truth, score.top)) if top[0] != truth]
    wrong.sort(key=lambda i: -score.confidence[i])  # the most confident mistakes first

    def case(i: int) -> Case:
        said, truth = score.top[i][0], score.truth[i]
        return Case(score.paths[i], f"true {_name(categories, truth)}, said "
                    f"{_name(categories, said)} {score.confidence[i]:.3f}",
                    lambda: scaled(_input(score.paths[i])))

    summary = [(name, number(value)) for name, value in (
        ("images", metrics["images"]), ("top-1", metrics["top1"]), ("top-5", metrics["top5"]),
        ("macro F1", (metrics.get("macro") or {}).get("f1")),
        ("weighted F1", (metrics.get("weighted") or {}).get("f1")),
        ("expected calibration error", metrics.get("ece")))]
    return Pictures(
        title=title,
        confusion=(labels, np.asarray(metrics["confusion"]["counts"]), "inputs"),
        per_class=(labels, {key: [row[key] for row in rows] for key in
                            ("f1", "precision", "recall")}, "score"),
        summary=summary,
        rows=(["class", "precision", "recall", "F1", "support"],
              [[row["label"], number(row["precision"]), number(row["recall"]),
                number(row["f1"]), str(row["support"])] for row in rows]),
        cases=[case(i) for i in wrong[:WORST_CASES]])


GREEN, BLUE, ORANGE, RED = (0, 170, 0), (30, 110, 255), (255, 150, 0), (230, 0, 0)


def detection(metrics: dict[str, Any], details: dict[str, Any], paths: dict[int, str],
              title: str) -> Pictures:
    """From `coco.evaluate`'s metrics and `details` (the PR arrays and each image's errors)."""
    iou_type = "segm" if "segm" in metrics.get("per_class", {}) else "bbox"
    rows = metrics.get("per_class", {}).get(iou_type, [])
    labels = [row["label"] for row in rows]
    errors = sorted((e for e in details.get("errors", []) if e.errors and e.image_id in paths),
                    key=lambda e: -e.errors)

    def case(outcome: Any) -> Case:
        def picture() -> Image.Image:
            matched = {d: g for g, d in outcome.matches}
            boxes = [(a["bbox"], GREEN) for a in outcome.objects if not a.get("iscrowd")]
            for d, found in enumerate(outcome.detections):
                right = d in matched and outcome.objects[matched[d]]["category_id"] == \
                    found["category_id"]
                boxes.append((found["bbox"], BLUE if right else ORANGE if d in matched else RED))
            return draw_boxes(_input(paths[outcome.image_id]), boxes)

        return Case(paths[outcome.image_id], f"{outcome.misses} missed, "
                    f"{outcome.false_positives} false, {outcome.confused} wrong label", picture)

    summary = []
    for kind in ("bbox", "segm"):
        if kind in metrics:
            summary += [(f"{kind} {name}", number(metrics[kind][name]))
                        for name in ("AP", "AP50", "AP75", "AR100")]
    confusion = metrics.get("confusion") or {"labels": [], "counts": []}
    summary.append(("confusion matrix IoU", number(confusion.get("iou"))))
    pr = details.get("pr", {}).get(iou_type)
    return Pictures(
        title=title,
        confusion=(confusion["labels"], np.asarray(confusion["counts"]), "objects"),
        per_class=(labels, {"AP50": [row["AP50"] for row in rows],
                            "AP": [row["AP"] for row in rows]}, f"{iou_type} AP"),
        summary=summary,
        rows=(["class", "AP", "AP50", "recall", "tp", "fp", "misses"],
              [[row["label"], number(row["AP"]), number(row["AP50"]), number(row["recall"]),
                str(row["tp"]), str(row["fp"]), str(row["misses"])] for row in rows]),
        cases=[case(outcome) for outcome in errors[:WORST_CASES]],
        legend=[(GREEN, "ground truth"), (BLUE, "found"), (ORANGE, "wrong label"),
                (RED, "false positive")],
        pr=None if pr is None else (labels, pr["recall"], pr["precision"]))


def semantic(metrics: dict[str, Any], evaluation: Any, title: str) -> Pictures:
    """From `segment_semantic.Evaluation`: its pixel confusion matrix and worst images."""
    from cvtool.io.masks import overlay

    rows = [row for row in metrics["per_class"] if row["true_pixels"] or row["predicted_pixels"]]
    present = [row["index"] for row in rows]
    counts = evaluation.matrix.counts[np.ix_(present, present)]

    def case(worst: Any) -> Case:
        def picture() -> Image.Image:
            image = _input(worst.path).resize(worst.truth.shape[::-1])
            truth = np.where(worst.truth == evaluation.ignore_index, 0, worst.truth)
            pair = Image.new("RGB", (2 * image.width + 4, image.height), (255, 255, 255))
            pair.paste(overlay(image, truth), (0, 0))
            pair.paste(overlay(image, worst.prediction), (image.width + 4, 0))
            return scaled(pair)

        return Case(worst.path, f"mIoU {worst.iou:.3f} (truth | predicted)", picture)

    return Pictures(
        title=title,
        confusion=([row["label"] for row in rows], counts, "pixels"),
        per_class=([row["label"] for row in rows],
                   {"IoU": [-1.0 if row["iou"] is None else row["iou"] for row in rows]},
                   "IoU"),
        summary=[(name, number(metrics[key])) for name, key in (
            ("mIoU", "miou"), ("pixel accuracy", "pixel_accuracy"), ("images", "images"),
            ("pixels", "pixels"))],
        rows=(["class", "IoU", "true pixels", "predicted pixels"],
              [[row["label"], number(row["iou"]), str(row["true_pixels"]),
                str(row["predicted_pixels"])] for row in rows]),
        cases=[case(worst) for worst in evaluation.worst_cases()])


def _name(categories: Sequence[str], index: int) -> str:
    return categories[index] if 0 <= index < len(categories) else f"class_{index}"
