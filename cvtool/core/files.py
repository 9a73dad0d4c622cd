"""Opening the files cvtool reads: regular files only, and never a wait on one that is not.

A FIFO, socket or device found among the inputs (or named as ground truth, a sidecar, a run's
config) would block `open()` until some writer appears, holding back every record behind it.
`open_regular` opens without blocking, checks what it opened, and only then reads. No torch.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


class NotRegularFile(OSError):
    """The path exists but is not a regular file; `strerror` says what it is."""


def open_regular(path: str | Path) -> BinaryIO:
    """`path` opened for binary reading, or OSError (NotRegularFile for a FIFO, device, ...)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
            raise NotRegularFile(0, f"{kind}, not a regular file", str(path))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular_text(path: str | Path) -> str:
    """The UTF-8 text of a regular file (OSError, UnicodeDecodeError otherwise)."""
    with open_regular(path) as file:
        return file.read().decode("utf-8")
