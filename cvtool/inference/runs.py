"""Batch runs that survive: `DIR/records.jsonl` under `-o DIR`, `--resume`, `--shard K/N`.

Every record also goes to `DIR/records.jsonl` as it finishes, one complete line per record,
flushed at once, in completion order (the order records come out, which is input order within
one process). `--resume` reads it back, skips every input that already has a record there
(artifacts included), and appends the rest; a line cut short by a kill is dropped first. The
options that decide the records (model, weights, thresholds, precision...) are kept in
`DIR/run.json` from the start; a `--resume` that differs in any is a UsageError naming it.

`--shard K/N` keeps the inputs whose path hashes to K of N (SHA-256 of the path's bytes):
deterministic, disjoint, covering every input exactly once whatever order the listing comes
in, and balanced to within a few percent from a few thousand inputs on.
"""

from __future__ import annotations

import base64
import collections
import errno
import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO

from cvtool.core import jsonfile
from cvtool.core.files import NotRegularFile, describe_os_error, open_for_append, open_regular
from cvtool.core.options import PredictorOptions
from cvtool.core.results import Record, record_path
from cvtool.core.status import UsageError
from cvtool.io.sources import Source
from cvtool.io.writers import CSV_ITEMS, strict_json

RECORDS = "records.jsonl"
# Beside it, line for line: each record's input's position in the whole (unsharded) listing,
# which `cvtool merge` puts the records of several runs back in input order by.
POSITIONS = "records.positions"
RUN_JSON = "run.json"
# How a predictor runs, not what it finds: these may change between a run and its --resume.
NOT_DECIDING = frozenset({"device", "workers", "threads", "batch_size", "output", "fail_fast"})


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """`K/N`, 1 <= K <= N, as jest and Playwright write it."""
    if text is None:
        return None
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        index = count = 0
    if not 1 <= index <= count:
        raise UsageError(f"invalid --shard {text!r}; expected K/N with 1 <= K <= N, e.g. 2/4")
    return index, count


def shard_of(path: str, count: int) -> int:
    """The 1-based shard of `path` among `count`."""
    try:
        raw = os.fsencode(path)
    except UnicodeEncodeError:  # surrogates that stand for no byte (from JSON escapes)
        raw = path.encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.sha256(raw).digest()[:8], "big") % count + 1


def in_shard(sources: Iterable[Source], shard: tuple[int, int] | None) -> Iterator[Source]:
    if shard is None:
        yield from sources
        return
    index, count = shard
    yield from (source for source in sources if shard_of(source.path, count) == index)


def deciding_options(options: PredictorOptions) -> dict[str, Any]:
    """The options whose change changes the records."""
    return {key: value for key, value in options.to_dict().items() if key not in NOT_DECIDING}


class RecordsFile:
    """`DIR/records.jsonl`: a record writer that appends, one flushed line per record, and
    knows which inputs earlier runs into DIR already answered."""

    def __init__(self, output: Path, task: str, options: dict[str, Any], resume: bool,
                 shard: tuple[int, int] | None) -> None:
        self.path = Path(output) / RECORDS
        self.positions_path = Path(output) / POSITIONS
        self.shard = shard
        self.queued: collections.deque[int] = collections.deque()
        self.done: set[str] = set()
        self.earlier = {"inputs": 0, "ok": 0, "failed": 0}
        previous = _previous_run(Path(output))
        if resume:
            _check_same_run(previous, task, options, shard, Path(output))
            self._read_back()
        elif self.path.exists() or previous is not None:
            raise UsageError(f"--output {output} holds an earlier run ({RECORDS}, {RUN_JSON}); "
                             "add --resume to continue it, or choose another directory")
        # Opened at the first record: a run that fails before any (a full disk at run.json)
        # leaves no empty files behind.
        self.handle: IO[str] | None = None
        self.positions: IO[str] | None = None

    def _read_back(self) -> None:
        if not self.path.exists():
            return
        lines = _complete_lines(self.path, repair=True)
        # A position is written before its record: a kill between the two leaves one extra.
        _complete_lines(self.positions_path, keep=len(lines), repair=True)
        for number, line in enumerate(lines, 1):
            record = read_record(line, self.path, number, "--resume")
            path, ok = record_path(record), record["ok"]
            if path not in self.done:
                self.done.add(path)
                self.earlier["inputs"] += 1
                self.earlier["ok" if ok else "failed"] += 1

    def pending(self, sources: Iterable[Source]) -> Iterator[Source]:
        """The sources of this shard that have no record yet, noting each one's position in
        the whole listing (records come back in the order sources go out)."""
        for position, source in enumerate(sources):
            if self.shard is not None and shard_of(source.path, self.shard[1]) != self.shard[0]:
                continue
            if source.path not in self.done:
                self.queued.append(position)
                yield source

    def write(self, record: Record) -> None:
        if self.handle is None or self.positions is None:
            self.positions = _append(self.positions_path)
            self.handle = _append(self.path)
        self.positions.write(f"{self.queued.popleft()}\n")
        self.positions.flush()
        self.handle.write(strict_json(record.to_dict()) + "\n")
        self.handle.flush()

    def close(self) -> None:
        for handle in (self.handle, self.positions):
            if handle is not None:
                handle.close()


