"""The `cvtool` command line: thin commands that parse, call a task, and hand records to a writer.

Nothing here imports torch at module level: `cvtool --help` must answer in a fraction of a second.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from cvtool.cli import process
from cvtool.cli.bench import benchmark_device
from cvtool.cli.data import data_app
from cvtool.cli.options import (
    INFERENCE_OPTIONS,
    ConfusionIou,
    Debug,
    Device,
    FailUnder,
    InferenceOptions,
    Quiet,
    Seed,
    Threads,
    inference_command,
)
from cvtool.cli.train import train_app
from cvtool.core.context import Environment, current, finish
from cvtool.core.options import (
    DEFAULT_CLASSIFIER,
    DEFAULT_DETECTORS,
    DEFAULT_SEMANTIC,
    ClassifyOptions,
    DetectOptions,
    GenerateOptions,
    SegmentOptions,
)
from cvtool.core.status import UsageError

app = typer.Typer(name="cvtool", no_args_is_help=True, add_completion=True,
                  rich_markup_mode=None, pretty_exceptions_enable=False,
                  help="Computer vision from the command line, on PyTorch.")

Sources = Annotated[Optional[list[str]], typer.Argument(
    help="Image files, directories (recursive), quoted globs, or - to read paths from stdin.",
    show_default=False)]
Models = Annotated[Optional[list[str]], typer.Option(
    "--model", "-m", help="Registry name (`cvtool models`), timm:NAME, or a cvtool checkpoint "
                          "file / run directory. Give it more than once for an ensemble.  "
                          f"[default: {DEFAULT_CLASSIFIER}]", show_default=False)]
Weights = Annotated[Optional[list[str]], typer.Option(
    help="default | none (random init) | NAME (published weights: IMAGENET1K_V1, a timm tag) "
         "| PATH to a state dict; once, or once per --model.",
    show_default=False)]
# Format, when a command has no shared inference options (models, benchmark-device has its own).
Format = Annotated[Optional[Literal["table", "jsonl", "csv"]], typer.Option(
    "--format", help="[default: table on a terminal, else jsonl]", show_default=False)]


def _print_version(value: bool) -> None:
    if value:
        from cvtool import __version__

        print(f"cvtool {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option(
        "--version", help="Print the version.", is_eager=True, callback=_print_version)] = False,
          ) -> None:
    """Computer vision from the command line."""


@app.command()
@inference_command(ClassifyOptions)
def classify(
    sources: Sources = None,
    model: Models = None,
    weights: Weights = None,
    topk: Annotated[int, typer.Option(help="How many classes per image.")] = 5,
    tta: Annotated[bool, typer.Option(
        help="Average over ten crops (corners, centre, flips).")] = False,
    draft: Annotated[bool, typer.Option(
        help="Decode JPEGs at least twice the model's input size at a reduced DCT scale "
             "(1/2 to 1/8) that still covers it: much faster on camera photos, inputs within "
             "rounding of full decoding.")] = False,
    gt: Annotated[Optional[Path], typer.Option(
        help="labels.csv (path,label rows) for --eval; without it each input's label is its "
             "folder's name (DIR/<class>/image).", show_default=False)] = None,
    label_map: Annotated[Optional[Path], typer.Option(
        help="--eval: folder,label rows naming the model category of each folder (or --gt "
             "label) where they differ.", show_default=False)] = None,
    eval: Annotated[bool, typer.Option(
        "--eval", help="Score against the labels: top-1/top-5, per-class precision, recall "
                       "and F1, ECE and the confusion matrix on stderr and in run.json.")
                    ] = False,
    fail_under: FailUnder = None,
    *,
    common: InferenceOptions,
) -> None:
    """Classify images: top-k labels with softmax probabilities.

    The default model, efficientnet_lite0 (ImageNet's 1000 classes), is installed with cvtool
    and works offline.

    \b
    Example:
      cvtool classify photos/ --topk 3 --format csv > labels.csv
    """
    from cvtool.cli.commands import classify as run

    env = current(common.quiet, common.debug)
    finish(run, env, sources or [], common, ClassifyOptions(
        **common.predictor(), model=model or DEFAULT_CLASSIFIER, weights=weights or "default",
        topk=topk, tta=tta, draft=draft), gt=gt, label_map=label_map, evaluate=eval,
           fail_under=fail_under or [])


# Detectors run one model (no ensembles), so --model and --weights take one value here.
OneModel = Annotated[Optional[str], typer.Option(
    "--model", "-m", help="Registry name, or a cvtool checkpoint file / run directory  [default: "
                          f"{DEFAULT_DETECTORS['detect']} for detect, "
                          f"{DEFAULT_DETECTORS['segment-instance']} for segment-instance]",
    show_default=False)]
OneWeights = Annotated[str, typer.Option(
    help="default | none (random init) | NAME (published weights: IMAGENET1K_V1) | PATH to a "
         "state dict.")]


@inference_command(DetectOptions)
def detect(
    ctx: typer.Context,
    sources: Sources = None,
    model: OneModel = None,
    weights: OneWeights = "default",
    conf: Annotated[float, typer.Option(help="Keep detections scoring at least this.")] = 0.5,
    classes: Annotated[Optional[list[str]], typer.Option(
        help="Keep only these classes: labels or ids, comma-separated or repeated.",
        show_default=False)] = None,
    gt: Annotated[Optional[Path], typer.Option(
        help="COCO annotations: --format coco image_ids are matched to it by file name.",
        show_default=False)] = None,
    eval: Annotated[bool, typer.Option(
        "--eval", help="Print pycocotools' COCO metrics against --gt on stderr.")] = False,
    save_crops: Annotated[bool, typer.Option(
        help="Also write each detection's crop under --output.")] = False,
    fail_under: FailUnder = None,
    confusion_iou: ConfusionIou = 0.5,
    *,
    common: InferenceOptions,
) -> None:
    from cvtool.cli.commands import detect as run

    env = current(common.quiet, common.debug)
    task = ctx.info_name  # one function serves both commands; the name picks the task
    finish(run, env, sources or [], common, DetectOptions(
        **common.predictor(), task=task, model=model, weights=weights, conf=conf,
        classes=classes or [], save_crops=save_crops), gt=gt, evaluate=eval,
           fail_under=fail_under or [], confusion_iou=confusion_iou)


OFFLINE_DETECTORS = ("The default model's weights are torchvision's download (`cvtool models "
                     "pull NAME` where there is network; offline, a missing file is exit 3); "
                     "the house model shapes-maskrcnn is installed with cvtool and works "
                     "offline.")
app.command("detect", help=f"""Detect objects: boxes, labels and scores.

    {OFFLINE_DETECTORS}

    \b
    Example:
      cvtool detect scenes/ -m shapes-maskrcnn --conf 0.5 -o out/
    """)(detect)
app.command("segment-instance", help=f"""Segment object instances: detections with COCO RLE masks.

    {OFFLINE_DETECTORS}

    \b
    Example:
      cvtool segment-instance scenes/ -m shapes-maskrcnn --save-crops -o out/
    """)(detect)


@app.command("segment-semantic")
@inference_command(SegmentOptions)
def segment_semantic(
    sources: Sources = None,
    model: Annotated[Optional[str], typer.Option(
        "--model", "-m", help="Registry name (smp:ARCH takes --encoder), or a cvtool checkpoint "
                              f"file / run directory  [default: {DEFAULT_SEMANTIC}]",
        show_default=False)] = None,
    encoder: Annotated[Optional[str], typer.Option(
        help="Encoder of an smp:ARCH model: resnet34 (default), resnet18, mobilenet_v2, "
             "efficientnet-b0, mit_b0, tu-<timm model>, ...", show_default=False)] = None,
    weights: OneWeights = "default",
    gt_masks: Annotated[Optional[Path], typer.Option(
        help="Folder of ground-truth mask PNGs (pixel = class index), found for each input by "
             "its path without extension.", show_default=False)] = None,
    eval: Annotated[bool, typer.Option(
        "--eval", help="Print mIoU, per-class IoU and pixel accuracy against --gt-masks on "
                       "stderr (and into run.json).")] = False,
    ignore_index: Annotated[int, typer.Option(
        min=0, help="Ground-truth value left out of --eval.")] = 255,
    fail_under: FailUnder = None,
    *,
    common: InferenceOptions,
) -> None:
    """Segment images: a class for every pixel; mask PNGs and overlays under --output.

    The default model's weights are torchvision's download (`cvtool models pull NAME` where
    there is network; offline, a missing file is exit 3); the house model shapes-unet is
    installed with cvtool and works offline.

    \b
    Example:
      cvtool segment-semantic scenes/ -m shapes-unet --gt-masks masks/ --eval -o out/
    """
    from cvtool.cli.commands import segment_semantic as run

    env = current(common.quiet, common.debug)
    finish(run, env, sources or [], common, SegmentOptions(
        **common.predictor(), model=model or DEFAULT_SEMANTIC, weights=weights, encoder=encoder,
        gt_masks=gt_masks, ignore_index=ignore_index), evaluate=eval,
           fail_under=fail_under or [])


@app.command()
def compare(
    run_a: Annotated[Path, typer.Argument(help="The reference run (-o DIR).")],
    run_b: Annotated[Path, typer.Argument(help="The candidate run.")],
    format: INFERENCE_OPTIONS["format"] = None,
    fail_on_regression: Annotated[Optional[list[str]], typer.Option(
        "--fail-on-regression", metavar="METRIC=DELTA", help="Exit 4 when B's METRIC is more "
        "than DELTA below A's; repeatable (the --fail-under metrics).",
        show_default=False)] = None,
    bootstrap: Annotated[int, typer.Option(
        min=0, help="classify: resamples of a paired bootstrap interval for top-1's "
                    "difference (0: none).")] = 0,
    seed: Seed = 0,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Compare two runs over the same inputs: metrics side by side with B - A, and the inputs
    answered differently (on stdout).

    \b
    Example:
      cvtool compare runs/released runs/candidate --fail-on-regression top1=0.005 --bootstrap 1000
    """
    from cvtool.cli.compare import compare as run

    env = current(quiet, debug)
    finish(run, env, run_a, run_b, fmt=format, regressions=fail_on_regression or [],
           bootstrap=bootstrap, seed=seed)


@app.command()
def merge(
    directories: Annotated[Optional[list[Path]], typer.Argument(
        help="Run directories (written with -o), e.g. the shards of one run.",
        show_default=False)] = None,
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", help="New or empty directory for the merged records.jsonl and "
                               "run.json.", show_default=False)] = None,
    format: INFERENCE_OPTIONS["format"] = None,
    gt: Annotated[Optional[Path], typer.Option(
        help="COCO annotations, for --format coco image ids and --eval (detect, "
             "segment-instance); labels.csv for --eval of classify runs (without it: each "
             "input's folder name).", show_default=False)] = None,
    gt_masks: Annotated[Optional[Path], typer.Option(
        help="Ground-truth mask folder, for --eval (segment-semantic).",
        show_default=False)] = None,
    label_map: Annotated[Optional[Path], typer.Option(
        help="--eval of classify runs: folder,label rows naming each folder's (or --gt "
             "label's) model category.", show_default=False)] = None,
    eval: Annotated[bool, typer.Option(
        "--eval", help="Metrics of the merged set, as one run's --eval computes them.")] = False,
    fail_under: FailUnder = None,
    confusion_iou: ConfusionIou = 0.5,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Join shard (or resumed) run directories: records in input order, summed counts.

    \b
    Example:
      cvtool merge shard-1 shard-2 -o merged --format coco > results.json
    """
    from cvtool.cli.merge import merge as run

    env = current(quiet, debug)
    if output is None:
        raise UsageError("--output DIR is required: where the merged run goes")
    finish(run, env, directories or [], output, fmt=format, gt=gt, gt_masks=gt_masks,
           label_map=label_map, evaluate=eval, fail_under=fail_under or [],
           confusion_iou=confusion_iou)


@app.command()
def export(
    model: Annotated[str, typer.Argument(
        help="Registry name, cvtool checkpoint file or run directory (any task).",
        show_default=False, metavar="MODEL")],
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", help="FILE.onnx, FILE.xml (OpenVINO, beside FILE.bin) or a directory "
                               "for OpenVINO's model.xml.", show_default=False)] = None,
    weights: Annotated[str, typer.Option(
        help="default | none (random init) | NAME (published weights: IMAGENET1K_V1) | PATH to a "
         "state dict.")] = "default",
    format: Annotated[Optional[str], typer.Option(
        "--format", help="onnx | openvino  [default: from the output's suffix, else onnx]",
        show_default=False)] = None,
    opset: Annotated[int, typer.Option(help="ONNX opset.")] = 18,
    image_size: Annotated[Optional[list[int]], typer.Option(
        help="Classifiers: the input side, or give it twice: height then width  "
             "[default: the model's crop size]", show_default=False)] = None,
    dynamic_batch: Annotated[bool, typer.Option(
        "--dynamic-batch", help="Classifiers: any batch size (default: batch 1; segmenters "
                                "always take any batch, detectors one image).")] = False,
    encoder: Annotated[Optional[str], typer.Option(
        help="smp:ARCH models: the encoder  [default: resnet34]", show_default=False)] = None,
    verify: Annotated[bool, typer.Option(
        "--verify/--no-verify", help="Compare the runtime's outputs with eager PyTorch's "
                                     "before writing (--no-verify skips the comparison; the "
                                     "runtime still loads the model).")] = True,
    verify_images: Annotated[Optional[list[str]], typer.Option(
        help="Images to verify on (files, directories, globs)  [default: cvtool's own set of "
             "photos, shapes, digits and a blank image]", show_default=False)] = None,
    threads: Threads = None,
    force: Annotated[bool, typer.Option(help="Replace an existing output.")] = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Export a model to ONNX or OpenVINO, verified against eager PyTorch; summary on stdout.

    \b
    Example:
      cvtool export shapes-unet -o unet.onnx && cvtool segment-semantic scenes/ -m unet.onnx
    """
    from cvtool.cli.export import export as run
    from cvtool.export import ExportOptions

    env = current(quiet, debug)
    if output is None:
        raise UsageError("-o FILE is required: where the export goes (.onnx, or .xml for "
                         "OpenVINO)")
    finish(run, env, ExportOptions(
        model=model, output=str(output), weights=weights, format=format, opset=opset,
        image_size=image_size, dynamic_batch=dynamic_batch, encoder=encoder, verify=verify,
        verify_images=verify_images, threads=threads, force=force))


