"""Regenerate sample_images/ from data bundled with scikit-image and scikit-learn (no network).

    python sample_images/make_sample_images.py

photos/: colour photographs, longer side at most 640 px, JPEG quality 90.
digits/: two examples per class from the validation part of cvtool's digits split (seed 0, the
part `cvtool train classify --data digits` holds out), upscaled to 32x32 with nearest neighbour,
grayscale PNG, named digit_<label>_<dataset index>.png. Origins and licences: SOURCES.md.
shapes/: six scenes of cvtool's synthetic shapes dataset drawn with seed 2026, which no house
model was trained or measured on (`cvtool data shapes` makes the same pixels).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
MAX_SIDE = 640
JPEG_QUALITY = 90
DIGIT_SIZE = 32
DIGITS_PER_CLASS = 2
HELD_OUT_FRACTION = 0.2
SHAPES_SEED = 2026
SHAPES = 6


def photo_loaders() -> dict[str, Callable[[], np.ndarray]]:
    """Output stem -> loader of an (H, W, 3) uint8 array; all files ship inside the packages."""
    from skimage import data
    from sklearn.datasets import load_sample_image

    return {
        "astronaut": data.astronaut,
        "chelsea": data.chelsea,
        "coffee": data.coffee,
        "rocket": data.rocket,
        "hubble_deep_field": data.hubble_deep_field,
        "retina": data.retina,
        "china": lambda: load_sample_image("china.jpg"),
        "flower": lambda: load_sample_image("flower.jpg"),
    }


def fit_longer_side(image: Image.Image, limit: int = MAX_SIDE) -> Image.Image:
    scale = limit / max(image.size)
    if scale >= 1:
        return image
    size = (round(image.width * scale), round(image.height * scale))
    return image.resize(size, Image.Resampling.LANCZOS)


def write_photos(out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, load in photo_loaders().items():
        image = fit_longer_side(Image.fromarray(load()).convert("RGB"))
        path = out_dir / f"{stem}.jpg"
        # No optimize/progressive: plain baseline JPEGs keep the bytes reproducible.
        image.save(path, "JPEG", quality=JPEG_QUALITY)
        written.append(path)
    return written


def held_out_examples(labels: np.ndarray) -> list[int]:
    """The first DIGITS_PER_CLASS indices of each class in the validation part of the split."""
    from cvtool.data.classification import stratified_split

    _, val = stratified_split([int(label) for label in labels], HELD_OUT_FRACTION, seed=0)
    return [index for label in range(10)
            for index in [i for i in val if labels[i] == label][:DIGITS_PER_CLASS]]


def digit_image(pixels: np.ndarray) -> Image.Image:
    """8x8 counts 0..16, scaled as training scales them, enlarged to 32x32, blocks kept sharp."""
    from cvtool.data.classification import digit_image as training_digit

    return training_digit(pixels).convert("L").resize((DIGIT_SIZE, DIGIT_SIZE),
                                                      Image.Resampling.NEAREST)


def write_digits(out_dir: Path) -> list[Path]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for index in held_out_examples(digits.target):
        path = out_dir / f"digit_{digits.target[index]}_{index:04d}.png"
        digit_image(digits.data[index]).save(path, "PNG")
        written.append(path)
    return written


def write_shapes(out_dir: Path) -> list[Path]:
    from cvtool.data.shapes import render

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for index in range(SHAPES):
        path = out_dir / f"shapes_{index:02d}.png"
        Image.fromarray(render(SHAPES_SEED, "val", index).pixels).save(path, "PNG")
        written.append(path)
    return written


def main() -> None:
    paths = (write_photos(HERE / "photos") + write_digits(HERE / "digits")
             + write_shapes(HERE / "shapes"))
    total = sum(path.stat().st_size for path in paths)
    print(f"wrote {len(paths)} files, {total / 1024:.0f} KiB, under {HERE}")


if __name__ == "__main__":
    main()
