"""One process at a time owns an output directory (a training run, an inference `-o DIR`).

The owner holds an exclusive `flock` on `DIR/.cvtool.lock`, which also names it (pid, host,
command, start time). The kernel drops the lock when the owner exits in any way, kill -9
included, so a lock file left behind by a dead owner is stale and simply taken over. A forked
child (a DataLoader worker) closes its copy of the descriptor at once: a flock belongs to the
open file, so a worker outliving a killed owner would otherwise keep the directory locked. A second
process is refused at once (exit 2) with the owner's line. On release, the lock file goes, and
so does the directory itself when this process created it and left nothing else in it (a run
that failed with a usage error leaves no empty directory behind). No torch here.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import stat
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cvtool.core.status import UsageError

LOCK_NAME = ".cvtool.lock"
_ATTEMPTS = 5  # a lock file replaced between open and flock is retried
_HELD: set[DirectoryClaim] = set()  # this process's claims, closed in forked children
# Absolute paths of the directories this process writes into (its claims, and a Ray actor's
# share of the driver's): below them no folder or file is reached through a link.
_GUARDED: list[str] = []


class DirectoryClaim:
    """Ownership of `path` until `release()` (or the context's end)."""

    def __init__(self, path: Path, fd: int, created: bool) -> None:
        self.path, self.fd, self.created = path, fd, created
        _HELD.add(self)
        _GUARDED.append(os.path.abspath(path))

    def release(self) -> None:
        _HELD.discard(self)
        if self.fd < 0:
            return
        _GUARDED.remove(os.path.abspath(self.path))
        # Unlink while still holding the lock: a process that opened the old file finds it
        # replaced once it gets the lock and tries again on the new one.
        (self.path / LOCK_NAME).unlink(missing_ok=True)
        os.close(self.fd)
        self.fd = -1
        if self.created and is_empty(self.path):
            try:
                self.path.rmdir()
            except OSError:
                pass  # something appeared in it meanwhile: keep it

    def __enter__(self) -> DirectoryClaim:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


def _forget_in_child() -> None:
    """After a fork, in the child: drop the inherited descriptors without unlocking (an unlock
    would free the parent's lock too) and without the parent's claims' clean-up."""
    for claim in list(_HELD):
        try:
            os.close(claim.fd)
        except OSError:
            pass
        claim.fd = -1
    _HELD.clear()


os.register_at_fork(after_in_child=_forget_in_child)


def claim_directory(path: Path, what: str) -> DirectoryClaim:
    """Create `path` if needed and own it; UsageError naming the owner if another process does."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{what} {path} exists and is not a directory")
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    lock = path / LOCK_NAME
    for _ in range(_ATTEMPTS):
        fd = _open_lock(lock, what)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _owner(fd)
            os.close(fd)
            raise UsageError(f"{what} {path} is in use by {owner}; wait for it to finish or "
                             "choose another directory") from None
        if _same_file(fd, lock):
            _describe_owner(fd)
            return DirectoryClaim(path, fd, created)
        os.close(fd)  # the owner released (and removed) it between our open and our flock
    raise UsageError(f"{what} {path}: could not take its lock; is another cvtool starting?")


def _open_lock(lock: Path, what: str) -> int:
    """The lock file, never reached through a link: one planted as `.cvtool.lock -> victim`
    would have the owner's line written over the victim."""
    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        fd = os.open(lock, flags, 0o644)
    except OSError as error:
        if error.errno not in (errno.ELOOP, errno.ENXIO, errno.EISDIR):
            raise
        _refuse_link(str(lock), directory=False)
        raise UsageError(f"{what} {lock.parent}: its {LOCK_NAME} is not a regular file; "
                         "remove it") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UsageError(f"{what} {lock.parent}: its {LOCK_NAME} is not a regular file; "
                         "remove it")
    return fd


@contextmanager
def guarded(path: Path) -> Iterator[None]:
    """Write into `path` (another process's claim) with the claim's rule: no links below it."""
    _GUARDED.append(os.path.abspath(path))
    try:
        yield
    finally:
        _GUARDED.remove(os.path.abspath(path))


def prepare_parent(path: Path) -> None:
    """Before a file is written at `path`: inside a directory this process writes into, make
    its missing folders and check that each one, and the file if it exists, is what it seems
    and no symbolic link (`-o out` with `out/masks -> elsewhere` would write elsewhere).
    Outside those directories (a path the user named, `-o model.onnx`) nothing is checked."""
    target = os.path.abspath(path)
    root = next((root for root in sorted(_GUARDED, key=len, reverse=True)
                 if target.startswith(root.rstrip(os.sep) + os.sep)), None)
    if root is None:
        return
    current = root
    for part in os.path.relpath(os.path.dirname(target), root).split(os.sep):
        if part in ("", "."):
            continue
        current = os.path.join(current, part)
        try:
            os.mkdir(current)
        except FileExistsError:
            _refuse_link(current, directory=True)
    _refuse_link(target, directory=False)


def _refuse_link(path: str, directory: bool) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISLNK(mode):
        raise UsageError(f"{path} is a symbolic link; cvtool never follows links in the "
                         "directories it owns (remove the link)")
    if directory and not stat.S_ISDIR(mode):
        raise UsageError(f"{path} is not a directory; remove it or choose another --output")


def require_empty(path: Path, what: str, advice: str) -> None:
    """The check every writer of a fresh output directory makes (after claiming it)."""
    if path.is_dir() and not is_empty(path):
        raise UsageError(f"{what} {path} is not empty; {advice}")


def is_empty(path: Path) -> bool:
    """No entry in `path` but (perhaps) the lock file."""
    return all(entry.name == LOCK_NAME for entry in Path(path).iterdir())


def _same_file(fd: int, lock: Path) -> bool:
    try:
        here, there = os.fstat(fd), os.stat(lock)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _describe_owner(fd: int) -> None:
    command = " ".join(["cvtool", *sys.argv[1:]])[:300]
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
    line = f"pid {os.getpid()} on {socket.gethostname()} since {started} ({command})\n"
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, line.encode("utf-8", "replace"), 0)
    except OSError:  # a full disk: the lock holds without its description
        pass


def _owner(fd: int) -> str:
    text = os.pread(fd, 1000, 0).decode("utf-8", "replace").strip()
    return text or "another process"
