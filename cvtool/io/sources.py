"""Turn the SOURCES given on the command line into a stream of input paths.

A source spec is a file (any extension), a directory (walked recursively for image files), a glob
that cvtool expands itself (so it also works where no shell does), or `-` for paths read from stdin.
A spec that resolves to nothing becomes a `Source` carrying an error, never an exception, so one
bad argument costs one error record and the batch goes on. No torch here: this runs before a model
is loaded.
"""

from __future__ import annotations

import fnmatch
import os
import stat
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from cvtool.core.results import InputError

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
    | {".ppm", ".pgm", ".pbm", ".pnm"}
)

STDIN_SPEC = "-"
_GLOB_MAGIC = frozenset("*?[")
_STDIN_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Source:
    """One input: `path` as given or found; `error` set when the spec could not be resolved;
    `image` the object itself for an in-memory input (its path then reads `memory:N`)."""

    path: str
    error: InputError | None = None
    image: Any = field(default=None, repr=False, compare=False)


def input_sources(inputs: Any) -> Iterator[Source]:
    """The Python API's inputs: one, or an iterable of them, mixed freely. A `str` or path is a
    spec (file, directory, glob) expanded as on the command line; a `PIL.Image`, a numpy array
    (HWC or HW, uint8) or a torch tensor (CHW or HW, uint8 or float in [0, 1]) is an image in
    memory, named `memory:N` after its position N among the inputs."""
    for position, item in enumerate([inputs] if _is_one_input(inputs) else inputs):
        if isinstance(item, (str, os.PathLike)):
            yield from expand_spec(os.fspath(item))
        else:
            yield Source(f"memory:{position}", image=item)


def _is_one_input(value: Any) -> bool:
    if isinstance(value, (str, os.PathLike)):
        return True
    module = type(value).__module__.split(".")[0]
    return module in ("PIL", "numpy", "torch") and not isinstance(value, (list, tuple))


def iter_sources(
    specs: Sequence[str], stdin: IO[bytes] | None = None, null: bool = False
) -> Iterator[Source]:
    """Expand `specs` in order, lazily, so the first inputs are processed while later ones load.

    `-` reads entries from `stdin` (default: the process's binary stdin), one per line, or
    NUL-separated when `null`; each entry is expanded like an argument. Stdin is read once, however
    many times `-` appears, since a second read would only ever see an exhausted stream.
    """
    stdin_read = False
    for spec in specs:
        if spec != STDIN_SPEC:
            yield from expand_spec(spec)
        elif not stdin_read:
            stdin_read = True
            stream = stdin if stdin is not None else sys.stdin.buffer
            for entry in read_stdin_entries(stream, null):
                yield from expand_spec(entry)


def read_stdin_entries(stream: IO[bytes], null: bool = False) -> Iterator[str]:
    """Yield non-blank entries as soon as each is complete (works while `find` is still writing)."""
    separator = b"\0" if null else b"\n"
    for raw in _split_stream(stream, separator):
        if not null:
            raw = raw.removesuffix(b"\r")  # lists written on Windows end lines with CRLF
        if raw.strip():
            yield os.fsdecode(raw)


def _split_stream(stream: IO[bytes], separator: bytes) -> Iterator[bytes]:
    read = _chunk_reader(stream)
    pending = b""
    while chunk := read(_STDIN_CHUNK):
        *complete, pending = (pending + chunk).split(separator)
        yield from complete
    if pending:
        yield pending


def _chunk_reader(stream: IO[bytes]) -> Callable[[int], bytes]:
    """A read that returns whatever the pipe holds now (read(n) would wait for n bytes).

    A real file descriptor is read with os.read: a thread blocked there holds no lock of the
    buffered stream, so the interpreter can still shut down cleanly (Ctrl-C, --fail-fast)
    while `find` keeps the pipe open.
    """
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return getattr(stream, "read1", stream.read)
    return lambda size: os.read(fd, size)


def expand_spec(spec: str, named: bool = True) -> Iterator[Source]:
    """One argument: an existing path wins over a glob reading, so `[1].png` can be named as is.

    A directory `named` on the command line (not a glob's match) that holds no image file is an
    error record of its own (`NoImages`), so an empty or mistyped folder never passes as success.
    """
    try:
        is_directory = stat.S_ISDIR(os.stat(spec).st_mode)
    except FileNotFoundError:
        if os.path.lexists(spec):
            yield Source(spec)  # a dangling link: decode reports it
        elif _GLOB_MAGIC & set(spec):
            yield from _expand_glob(spec)
        else:
            yield Source(spec, InputError("FileNotFoundError", "no such file or directory"))
        return
    except OSError as exc:  # permission denied on a folder above it, a name too long, a loop
        yield Source(spec, _os_error(exc))
        return
    if not is_directory:
        yield Source(spec)  # named explicitly: any extension; decode reports what it is
        return
    found = False
    for source in walk_directory(spec):
        found = True
        yield source
    if named and not found:
        yield Source(spec, InputError("NoImages", "directory holds no image files "
                                      f"({', '.join(sorted(IMAGE_EXTENSIONS))})"))


