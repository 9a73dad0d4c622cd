"""Shared fixtures: the awkward inputs and the real photos in sample_images/."""

from __future__ import annotations

from pathlib import Path

import pytest
from awkward import make_awkward_inputs

PHOTOS_DIR = Path(__file__).resolve().parent.parent / "sample_images" / "photos"


@pytest.fixture(scope="session")
def awkward_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding every awkward input once per session; see tests/awkward.py."""
    directory = tmp_path_factory.mktemp("awkward")
    make_awkward_inputs(directory)
    return directory


@pytest.fixture
def photo_paths() -> list[Path]:
    """A few real photographs (JPEG), sorted by name; regenerate with make_sample_images.py."""
    paths = sorted(PHOTOS_DIR.glob("*.jpg"))[:4]
    if not paths:
        pytest.fail(f"no photos in {PHOTOS_DIR}; run python sample_images/make_sample_images.py")
    return paths
