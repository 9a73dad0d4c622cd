"""`cvtool train TASK`: the Typer commands. torch is imported only once a command runs.

Exit codes: 0 trained; 2 usage error (bad option value, unknown architecture, unusable data,
an existing non-empty run directory without --resume or --force); 3 device absent.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import typer

from cvtool.cli import torchrun
from cvtool.cli.options import Debug, Device, Quiet, Threads
from cvtool.core.context import Environment, current, finish
from cvtool.core.status import ExitStatus, UsageError
from cvtool.train.config import GENERAL_RECIPE, RECIPES

train_app = typer.Typer(name="train", no_args_is_help=True, rich_markup_mode=None,
                        help="Train a model; outputs per task in RUN_DIR.")

Data = Annotated[Optional[str], typer.Option(
    help="digits, or DIR with train/<class>/ (and val/<class>/) images.", show_default=False)]
Model = Annotated[str, typer.Option(
    "--model", "-m", help="knn | linear | mlp | cnn | a torchvision classifier | timm:NAME.")]
Output = Annotated[Optional[Path], typer.Option(
    "--output", "-o", help="The run directory (new or empty, unless --force).",
    show_default=False)]
Resume = Annotated[Optional[Path], typer.Option(
    help="Continue the run in RUN_DIR with its own config.json: --epochs may extend it and "
    "--device, --threads, --workers change how it runs; any other option that differs from "
    "the run's is refused.", show_default=False)]
Force = Annotated[bool, typer.Option(help="Train into a non-empty --output directory.")]
Loss = Annotated[str, typer.Option(help="ce (softmax) | svm (multiclass hinge).")]
Depth = Annotated[int, typer.Option(help="mlp: hidden layers; cnn: conv layers.")]
Width = Annotated[Optional[int], typer.Option(
    show_default=False, help="mlp: units per hidden layer [default: 128]; cnn: channels of the "
    "first conv, doubled per layer [default: 32].")]
Activation = Annotated[Literal["sigmoid", "tanh", "relu", "leaky_relu", "elu"], typer.Option()]
Init = Annotated[Literal["auto", "small", "large", "xavier", "kaiming"], typer.Option(
    help="auto: small for linear, else kaiming.")]
def _recipe(name: str, shown: Callable[[Any], str] = str) -> str:
    """An option's default per course model, from the recipes themselves."""
    values = [{**GENERAL_RECIPE, **RECIPES[model]}[name] for model in ("linear", "mlp", "cnn")]
    return ("the model's recipe: linear {}, mlp {}, cnn {}, others {}"
            .format(*map(shown, [*values, GENERAL_RECIPE[name]])))


def _yes(value: bool) -> str:
    return "yes" if value else "no"


BatchNorm = Annotated[Optional[bool], typer.Option(
    "--batch-norm/--no-batch-norm", show_default=False,
    help="Batch norm after each conv/hidden layer (folded for inference) [default: "
    + _recipe("batch_norm", _yes) + "].")]
Dropout = Annotated[Optional[float], typer.Option(
    show_default=False, help="Dropout probability P [default: "
    + _recipe("dropout") + "].")]
Weights = Annotated[str, typer.Option(
    help="torchvision models: none (from scratch) | default (fine-tune) | PATH.")]
Optimizer = Annotated[Literal["sgd", "momentum", "adagrad", "rmsprop", "adam"], typer.Option()]
Lr = Annotated[Optional[float], typer.Option(
    help="Learning rate [default: sgd 0.05, momentum/adagrad 0.01, rmsprop/adam 0.001; linear "
    "with adam 0.01].", show_default=False)]
Reg = Annotated[Optional[Literal["none", "l1", "l2"]], typer.Option(
    show_default=False, help="On conv and linear weights [default: "
    + _recipe("reg") + "].")]
RegStrength = Annotated[Optional[float], typer.Option(
    show_default=False, help="lambda of --reg [default: linear with l2 0.0005, else 0].")]
Schedule = Annotated[Optional[Literal["constant", "step", "cosine"]], typer.Option(
    show_default=False, help="Per epoch [default: " + _recipe("schedule") + "].")]
Epochs = Annotated[Optional[int], typer.Option(
    min=1, show_default=False, help="Epochs [default: classify linear 100, mlp 50, cnn 30, "
    "others 10; detect and segment-instance 12; segment-semantic and generate 20]; with "
    "--resume, a larger count extends the run.")]
