"""Scoring a classification run against labels, and the quality gate every task's metrics
pass through (`--fail-under METRIC=VALUE`, exit 4 below it).

Labels come from the inputs' own folders (`DIR/<class>/image.png`, the layout training reads)
or from `--gt labels.csv` (`path,label` rows, matched to inputs by trailing path components as
`--gt` and `--gt-masks` are); `--label-map FILE` (`folder,label` rows) names a folder's model
category where they differ. Metrics are computed as scikit-learn's `classification_report`,
`top_k_accuracy_score` and a 15-bin expected calibration error compute them: precision,
recall and F1 over every class that is true or predicted somewhere, 0 where undefined. numpy
only, so the Ray engine's driver and the Python API score the same way.
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path, PurePath
from typing import IO, Any

import numpy as np

from cvtool.core.files import open_regular
from cvtool.core.results import Record, counted, shown
from cvtool.core.status import UsageError
from cvtool.io.matching import TailIndex

ECE_BINS = 15
TABLE_ROWS = 20  # per-class rows printed on stderr, worst F1 first; run.json has them all
MAX_LABEL_ROWS = 10_000_000


def _normal(label: str) -> str:
    return re.sub(r"[\s_\-]+", " ", label.strip().lower())


def read_pairs(path: Path, what: str, limit: int = MAX_LABEL_ROWS) -> list[tuple[str, str]]:
    """The two-column rows of a CSV file (a `path,label` or `folder,label` header is skipped)."""
    try:
        with open_regular(path) as file:
            text = file.read().decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"cannot read {what} {path}: {' '.join(str(error).split())}") from None
    rows = []
    for number, row in enumerate(csv.reader(text.splitlines()), 1):
        if not row or (number == 1 and [cell.strip().lower() for cell in row[:1]] in
                       (["path"], ["folder"], ["name"])):
            continue
        if len(row) != 2 or not row[0].strip():
            raise UsageError(f"{what} {path} line {number}: expected two columns (path,label)")
        rows.append((row[0].strip(), row[1].strip()))
        if len(rows) > limit:
            raise UsageError(f"{what} {path}: over {limit:,} rows")
    if not rows:
        raise UsageError(f"{what} {path} holds no rows")
    return rows


class LabelSource:
    """Each input's true category index, or None (unlabelled: left out, counted)."""

    def __init__(self, categories: Sequence[str], gt: Path | None = None,
                 label_map: Path | None = None) -> None:
        self.categories = list(categories)
        exact = {label: index for index, label in enumerate(self.categories)}
        loose: dict[str, int] = {}
        for index, label in enumerate(self.categories):
            loose.setdefault(_normal(label), index)
        self.lookup = lambda name: exact.get(name, loose.get(_normal(name)))
        self.mapping = dict(read_pairs(label_map, "--label-map")) if label_map else {}
        self.by_path: TailIndex[str] | None = None
        if gt is not None:
            self.by_path = TailIndex()
            for path, label in read_pairs(gt, "--gt"):
                self.by_path.add(PurePath(path).parts, label)
        self.unknown: dict[str, int] = {}
        self.known: dict[str, int | None] = {}

    def index_of(self, path: str) -> int | None:
        if self.by_path is not None:
            name = self.by_path.find(PurePath(path).parts)
        else:
            name = os.path.basename(os.path.dirname(path)) or None
        if name is None:
            return None
        if name not in self.known:  # a folder's name is looked up once
            self.known[name] = self.lookup(self.mapping.get(name, name))
        index = self.known[name]
        if index is None:
            self.unknown[name] = self.unknown.get(name, 0) + 1
        return index


class ClassificationScore:
    """A record writer that pairs each classified input with its label and, at the end,
    computes the metrics (`report`)."""

    def __init__(self, labels: LabelSource, warn: Callable[[str], None]) -> None:
        self.labels, self.warn = labels, warn
        self.truth: list[int] = []
        self.top: list[list[int]] = []
        self.confidence: list[float] = []
        self.paths: list[str] = []
        self.unlabelled = 0

    def write(self, record: Record) -> None:
        if not record.ok:
            return
        index = self.labels.index_of(record.path)
        if index is None:
            self.unlabelled += 1
            return
        predictions = record.payload["predictions"]
        self.truth.append(index)
        self.top.append([item["index"] for item in predictions])
        self.confidence.append(float(predictions[0]["score"]))
        self.paths.append(record.path)

    def close(self) -> None:
        pass

    def report(self, stream: IO[str]) -> dict[str, Any]:
        """run.json's `metrics`, also printed to `stream` as a small table."""
        if self.unlabelled:
            unknown = ", ".join(f"{shown(name)!r}" for name in sorted(self.labels.unknown)[:5])
            has = "has" if self.unlabelled == 1 else "have"
            self.warn(f"{counted(self.unlabelled, 'input')} {has} no label among the model's "
                      f"categories ({unknown or 'not in --gt'}), left out of the metrics "
                      "(--label-map maps folder names to categories)")
        metrics = classification_metrics(self.truth, self.top, self.confidence,
                                          self.labels.categories)
        _print_table(metrics, stream)
        return metrics


