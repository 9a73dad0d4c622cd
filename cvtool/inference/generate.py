"""`cvtool generate`: samples or latent interpolations from a generative checkpoint, as PNGs.

All randomness comes from one CPU generator seeded with `--seed` and drawn up front (latents,
PixelCNN's uniforms), so the same seed on the same device writes byte-identical files, and the
draws do not depend on `--batch-size`. Samples are `NNNNNN.png`; an interpolation writes
`--num` paths of `--steps` images, `NNNNNN_SS.png`, path NNNNNN from one prior draw to another,
and its grid has one path per row.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import torch
from PIL import Image

from cvtool.core.context import Environment
from cvtool.core.options import GenerateOptions
from cvtool.core.status import UsageError
from cvtool.generative import gan, pixelcnn, vae
from cvtool.generative.checkpoint import LoadedGenerative, describe, load_generative
from cvtool.generative.images import PNG_MODES, grid, to_uint8, write_png

TASK = "generate"
LATENT_FAMILIES = {"vae": vae, "gan": gan}


def check_options(options: GenerateOptions) -> None:
    """The checks that need no model: each failure is one line (exit 2)."""
    problems = [(options.model is None, "--model is required: a generative house model name "
                                        "(`cvtool models generate`), checkpoint or run directory"),
                (options.num < 1, f"--num must be at least 1, not {options.num}"),
                (options.batch_size < 1,
                 f"--batch-size must be at least 1, not {options.batch_size}"),
                (options.temperature is not None and not options.temperature > 0,
                 f"--temperature must be above 0, not {options.temperature}"),
                (options.steps < 2, f"--steps must be at least 2, not {options.steps}")]
    for failed, message in problems:
        if failed:
            raise UsageError(message)


def load(options: GenerateOptions) -> LoadedGenerative:
    """The model, once its family is known to accept the options."""
    loaded = load_generative(options.model)
    check_family(loaded, options)
    if loaded.module.channels not in PNG_MODES:
        raise UsageError(f"{loaded.name} makes {loaded.module.channels}-channel images; PNG "
                         "files take 1 (grey) or 3 (RGB)")
    return loaded


def check_family(loaded: LoadedGenerative, options: GenerateOptions) -> None:
    if options.temperature is not None and loaded.family != "pixelcnn":
        raise UsageError(f"--temperature applies to PixelCNN only; {loaded.name} is a "
                         f"{loaded.family}")
    if options.interpolate and loaded.family not in LATENT_FAMILIES:
        raise UsageError(f"--interpolate needs a latent space (vae, gan); {loaded.name} is a "
                         f"{loaded.family}")


def generate(env: Environment, loaded: LoadedGenerative, options: GenerateOptions,
             device: torch.device) -> torch.Tensor:
    """Float images in [0, 1], (N, C, H, W) on the CPU: N = num, or num x steps."""
    module = loaded.module.to(device)
    generator = torch.Generator().manual_seed(options.seed)
    if options.interpolate:
        family = LATENT_FAMILIES[loaded.family]
        ends = module.draw_latents(2 * options.num, generator)
        return family.interpolate(module, ends[:options.num], ends[options.num:],
                                  options.steps, options.batch_size)
    if loaded.family == "pixelcnn":
        with SamplingProgress(env) as progress:
            return pixelcnn.sample(module, options.num, generator=generator,
                                   temperature=options.temperature or 1.0,
                                   batch_size=options.batch_size, progress=progress.update)
    return LATENT_FAMILIES[loaded.family].sample(module, options.num, generator=generator,
                                                 batch_size=options.batch_size)


def write_images(images: torch.Tensor, options: GenerateOptions) -> None:
    """Each image under --output and the grid at --grid, every file atomically."""
    pixels = to_uint8(images)
    if options.output is not None:
        for name, image in zip(file_names(options), pixels):
            write_png(Path(options.output) / name, image)
    if options.grid is not None:
        write_png(Path(options.grid), grid(pixels, options.steps if options.interpolate else None))


def to_images(images: torch.Tensor) -> list[Image.Image]:
    """Float images in [0, 1], (N, C, H, W) -> PIL images ("L" or "RGB"), the pixels the
    PNGs hold."""
    return [Image.fromarray(np.ascontiguousarray(plane.squeeze(2) if plane.shape[2] == 1
                                                 else plane)) for plane in to_uint8(images)]


def file_names(options: GenerateOptions) -> list[str]:
    if not options.interpolate:
        return [f"{index:06d}.png" for index in range(options.num)]
    digits = max(2, len(str(options.steps - 1)))
    return [f"{path:06d}_{step:0{digits}d}.png"
            for path in range(options.num) for step in range(options.steps)]


def settings(options: GenerateOptions) -> dict[str, Any]:
    """What run.json records about the options."""
    return {"num": options.num, "batch_size": options.batch_size,
            "temperature": options.temperature, "interpolate": options.interpolate,
            "steps": options.steps if options.interpolate else None,
            "grid": options.grid}


def summary(loaded: LoadedGenerative, options: GenerateOptions, images: int, device: str,
            seconds: float) -> dict[str, Any]:
    """The one JSON object printed on stdout."""
    return {"task": TASK, "model": loaded.name, "family": loaded.family, "images": images,
            "output": options.output, "grid": options.grid, "seed": options.seed,
            "temperature": options.temperature, "interpolate": options.interpolate,
            "steps": options.steps if options.interpolate else None, "device": device,
            "seconds": round(seconds, 3)}


def model_info(loaded: LoadedGenerative) -> dict[str, Any]:
    return {"name": loaded.name, "family": loaded.family, "weights_file": loaded.weights_file,
            "weights_sha256": loaded.weights_sha256, **describe(loaded.module)}


class SamplingProgress:
    """PixelCNN's subpixel-by-subpixel progress, on stderr, only at a terminal and not -q."""

    def __init__(self, env: Environment) -> None:
        self.env, self.progress, self.task = env, None, None
        self.shown = not env.quiet and env.stderr_isatty

    def __enter__(self) -> SamplingProgress:
        self.progress = self.env.progress_bar() if self.shown else None
        if self.progress is not None:
            self.task = self.progress.add_task("sampling subpixels", total=None)
        return self

    def update(self, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=done, total=total)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self.progress is not None:
            self.progress.stop()
