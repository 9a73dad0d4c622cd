"""`cvtool train detect` and `cvtool train segment-instance`: COCO data in, a detector's run out.

Run directory: config.json; last.* and best.* cvtool checkpoints (best by val `segm_map` for
segment-instance, `bbox_map` for detect), which `cvtool detect|segment-instance --model RUN_DIR`
loads; state/ (resume); metrics.jsonl (per epoch: losses, lr, pycocotools AP figures);
metrics.json; curves.png. The summary also goes to stdout as one JSON line.

The learning rate is a pure function of the iteration (linear warm-up, then the per-epoch
schedule), the shuffling generator is seeded per epoch and the global RNG (augmentation) is in the
saved state, so a resumed run retraces an uninterrupted one.
"""

from __future__ import annotations

import io
import json
import math
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

# Imported only once a training command runs, never by the CLI's start-up.
import torch  # noqa: TID253
from torch import nn  # noqa: TID253
from torch.utils.data import DataLoader  # noqa: TID253

from cvtool import coco
from cvtool.checkpoint import build_architecture, save_checkpoint
from cvtool.context import Environment
from cvtool.device import autocast, precision_warning, resolve_device, seed_everything, set_threads
from cvtool.models.detection import freeze_batch_norms
from cvtool.models.weights import state_dict_for
from cvtool.registry import get_spec
from cvtool.runner import versions
from cvtool.status import ExitStatus, UsageError
from cvtool.tasks.detect import detections_of
from cvtool.train.config import SMALL_DETECTOR, DetectionConfig
from cvtool.train.detection_data import (
    CocoDataset,
    CocoSplit,
    DetectionData,
    collate,
    load_detection_data,
)
from cvtool.train.loop import grad_scaler, optimizer_step, set_lr
from cvtool.train.optim import lr_factor, make_optimizer, warmup_factor
from cvtool.train.progress import EpochProgress
from cvtool.train.report import write_curves
from cvtool.train.state import (
    CONFIG,
    TrainingState,
    load_state,
    prepare_run_dir,
    save_state,
    write_metrics_lines,
)
from cvtool.writers import write_json

SMALL_BUILDER = "cvtool.models.small_detection:small_rcnn"
EVAL_BATCH = 8
# The figures of each epoch (metrics.jsonl) and of the summary, from pycocotools' stats.
FIGURES = {"map": "AP", "map50": "AP50", "map75": "AP75"}
PANELS = (("loss", ("train_loss",)),
          ("val mAP", ("bbox_map", "bbox_map50", "segm_map", "segm_map50")))


def train_detection(env: Environment, config: DetectionConfig | None, run_dir: Path,
                    resume: bool, force: bool, device: str, threads: int | None) -> ExitStatus:
    """Train (or, with `resume`, continue) the run in `run_dir`; print its summary."""
    target = resolve_device(device)
    set_threads(threads)
    prepare_run_dir(run_dir, resume, force)
    if resume:
        config = DetectionConfig.from_dict(json.loads((run_dir / CONFIG).read_text())["config"])
    assert config is not None  # the CLI passes one for every new run
    if warning := precision_warning(target, config.precision):
        env.warn(warning)
    data = load_detection_data(config.data, config.masks, env.warn)
    seed_everything(config.seed)
    module, architecture = build_detection_model(config, data.classes, env)
    meta = {"task": config.task, "architecture": architecture, "classes": data.classes,
            "preprocessing": _preprocessing(module),
            "training": {"config": config.to_dict(), "data": data.description}}
    trainer = DetectionTrainer(module, config, data, target, env)
    state = load_state(run_dir, trainer.model, trainer.optimizer) if resume else TrainingState()
    if state.epoch:
        env.log(f"resuming {run_dir} after epoch {state.epoch} of {config.epochs}")
    else:
        write_json(run_dir / CONFIG, {**meta["training"], "architecture": architecture,
                                      "command": sys.argv, "versions": versions()})
        write_metrics_lines(run_dir, [])
        env.log(f"{architecture['builder']}: {_parameters(module) / 1e6:.2f}M parameters, "
                f"{len(data.train.samples)} train and {len(data.val.samples)} val images")

    def epoch_done(state: TrainingState, improved: bool) -> None:
        _save_epoch(run_dir, trainer, state, meta, improved)
        row = state.history[-1]
        figures = ", ".join(f"{key} {row[key]:.4f}" for key in trainer.figure_keys)
        env.log(f"epoch {row['epoch']}/{config.epochs}: train loss {row['train_loss']:.4f}, "
                f"{figures}")

    with EpochProgress(env, config.epochs, state.epoch, len(data.train.samples),
                       config.batch_size) as bar:
        state = trainer.fit(state, epoch_done, bar.advance)
    summary = _summary(run_dir, state, trainer, data)
    env.stdout.write(json.dumps(summary) + "\n")
    env.stdout.flush()
    return ExitStatus.SUCCESS