@app.command()
def models(
    args: Annotated[Optional[list[str]], typer.Argument(
        help="[TASK] to list, or: pull NAME", show_default=False,
        metavar="[TASK | pull NAME]")] = None,
    encoder: Annotated[Optional[str], typer.Option(
        help="With pull smp:ARCH: the encoder whose ImageNet weights to fetch  "
             "[default: resnet34]", show_default=False)] = None,
    weights: Annotated[Optional[str], typer.Option(
        help="With pull: published weights other than the default: a torchvision weights "
             "name (IMAGENET1K_V1) or a timm tag", show_default=False)] = None,
    filter: Annotated[Optional[str], typer.Option(
        "--filter", help="Only names matching this pattern (shell wildcards, any case; "
                         "without one, a substring). 'timm:*' lists timm's pretrained models.",
        show_default=False)] = None,
    format: Format = None,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """List models with their parameters, GFLOPs, published accuracy, input size and cache
    state (`cvtool models [TASK] [--filter P]`), or fetch weights (`cvtool models pull NAME`).

    \b
    Example:
      cvtool models classify --filter 'resnet*' --format csv
    """
    from cvtool.cli.commands import models as run

    env = current(quiet, debug)
    finish(run, env, args or [], fmt=format, encoder=encoder, weights=weights,
           pattern=filter)


@app.command()
def generate(
    model: Annotated[Optional[str], typer.Option(
        "--model", "-m", help="Generative house model name, or a cvtool checkpoint file / run "
                              "directory (PixelCNN, VAE or GAN).", show_default=False)] = None,
    num: Annotated[int, typer.Option(
        "--num", "-n", help="Images to sample (with --interpolate: paths).")] = 16,
    seed: Annotated[int, typer.Option(help="Seed of every draw: same seed and device, "
                                           "same bytes.")] = 0,
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", help="Directory for the PNGs and run.json (new or empty, unless "
                               "--force).", show_default=False)] = None,
    grid: Annotated[Optional[Path], typer.Option(
        help="Also write the images as one grid PNG here.", show_default=False)] = None,
    temperature: Annotated[Optional[float], typer.Option(
        help="PixelCNN: divide the logits by T (below 1: safer, above: more varied)  "
             "[default: 1]", show_default=False)] = None,
    interpolate: Annotated[bool, typer.Option(
        "--interpolate", help="VAE and GAN: --steps images along the line between two latent "
                              "draws, per path.")] = False,
    steps: Annotated[Optional[int], typer.Option(
        help="Images per interpolation path, both ends included  [default: 8]",
        show_default=False)] = None,
    device: Device = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", "-b")] = 64,
    threads: Threads = None,
    force: Annotated[bool, typer.Option(help="Write into a non-empty --output.")] = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Sample images from a PixelCNN, VAE or GAN: PNGs, a grid, a JSON summary on stdout.

    The house models digits-pixelcnn, digits-vae and digits-gan are installed with cvtool and
    work offline.

    \b
    Example:
      cvtool generate -m digits-gan -n 64 --seed 0 --grid samples.png
    """
    from cvtool.cli.commands import generate as run

    env = current(quiet, debug)
    options = GenerateOptions(model=model, num=num, seed=seed, output=output, grid=grid,
                              temperature=temperature, interpolate=interpolate,
                              steps=steps or 8, batch_size=batch_size, device=device,
                              threads=threads)
    finish(run, env, options, steps_given=steps is not None, force=force)


app.command("benchmark-device")(benchmark_device)
app.add_typer(train_app, name="train")
app.add_typer(data_app, name="data")


def main(argv: list[str] | None = None) -> None:
    """The `cvtool` entry point: run the app, exit with its status (cvtool/cli/process.py)."""
    process.main(app, argv)


def run_cli(argv: list[str] | None = None, env: Environment | None = None) -> int:
    """Run the app in this process and return its exit status (stdout/stderr: `env`'s)."""
    return process.run_cli(app, argv, env)
