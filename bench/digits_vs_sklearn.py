"""cvtool's classical learners beside scikit-learn's, on the same digits split and the same folds.

Both sides get `load_classification_data("digits")`: the seeded stratified 80/20 split, inputs
flattened after cvtool's normalisation. Each picks its hyperparameters by 5-fold stratified CV on
train alone (the same StratifiedKFold), then is scored once on val. PAIRS is the list to extend:
(name, cvtool side, scikit-learn side), each side a function (data, seed) -> Outcome.
Usage, from the repository root: PYTHONPATH=. python bench/digits_vs_sklearn.py [SEED]
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier

from cvtool.train.data import ClassificationData, load_classification_data
from cvtool.train.knn import CANDIDATE_K, fit_knn, stacked

FOLDS = 5
SKLEARN_METRICS = {"l1": "manhattan", "l2": "euclidean"}  # in cvtool's grid order


@dataclass
class Outcome:
    chosen: str  # the hyperparameters CV picked
    cv_accuracy: float  # mean over folds, for the chosen ones
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


PAIRS: list[tuple[str, Side, Side]] = [
    ("knn", cvtool_knn, sklearn_knn),
]


def arrays(data: ClassificationData) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """(train, val) as flat float arrays and labels, exactly the inputs cvtool's side sees."""
    return tuple((x.flatten(1).numpy(), y.numpy())
                 for x, y in (stacked(data.train), stacked(data.val)))


def describe(side: str, outcome: Outcome) -> str:
    return (f"  {side:<8} {outcome.chosen:<10} cv {outcome.cv_accuracy:.4f}  "
            f"val {outcome.val_accuracy:.4f}  {outcome.seconds:6.2f} s")


def main() -> None:
    seed = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    data = load_classification_data("digits", seed=seed)
    print(f"digits, seed {seed}: {len(data.train)} train, {len(data.val)} val, {FOLDS}-fold CV")
    for name, ours, theirs in PAIRS:
        cvtool_side, sklearn_side = ours(data, seed), theirs(data, seed)
        print(name)
        print(describe("cvtool", cvtool_side))
        print(describe("sklearn", sklearn_side))
        print(f"  {'diff':<8} {'':<10} cv {cvtool_side.cv_accuracy - sklearn_side.cv_accuracy:+.4f}"
              f"  val {cvtool_side.val_accuracy - sklearn_side.val_accuracy:+.4f}")


if __name__ == "__main__":
    main()