def _append(path: Path) -> IO[str]:
    try:
        return open_for_append(path)
    except OSError as error:
        if error.errno != errno.ELOOP and not isinstance(error, NotRegularFile):
            raise
        raise UsageError(f"{path}: {describe_os_error(error)}") from None


def read_record(line: str, path: Path, number: int, what: str) -> dict[str, Any]:
    """Line `number` of a records file read back: a JSON object with the fields every record
    has, or a UsageError naming the file and line."""
    try:
        record = jsonfile.loads(line)
    except jsonfile.UntrustedJSON as error:
        raise UsageError(f"{what}: {path} line {number} is not a record: {error}") from None
    problem = _record_problem(record)
    if problem:
        raise UsageError(f"{what}: {path} line {number} is not a cvtool record: {problem}")
    return record


def _record_problem(record: Any) -> str | None:
    if not isinstance(record, dict):
        return f"a JSON {type(record).__name__}, not an object"
    for key, kind in (("path", str), ("task", str), ("model", str), ("ok", bool)):
        if not isinstance(record.get(key), kind):
            return f"{key!r} missing or not a {kind.__name__}"
    if "path_bytes" in record:
        try:
            base64.b64decode(record["path_bytes"], validate=True)
        except (TypeError, ValueError):
            return "'path_bytes' is not base64"
    return None


def _complete_lines(path: Path, keep: int | None = None, repair: bool = False) -> list[str]:
    """The file's complete lines (at most `keep`); with `repair`, what follows them (a line cut
    short by a kill) is truncated away. The file must be a regular file of the run directory's
    own (a link there is refused, never followed)."""
    try:
        file = open_regular(path, follow=False, write=repair)
    except FileNotFoundError:
        return []
    except OSError as error:
        raise UsageError(f"{path}: {describe_os_error(error)}") from None
    with file:
        data = file.read()
        lines = data.splitlines(keepends=True)
        lines = [line for line in lines if line.endswith(b"\n")][:keep]
        size = sum(map(len, lines))
        if repair and size != len(data):
            file.truncate(size)
    return [line.decode("utf-8", "replace") for line in lines]


def _previous_run(output: Path) -> dict[str, Any] | None:
    path = output / RUN_JSON
    try:
        info = jsonfile.read(path, follow=False)
    except FileNotFoundError:
        return None
    except (OSError, jsonfile.UntrustedJSON) as error:
        reason = describe_os_error(error) if isinstance(error, OSError) else error
        raise UsageError(f"--output {output}: cannot read its {RUN_JSON}: {reason}") from None
    if not isinstance(info, dict):
        raise UsageError(f"--output {output}: its {RUN_JSON} is not a JSON object")
    for key, kind in (("options", dict), ("task", str)):
        if not isinstance(info.get(key), kind):
            raise UsageError(f"--output {output}: its {RUN_JSON} has no {key!r} "
                             f"{'object' if kind is dict else 'string'}; it was not written "
                             "by cvtool")
    return info


def _check_same_run(previous: dict[str, Any] | None, task: str, options: dict[str, Any],
                    shard: tuple[int, int] | None, output: Path) -> None:
    if previous is None:
        return  # nothing to compare with: a run killed before it wrote anything
    given = json.loads(strict_json({"task": task, **options,
                                    "shard": list(shard) if shard else None}))
    recorded = {"task": previous.get("task"), **previous.get("options", {}),
                "shard": previous.get("shard")}
    differences = [f"{key} {recorded.get(key)!r} then, {given.get(key)!r} now"
                   for key in sorted(set(given) | set(recorded))
                   if recorded.get(key) != given.get(key)]
    if differences:
        raise UsageError(f"--resume {output}: the options differ from the run's: "
                         f"{'; '.join(differences)}")


