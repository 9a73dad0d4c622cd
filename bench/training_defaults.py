"""Sweep the course models' training settings on digits across split seeds (issue 19's first
step: defaults chosen from measurements, not from one split).

Each setting trains `cvtool train classify --data digits --model M ...` in this process (the
real CLI, `run_cli`) once per split seed (`--seed` seeds the stratified 80/20 split, the init
and the shuffling alike) and reports the mean, the worst and the spread of val accuracy, beside
scikit-learn's LogisticRegression / LinearSVC on the same splits for the linear models. The
first row of each model is cvtool's current defaults.
Usage, from the repository root:
    PYTHONPATH=. python bench/training_defaults.py [--models linear-ce,linear-svm,mlp,cnn]
                                                    [--seeds 0-24 | 0,1,2]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
from pathlib import Path

from common import machine_line
from digits_vs_sklearn import arrays
from sklearn.linear_model import LogisticRegression
from sklearn.svm import LinearSVC

from cvtool.cli.app import run_cli
from cvtool.core.context import Environment
from cvtool.data.classification import load_classification_data

# Per model: the options every row shares, then the settings compared: today's defaults (the
# recipes in cvtool.train.config.RECIPES) first, then the defaults before the sweep, spelt out.
OLD = ["--epochs", "10", "--schedule", "constant", "--lr", "0.001"]
GRIDS: dict[str, tuple[list[str], list[list[str]]]] = {
    "linear-ce": (["--model", "linear", "--loss", "ce"], [
        [], [*OLD, "--reg", "none"], ["--epochs", "50", "--reg", "none"],
        ["--epochs", "100", "--reg", "none"], ["--epochs", "100", "--reg-strength", "0.001"],
        ["--epochs", "100", "--lr", "0.03", "--reg", "none"]]),
    "linear-svm": (["--model", "linear", "--loss", "svm"], [
        [], [*OLD, "--reg", "none"], ["--epochs", "50", "--reg", "none"]]),
    "mlp": (["--model", "mlp"], [
        [], [*OLD, "--dropout", "0", "--width", "32"],
        ["--width", "32", "--dropout", "0.1"], ["--width", "32", "--dropout", "0.2"],
        ["--width", "32", "--epochs", "100", "--dropout", "0.2"],
        ["--epochs", "100", "--dropout", "0.3"]]),
    "cnn": (["--model", "cnn"], [
        [], [*OLD, "--no-batch-norm"], ["--epochs", "30", "--no-batch-norm"]]),
}
SKLEARN = {"linear-ce": ("LogisticRegression", lambda: LogisticRegression(max_iter=1000)),
           "linear-svm": ("LinearSVC", LinearSVC)}


def cvtool_accuracy(options: list[str], seed: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        env = Environment(stdout=io.StringIO(), stderr=io.StringIO())
        code = run_cli(["train", "classify", "--data", "digits", *options, "--seed", str(seed),
                        "--device", "cpu", "-q", "-o", str(Path(tmp) / "run")], env)
        if code != 0:
            raise SystemExit(f"cvtool {' '.join(options)} failed: {env.stderr.getvalue()}")
        return float(json.loads(env.stdout.getvalue())["val_accuracy"])


def sklearn_accuracy(model: str, seed: int) -> float:
    data = load_classification_data("digits", seed=seed)
    (train_x, train_y), (val_x, val_y) = arrays(data)  # the inputs cvtool's side sees
    return float(SKLEARN[model][1]().fit(train_x, train_y).score(val_x, val_y))


def row(label: str, scores: list[float], reference: list[float] | None = None) -> str:
    line = (f"  {label:<62} mean {statistics.mean(scores):.4f}  worst {min(scores):.4f}  "
            f"spread {max(scores) - min(scores):.4f}")
    if reference:  # per split against scikit-learn: the goal is >= on every one
        margins = [ours - theirs for ours, theirs in zip(scores, reference)]
        line += (f"  vs scikit-learn: worst {min(margins):+.4f}, below on "
                 f"{sum(margin < 0 for margin in margins)}/{len(margins)}")
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(GRIDS))
    parser.add_argument("--seeds", default="0-24", help="a range A-B or a list A,B,...")
    args = parser.parse_args()
    if "-" in args.seeds:
        first, last = map(int, args.seeds.split("-"))
        seeds = list(range(first, last + 1))
    else:
        seeds = [int(seed) for seed in args.seeds.split(",")]
    print(f"digits, split seeds {seeds}; {machine_line()}")
    for model in args.models.split(","):
        shared, settings = GRIDS[model]
        print(model)
        reference = None
        if model in SKLEARN:
            reference = [sklearn_accuracy(model, seed) for seed in seeds]
            print(row(f"scikit-learn {SKLEARN[model][0]}", reference), flush=True)
        for setting in settings:
            scores = [cvtool_accuracy([*shared, *setting], seed) for seed in seeds]
            label = " ".join(setting) or "(defaults)"
            print(row(label, scores, reference), flush=True)


if __name__ == "__main__":
    sys.exit(main())
