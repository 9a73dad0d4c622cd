"""Opening the files cvtool reads: regular files only, and never a wait on one that is not.

A FIFO, socket or device found among the inputs (or named as ground truth, a sidecar, a run's
config) would block `open()` until some writer appears, holding back every record behind it.
`open_regular` opens without blocking, checks what it opened, and only then reads.

In a directory cvtool owns (a run directory, `-o DIR`) a file is never reached through a
symbolic link: one planted there (`records.jsonl -> ~/.bashrc`) would have cvtool truncate or
append to whatever it points at. Such files are opened with `follow=False` (O_NOFOLLOW: the
kernel refuses the link itself) and `describe_os_error` says so in one line. No torch.
"""

from __future__ import annotations

import errno
import io
import os
import stat
from pathlib import Path
from typing import IO, BinaryIO, cast

_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


class NotRegularFile(OSError):
    """The path exists but is not a regular file; `strerror` says what it is."""


def open_regular(path: str | Path, follow: bool = True, write: bool = False) -> BinaryIO:
    """`path` opened for binary reading (and writing, without truncating, with `write`), or
    OSError (NotRegularFile for a FIFO, device, ...; ELOOP for a link without `follow`)."""
    flags = (os.O_RDWR if write else os.O_RDONLY) | os.O_NONBLOCK | os.O_CLOEXEC
    fd = os.open(path, flags | (0 if follow else os.O_NOFOLLOW))
    return _checked(fd, path, "r+b" if write else "rb")


def open_for_append(path: str | Path, mode: str = "a", encoding: str = "utf-8") -> IO[str]:
    """`path` opened to append text, created if missing, never through a link (ELOOP) and
    never anything but a regular file."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW
    fd = os.open(path, flags, 0o666)
    checked = _checked(fd, path, "ab")
    return io.TextIOWrapper(checked, encoding=encoding, newline="")


def _checked(fd: int, path: str | Path, mode: str) -> BinaryIO:
    """`fd` as a file object once it is known to be a regular file (closed otherwise)."""
    try:
        kind = os.fstat(fd).st_mode
        if stat.S_ISDIR(kind):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        if not stat.S_ISREG(kind):
            name = next((name for test, name in _KINDS if test(kind)), "not a regular file")
            raise NotRegularFile(0, f"{name}, not a regular file", str(path))
        os.set_blocking(fd, True)
        return cast(BinaryIO, os.fdopen(fd, mode))
    except BaseException:
        os.close(fd)
        raise


def read_regular_text(path: str | Path) -> str:
    """The UTF-8 text of a regular file (OSError, UnicodeDecodeError otherwise)."""
    with open_regular(path) as file:
        return file.read().decode("utf-8")


def describe_os_error(error: OSError) -> str:
    """What went wrong, in words a user acts on: a link where cvtool refuses links, else the
    system's own description."""
    if error.errno == errno.ELOOP:
        return ("is a symbolic link; cvtool never follows links in the directories it owns "
                "(remove the link)")
    return (error.strerror or str(error)).lower()