BatchSize = Annotated[int, typer.Option("--batch-size", "-b", min=1)]
Augment = Annotated[bool, typer.Option(
    help="Random resized crops and flips (image folders; not digits).")]
ValSplit = Annotated[float, typer.Option(help="Val fraction when the data has no val folder.")]
ImageSize = Annotated[Optional[int], typer.Option(
    help="Side the images are resized to [default: the first image's].", show_default=False)]
Seed = Annotated[int, typer.Option(help="Seed of the split, init, shuffling and dropout.")]
TrainWorkers = Annotated[int, typer.Option(
    min=0, help="DataLoader worker processes decoding image files (0: in the training process; "
                "digits are in memory and use none). Kept in config.json for --resume.")]
Precision = Annotated[Literal["fp32", "bf16", "fp16"], typer.Option(help="Autocast.")]
Compile = Annotated[bool, typer.Option(help="torch.compile the training forward.")]
Sanity = Annotated[bool, typer.Option(help="Also overfit a tiny subset before training.")]
SyncBn = Annotated[bool, typer.Option(
    "--sync-bn", help="Under torchrun: batch norm over the global batch (SyncBatchNorm).")]
NProcPerNode = Annotated[int, typer.Option(
    min=1, help="Train on N processes of this machine: launches torchrun for you (one per "
                "GPU, or N CPU ranks with gloo).")]
K = Annotated[str, typer.Option("--k", help="knn: k, or auto (cross-validated).")]
Distance = Annotated[str, typer.Option(help="knn: l1 | l2 | auto (cross-validated).")]
Folds = Annotated[int, typer.Option(help="knn: cross-validation folds.")]


def _launch(runner: str, make_config: Callable[[], Any], data: str | None, output: Path | None,
            resume: Path | None, force: bool, device: str, threads: int | None, quiet: bool,
            debug: bool, epochs: int | None = None, nproc_per_node: int = 1) -> None:
    """Every `train TASK`: a new run needs --data and --output (its settings from the options);
    --resume RUN_DIR takes every setting from RUN_DIR/config.json, except that --epochs may
    extend it and the device, threads and workers may change; any other option given that
    differs from the run's is a UsageError listing them. `runner` ("module:function") is
    imported only now, so --help and option errors
    never import torch. `--nproc-per-node N` > 1 runs this same command under torchrun.

    Under torchrun, ranks other than 0 log nothing and print no summary; after an elastic
    restart (torchrun --max-restarts), a run directory that holds a started run is resumed."""
    rank = torchrun.rank()
    env = current(quiet or rank > 0, debug)
    env.mute_warnings = rank > 0
    if nproc_per_node > 1:
        if rank >= 0:
            raise UsageError("--nproc-per-node launches torchrun; under torchrun, leave it out")
        batch = make_config().batch_size if resume is None and data is not None else None
        if batch is not None and batch % nproc_per_node:
            raise UsageError(f"--batch-size {batch} does not split across {nproc_per_node} "
                             f"ranks; give a multiple of {nproc_per_node} (it is the global "
                             "batch)")
        finish(torchrun.launch, env, nproc_per_node)
    if resume is None and output is not None and torchrun.restarted() and \
            (Path(output) / "config.json").exists():
        resume, output = output, None  # torchrun restarted the group: continue, do not refuse
    if resume is not None:
        run_dir, config = resume, {"epochs": epochs, "given": given_settings()}
    elif data is None or output is None:
        raise UsageError("give --data and --output for a new run, or --resume RUN_DIR")
    else:
        run_dir, config = output, make_config()
    finish(_train_and_print, env, runner, config, run_dir, resume is not None, force, device,
           threads)


# What --resume may be given besides the run: how it runs, and --epochs to extend it.
RESUME_MAY_CHANGE = frozenset({"resume", "output", "epochs", "device", "threads", "workers",
                               "quiet", "debug", "nproc_per_node", "force"})


def given_settings() -> dict[str, Any]:
    """The training options typed on this command line (not left at their defaults) that a
    --resume takes from the run instead: the run refuses them where they differ."""
    core = importlib.import_module(typer.Context.__mro__[1].__module__)  # click's, or typer's
    context = importlib.import_module(core.__name__.rsplit(".", 1)[0] + ".globals") \
        .get_current_context(silent=True)
    if context is None:
        return {}
    return {name: value for name, value in context.params.items()
            if name not in RESUME_MAY_CHANGE
            and context.get_parameter_source(name) == core.ParameterSource.COMMANDLINE}


