"""The versions a run records (run.json, a training run's config.json), for audits and repeats."""

from __future__ import annotations

import platform


def versions() -> dict[str, str]:
    import PIL
    import torch
    import torchvision

    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "pillow": PIL.__version__}

