"""`--plot FILE.png`: per case, one bar per series (device, threads, dtype): the speedup over
the CPU where an accelerator ran, else the share of this CPU's peak each case reached; and
TFLOP/s."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cvtool.devicebench.runner import BenchResult
from cvtool.io.figures import new_figure, save_figure


def _series(results: list[BenchResult], metric: str) -> dict[str, dict[str, float]]:
    """{"cuda float16": {case: value}} for the results that have `metric` and passed."""
    series: dict[str, dict[str, float]] = {}
    for r in results:
        value = getattr(r, metric)
        if r.ok and value is not None:
            label = f"{r.device}{f':{r.threads}t' if r.threads else ''} {r.dtype}"
            series.setdefault(label, {})[r.case] = value
    return dict(sorted(series.items(), key=lambda item: item[0].split()[::-1]))  # by dtype


def _bars(axes: Any, series: dict[str, dict[str, float]], cases: list[str], ylabel: str,
          log: bool = True) -> None:
    width = 0.8 / max(len(series), 1)
    for i, (label, values) in enumerate(series.items()):
        xs = [c + i * width for c, case in enumerate(cases) if case in values]
        axes.bar(xs, [values[case] for case in cases if case in values], width, label=label)
    if log:
        axes.set_yscale("log")
    axes.set_ylabel(ylabel)
    axes.set_xticks([c + 0.4 - width / 2 for c in range(len(cases))], cases, rotation=60,
                    ha="right", fontsize=7)
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    axes.grid(axis="y", which="both", alpha=0.3)


def _peak_label() -> str:
    """The peak's clock: a VM's /proc/cpuinfo gives the base clock, which turbo passes (bars
    over 100% then mean that, not a wrong measurement)."""
    from cvtool.devicebench.peaks import read_cpuinfo

    cpu = read_cpuinfo()
    if cpu.mhz is None:
        return "% of this CPU's peak"
    label = f"% of this CPU's peak at {cpu.mhz / 1000:.2f} GHz"
    if cpu.mhz_source.startswith("/proc"):
        label += "\n(its base clock: turbo can pass 100%)"
    return label


def write_plot(results: list[BenchResult], path: Path, title: str) -> None:
    cases = list(dict.fromkeys(r.case for r in results))
    figure, (top, bottom) = new_figure(2, 1, (max(10.0, 0.45 * len(cases)), 10))
    speedups = {k: v for k, v in _series(results, "speedup").items() if not k.startswith("cpu")}
    if speedups:
        _bars(top, speedups, cases, "speedup over CPU (x)")
    else:  # CPU only: every speedup is 1.0; how close each case came to the peak says more
        _bars(top, _series(results, "pct_of_peak"), cases, _peak_label(), log=False)
        top.axhline(100, color="0.35", linestyle="--", linewidth=1)
    _bars(bottom, _series(results, "tflops"), cases, "TFLOP/s")
    figure.suptitle(title)
    save_figure(figure, path, dpi=110)