def _train_and_print(env: Environment, runner: str, *args: Any) -> int:
    """Run the trainer, then print its summary (metrics.json's content) as one JSON line
    (rank 0's, under torchrun)."""
    from cvtool.io.writers import strict_json

    module, function = runner.split(":")
    summary = getattr(importlib.import_module(module), function)(env, *args)
    if torchrun.rank() <= 0:
        env.stdout.write(strict_json(summary) + "\n")
        env.stdout.flush()
    if torchrun.rank() >= 0:
        from cvtool.train import distributed

        distributed.barrier()
        distributed.stop()
    return ExitStatus.SUCCESS


@train_app.command("classify")
def classify(
    data: Data = None, model: Model = "cnn", output: Output = None, resume: Resume = None,
    force: Force = False, loss: Loss = "ce", depth: Depth = 2, width: Width = None,
    activation: Activation = "relu", init: Init = "auto", batch_norm: BatchNorm = None,
    dropout: Dropout = None, weights: Weights = "none", optimizer: Optimizer = "adam",
    lr: Lr = None, reg: Reg = None, reg_strength: RegStrength = None,
    schedule: Schedule = None, epochs: Epochs = None, batch_size: BatchSize = 64,
    augment: Augment = False, val_split: ValSplit = 0.2, image_size: ImageSize = None,
    seed: Seed = 0, workers: TrainWorkers = 2, device: Device = "auto",
    precision: Precision = "fp32", compile: Compile = False, sanity: Sanity = False, k: K = "auto",
    distance: Distance = "auto", folds: Folds = 5, threads: Threads = None,
    sync_bn: SyncBn = False, nproc_per_node: NProcPerNode = 1,
    quiet: Quiet = False, debug: Debug = False,
) -> None:
    """Train an image classifier: k-NN, linear SVM/softmax, MLP, CNN or a torchvision net.

    \b
    Example:
      cvtool train classify --data digits --model cnn -o runs/cnn
    """
    from cvtool.train.config import ClassifyConfig

    _launch("cvtool.train.run:train_classify", lambda: ClassifyConfig(
        data=data, model=model, loss=loss, depth=depth, width=width, activation=activation,
        init=init, batch_norm=batch_norm, dropout=dropout, weights=weights,
        optimizer=optimizer, lr=lr, reg=reg, reg_strength=reg_strength, schedule=schedule,
        epochs=epochs, batch_size=batch_size, augment=augment, val_split=val_split,
        image_size=image_size, seed=seed, workers=workers, precision=precision, compile=compile,
        sanity=sanity, k=k, distance=distance, folds=folds, sync_bn=sync_bn),
        data, output, resume, force, device, threads, quiet, debug, epochs, nproc_per_node)


CocoData = Annotated[Optional[str], typer.Option(
    "--data", help="DIR with annotations/{train,val}.json (COCO) and images/ under it.",
    show_default=False)]
DetectorModel = Annotated[str, typer.Option(
    "--model", "-m", help="small (plain-conv Mask/Faster R-CNN for CPUs) | a torchvision "
    "detector (`cvtool models detect`, `cvtool models segment-instance`).")]
DetectorWidth = Annotated[int, typer.Option(
    help="small: channels at stride 4 (x2 at 8, x4 at 16, FPN x2).")]
MinSize = Annotated[Optional[int], typer.Option(
    help="Short side images are resized to [default: small 128, else the model's own].",
    show_default=False)]
MaxSize = Annotated[Optional[int], typer.Option(
    help="Cap of the long side [default: small 213, else the model's own].", show_default=False)]
DetectorLr = Annotated[Optional[float], typer.Option(
    help="Learning rate [default: adam/rmsprop 0.002, others 0.02].", show_default=False)]
WeightDecay = Annotated[float, typer.Option(help="Weight decay (adam becomes AdamW).")]
DetectorSchedule = Annotated[Literal["constant", "step", "cosine"], typer.Option(help="Per epoch.")]
Warmup = Annotated[int, typer.Option(help="Iterations of linear learning-rate warm-up.")]
DetectorBatch = Annotated[int, typer.Option("--batch-size", "-b", min=1)]
DetectorAugment = Annotated[bool, typer.Option(
    help="Horizontal flips and photometric jitter, boxes and masks moved with the pixels.")]
VFlip = Annotated[bool, typer.Option(
    "--vflip", help="Also flip vertically (top-down or synthetic scenes).")]


