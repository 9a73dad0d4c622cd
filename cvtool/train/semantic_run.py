"""`cvtool train segment-semantic`: image/mask folders in, a segmenter's run out.

Models: segmentation-models-pytorch architectures (`smp:<arch>` with `--encoder`,
`--encoder-depth`, `--decoder-channels`) or torchvision's segmentation models, from scratch,
from ImageNet / COCO weights (`--weights default`) or a state-dict file. Losses: cross-entropy,
Dice and focal (smp's own implementations), or their sum, all skipping pixels marked 255. Each
epoch ends with mIoU and pixel accuracy from one confusion matrix over the val split (the same
`ConfusionMatrix` that `segment-semantic --eval` fills); best.* is the epoch with the highest mIoU.
Checkpoints carry the meta `cvtool segment-semantic --model RUN_DIR` reads (see
cvtool/models/segmentation.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from cvtool.core.confusion import ConfusionMatrix
from cvtool.core.context import Environment
from cvtool.core.device import autocast, seed_everything
from cvtool.core.status import UsageError
from cvtool.data.semantic import (
    IGNORE_INDEX,
    SemanticData,
    SemanticDataset,
    load_semantic_data,
)
from cvtool.models.checkpoint import build_architecture
from cvtool.models.registry import get_spec, resolve_reference
from cvtool.train import distributed
from cvtool.train.config import SemanticConfig
from cvtool.train.loop import EpochTrainer, IterationSettings, batches, data_loader
from cvtool.train.session import finish_run, parameters, start_run, train_epochs

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
FIGURES = ["miou", "pixel_accuracy"]
PANELS = (("train loss", ("train_loss",)), ("val (fraction)", ("miou", "pixel_accuracy")))


def train_semantic(env: Environment, config: SemanticConfig | None, run_dir: Path,
                   resume: bool, force: bool, device: str, threads: int | None) -> dict[str, Any]:
    """Train (or, with `resume`, continue) the run in `run_dir`; returns its summary."""
    config, target = start_run(env, run_dir, resume, force, config, SemanticConfig, device, threads)
    data = load_semantic_data(config.data, config.image_size, env.warn)
    seed_everything(config.seed)
    module, architecture, (mean, std) = build_semantic_model(config, len(data.classes), env)
    preprocessing = {"resize_size": list(data.size) if config.image_size else None,
                     "mean": mean, "std": std, "interpolation": "bilinear"}
    meta = {"task": "segment-semantic", "architecture": architecture, "classes": data.classes,
            "preprocessing": preprocessing,
            "training": {"config": config.to_dict(), "data": data.description}}
    trainer = SemanticTrainer(module, config, data, target, mean, std)
    introduction = (f"{architecture['builder']}: {parameters(module) / 1e6:.2f}M parameters, "
                    f"{len(data.train)} train and {len(data.val)} val images of "
                    f"{data.size[1]}x{data.size[0]}")
    state = train_epochs(env, run_dir, trainer, config, meta, (resume, force), FIGURES,
                         introduction)
    best = next(row for row in state.history if row["epoch"] == state.best_epoch)
    return finish_run(env, run_dir, state, PANELS, FIGURES,
                      {"per_class_iou": dict(zip(data.classes, best["per_class_iou"])),
                       "val_images": len(data.val), "parameters": parameters(module)})


def build_semantic_model(config: SemanticConfig, num_classes: int, env: Environment
                         ) -> tuple[nn.Module, dict[str, Any], tuple[list[float], list[float]]]:
    """The model to train, the `architecture` its checkpoints record, and its mean/std."""
    spec = get_spec(config.model)
    if spec.task != "segment-semantic" or spec.source not in ("smp", "torchvision"):
        raise UsageError(f"--model {config.model} is a {spec.task} model; train "
                         "segment-semantic takes smp:<arch> or a torchvision segmentation model "
                         "(`cvtool models segment-semantic`)")
    if spec.source == "smp":
        from cvtool.models.segmentation import check_encoder

        check_encoder(config.encoder)
        kwargs: dict[str, Any] = {"encoder_name": config.encoder, "encoder_weights": None,
                                  "encoder_depth": config.encoder_depth, "classes": num_classes}
        if config.decoder_channels is not None:
            kwargs["decoder_channels"] = list(config.decoder_channels)
    else:
        kwargs = {"num_classes": num_classes, "weights": None, "weights_backbone": None,
                  "aux_loss": False}
    architecture = {"builder": spec.builder, "kwargs": kwargs}
    module = build_architecture({"architecture": architecture})
    if spec.source == "smp" and config.encoder_depth < 5:  # its deeper stages stay unused
        setattr(module, distributed.UNUSED_PARAMETERS, True)
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    if config.weights != "none":
        mean, std = _load_pretrained(module, spec, config, env)
    return module, architecture, (list(mean), list(std))


def _load_pretrained(module: nn.Module, spec: Any, config: SemanticConfig,
                     env: Environment) -> tuple[list[float], list[float]]:
    """Fine-tuning: every tensor of the weights whose name and shape fit; the mean/std they
    were trained with."""
    from cvtool.models import segmentation
    from cvtool.models.weights import load_fitting, state_dict_for

    if config.weights == "default" and spec.source == "smp":
        from segmentation_models_pytorch.encoders import get_encoder

        encoder = segmentation.fetch_pretrained(  # the encoder's ImageNet weights, via smp's API
            lambda: get_encoder(config.encoder, weights="imagenet",
                                depth=config.encoder_depth), spec, config.encoder, env.offline)
        state = {f"encoder.{key}": value for key, value in encoder.state_dict().items()}
        source = f"{config.encoder}'s ImageNet weights"
        mean, std = segmentation.encoder_normalisation(config.encoder, env.offline, env.warn)
    else:
        path, state = state_dict_for(spec, config.weights, env.offline)
        source, mean, std = str(path), IMAGENET_MEAN, IMAGENET_STD
        if spec.source == "torchvision":
            default = resolve_reference(spec.weights).transforms()
            mean, std = list(default.mean), list(default.std)
    fresh = load_fitting(module, state, f"--weights {config.weights}", spec.name)
    total = len(module.state_dict())
    env.log(f"fine-tuning from {source}: {total - len(fresh)} of {total} tensors loaded, "
            "the rest start fresh")
    return list(mean), list(std)


def semantic_loss(name: str) -> Any:
    """`ce`, `dice`, `focal` or a '+'-joined sum; pixels marked 255 count in none of them."""
    from segmentation_models_pytorch.losses import DiceLoss, FocalLoss

    terms = {"ce": lambda logits, masks: F.cross_entropy(logits, masks,
                                                         ignore_index=IGNORE_INDEX),
             "dice": DiceLoss("multiclass", ignore_index=IGNORE_INDEX),
             "focal": FocalLoss("multiclass", ignore_index=IGNORE_INDEX)}
    chosen = [terms[term] for term in name.split("+")]
    return lambda logits, masks: sum(term(logits, masks) for term in chosen)


def logits_of(module: nn.Module, images: torch.Tensor) -> torch.Tensor:
    output = module(images)
    return output["out"] if isinstance(output, dict) else output  # torchvision: {"out", "aux"}


class SemanticTrainer(EpochTrainer):
    score_key = "miou"

    def __init__(self, model: nn.Module, config: SemanticConfig, data: SemanticData,
                 device: torch.device, mean: list[float], std: list[float]) -> None:
        settings = IterationSettings(
            optimizer=config.optimizer, lr=config.resolved_lr, weight_decay=config.weight_decay,
            schedule=config.schedule, warmup=config.warmup, epochs=config.epochs,
            batch_size=config.batch_size, seed=config.seed, precision=config.precision,
            workers=config.workers, sync_bn=config.sync_bn)
        train_set = SemanticDataset(data.train, data.size, mean, std, config.augment,
                                    config.vflip)
        super().__init__(model, settings, device, train_set)
        self.val_set = SemanticDataset(data.val, data.size, mean, std, False, False)
        self.num_classes = len(data.classes)
        self.loss = semantic_loss(config.loss)

    def losses(self, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        images, masks = (tensor.to(self.device) for tensor in batch)
        return {"loss": self.loss(logits_of(self.train_module, images).float(), masks)}

    @torch.no_grad()
    def evaluate(self, module: nn.Module) -> dict[str, Any]:
        module.eval()
        confusion = ConfusionMatrix(self.num_classes)
        for images, masks in batches(data_loader(self.val_set, self.settings)):
            with autocast(self.device, self.settings.precision):
                logits = logits_of(module, images.to(self.device))
            confusion.update(masks.numpy(), logits.argmax(1).cpu().numpy(), IGNORE_INDEX)
        iou = confusion.iou()
        return {"miou": confusion.miou() or 0.0, "pixel_accuracy": confusion.pixel_accuracy(),
                "per_class_iou": [None if value != value else float(value) for value in iou]}