def classification_metrics(truth: Sequence[int], top: Sequence[Sequence[int]],
                           confidence: Sequence[float], categories: Sequence[str]
                           ) -> dict[str, Any]:
    """top-1/top-5, per-class precision/recall/F1/support, their macro and weighted means,
    the expected calibration error and the confusion matrix over the classes present."""
    y_true = np.asarray(truth, dtype=np.int64)
    k = min((len(row) for row in top), default=0)
    ranked = np.asarray([row[:k] for row in top], dtype=np.int64).reshape(len(y_true), k)
    images = len(y_true)
    metrics: dict[str, Any] = {"images": images, "top1": None, "top5": None}
    if not images:
        return {**metrics, "per_class": [], "macro": None, "weighted": None, "ece": None,
                "confusion": {"labels": [], "counts": []}}
    y_pred = ranked[:, 0]
    metrics["top1"] = float(np.mean(y_pred == y_true))
    if k >= 5:
        metrics["top5"] = float(np.mean((ranked[:, :5] == y_true[:, None]).any(1)))
    present = np.union1d(y_true, y_pred)
    rows = []
    for index in present:
        predicted, actual = y_pred == index, y_true == index
        hits = int(np.sum(predicted & actual))
        precision = hits / int(predicted.sum()) if predicted.any() else 0.0
        recall = hits / int(actual.sum()) if actual.any() else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append({"index": int(index), "label": _label(categories, int(index)),
                     "precision": precision, "recall": recall, "f1": f1,
                     "support": int(actual.sum())})
    support = np.asarray([row["support"] for row in rows], dtype=np.float64)
    for name, weights in (("macro", np.ones(len(rows))), ("weighted", support)):
        metrics[name] = {key: float(np.average([row[key] for row in rows], weights=weights))
                         if weights.sum() else 0.0 for key in ("precision", "recall", "f1")}
    metrics["per_class"] = rows
    metrics["ece"] = expected_calibration_error(np.asarray(confidence), y_pred == y_true)
    position = {int(index): place for place, index in enumerate(present)}
    counts = np.zeros((len(present), len(present)), dtype=np.int64)
    np.add.at(counts, ([position[int(v)] for v in y_true], [position[int(v)] for v in y_pred]),
              1)
    metrics["confusion"] = {"labels": [row["label"] for row in rows],
                            "counts": counts.tolist()}  # [true, predicted]
    return metrics


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray,
                               bins: int = ECE_BINS) -> float:
    """Sum over equal-width confidence bins (lo, hi] of |accuracy - mean confidence| weighted
    by the bin's share of the inputs (Guo et al., 2017)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    total = 0.0
    for number in range(bins):
        members = which == number
        if members.any():
            total += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(total)


def _label(categories: Sequence[str], index: int) -> str:
    return categories[index] if 0 <= index < len(categories) else f"class_{index}"


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _print_table(metrics: dict[str, Any], stream: IO[str]) -> None:
    print(f"top-1 {_figure(metrics['top1'])}  top-5 {_figure(metrics['top5'])}  macro F1 "
          f"{_figure((metrics['macro'] or {}).get('f1'))}  ECE {_figure(metrics['ece'])}  "
          f"({metrics['images']} labelled images)", file=stream)
    rows = sorted(metrics["per_class"], key=lambda row: (row["f1"], row["index"]))
    for row in rows[:TABLE_ROWS]:
        label = shown(row["label"])
        print(f"  {row['index']:>4} {label:<24} precision {row['precision']:.4f}  recall "
              f"{row['recall']:.4f}  F1 {row['f1']:.4f}  support {row['support']}",
              file=stream)
    if len(rows) > TABLE_ROWS:
        print(f"  ... {len(rows) - TABLE_ROWS} more classes in run.json", file=stream)
    stream.flush()


# The gate ------------------------------------------------------------------------------------

# The metrics `--fail-under NAME=VALUE` takes per task, and where each is in run.json's
# `metrics`. Per-class bars read `class:LABEL/KEY`.
GATE_METRICS: dict[str, dict[str, tuple[str, ...]]] = {
    "classify": {"top1": ("top1",), "top5": ("top5",), "macro_f1": ("macro", "f1"),
                 "macro_precision": ("macro", "precision"), "macro_recall": ("macro", "recall"),
                 "weighted_f1": ("weighted", "f1")},
    "detect": {"map": ("bbox", "AP"), "map50": ("bbox", "AP50"), "map75": ("bbox", "AP75"),
               "mar100": ("bbox", "AR100")},
    "segment-instance": {"map": ("bbox", "AP"), "map50": ("bbox", "AP50"),
                         "map75": ("bbox", "AP75"), "segm_map": ("segm", "AP"),
                         "segm_map50": ("segm", "AP50"), "segm_map75": ("segm", "AP75")},
    "segment-semantic": {"miou": ("miou",), "pixel_accuracy": ("pixel_accuracy",)},
}
CLASS_KEYS = {"classify": ("precision", "recall", "f1"), "segment-semantic": ("iou",),
              "detect": ("AP", "AP50", "recall"), "segment-instance": ("AP", "AP50", "recall")}


def parse_bars(task: str, given: Sequence[str]) -> list[tuple[str, float]]:
    """`--fail-under` values as (metric, bar); a UsageError naming the valid metrics."""
    names = GATE_METRICS[task]
    keys = CLASS_KEYS.get(task, ())
    valid = ", ".join([*names, *(f"class:LABEL/{key}" for key in keys)])
    bars = []
    for text in given:
        name, _, value = text.partition("=")
        name = name.strip()
        try:
            bar = float(value)
        except ValueError:
            bar = math.nan
        if not math.isfinite(bar):
            raise UsageError(f"--fail-under {text!r}: expected METRIC=NUMBER, e.g. "
                             f"{next(iter(names))}=0.9")
        label, _, key = name.removeprefix("class:").rpartition("/")
        if name not in names and not (name.startswith("class:") and label and key in keys):
            raise UsageError(f"--fail-under: unknown metric {name!r} for {task}; valid: {valid}")
        bars.append((name, bar))
    return bars


def metric_value(task: str, metrics: dict[str, Any], name: str) -> float | None:
    """The value a bar is compared with; UsageError for a class the metrics do not have."""
    if name.startswith("class:"):
        label, _, key = name.removeprefix("class:").rpartition("/")
        rows = metrics.get("per_class") or []
        if isinstance(rows, dict):  # detection: per IoU type; the bars read boxes
            rows = rows.get("bbox") or []
        for row in rows:
            if row["label"] == label:
                found = row.get(key)
                return None if found is None or found < 0 else float(found)
        known = ", ".join(repr(row["label"]) for row in rows[:10])
        raise UsageError(f"--fail-under {name}: no class {label!r} in the metrics (classes "
                         f"scored: {known or 'none'})")
    value: Any = metrics
    for step in GATE_METRICS[task][name]:
        value = value.get(step) if isinstance(value, dict) else None
    # pycocotools writes -1 for a metric with nothing to measure (no ground truth of a size)
    return None if value is None or value < 0 else float(value)


def below_bars(task: str, metrics: dict[str, Any] | None,
               bars: Sequence[tuple[str, float]]) -> list[str]:
    """One line per bar the run's metrics fall below (a metric with no value fails)."""
    failed = []
    for name, bar in bars:
        value = metric_value(task, metrics or {}, name)
        if value is None or value < bar:
            shown_value = "no value" if value is None else f"{value:.4f}"
            failed.append(f"{name} {shown_value} is below the bar {bar:g}")
    return failed


