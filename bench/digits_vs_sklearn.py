"""cvtool's classical learners beside scikit-learn's, on the same digits split.

Both sides get `load_classification_data("digits")`: the seeded stratified 80/20 split, inputs
flattened after cvtool's normalisation. k-NN: each side picks k and distance by 5-fold stratified
CV on train alone (the same StratifiedKFold), then is scored once on val. Linear SVM and softmax:
`cvtool train classify --model linear --loss svm|ce` (its defaults) beside LinearSVC
and LogisticRegression with their defaults; no CV on either side. PAIRS is the list to extend:
(name, cvtool side, scikit-learn side), each side a function (data, seed) -> Outcome.
Usage, from the repository root: PYTHONPATH=. python bench/digits_vs_sklearn.py [SEED]
"""

from __future__ import annotations

import io
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from common import machine_line
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.svm import LinearSVC

from cvtool.cli.app import run_cli
from cvtool.core.context import Environment
from cvtool.data.classification import ClassificationData, load_classification_data
from cvtool.train.knn import CANDIDATE_K, fit_knn, stacked

FOLDS = 5
SKLEARN_METRICS = {"l1": "manhattan", "l2": "euclidean"}  # in cvtool's grid order


@dataclass
class Outcome:
    chosen: str  # the hyperparameters CV picked
    cv_accuracy: float | None  # mean over folds, for the chosen ones; None without CV
    val_accuracy: float
    seconds: float  # selection, fit and val prediction together


Side = Callable[[ClassificationData, int], Outcome]


def cvtool_knn(data: ClassificationData, seed: int) -> Outcome:
    started = time.perf_counter()
    fit = fit_knn(data, folds=FOLDS, seed=seed)
    seconds = time.perf_counter() - started
    chosen = next(row for row in fit.cv_table if (row["k"], row["distance"]) == (fit.k,
                                                                               fit.distance))
    return Outcome(f"k={fit.k} {fit.distance}", chosen["mean"], fit.val_accuracy, seconds)


def sklearn_knn(data: ClassificationData, seed: int) -> Outcome:
    (train_x, train_y), (val_x, val_y) = arrays(data)
    started = time.perf_counter()
    grid = {"metric": list(SKLEARN_METRICS.values()), "n_neighbors": list(CANDIDATE_K)}
    search = GridSearchCV(KNeighborsClassifier(), grid,
                          cv=StratifiedKFold(FOLDS, shuffle=True, random_state=seed))
    search.fit(train_x, train_y)
    val_accuracy = float(search.score(val_x, val_y))
    seconds = time.perf_counter() - started
    distance = {v: k for k, v in SKLEARN_METRICS.items()}[search.best_params_["metric"]]
    return Outcome(f"k={search.best_params_['n_neighbors']} {distance}",
                   float(search.best_score_), val_accuracy, seconds)


LINEAR_ARGS = ["--model", "linear", "--device", "cpu", "-q"]  # the defaults


def cvtool_linear(loss: str) -> Side:
    def side(data: ClassificationData, seed: int) -> Outcome:
        with tempfile.TemporaryDirectory() as run_dir:
            started = time.perf_counter()
            env = Environment(stdout=io.StringIO(), stderr=io.StringIO())
            code = run_cli(["train", "classify", "--data", "digits", "--loss", loss, "--seed",
                            str(seed), *LINEAR_ARGS, "-o", str(Path(run_dir) / "run")], env)
            seconds = time.perf_counter() - started
            assert code == 0, env.stderr.getvalue()
            summary = json.loads(env.stdout.getvalue())
        return Outcome(f"{loss}, defaults", None, summary["val_accuracy"], seconds)
    return side


def sklearn_linear(model: Callable[[], object], label: str) -> Side:
    def side(data: ClassificationData, seed: int) -> Outcome:
        (train_x, train_y), (val_x, val_y) = arrays(data)
        started = time.perf_counter()
        fitted = model().fit(train_x, train_y)
        val_accuracy = float(fitted.score(val_x, val_y))
        return Outcome(label, None, val_accuracy, time.perf_counter() - started)
    return side


PAIRS: list[tuple[str, Side, Side]] = [
    ("knn", cvtool_knn, sklearn_knn),
    ("linear svm", cvtool_linear("svm"), sklearn_linear(LinearSVC, "LinearSVC")),
    ("softmax", cvtool_linear("ce"),
     sklearn_linear(lambda: LogisticRegression(max_iter=2000), "LogReg")),
]


def arrays(data: ClassificationData) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """(train, val) as flat float arrays and labels, exactly the inputs cvtool's side sees."""
    return tuple((x.flatten(1).numpy(), y.numpy())
                 for x, y in (stacked(data.train), stacked(data.val)))


def describe(side: str, outcome: Outcome) -> str:
    return (f"  {side:<8} {outcome.chosen:<10} cv {_score(outcome.cv_accuracy)}  "
            f"val {outcome.val_accuracy:.4f}  {outcome.seconds:6.2f} s")


def _score(value: float | None) -> str:
    return "  -   " if value is None else f"{value:.4f}"


def main() -> None:
    seed = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    data = load_classification_data("digits", seed=seed)
    print(f"digits, seed {seed}: {len(data.train)} train, {len(data.val)} val, {FOLDS}-fold CV; "
          f"{machine_line()}")
    for name, ours, theirs in PAIRS:
        cvtool_side, sklearn_side = ours(data, seed), theirs(data, seed)
        print(name)
        print(describe("cvtool", cvtool_side))
        print(describe("sklearn", sklearn_side))
        val_diff = cvtool_side.val_accuracy - sklearn_side.val_accuracy
        cv_diff = (None if cvtool_side.cv_accuracy is None or sklearn_side.cv_accuracy is None
                   else cvtool_side.cv_accuracy - sklearn_side.cv_accuracy)
        cv_text = "  -    " if cv_diff is None else f"{cv_diff:+.4f}"
        print(f"  {'diff':<8} {'':<10} cv {cv_text} val {val_diff:+.4f}")


if __name__ == "__main__":
    main()
