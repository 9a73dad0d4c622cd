"""`cvtool train detect` and `cvtool train segment-instance`: COCO data in, a detector's run out.

Run directory: config.json; last.* and best.* cvtool checkpoints (best by val `bbox_map` for
detect, the mean of `bbox_map` and `segm_map` for segment-instance), which
`cvtool detect|segment-instance --model RUN_DIR` loads; state/ (resume); metrics.jsonl (per
epoch: losses, lr, pycocotools AP figures); metrics.json; curves.png. The summary also goes to
stdout as one JSON line.

The learning rate is a pure function of the iteration (linear warm-up, then the per-epoch
schedule), the shuffling generator is seeded per epoch and the global RNG (augmentation) is in the
saved state, so a resumed run retraces an uninterrupted one.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cvtool.core.context import Environment
from cvtool.core.device import autocast, seed_everything
from cvtool.core.status import UsageError
from cvtool.data.detection import (
    CocoDataset,
    DetectionData,
    collate,
    load_detection_data,
)
from cvtool.io import coco
from cvtool.models.checkpoint import build_architecture
from cvtool.models.detection import detections_of, freeze_batch_norms
from cvtool.models.registry import get_spec
from cvtool.models.weights import load_fitting, state_dict_for
from cvtool.train.config import SMALL_DETECTOR, DetectionConfig
from cvtool.train.loop import EpochTrainer, IterationSettings
from cvtool.train.session import finish_run, parameters, start_run, train_epochs

SMALL_BUILDER = "cvtool.models.small_detection:small_rcnn"
EVAL_BATCH = 8
# The figures of each epoch (metrics.jsonl) and of the summary, from pycocotools' stats.
FIGURES = {"map": "AP", "map50": "AP50", "map75": "AP75"}
PANELS = (("train loss", ("train_loss",)),
          ("val mAP (fraction)", ("bbox_map", "bbox_map50", "segm_map", "segm_map50")))


def train_detection(env: Environment, config: DetectionConfig | None, run_dir: Path,
                    resume: bool, force: bool, device: str, threads: int | None) -> dict[str, Any]:
    """Train (or, with `resume`, continue) the run in `run_dir`; returns its summary."""
    config, target = start_run(env, run_dir, resume, force, config, DetectionConfig, device,
                               threads)
    data = load_detection_data(config.data, config.masks, env.warn)
    seed_everything(config.seed)
    module, architecture = build_detection_model(config, data.classes, env)
    meta = {"task": config.task, "architecture": architecture, "classes": data.classes,
            "preprocessing": _preprocessing(module),
            "training": {"config": config.to_dict(), "data": data.description}}
    trainer = DetectionTrainer(module, config, data, target)
    introduction = (f"{architecture['builder']}: {parameters(module) / 1e6:.2f}M parameters, "
                    f"{len(data.train.samples)} train and {len(data.val.samples)} val images")
    state = train_epochs(env, run_dir, trainer, config, meta, (resume, force), trainer.figure_keys,
                         introduction)
    return finish_run(env, run_dir, state, PANELS, trainer.figure_keys,
                      {"val_images": len(data.val.samples), "parameters": parameters(module)})


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
        fresh = load_fitting(module, state, f"--weights {config.weights}", spec.name)
        total = len(module.state_dict())
        env.log(f"fine-tuning from {path}: {total - len(fresh)} of {total} tensors loaded, "
                "the rest (class-specific heads) start fresh")
    return module, architecture


class DetectionTrainer(EpochTrainer):
    def __init__(self, model: nn.Module, config: DetectionConfig, data: DetectionData,
                 device: torch.device) -> None:
        settings = IterationSettings(
            optimizer=config.optimizer, lr=config.resolved_lr, weight_decay=config.weight_decay,
            schedule=config.schedule, warmup=config.warmup, epochs=config.epochs,
            batch_size=config.batch_size, seed=config.seed, precision=config.precision,
            workers=config.workers, sync_bn=config.sync_bn)
        train_set = CocoDataset(data.train, config.masks, config.augment, config.vflip)
        super().__init__(model, settings, device, train_set, collate)
        self.data, self.masks = data, config.masks
        self.iou_types = ("bbox", "segm") if config.masks else ("bbox",)
        self.figure_keys = [f"{kind}_{name}" for kind in self.iou_types for name in FIGURES]
        # The best epoch: bbox mAP, and with masks the mean of bbox and segm mAP (segm alone
        # can prefer an epoch whose boxes are clearly worse).
        self.score_key = "score"

    def losses(self, batch: tuple[list, list]) -> dict[str, torch.Tensor]:
        """torchvision's five losses (four without masks) and their sum."""
        images = [image.to(self.device) for image in batch[0]]
        targets = [{key: value.to(self.device) for key, value in target.items()}
                   for target in batch[1]]
        parts = self.train_module(images, targets)
        return {"loss": sum(part.float() for part in parts.values()), **parts}

    @torch.no_grad()
    def evaluate(self, module: nn.Module) -> dict[str, float]:
        """pycocotools' AP figures on the val split, with every detection the model keeps."""
        module.eval()
        split = self.data.val
        results: list[dict[str, Any]] = []
        dataset = CocoDataset(split, masks=False, augment=False, vflip=False)
        for start in range(0, len(dataset), EVAL_BATCH):
            indices = range(start, min(start + EVAL_BATCH, len(dataset)))
            images = [dataset[i][0].to(self.device) for i in indices]
            with autocast(self.device, self.settings.precision):
                outputs = module(images)
            for i, output in zip(indices, outputs):
                detections = detections_of(output, self.data.classes, 0.0, None, self.masks)
                image_id = split.samples[i].image_id
                results += [coco.as_result(d, image_id, {}) for d in detections]
        ids = [sample.image_id for sample in split.samples]
        report = io.StringIO()  # pycocotools' table; the figures go to metrics.jsonl
        metrics = coco.evaluate(split.ground_truth, results, ids, self.iou_types, report)
        figures = {f"{kind}_{name}": metrics[kind][stat]
                   for kind in self.iou_types for name, stat in FIGURES.items()}
        figures["score"] = sum(figures[f"{kind}_map"] for kind in self.iou_types) / len(
            self.iou_types)
        return figures


def _preprocessing(module: nn.Module) -> dict[str, Any]:
    """What torchvision's detector does to an image inside the model (recorded, not applied)."""
    transform = module.transform
    return {"inside_model": True, "min_size": list(transform.min_size),
            "max_size": transform.max_size, "mean": list(transform.image_mean),
            "std": list(transform.image_std)}
