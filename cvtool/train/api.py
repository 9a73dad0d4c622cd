"""Training from Python: `cvtool.train_classify(data=..., output=..., model=..., ...)` and one
function per task, taking exactly the options of `cvtool train TASK`.

(Per-task functions, not `cvtool.train(...)`: `cvtool.train` is this package.)
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import os
from pathlib import Path
from typing import Any

from cvtool.core.context import Environment, activated
from cvtool.core.status import UsageError
from cvtool.train import config as configs

TRAINERS = {
    "classify": ("ClassifyConfig", "cvtool.train.run:train_classify"),
    "detect": ("DetectionConfig", "cvtool.train.detection_run:train_detection"),
    "segment-instance": ("DetectionConfig", "cvtool.train.detection_run:train_detection"),
    "segment-semantic": ("SemanticConfig", "cvtool.train.semantic_run:train_semantic"),
    "generate": ("GenerateConfig", "cvtool.train.generate_run:train_generate"),
}


def train(task: str, *, data: str | None = None, output: str | os.PathLike | None = None,
          resume: str | os.PathLike | None = None, force: bool = False, device: str = "auto",
          threads: int | None = None, quiet: bool = True, **options: Any) -> dict[str, Any]:
    """Train as `cvtool train TASK` does (exposed per task: `cvtool.train_classify(...)`, ...),
    with the same options as keyword arguments (`_` for `-`), into the run directory `output`
    (or continue the run `resume`); returns the summary the CLI prints (metrics.json). Logs
    and progress go to stderr unless `quiet`."""
    if task not in TRAINERS:
        raise UsageError(f"unknown task {task!r}; expected one of {', '.join(TRAINERS)}")
    config_name, runner = TRAINERS[task]
    config_type = getattr(configs, config_name)
    if resume is not None:
        if data is not None or output is not None or set(options) - {"epochs"}:
            raise UsageError("resume takes its settings from the run's config.json; give only "
                             "epochs (to extend it)")
        run_dir, config = Path(resume), ({"epochs": options["epochs"]} if "epochs" in options
                                         else None)
    elif data is None or output is None:
        raise UsageError("give data and output for a new run, or resume=RUN_DIR")
    else:
        if config_type is configs.DetectionConfig:
            options["task"] = task
        known = {field.name for field in dataclasses.fields(config_type)}
        if unknown := sorted(set(options) - known):
            raise UsageError(f"unknown option(s) for train {task}: {', '.join(unknown)}")
        run_dir, config = Path(output), config_type(data=str(data), **options)
    module, function = runner.split(":")
    trainer = getattr(importlib.import_module(module), function)
    env = Environment(quiet=quiet)
    with activated(env):
        return trainer(env, config, run_dir, resume is not None, force, device, threads)


def _for_task(task: str) -> Any:
    trainer = functools.partial(train, task)
    trainer.__doc__ = f"`cvtool train {task}` from Python; see `cvtool.train.api.train`."
    return trainer


train_classify = _for_task("classify")
train_detect = _for_task("detect")
train_segment_instance = _for_task("segment-instance")
train_segment_semantic = _for_task("segment-semantic")
train_generate = _for_task("generate")
