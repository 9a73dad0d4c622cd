"""The versions a run records (run.json, a training run's config.json), for audits and repeats."""

from __future__ import annotations

import importlib.metadata
import platform
import sys


def versions() -> dict[str, str | None]:
    """Read without importing what the run did not import (torchvision costs a second and a
    half of start-up, torch._dynamo with it, for a run whose model never needed it)."""
    return {"python": platform.python_version(), "torch": _version("torch", "torch"),
            "torchvision": _version("torchvision", "torchvision"),
            "pillow": _version("PIL", "pillow")}


def _version(module_name: str, distribution: str) -> str | None:
    module = sys.modules.get(module_name)
    if module is not None and isinstance(getattr(module, "__version__", None), str):
        return module.__version__
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
