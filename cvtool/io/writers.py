"""Where records and artifacts go: streaming table/jsonl/csv writers and atomic file writes.

Record writers flush after every record, so `| head -1` or a Ctrl-C leaves only complete lines.
No torch here.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Protocol

from cvtool.core.ownership import prepare_parent
from cvtool.core.results import Record, printable, shown

RECORD_FORMATS = ("table", "jsonl", "csv", "coco")
WRITER_NICENESS = 10  # artifact writer threads, relative to the process
_SURROGATE = re.compile("[\ud800-\udfff]")

# For csv: the list in each task's payload that becomes one row per item, and the item's columns.
CSV_ITEMS: dict[str, tuple[str, tuple[str, ...]]] = {
    "classify": ("predictions", ("rank", "index", "label", "score")),
    "detect": ("detections", ("rank", "index", "label", "score", "x1", "y1", "x2", "y2")),
    # Masks stay out of CSV (an RLE string per cell helps nobody): jsonl and coco carry them.
    "segment-instance": ("detections", ("rank", "index", "label", "score",
                                        "x1", "y1", "x2", "y2", "area")),
    # One row per class present; mask_path is the record's own (empty without --output).
    "segment-semantic": ("classes", ("rank", "index", "label", "pixels", "fraction",
                                     "mask_path")),
}
TABLE_ITEMS = 5  # detections named per row of the table; jsonl and csv carry them all
CSV_BASE = ("path", "ok", "task", "model", "width", "height")
CSV_ERROR = ("error_type", "error_message")
CSV_PATH_BYTES = "path_bytes"  # base64 of the path's bytes, only where they are not UTF-8


class RecordWriter(Protocol):
    def write(self, record: Record) -> None: ...
    def close(self) -> None: ...


class JsonlWriter:
    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def write(self, record: Record) -> None:
        self.stream.write(strict_json(record.to_dict()) + "\n")
        self.stream.flush()

    def close(self) -> None:
        self.stream.flush()


class CsvWriter:
    """One row per prediction; a failed input is one row with the error columns filled."""

    def __init__(self, stream: IO[str], task: str) -> None:
        self.stream = stream
        self.items_key, self.item_columns = CSV_ITEMS[task]
        self.writer = csv.DictWriter(
            stream, fieldnames=[*CSV_BASE, *self.item_columns, *CSV_ERROR, CSV_PATH_BYTES],
            lineterminator="\n")
        self.writer.writeheader()

    def write(self, record: Record) -> None:
        fields = record.to_dict()
        base = {key: fields.get(key) for key in (*CSV_BASE, CSV_PATH_BYTES)}
        if record.error is not None:
            self._row({**base, "error_type": record.error.type,
                       "error_message": record.error.message})
        scalars = {key: value for key, value in record.payload.items()
                   if not isinstance(value, (list, dict))}
        for rank, item in enumerate(record.payload.get(self.items_key, []), start=1):
            flat = {**scalars, **item, **dict(zip(("x1", "y1", "x2", "y2"), item.get("box", ())))}
            row = {column: flat.get(column) for column in self.item_columns}
            self._row({**base, **row, "rank": rank})
        self.stream.flush()

    def _row(self, row: dict[str, Any]) -> None:
        self.writer.writerow({key: csv_value(value) for key, value in row.items()})

    def close(self) -> None:
        self.stream.flush()


class TableWriter:
    """A rich table for people at a terminal; printed once all records are in."""

    def __init__(self, stream: IO[str], task: str, no_color: bool) -> None:
        # rich is imported only when a table is asked for: --help and pipes never pay for it.
        from rich.console import Console
        from rich.table import Table

        # Into a file or pipe, rows stay whole lines instead of wrapping at 80 columns.
        width = None if getattr(stream, "isatty", lambda: False)() else 1000
        self.console = Console(file=stream, no_color=no_color, highlight=False, width=width)
        self.items_key = CSV_ITEMS[task][0]
        self.table = Table("path", "size", "result", box=None, header_style="bold")

    def write(self, record: Record) -> None:
        from rich.text import Text

        size = f"{record.width}x{record.height}" if record.width else ""
        if record.error is not None:  # Text, never markup: a name may hold `[/]` or `[link=`
            summary = Text.assemble(("error", "red"),
                                    shown(f" {record.error.type}: {record.error.message}"))
        else:
            summary = Text(shown(self._summary(record)))
        self.table.add_row(Text(shown(record.path)), size, summary)

    def _summary(self, record: Record) -> str:
        items = record.payload.get(self.items_key, [])
        if self.items_key == "classes":  # semantic: the largest classes' share of the image
            shown = ", ".join(f"{item['label']} {item['fraction']:.1%}"
                              for item in items[:TABLE_ITEMS])
            return shown + (f", +{len(items) - TABLE_ITEMS} more" if len(items) > TABLE_ITEMS
                            else "")
        if self.items_key != "detections":
            return ", ".join(f"{item['label']} {item['score']:.3f}" for item in items)
        # Detections can be none or hundreds: the count, then the best few.
        shown = ", ".join(f"{item['label']} {item['score']:.2f}" for item in items[:TABLE_ITEMS])
        more = f", +{len(items) - TABLE_ITEMS} more" if len(items) > TABLE_ITEMS else ""
        return f"{len(items)}: {shown}{more}" if items else "0"

    def close(self) -> None:
        if self.table.row_count:
            self.console.print(self.table)


class CocoWriter:
    """A COCO results list: one JSON array, so it is written once all records are in."""

    def __init__(self, stream: IO[str], collector: Any) -> None:
        self.stream, self.collector = stream, collector  # collector: cvtool.io.coco.ResultCollector

    def write(self, record: Record) -> None:
        self.collector.write(record)

    def close(self) -> None:
        self.stream.write(strict_json(self.collector.results))
        self.stream.write("\n")
        self.stream.flush()


class TeeWriter:
    """Hands every record to several writers (the chosen format and a COCO collector)."""

    def __init__(self, *writers: RecordWriter) -> None:
        self.writers = writers

    def write(self, record: Record) -> None:
        for writer in self.writers:
            writer.write(record)

    def close(self) -> None:
        for writer in self.writers:
            writer.close()


def make_writer(fmt: str, stream: IO[str], task: str, no_color: bool = False,
                collector: Any = None) -> RecordWriter:
    """The writer for `fmt`; `collector` (a cvtool.io.coco.ResultCollector) is needed for coco."""
    if fmt == "coco":
        return CocoWriter(stream, collector)
    if fmt == "jsonl":
        return JsonlWriter(stream)
    if fmt == "csv":
        return CsvWriter(stream, task)
    if fmt == "table":
        return TableWriter(stream, task, no_color)
    raise ValueError(f"no record writer for format {fmt!r}")


def strict_json(data: Any, indent: int | None = None) -> str:
    """`data` as RFC 8259 JSON that strict parsers accept: UTF-8 text with no lone surrogates
    (undecodable bytes become U+FFFD) and no NaN or Infinity (they become null)."""
    try:
        text = json.dumps(data, ensure_ascii=False, allow_nan=False, indent=indent)
    except ValueError:  # a NaN or infinity somewhere
        return json.dumps(_strict(data), ensure_ascii=False, allow_nan=False, indent=indent)
    if _SURROGATE.search(text):
        return json.dumps(_strict(data), ensure_ascii=False, allow_nan=False, indent=indent)
    return text


def _strict(value: Any) -> Any:
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {printable(str(key)): _strict(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(item) for item in value]
    return value


class BackgroundWrites:
    """Artifacts (annotated images, masks, overlays, crops) encoded and written on a small
    thread pool, off the thread that runs the model; Pillow's encoders release the GIL.

    Work is grouped by the input it belongs to: `done(key)` says whether all of an input's
    writes have finished (re-raising the first failure, a full disk say), so its record goes out
    only once its files exist. At most `limit` writes are queued; `submit` waits beyond that.
    """

    def __init__(self, workers: int = 2, limit: int = 16) -> None:
        self.workers, self.executor = workers, None
        self.pending: dict[str, list[Any]] = {}
        self.slots = threading.BoundedSemaphore(limit)

    def submit(self, key: str, work: Callable[[], None]) -> None:
        from concurrent.futures import ThreadPoolExecutor

        if self.executor is None:  # the first write, or the first since `close`
            self.executor = ThreadPoolExecutor(self.workers, thread_name_prefix="cvtool-write",
                                               initializer=_yield_to_the_model)
        self.slots.acquire()
        future = self.executor.submit(work)
        future.add_done_callback(lambda _: self.slots.release())
        self.pending.setdefault(key, []).append(future)

    def done(self, key: str, wait: bool = False) -> bool:
        futures = self.pending.get(key, [])
        if not wait and not all(future.done() for future in futures):
            return False
        for future in self.pending.pop(key, []):
            future.result()  # re-raises what the write raised
        return True

    def close(self) -> None:
        """Wait for the running writes and drop the queued ones (an interrupted run); the
        next `submit` starts new threads."""
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)
            self.executor = None


def _yield_to_the_model() -> None:
    """Run this writer thread at a lower priority (Linux: nice is per thread), so on a busy
    machine it takes the cores the model leaves idle instead of the model's own time."""
    try:
        thread = threading.get_native_id()
        niceness = os.getpriority(os.PRIO_PROCESS, thread) + WRITER_NICENESS
        os.setpriority(os.PRIO_PROCESS, thread, min(niceness, 19))
    except (AttributeError, OSError):  # not Linux, or not permitted: normal priority
        pass


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temp path beside `path`, renamed over it once the block succeeds: readers never see
    half a file, and a failure leaves the old file (or none) in place. The temp file exists,
    empty, made as open() would make it (mode 0666 less the umask)."""
    path = Path(path)
    prepare_parent(path)
    tmp = _temp_file(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(path)  # a write to the handle names no file; say which
        raise


def _temp_file(path: Path) -> Path:
    """A new, empty file named `.NAME.XXXXXXXX.tmp` beside `path` (its folders made first)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, flags, 0o666))
            return tmp
        except FileExistsError:
            continue
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)  # then try again
    raise FileExistsError(f"no free temporary name beside {path}")


