"""`cvtool compare RUN_A RUN_B`: two scored runs over the same inputs (the released model and
the candidate, say) side by side: each metric, B's value less A's, a paired bootstrap interval
for top-1's difference, the inputs whose answer changed (records on stdout), and
`--fail-on-regression METRIC=DELTA` (exit 4 where B falls more than DELTA below A)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cvtool.core.context import Environment
from cvtool.core.results import counted, record_path, shown
from cvtool.core.status import QualityBelowBar, UsageError

BOOTSTRAP_LEVEL = 0.95


def compare(env: Environment, first: Path, second: Path, *, fmt: str | None,
            regressions: list[str], bootstrap: int, seed: int) -> int:
    from cvtool.cli.commands import resolve_format
    from cvtool.inference import runs
    from cvtool.inference.scoring import GATE_METRICS, metric_value, parse_bars
    from cvtool.io.writers import write_rows

    a, b = runs.Run(first), runs.Run(second)
    task = a.info["task"]
    if b.info["task"] != task:
        raise UsageError(f"{first} is a {task} run and {second} a {b.info['task']} run; "
                         "compare runs of one task")
    bars = parse_bars(task, regressions)  # here a bar is the largest drop allowed
    fmt = resolve_format(env, fmt, ("table", "jsonl", "csv"))
    left, right = _answers(a), _answers(b)
    common = [path for path in left if path in right]
    changed = [{"path": path, "a": left[path], "b": right[path]} for path in common
               if left[path] != right[path]]
    write_rows(env.stdout, changed, fmt, env.no_color)
    env.log(f"{counted(len(common), 'input')} in both runs, {len(changed)} answered "
            f"differently; {len(left) - len(common)} only in A, {len(right) - len(common)} "
            "only in B")
    scored = a.info.get("metrics") is not None and b.info.get("metrics") is not None
    if not scored:
        env.log("metrics: one of the runs was not scored (--eval); only answers compared")
    names = [*GATE_METRICS[task], *(name for name, _ in bars if name.startswith("class:"))]
    for name in dict.fromkeys(names) if scored else []:
        try:
            one, other = (metric_value(task, run.info["metrics"], name) for run in (a, b))
        except UsageError:
            continue
        if one is not None or other is not None:
            difference = "" if one is None or other is None else f"  {other - one:+.4f}"
            env.log(f"{name:<16} A {_shown(one)}  B {_shown(other)}{difference}")
    if bootstrap and task == "classify":
        low, high = _bootstrap_top1(a, b, common, bootstrap, seed)
        env.log(f"top1 difference, {BOOTSTRAP_LEVEL:.0%} paired bootstrap interval over "
                f"{bootstrap} resamples (seed {seed}): [{low:+.4f}, {high:+.4f}]")
    worse = []
    for name, allowed in bars if scored else []:
        one, other = (metric_value(task, run.info["metrics"], name) for run in (a, b))
        if one is None or other is None or other < one - allowed:
            worse.append(f"{name} {_shown(one)} -> {_shown(other)} (allowed drop {allowed:g})")
    if bars and not scored:
        raise UsageError("--fail-on-regression needs both runs scored (made with --eval)")
    if worse:
        raise QualityBelowBar(f"regression beyond the allowed drop: {'; '.join(worse)}")
    return 0


def _shown(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _answers(run: Any) -> dict[str, str]:
    """Each input's answer, as one string: the top-1 label (classify), the detections' labels
    (detect, segment-instance), the classes present (segment-semantic); failures read FAILED."""
    found = {}
    for _, record in run.records:
        path = record_path(record)
        if not record["ok"]:
            found[path] = "FAILED"
        elif record["task"] == "classify":
            found[path] = shown(str((record.get("predictions") or [{}])[0].get("label")))
        else:
            items = record.get("detections", record.get("classes")) or []
            found[path] = " ".join(sorted(shown(str(item.get("label"))) for item in items))
    return found


def _bootstrap_top1(a: Any, b: Any, common: list[str], resamples: int,
                    seed: int) -> tuple[float, float]:
    """The paired bootstrap percentile interval of top-1(B) - top-1(A) over the labelled
    inputs both runs answered (labels as run B's --eval read them)."""
    import numpy as np

    from cvtool.inference.scoring import LabelSource

    categories = (b.info.get("models") or [{}])[0].get("categories")
    if not categories:
        raise UsageError(f"{b.directory}: its run.json does not record the model's categories "
                         "(made by an older cvtool); --bootstrap needs them")
    labels = LabelSource(categories, _path(b.info.get("gt")), _path(b.info.get("label_map")))
    top = [{record_path(r): r for _, r in run.records} for run in (a, b)]
    hits = []
    for path in common:
        truth = labels.index_of(path)
        answers = [run[path] for run in top]
        if truth is None or not all(r["ok"] for r in answers):
            continue
        hits.append([r["predictions"][0]["index"] == truth for r in answers])
    if not hits:
        raise UsageError("--bootstrap: no labelled input that both runs classified")
    correct = np.asarray(hits, dtype=np.float64)
    generator = np.random.default_rng(seed)
    samples = generator.integers(0, len(correct), size=(resamples, len(correct)))
    differences = correct[samples, 1].mean(1) - correct[samples, 0].mean(1)
    tail = (1 - BOOTSTRAP_LEVEL) / 2 * 100
    low, high = np.percentile(differences, [tail, 100 - tail])
    return float(low), float(high)


def _path(value: Any) -> Path | None:
    return Path(value) if isinstance(value, str) and value else None