def _detection_command(task: str, summary: str) -> Callable[..., None]:
    """`train detect` and `train segment-instance`: the same options; the task decides masks."""

    def command(
        data: CocoData = None, model: DetectorModel = "small", output: Output = None,
        resume: Resume = None, force: Force = False, weights: Weights = "none",
        width: DetectorWidth = 32, min_size: MinSize = None, max_size: MaxSize = None,
        optimizer: Optimizer = "adam", lr: DetectorLr = None, weight_decay: WeightDecay = 0.0,
        schedule: DetectorSchedule = "cosine", warmup: Warmup = 100, epochs: Epochs = None,
        batch_size: DetectorBatch = 8, augment: DetectorAugment = True, vflip: VFlip = False,
        seed: Seed = 0, workers: TrainWorkers = 2, device: Device = "auto",
        precision: Precision = "fp32", threads: Threads = None, sync_bn: SyncBn = False,
        nproc_per_node: NProcPerNode = 1, quiet: Quiet = False, debug: Debug = False,
    ) -> None:
        from cvtool.train.config import DetectionConfig

        _launch("cvtool.train.detection_run:train_detection", lambda: DetectionConfig(
            data=data, task=task, model=model, weights=weights, width=width,
            min_size=min_size, max_size=max_size, optimizer=optimizer, lr=lr,
            weight_decay=weight_decay, schedule=schedule, warmup=warmup,
            epochs=epochs or 12, batch_size=batch_size, augment=augment, vflip=vflip,
            seed=seed, workers=workers, precision=precision, sync_bn=sync_bn),
            data, output, resume, force, device, threads, quiet, debug, epochs, nproc_per_node)

    command.__doc__ = summary
    return command


train_app.command("detect")(_detection_command(
    "detect", "Train a box detector on COCO data, scored by pycocotools each epoch.\n\n"
    "\b\nExample:\n  cvtool data shapes shapes/ && cvtool train detect --data shapes/ -o runs/det"))
train_app.command("segment-instance")(_detection_command(
    "segment-instance",
    "Train a Mask R-CNN on COCO data with masks, scored by pycocotools each epoch.\n\n"
    "\b\nExample:\n  cvtool train segment-instance --data shapes/ -o runs/maskrcnn"))


SemanticData = Annotated[Optional[str], typer.Option(
    "--data", help="DIR with classes.txt and {train,val}/images, {train,val}/masks (class-index "
    "PNGs, 255 = ignore).", show_default=False)]
SemanticModel = Annotated[str, typer.Option(
    "--model", "-m", help="smp:<arch> (`cvtool models segment-semantic`) or a torchvision "
    "segmentation model.")]
Encoder = Annotated[str, typer.Option(help="smp models: the encoder (smp's names or tu-<timm>).")]
EncoderDepth = Annotated[int, typer.Option(help="smp models: encoder stages used, 3-5.")]
DecoderChannels = Annotated[Optional[str], typer.Option(
    help="smp Unet/Unet++/MAnet: decoder widths, one per stage, comma-separated "
    "[default: smp's].", show_default=False)]
SemanticWeights = Annotated[str, typer.Option(
    help="none (from scratch) | default (ImageNet encoder / torchvision's) | PATH.")]
SemanticLoss = Annotated[str, typer.Option(help="ce | dice | focal, or a sum such as ce+dice.")]
SemanticLr = Annotated[Optional[float], typer.Option(
    help="Learning rate [default: adam/rmsprop 0.001, others 0.01].", show_default=False)]
SemanticAugment = Annotated[bool, typer.Option(
    help="Horizontal flips (mask moved with the pixels) and photometric jitter.")]
SemanticImageSize = Annotated[Optional[int], typer.Option(
    help="Train on N x N resized images [default: the images' own size].", show_default=False)]