def build_detection_model(config: DetectionConfig, classes: list[str],
                          env: Environment) -> tuple[nn.Module, dict[str, Any]]:
    """The detector to train and the `architecture` its checkpoints record."""
    size = {key: value for key, value in
            (("min_size", config.min_size), ("max_size", config.max_size)) if value is not None}
    if config.model == SMALL_DETECTOR:
        kwargs = {"num_classes": len(classes), "masks": config.masks, "width": config.width,
                  **size}
        architecture = {"builder": SMALL_BUILDER, "kwargs": kwargs}
        return build_architecture({"architecture": architecture}), architecture
    spec = get_spec(config.model)
    if spec.source != "torchvision" or spec.task not in ("detect", "segment-instance"):
        raise UsageError(f"--model {config.model} is a {spec.task} model; train {config.task} "
                         f"takes `small` or a torchvision detector (`cvtool models detect`)")
    if config.masks and spec.task != "segment-instance":
        raise UsageError(f"--model {config.model} predicts no masks; train segment-instance "
                         "takes `small` or a Mask R-CNN (`cvtool models segment-instance`)")
    if spec.name.startswith("keypointrcnn"):
        raise UsageError(f"--model {spec.name} needs keypoint annotations, which COCO "
                         "instances files do not have")
    kwargs = {"num_classes": len(classes), "weights": None, "weights_backbone": None, **size}
    architecture = {"builder": spec.builder, "kwargs": kwargs}
    module = build_architecture({"architecture": architecture})
    if config.weights != "none":
        path, state = state_dict_for(spec, config.weights, env.offline)
        freeze_batch_norms(module, state)
        kept = load_fitting(module, state)
        env.log(f"fine-tuning from {path}: {kept} of {len(module.state_dict())} tensors loaded, "
                "the rest (class-specific heads) start fresh")
    return module, architecture


def load_fitting(module: nn.Module, state: Mapping[str, torch.Tensor]) -> int:
    """Load the tensors of `state` whose name and shape fit; return how many did."""
    own = module.state_dict()
    fitting = {key: value for key, value in state.items()
               if key in own and own[key].shape == value.shape}
    if not fitting:
        raise UsageError("the weights file shares no tensor with the model: wrong architecture")
    module.load_state_dict(fitting, strict=False)
    return len(fitting)