# Python ----------------------------------------------------------------------------------------

def evaluate(records: Any, ground_truth: Any = None, *, categories: Sequence[str] | None = None,
             label_map: Path | str | None = None, warn: Callable[[str], None] | None = None
             ) -> dict[str, Any]:
    """The metrics `--eval` computes, from records (`predict`'s, or the dicts records.jsonl
    holds). classify: `ground_truth` is a labels CSV path, a {path: label} dict, or None (each
    input's folder name), and `categories` the model's labels (`Classifier.categories`).
    detect / segment-instance: `ground_truth` is a COCO file or its loaded dict."""
    import io

    from cvtool.core.results import record_from_dict

    warn = warn or (lambda message: None)
    loaded = [record_from_dict(r) if isinstance(r, dict) else r for r in records]
    tasks = {record.task for record in loaded}
    if len(tasks) > 1:
        raise UsageError(f"records of several tasks ({', '.join(sorted(tasks))}); evaluate one")
    task = next(iter(tasks), "classify")
    if task == "classify":
        if categories is None:
            raise UsageError("evaluate: give categories= (the model's labels) for classify "
                             "records")
        labels = LabelSource(categories, None if isinstance(ground_truth, dict) else
                             None if ground_truth is None else Path(ground_truth),
                             None if label_map is None else Path(label_map))
        if isinstance(ground_truth, dict):
            labels.by_path = TailIndex()
            for path, label in ground_truth.items():
                labels.by_path.add(PurePath(str(path)).parts, str(label))
        score = ClassificationScore(labels, warn)
        for record in loaded:
            score.write(record)
        return score.report(io.StringIO())
    if task in ("detect", "segment-instance"):
        from cvtool.io import coco

        truth = (ground_truth if isinstance(ground_truth, dict)
                 else coco.load_ground_truth(Path(ground_truth), warn))
        collector = coco.ResultCollector(truth, warn)
        for record in loaded:
            collector.write(record)
        iou_types = ("bbox", "segm") if task == "segment-instance" and \
            coco.has_segmentations(truth) else ("bbox",)
        return coco.evaluate(truth, collector.results, collector.image_ids, iou_types,
                             io.StringIO(), per_class=True)
    raise UsageError(f"evaluate: {task} records are scored by their predictor as they are "
                     "made (SemanticSegmenter(gt_masks=..., evaluate=True)); give classify, "
                     "detect or segment-instance records")