class Run:
    """One run directory, read back for `cvtool merge`: its run.json, and its records paired
    with their inputs' positions in the whole listing."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        info = _previous_run(self.directory)
        if info is None or not (self.directory / RECORDS).exists():
            raise UsageError(f"{directory} is not a cvtool run directory (no {RUN_JSON} and "
                             f"{RECORDS}); give directories written with -o")
        if info["task"] not in CSV_ITEMS:
            raise UsageError(f"{directory}: its {RUN_JSON} names no inference task "
                             f"({str(info['task'])[:40]!r})")
        self.info = info
        lines = _complete_lines(self.directory / RECORDS)
        positions = _complete_lines(self.directory / POSITIONS)
        if len(positions) != len(lines):
            raise UsageError(f"{directory}: {POSITIONS} has {len(positions)} lines for "
                             f"{len(lines)} records; finish the run with --resume first")
        self.records: list[tuple[int, dict[str, Any]]] = []
        for number, (position, line) in enumerate(zip(positions, lines), 1):
            record = read_record(line, self.directory / RECORDS, number, "merge")
            if not position.strip().isdigit() or len(position) > 20:
                raise UsageError(f"merge: {self.directory / POSITIONS} line {number} is not a "
                                 "position")
            self.records.append((int(position), record))

    def same_as(self) -> dict[str, Any]:
        """What runs must share to be merged: the task and the options that decide records."""
        return {"task": self.info.get("task"), **self.info.get("options", {})}


def merged(runs: list[Run]) -> list[tuple[Run, dict[str, Any]]]:
    """Every run's records in input order, each with its run; the runs must be of one task
    with the same options, and no input may have records in two of them."""
    first = runs[0].same_as()
    for run in runs[1:]:
        other = run.same_as()
        if other != first:
            differences = [f"{key} {first.get(key)!r} in {runs[0].directory}, "
                           f"{other.get(key)!r} in {run.directory}"
                           for key in sorted(set(first) | set(other))
                           if first.get(key) != other.get(key)]
            raise UsageError(f"cannot merge runs made with different options: "
                             f"{'; '.join(differences)}")
    owner: dict[str, Path] = {}
    ordered: list[tuple[int, int, Run, dict[str, Any]]] = []
    for number, run in enumerate(runs):
        for position, record in run.records:
            path = record_path(record)
            if path in owner:
                raise UsageError(f"{record.get('path')} has records in both {owner[path]} and "
                                 f"{run.directory}; merge disjoint runs (shards of one run)")
            owner[path] = run.directory
            ordered.append((position, number, run, record))
    ordered.sort(key=lambda item: item[:2])
    return [(run, record) for _, _, run, record in ordered]


def open_artifact(run: Run, record: dict[str, Any], key: str) -> BinaryIO:
    """The file a record of `run` names under `key` (a mask_path), opened for reading: it must
    be a regular file inside that run directory (the path as written, else its tail below
    the run directory, which may have moved since), else a UsageError naming the record. A
    tampered record pointing at /etc/passwd or a FIFO never gets opened."""
    value = record.get(key)
    where = f"{run.directory / RECORDS}: the record of {record.get('path')!r}"
    if not isinstance(value, str) or not value or "\0" in value:
        raise UsageError(f"{where} has no usable {key}")
    root = os.path.realpath(run.directory)
    parts = Path(value).parts
    candidates = [value, *(os.path.join(run.directory, *parts[first:])
                           for first in range(1 if os.path.isabs(value) else 0, len(parts)))]
    for candidate in candidates:
        real = os.path.realpath(candidate)
        if os.path.commonpath([root, real]) == root and os.path.lexists(real):
            try:
                return open_regular(real, follow=False)
            except OSError as error:
                raise UsageError(f"{where}: its {key} {value}: {describe_os_error(error)}") \
                    from None
    raise UsageError(f"{where}: its {key} {value!r} is not a file inside the run directory "
                     f"{run.directory}")
