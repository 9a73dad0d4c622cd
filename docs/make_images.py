"""Regenerate the README's pictures of the house models (run from the repository root).

    python docs/make_images.py

docs/images/shapes-maskrcnn.png: `cvtool segment-instance` annotated images of the six
sample_images/shapes scenes, side by side; docs/images/shapes-unet.png: `cvtool
segment-semantic` overlays of the same scenes; docs/images/digits-*.png: 64 samples of each
generative house model (seed 0) and a VAE interpolation.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "images"
SHAPES = sorted((ROOT / "sample_images" / "shapes").glob("shapes_*.png"))
GAP = 4


def cvtool(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "cvtool", *args, "-q"], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL)


def strip(images: list[Path], path: Path, scale: int = 2) -> None:
    """The images side by side, enlarged `scale` times (nearest), on a white background."""
    tiles = [Image.open(p).convert("RGB") for p in images]
    tiles = [t.resize((t.width * scale, t.height * scale), Image.Resampling.NEAREST)
             for t in tiles]
    canvas = Image.new("RGB", (sum(t.width for t in tiles) + GAP * (len(tiles) - 1),
                               max(t.height for t in tiles)), "white")
    x = 0
    for tile in tiles:
        canvas.paste(tile, (x, 0))
        x += tile.width + GAP
    canvas.save(path)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    relative = [str(p.relative_to(ROOT)) for p in SHAPES]
    with tempfile.TemporaryDirectory() as tmp:
        cvtool("segment-instance", *relative, "-m", "shapes-maskrcnn", "-o", f"{tmp}/instance")
        strip([Path(tmp, "instance", r) for r in relative], OUT / "shapes-maskrcnn.png")
        cvtool("segment-semantic", *relative, "-m", "shapes-unet", "-o", f"{tmp}/semantic")
        strip([Path(tmp, "semantic", "overlays", r) for r in relative], OUT / "shapes-unet.png")
    for name in ("digits-pixelcnn", "digits-vae", "digits-gan"):
        cvtool("generate", "-m", name, "-n", "64", "--seed", "0", "--grid",
               str(OUT / f"{name}.png"))
    cvtool("generate", "-m", "digits-vae", "-n", "8", "--interpolate", "--steps", "10",
           "--seed", "0", "--grid", str(OUT / "digits-vae-interpolation.png"))


if __name__ == "__main__":
    main()