class DetectionTrainer:
    def __init__(self, model: nn.Module, config: DetectionConfig, data: DetectionData,
                 device: torch.device, env: Environment) -> None:
        self.model, self.config, self.data, self.device = model.to(device), config, data, device
        self.env = env
        trainable = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(config.optimizer, trainable, config.resolved_lr,
                                        config.weight_decay)
        self.scaler = grad_scaler(device, config.precision)
        self.train_set = CocoDataset(data.train, config.masks, config.augment, config.vflip)
        self.iou_types = ("bbox", "segm") if config.masks else ("bbox",)
        self.figure_keys = [f"{kind}_{name}" for kind in self.iou_types for name in FIGURES]
        self.score_key = "segm_map" if config.masks else "bbox_map"

    def fit(self, state: TrainingState, epoch_done: Callable[[TrainingState, bool], None],
            batch_done: Callable[[], None]) -> TrainingState:
        for epoch in range(state.epoch + 1, self.config.epochs + 1):
            started = time.perf_counter()
            losses = self._train_epoch(epoch, batch_done)
            figures = self.evaluate(self.model, self.data.val)
            improved = figures[self.score_key] > state.best_score
            if improved:
                state.best_epoch, state.best_score = epoch, figures[self.score_key]
            state.epoch = epoch
            state.history.append({"epoch": epoch, **losses, **figures,
                                  "seconds": round(time.perf_counter() - started, 3)})
            epoch_done(state, improved)
        return state

    def _train_epoch(self, epoch: int, batch_done: Callable[[], None]) -> dict[str, float]:
        config = self.config
        generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
        loader = DataLoader(self.train_set, batch_size=config.batch_size, shuffle=True,
                            generator=generator, collate_fn=collate)
        self.model.train()
        totals: dict[str, float] = {}
        first_step = (epoch - 1) * len(loader)
        base = config.resolved_lr * lr_factor(config.schedule, epoch - 1, config.epochs)
        for index, (images, targets) in enumerate(loader):
            lr = base * warmup_factor(first_step + index, config.warmup)
            set_lr(self.optimizer, lr)
            images = [image.to(self.device) for image in images]
            targets = [{key: value.to(self.device) for key, value in target.items()}
                       for target in targets]
            with autocast(self.device, config.precision):
                parts = self.model(images, targets)
            loss = sum(part.float() for part in parts.values())
            if not math.isfinite(loss.item()):
                raise UsageError(f"the training loss became {loss.item()} in epoch {epoch}; "
                                 f"lower --lr (now {config.resolved_lr}) or raise --warmup")
            optimizer_step(self.optimizer, self.scaler, loss)
            for key, value in {"train_loss": loss, **parts}.items():
                totals[key] = totals.get(key, 0.0) + float(value.detach()) * len(images)
            batch_done()
        seen = len(self.train_set)
        return {"lr": lr, **{key: value / seen for key, value in totals.items()}}

    @torch.no_grad()
    def evaluate(self, module: nn.Module, split: CocoSplit) -> dict[str, float]:
        """pycocotools' AP figures on `split`, with every detection the model keeps."""
        module.eval()
        results: list[dict[str, Any]] = []
        dataset = CocoDataset(split, masks=False, augment=False, vflip=False)
        for start in range(0, len(dataset), EVAL_BATCH):
            indices = range(start, min(start + EVAL_BATCH, len(dataset)))
            images = [dataset[i][0].to(self.device) for i in indices]
            with autocast(self.device, self.config.precision):
                outputs = module(images)
            for i, output in zip(indices, outputs):
                detections = detections_of(output, self.data.classes, 0.0, None,
                                           self.config.masks)
                image_id = split.samples[i].image_id
                results += [coco.as_result(d, image_id, {}) for d in detections]
        ids = [sample.image_id for sample in split.samples]
        report = io.StringIO()  # pycocotools' table; the figures go to metrics.jsonl
        metrics = coco.evaluate(split.ground_truth, results, ids, self.iou_types, report)
        return {f"{kind}_{name}": metrics[kind][stat]
                for kind in self.iou_types for name, stat in FIGURES.items()}


def _preprocessing(module: nn.Module) -> dict[str, Any]:
    """What torchvision's detector does to an image inside the model (recorded, not applied)."""
    transform = module.transform
    return {"inside_model": True, "min_size": list(transform.min_size),
            "max_size": transform.max_size, "mean": list(transform.image_mean),
            "std": list(transform.image_std)}


def _parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _save_epoch(run_dir: Path, trainer: DetectionTrainer, state: TrainingState,
                meta: dict[str, Any], improved: bool) -> None:
    """last and best checkpoints first, then the state that commits the epoch."""
    epoch_meta = {**meta, "training": {**meta["training"], "epoch": state.epoch,
                                       "metrics": state.history[-1]}}
    weights = trainer.model.state_dict()
    save_checkpoint(run_dir / "last.safetensors", weights, epoch_meta)
    if improved:
        save_checkpoint(run_dir / "best.safetensors", weights, epoch_meta)
    save_state(run_dir, state, trainer.model, trainer.optimizer)


def _summary(run_dir: Path, state: TrainingState, trainer: DetectionTrainer,
             data: DetectionData) -> dict[str, Any]:
    """The best epoch's val figures (what best.* scores), written as metrics.json."""
    write_curves(run_dir, state.history, PANELS)
    best = next(row for row in state.history if row["epoch"] == state.best_epoch)
    summary = {"run_dir": str(run_dir), **{key: best[key] for key in trainer.figure_keys},
               "val_images": len(data.val.samples), "best_epoch": state.best_epoch,
               "epochs": state.epoch, "parameters": _parameters(trainer.model),
               "final_train_loss": state.history[-1]["train_loss"],
               "train_seconds": round(sum(row["seconds"] for row in state.history), 3)}
    write_json(run_dir / "metrics.json", summary)
    return summary
