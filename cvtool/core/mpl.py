"""matplotlib's configuration folder, settled before matplotlib is imported.

Where `~/.config/matplotlib` cannot be written (a read-only HOME in a container or CI job),
matplotlib makes a temporary folder itself and logs a multi-line warning that reaches stderr
even under --quiet. cvtool gives it a private temporary folder first, so nothing is said: the
folder holds only matplotlib's font cache, which it rebuilds in a second. No torch here.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def prepare_matplotlib() -> None:
    """Set MPLCONFIGDIR to a fresh private folder unless matplotlib's own can be written."""
    if os.environ.get("MPLCONFIGDIR") or _writable(_default_config_dir()):
        return
    os.environ["MPLCONFIGDIR"] = tempfile.mkdtemp(prefix="cvtool-matplotlib-")


def _default_config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "matplotlib"


def _writable(directory: Path) -> bool:
    """As matplotlib decides: the folder can be made and a file created in it."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory):
            return True
    except OSError:
        return False