@contextmanager
def atomic_open(path: Path, mode: str = "wb") -> Iterator[IO[Any]]:
    with atomic_path(path) as tmp, open(tmp, mode) as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


def write_bytes(path: Path, data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def write_artifact(path: Path, data: bytes) -> None:
    """A per-image artifact (annotated image, mask, overlay, crop, sample): atomic like every
    write, but not fsync'ed. A crash may lose the newest ones, never leave half of one."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: Path, data: Any) -> None:
    with atomic_open(path, "w") as handle:
        handle.write(strict_json(data, indent=2))
        handle.write("\n")


def csv_value(value: Any) -> Any:
    """A CSV cell as JSON spells it: `true`/`false` (not Python's `True`), printable text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return printable(value) if isinstance(value, str) else value


def write_rows(stream: IO[str], rows: list[dict[str, Any]], fmt: str,
               no_color: bool = False) -> None:
    """Flat rows (listings, summaries) as a table, JSON lines or CSV."""
    columns = list(rows[0]) if rows else []
    if fmt == "jsonl":
        stream.writelines(strict_json(row) + "\n" for row in rows)
    elif fmt == "csv":
        writer = csv.DictWriter(stream, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows({key: csv_value(value) for key, value in row.items()} for row in rows)
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(*columns, box=None, header_style="bold")
        for row in rows:
            table.add_row(*(_cell(row[c]) for c in columns))
        # Into a file or pipe, rows stay whole lines instead of wrapping at 80 columns.
        width = None if getattr(stream, "isatty", lambda: False)() else 1000
        Console(file=stream, no_color=no_color, highlight=False, width=width).print(table)
    stream.flush()


def _cell(value: Any) -> Any:
    from rich.text import Text

    if isinstance(value, bool):
        return "yes" if value else "no"
    return Text("" if value is None else shown(str(value)))
