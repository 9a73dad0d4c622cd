"""Shared fixtures: the awkward inputs and the real photos in sample_images/."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
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


def mounted_tmpfs(where: Path, options: str) -> Iterator[Path]:
    """A real tmpfs mounted at `where` with `options` for the test's length. Mounting needs
    root (CI and the dev machines run as root); elsewhere the test skips."""
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs ({options}) here: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MiB file system (tmpfs) to fill up: ENOSPC from the kernel, not a mock."""
    yield from mounted_tmpfs(tmp_path / "disk", "size=2m")


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    """A real read-only file system: EROFS from the kernel."""
    yield from mounted_tmpfs(tmp_path / "ro", "size=1m,ro")