def _expand_glob(pattern: str) -> Iterator[Source]:
    """The matches of `pattern`, streamed as they are found (each folder's entries sorted by
    name, depth-first), expanded like shell-expanded arguments."""
    # `dir/**` also matches every folder below dir, so a path reached twice is used once.
    seen: set[str] = set()
    matched = False
    for match in _glob(pattern.startswith(os.sep) and os.sep or "",
                       [part for part in pattern.split(os.sep) if part], set()):
        matched = True
        for source in expand_spec(match, named=False):
            if source.path not in seen:
                seen.add(source.path)
                yield source
    if not matched:
        yield Source(pattern, InputError("FileNotFoundError", "no file matches this pattern"))


def _glob(base: str, parts: list[str], visited: set[tuple[int, int, int]]) -> Iterator[str]:
    """glob.glob's matches (`**` recursive, hidden names only for a pattern starting with a
    dot), but lazily, and through a folder reached again by a link (a loop, or two links to
    one folder) only once per pattern position: a link loop ends instead of growing for ever."""
    part, rest = parts[0], parts[1:]
    if part == "**":
        try:
            identity = (*_identity(base or os.curdir), len(parts))
        except OSError:
            return
        if identity in visited:
            return
        visited.add(identity)
        if rest:
            yield from _glob(base, rest, visited)
        else:
            yield os.path.join(base, "")
        for entry in _entries(base, hidden=False):
            if _is_dir(entry):
                yield from _glob(entry.path, parts, visited)
            elif not rest:
                yield entry.path
    elif not _GLOB_MAGIC & set(part):
        path = os.path.join(base, part)
        if rest and os.path.isdir(path):
            yield from _glob(path, rest, visited)
        elif not rest and os.path.lexists(path):
            yield path
    else:
        for entry in _entries(base, hidden=part.startswith(".")):
            if fnmatch.fnmatchcase(entry.name, part):
                if not rest:
                    yield entry.path
                elif _is_dir(entry):
                    yield from _glob(entry.path, rest, visited)


def _entries(directory: str, hidden: bool) -> list[Any]:
    try:
        with os.scandir(directory or os.curdir) as scan:
            found = [entry for entry in scan if hidden or not entry.name.startswith(".")]
    except OSError:  # unreadable or gone: no matches there, as glob has it
        return []
    if not directory:  # scandir(".") names entries ./NAME; glob names them NAME
        found = [_Relative(entry) for entry in found]
    return sorted(found, key=_name)


class _Relative:
    """A DirEntry of the current directory, named as glob names it (no leading ./)."""

    def __init__(self, entry: os.DirEntry[str]) -> None:
        self.entry, self.name, self.path = entry, entry.name, entry.name

    def is_dir(self) -> bool:
        return self.entry.is_dir()


def walk_directory(top: str) -> Iterator[Source]:
    """Image files under `top`, depth-first, each folder's entries sorted by name.

    Hidden files and folders (leading dot) are skipped. Symlinked folders are followed, except
    into a folder already being walked (a link loop).
    """
    yield from _walk(top, active=set())


def _walk(directory: str, active: set[tuple[int, int]]) -> Iterator[Source]:
    try:
        identity = _identity(directory)
        if identity in active:
            return
        with os.scandir(directory) as scan:
            # Hidden entries are skipped, as `ls` and shell globs skip them.
            entries = sorted((e for e in scan if not e.name.startswith(".")), key=_name)
    except OSError as exc:
        yield Source(directory, _os_error(exc))
        return
    active.add(identity)
    for entry in entries:
        if _is_dir(entry):
            yield from _walk(entry.path, active)
        elif os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS:
            yield Source(entry.path)
    active.discard(identity)


def _name(entry: os.DirEntry[str]) -> str:
    return entry.name


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:  # a dangling or unreadable link: treat as a file, decode will report it
        return False


def _identity(directory: str) -> tuple[int, int]:
    info = os.stat(directory)
    return info.st_dev, info.st_ino


def _os_error(exc: OSError) -> InputError:
    return InputError(type(exc).__name__, (exc.strerror or str(exc)).lower())