@train_app.command("segment-semantic")
def segment_semantic(
    data: SemanticData = None, model: SemanticModel = "smp:unet", output: Output = None,
    resume: Resume = None, force: Force = False, encoder: Encoder = "resnet18",
    encoder_depth: EncoderDepth = 5, decoder_channels: DecoderChannels = None,
    weights: SemanticWeights = "none", loss: SemanticLoss = "ce+dice",
    optimizer: Optimizer = "adam", lr: SemanticLr = None, weight_decay: WeightDecay = 0.0,
    schedule: DetectorSchedule = "cosine", warmup: Warmup = 50, epochs: Epochs = None,
    batch_size: DetectorBatch = 16, augment: SemanticAugment = True, vflip: VFlip = False,
    image_size: SemanticImageSize = None, seed: Seed = 0, workers: TrainWorkers = 2,
    device: Device = "auto", precision: Precision = "fp32", threads: Threads = None,
    sync_bn: SyncBn = False, nproc_per_node: NProcPerNode = 1, quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Train a semantic segmenter on image/mask folders, scored by mIoU each epoch.

    \b
    Example:
      cvtool train segment-semantic --data shapes/ --model smp:unet -o runs/unet
    """
    from cvtool.train.config import SemanticConfig

    _launch("cvtool.train.semantic_run:train_semantic", lambda: SemanticConfig(
        data=data, model=model, encoder=encoder, encoder_depth=encoder_depth,
        decoder_channels=_widths(decoder_channels), weights=weights, loss=loss,
        optimizer=optimizer, lr=lr, weight_decay=weight_decay, schedule=schedule,
        warmup=warmup, epochs=epochs or 20, batch_size=batch_size, augment=augment, vflip=vflip,
        image_size=image_size, seed=seed, workers=workers, precision=precision, sync_bn=sync_bn),
        data, output, resume, force, device, threads, quiet, debug, epochs, nproc_per_node)


def _widths(value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        return [int(part) for part in value.split(",")]
    except ValueError:
        raise UsageError(f"--decoder-channels {value!r}: expected integers such as "
                         "64,32,16") from None


GenerativeData = Annotated[Optional[str], typer.Option(
    "--data", help="digits, or DIR with train/<class>/ (and val/<class>/) images.",
    show_default=False)]
GenerativeModel = Annotated[Literal["pixelcnn", "vae", "gan"], typer.Option("--model", "-m")]
GenerativeWidth = Annotated[int, typer.Option(help="Channels of the convolutions.")]
Layers = Annotated[int, typer.Option(help="pixelcnn: gated layers after the first.")]
LatentDim = Annotated[int, typer.Option(help="vae / gan: latent dimensions.")]
PriorComponents = Annotated[int, typer.Option(
    min=0, help="vae: Gaussians in the learnt mixture prior (0: a fixed N(0, I)).")]
GenerativeDropout = Annotated[float, typer.Option(
    help="pixelcnn: dropout probability P in each layer's residual branch.")]
Levels = Annotated[Optional[int], typer.Option(
    help="pixelcnn / vae: intensity levels [default: digits 17, else 256].", show_default=False)]
GenerativeLr = Annotated[Optional[float], typer.Option(
    help="Learning rate [default: gan 0.0002, else 0.001].", show_default=False)]
GenerativeWarmup = Annotated[int, typer.Option(help="Iterations of linear learning-rate warm-up.")]
FidSamples = Annotated[int, typer.Option(
    help="digits: samples scored by fid_digits after each epoch (the summary uses 1000).")]


@train_app.command("generate")
def generate(
    data: GenerativeData = None, model: GenerativeModel = "pixelcnn", output: Output = None,
    resume: Resume = None, force: Force = False, width: GenerativeWidth = 64,
    layers: Layers = 5, latent_dim: LatentDim = 16, prior_components: PriorComponents = 100,
    dropout: GenerativeDropout = 0.0, levels: Levels = None,
    optimizer: Optimizer = "adam", lr: GenerativeLr = None, weight_decay: WeightDecay = 0.0,
    schedule: DetectorSchedule = "cosine", warmup: GenerativeWarmup = 0, epochs: Epochs = None,
    batch_size: BatchSize = 64, image_size: ImageSize = None, val_split: ValSplit = 0.2,
    seed: Seed = 0, device: Device = "auto", precision: Precision = "fp32",
    fid_samples: FidSamples = 500, threads: Threads = None,
    nproc_per_node: NProcPerNode = 1, quiet: Quiet = False, debug: Debug = False,
) -> None:
    """Train a PixelCNN, VAE or GAN; samples, NLL / ELBO and (digits) FID each epoch.

    \b
    Example:
      cvtool train generate --data digits --model vae -o runs/vae
    """
    from cvtool.train.config import GenerateConfig

    _launch("cvtool.train.generate_run:train_generate", lambda: GenerateConfig(
        data=data, model=model, width=width, layers=layers, latent_dim=latent_dim,
        prior_components=prior_components, dropout=dropout, levels=levels,
        optimizer=optimizer, lr=lr, weight_decay=weight_decay,
        schedule=schedule, warmup=warmup, epochs=epochs or 20, batch_size=batch_size,
        image_size=image_size, val_split=val_split, seed=seed, precision=precision,
        fid_samples=fid_samples),
        data, output, resume, force, device, threads, quiet, debug, epochs, nproc_per_node)
