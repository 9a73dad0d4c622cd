"""`cvtool data`: write training data sets out as image folders. No torch here.

`cvtool data digits OUT_DIR` writes the very split `train classify --data digits` trains on, so
`cvtool classify --model RUN_DIR OUT_DIR/val` scores the images that training held out.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cvtool.context import Environment, current, finish
from cvtool.status import ExitStatus, UsageError
from cvtool.writers import atomic_open

if TYPE_CHECKING:
    from cvtool.train.data import Example

data_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                       help="Write training data sets as image folders.")

OutDir = Annotated[Path, typer.Argument(help="Folder to write train/<class>/ and val/<class>/ "
                                             "into; must be empty or absent.", show_default=False)]
Seed = Annotated[int, typer.Option(help="Seed of the stratified train/val split.")]
ValSplit = Annotated[float, typer.Option(help="Fraction of each class held out for val.")]
Force = Annotated[bool, typer.Option(help="Write into a non-empty OUT_DIR, replacing files of "
                                          "the same name.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No logs on stderr.")]
Debug = Annotated[bool, typer.Option(help="Show tracebacks.")]


@data_app.command()
def digits(out_dir: OutDir, seed: Seed = 0, val_split: ValSplit = 0.2, force: Force = False,
           quiet: Quiet = False, debug: Debug = False) -> None:
    """scikit-learn's 8x8 digits, split as training splits them.

    Writes OUT_DIR/{train,val}/<digit>/digit_<index>.png and prints a JSON summary.
    """
    env = current(quiet, debug)
    finish(_write_digits, env, out_dir, seed, val_split, force)


def _write_digits(env: Environment, out_dir: Path, seed: int, val_split: float,
                  force: bool) -> ExitStatus:
    from cvtool.train.data import digits_split

    _require_writable(out_dir, force)
    train, val, classes = digits_split(seed, val_split)
    for split, examples in (("train", train), ("val", val)):
        env.log(f"writing {len(examples)} images to {out_dir / split}")
        for example in examples:
            _write_png(out_dir / split / classes[example.label] / f"{example.name}.png", example)
    summary = {"output": str(out_dir), "train": len(train), "val": len(val),
               "classes": len(classes), "seed": seed, "val_split": val_split}
    print(json.dumps(summary), file=env.stdout, flush=True)
    return ExitStatus.SUCCESS


def _require_writable(out_dir: Path, force: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"{out_dir} exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise UsageError(f"{out_dir} is not empty; use --force to write into it anyway")


def _write_png(path: Path, example: Example) -> None:
    # The digits are gray: one channel holds them losslessly and decodes to the same RGB.
    with atomic_open(path, "wb") as handle:
        example.image.convert("L").save(handle, "PNG")
