"""`cvtool data`: write training data sets out as image folders. No torch here.

`cvtool data digits OUT_DIR` writes the very split `train classify --data digits` trains on, so
`cvtool classify --model RUN_DIR OUT_DIR/val` scores the images that training held out.
`cvtool data shapes OUT_DIR` writes the synthetic shapes (cvtool/data/shapes.py) in both the COCO
layout and the segment-semantic layout; each image is stored once, the second layout's file being
a hard link to the first's (a copy where the file system has no hard links).
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cvtool.cli.options import Debug, Quiet
from cvtool.core.context import Environment, current, finish
from cvtool.core.ownership import require_empty
from cvtool.core.status import ExitStatus
from cvtool.io.writers import atomic_open, atomic_path, strict_json, write_bytes, write_json

if TYPE_CHECKING:
    from cvtool.data.classification import Example
    from cvtool.data.shapes import ShapesImage

data_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                       help="Write training data sets as image folders.")

OutDir = Annotated[Path, typer.Argument(help="Folder to write train/<class>/ and val/<class>/ "
                                             "into; must be empty or absent.", show_default=False)]
Seed = Annotated[int, typer.Option(help="Seed of the stratified train/val split.")]
ValSplit = Annotated[float, typer.Option(help="Fraction of each class held out for val.")]
Force = Annotated[bool, typer.Option(help="Write into a non-empty OUT_DIR, replacing files of "
                                          "the same name.")]
ShapesOutDir = Annotated[Path, typer.Argument(
    help="Folder to write images/, annotations/, train/, val/ and classes.txt into; must be "
         "empty or absent.", show_default=False)]
ShapesSeed = Annotated[int, typer.Option(min=0, help="Seed of every image; the same seed writes "
                                                     "the same bytes.")]
Num = Annotated[int, typer.Option(min=0, help="Number of training images.")]
ValNum = Annotated[int, typer.Option(min=0, help="Number of validation images.")]


@data_app.command()
def digits(out_dir: OutDir, seed: Seed = 0, val_split: ValSplit = 0.2, force: Force = False,
           quiet: Quiet = False, debug: Debug = False) -> None:
    """scikit-learn's 8x8 digits, split as training splits them.

    Writes OUT_DIR/{train,val}/<digit>/digit_<index>.png and prints a JSON summary.

    \b
    Example:
      cvtool data digits digits_folder/
    """
    env = current(quiet, debug)
    finish(_write_digits, env, out_dir, seed, val_split, force)


def _write_digits(env: Environment, out_dir: Path, seed: int, val_split: float,
                  force: bool) -> ExitStatus:
    from cvtool.data.classification import digits_split

    _claim(env, out_dir, force)
    train, val, classes = digits_split(seed, val_split)
    for split, examples in (("train", train), ("val", val)):
        env.log(f"writing {len(examples)} images to {out_dir / split}")
        for example in examples:
            _write_png(out_dir / split / classes[example.label] / f"{example.name}.png", example)
    summary = {"output": str(out_dir), "train": len(train), "val": len(val),
               "classes": len(classes), "seed": seed, "val_split": val_split}
    print(strict_json(summary), file=env.stdout, flush=True)
    return ExitStatus.SUCCESS


def _claim(env: Environment, out_dir: Path, force: bool) -> None:
    env.own_directory(out_dir, "OUT_DIR")
    if not force:
        require_empty(out_dir, "OUT_DIR", "use --force to write into it anyway")


def _write_png(path: Path, example: Example) -> None:
    # The digits are gray: one channel holds them losslessly and decodes to the same RGB.
    with atomic_open(path, "wb") as handle:
        example.load().convert("L").save(handle, "PNG")


@data_app.command()
def shapes(out_dir: ShapesOutDir, num: Num = 1000, val_num: ValNum = 200, seed: ShapesSeed = 0,
           force: Force = False, quiet: Quiet = False, debug: Debug = False) -> None:
    """128x128 circles, squares and triangles on noisy gradients, for detection and segmentation.

    Writes COCO annotations/{train,val}.json over images/{train,val}/, the same images as
    {train,val}/images/ with class-index masks in {train,val}/masks/, and classes.txt; prints a
    JSON summary.

    \b
    Example:
      cvtool data shapes shapes/ --num 1000 --val-num 200 --seed 0
    """
    env = current(quiet, debug)
    finish(_write_shapes, env, out_dir, {"train": num, "val": val_num}, seed, force)


def _write_shapes(env: Environment, out_dir: Path, counts: dict[str, int], seed: int,
                  force: bool) -> ExitStatus:
    from cvtool.data.shapes import CATEGORIES

    _claim(env, out_dir, force)
    write_bytes(out_dir / "classes.txt", "".join(f"{name}\n" for name in
                                                 ("background", *CATEGORIES)).encode())
    summary: dict = {"output": str(out_dir), "seed": seed}
    for split, count in counts.items():
        env.log(f"writing {count} images to {out_dir / 'images' / split}")
        summary[split] = _write_shapes_split(out_dir, split, count, seed)
    print(strict_json(summary), file=env.stdout, flush=True)
    return ExitStatus.SUCCESS


def _write_shapes_split(out_dir: Path, split: str, count: int, seed: int) -> dict:
    """Write one split's images, masks and COCO file; return its image and object counts."""
    from cvtool.data.shapes import CATEGORIES, SIZE, coco_annotations, coco_categories, render

    images, annotations, objects = [], [], Counter()
    for index in range(count):
        sample, stem = render(seed, split, index), f"{index:06d}"
        _write_shapes_files(out_dir, split, stem, sample)
        images.append({"id": index + 1, "file_name": f"{split}/{stem}.png",
                       "width": SIZE, "height": SIZE})
        annotations += coco_annotations(sample, index + 1, len(annotations) + 1)
        objects.update(CATEGORIES[shape.category_id - 1] for shape in sample.shapes)
    write_json(out_dir / "annotations" / f"{split}.json",
               {"images": images, "annotations": annotations, "categories": coco_categories()})
    return {"images": count, "objects": {name: objects[name] for name in CATEGORIES}}


def _write_shapes_files(out_dir: Path, split: str, stem: str, sample: ShapesImage) -> None:
    from PIL import Image

    from cvtool.io.palette import MASK_PALETTE

    image_path = out_dir / "images" / split / f"{stem}.png"
    with atomic_open(image_path, "wb") as handle:
        Image.fromarray(sample.pixels).save(handle, "PNG")
    _link(image_path, out_dir / split / "images" / f"{stem}.png")
    mask = Image.fromarray(sample.semantic_mask())
    mask.putpalette(MASK_PALETTE)  # makes it a "P" image whose pixel values are the indices
    with atomic_open(out_dir / split / "masks" / f"{stem}.png", "wb") as handle:
        mask.save(handle, "PNG")


def _link(source: Path, target: Path) -> None:
    """Make `target` the same file as `source`, replacing whatever had its name."""
    with atomic_path(target) as tmp:
        tmp.unlink()
        try:
            os.link(source, tmp)
        except OSError:  # a file system without hard links
            shutil.copyfile(source, tmp)
