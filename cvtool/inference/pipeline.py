"""The one batch loop every inference task runs on.

Decoding and preprocessing run in a thread pool ahead of the model (Pillow and torch release
the GIL), so the model never waits on JPEG decoding. With `streams` above one, that many
batches run through the model at once, each on its own thread (and its share of torch's
threads): a detector's RoIAlign and NMS, small convolutions and the Python between them use
one core each, so two half-width streams keep both of two cores busy where one full-width
stream leaves them waiting on each other. Records come out in input order; a failed input
becomes an error record in its place and the batch goes on. `infer` may fail single inputs too
(say, a ground-truth file that does not fit) by returning an `InputError` as their payload.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from cvtool.core.device import stream_pool
from cvtool.core.options import PredictorOptions
from cvtool.core.results import InputError, InputFailure, Record, is_finite, one_line
from cvtool.core.status import ResourceUnavailable
from cvtool.io.decode import from_memory, full_size, load_image
from cvtool.io.sources import Source

T = TypeVar("T")
_IDLE = object()  # marker: the next input is not queued yet
_END = object()  # marker: the sources are exhausted
_DRAIN = object()  # marker: no input is ready, so held records may wait for their writes
NON_FINITE = InputError("NonFiniteOutput", "the model's output for this input holds NaN or "
                                           "infinite values")
PATIENCE_SECONDS = 0.5  # how long finished records wait on a slow input before going out


@dataclass
class Prepared(Generic[T]):
    """One decoded input, ready for the model, or the reason it is not."""

    path: str
    width: int | None = None
    height: int | None = None
    inputs: T | None = None
    error: InputError | None = None
    image: Any = None  # the decoded RGB image, where the loop keeps images


@dataclass
class Output:
    """What `infer` may return for an input instead of a bare payload: the payload (the
    record's JSON fields) and in-memory results that stay out of the JSON (a mask array)."""

    payload: dict[str, Any]
    arrays: dict[str, Any] = field(default_factory=dict)


@dataclass
class BatchLoop(Generic[T]):
    task: str
    model_name: str
    prepare: Callable[[Any], T]  # a decoded RGB PIL image -> model inputs
    # a payload (or Output) per input, or the InputError it failed with
    infer: Callable[[list[T], list[Prepared[T]]], list[dict[str, Any] | Output | InputError]]
    batch_size: int = 8
    workers: int = 2
    max_pixels: int | None = None
    fail_fast: bool = False
    # Where `infer` hands its artifacts (cvtool.io.writers.BackgroundWrites); a record waits for
    # its input's files, the model does not.
    writes: Any = None
    # Keep each input's decoded image on its record (`record.image`, for `record.draw()`);
    # `Prepared.image` holds it too, also whenever artifacts are written.
    keep_images: bool = False
    record_type: type[Record] = Record
    # (width, height) the model needs at least: JPEGs decode at a reduced DCT scale that still
    # covers it (`cvtool.io.decode.load_image`'s draft); None decodes every pixel.
    draft: tuple[int, int] | None = None
    # Batches in the model at once; `infer` is then called from that many threads together,
    # each running torch on `stream_threads` CPU threads.
    streams: int = 1
    stream_threads: int = 1
    # What runs on `infer`'s results in input order, on the thread that yields the records
    # (names claimed, metrics added: work whose outcome must not depend on which stream ends
    # first); gets and returns one entry per input `infer` had.
    finish: Callable[[list[Any], list[Prepared[T]]], list[Any]] | None = None

    @classmethod
    def for_options(cls, options: PredictorOptions, **task: Any) -> BatchLoop:
        """The loop as `options` (any predictor's) configure it; `task` gives the rest."""
        return cls(batch_size=options.batch_size, workers=options.workers,
                   max_pixels=options.max_pixels, fail_fast=options.fail_fast, **task)

    def run(self, sources: Iterable[Source]) -> Iterator[Record]:
        try:
            for record in self._released(self._records(sources)):
                yield record
                if self.fail_fast and not record.ok:  # also an input that `infer` failed
                    return
        finally:
            if self.writes is not None:
                self.writes.close()  # waits for what is queued; the next run starts afresh

    def _released(self, records: Iterable[Record | object]) -> Iterator[Record]:
        """Records in order, each once its artifacts are written; while no input is ready
        (`_DRAIN`), waiting for the writes costs nothing, so everything held goes out."""
        held: deque[Record] = deque()
        for record in records:
            drain = record is _DRAIN
            if not drain:
                held.append(record)
            while held and self._written(held[0], wait=drain):
                yield held.popleft()
        for record in held:
            self._written(record, wait=True)
            yield record

    def _written(self, record: Record, wait: bool) -> bool:
        return self.writes is None or self.writes.done(record.path, wait)

    def _records(self, sources: Iterable[Source]) -> Iterator[Record | object]:
        if self.streams <= 1:
            for batch in self._batches(sources):
                if batch is _DRAIN:
                    yield _DRAIN
                else:
                    yield from self._finish(batch, self._payloads(batch))
            return
        # Up to `streams` batches in flight; each one's records go out, in order, once it and
        # every batch before it are done.
        flight: deque[tuple[list[Prepared[T]], Future]] = deque()
        with stream_pool(self.streams, self.stream_threads) as pool:
            try:
                for batch in self._batches(sources):
                    if batch is _DRAIN:
                        while flight:
                            yield from self._landed(flight)
                        yield _DRAIN
                        continue
                    if len(flight) >= self.streams:
                        yield from self._landed(flight)
                    flight.append((batch, pool.submit(self._payloads, batch)))
                while flight:
                    yield from self._landed(flight)
            finally:
                for _, future in flight:  # a consumer that stopped early: drop what waits
                    future.cancel()

    def _landed(self, flight: deque[tuple[list[Prepared[T]], Future]]) -> Iterator[Record]:
        batch, future = flight.popleft()
        yield from self._finish(batch, future.result())

    def _batches(self, sources: Iterable[Source]) -> Iterator[list[Prepared[T]] | object]:
        """Prepared inputs grouped as the model takes them: `batch_size` good ones (and the
        failed ones among them), or fewer where nothing more is ready yet (then `_DRAIN`)."""
        pending: list[Prepared[T]] = []
        for item in self._prepared(sources):
            if item is _IDLE:
                # Nothing more is ready (a slow stdin producer): answer what we have now.
                if pending:
                    yield pending
                yield _DRAIN
                pending = []
                continue
            pending.append(item)
            if item.error is not None and self.fail_fast:
                yield pending
                return
            if all(p.error is not None for p in pending) or \
                    sum(p.error is None for p in pending) >= self.batch_size:
                yield pending
                pending = []
        if pending:
            yield pending

    def _payloads(self, pending: list[Prepared[T]]) -> list[dict[str, Any] | Output | InputError]:
        ready = [p for p in pending if p.error is None]
        return infer_in_halves(self.infer, ready) if ready else []

    def _finish(self, pending: list[Prepared[T]],
                done: list[dict[str, Any] | Output | InputError]) -> Iterator[Record]:
        if self.finish is not None and done:
            done = self.finish(done, [p for p in pending if p.error is None])
        payloads = iter(done)
        for item in pending:
            payload = next(payloads) if item.error is None else {}
            arrays = {}
            if isinstance(payload, Output):
                payload, arrays = payload.payload, payload.arrays
            error = payload if isinstance(payload, InputError) else item.error
            if error is None and not is_finite(payload):
                error = NON_FINITE
            yield self.record_type(
                path=item.path, task=self.task, model=self.model_name, width=item.width,
                height=item.height, error=error, payload={} if error else payload,
                image=item.image if self.keep_images else None, arrays={} if error else arrays)

    def _prepared(self, sources: Iterable[Source]) -> Iterator[Prepared[T] | object]:
        """Prepared inputs in order, and `_IDLE` whenever the next one is not even queued yet."""
        if self.workers < 1:
            yield from (self._prepare_one(source) for source in sources)
            return
        executor = ThreadPoolExecutor(self.workers, thread_name_prefix="cvtool-decode")
        futures: queue.Queue = queue.Queue(maxsize=max(2 * self.batch_size, 2 * self.workers))
        # Sources are read in their own thread: a stdin that waits on `find` never stalls results.
        threading.Thread(target=self._submit_all, args=(sources, executor, futures),
                         daemon=True).start()
        try:
            while True:
                if futures.empty():
                    yield _IDLE
                item = futures.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                if not item.done() and not wait([item], timeout=PATIENCE_SECONDS).done:
                    yield _IDLE  # a slow input: what is ready goes out first
                yield item.result()
        finally:
            executor.shutdown(wait=False, cancel_futures=True)

    def _submit_all(self, sources: Iterable[Source], executor: ThreadPoolExecutor,
                    futures: queue.Queue) -> None:
        try:
            for source in sources:
                futures.put(executor.submit(self._prepare_one, source))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consuming thread
            futures.put(exc)
        futures.put(_END)

    def _prepare_one(self, source: Source) -> Prepared[T]:
        image, error = decode_source(source, self.max_pixels, self.draft)
        if error is not None:
            return Prepared(source.path, error=error)
        width, height = full_size(image)  # the file's, also where a draft decoded fewer
        try:
            inputs = self.prepare(image)
        except InputFailure as failure:
            return Prepared(source.path, error=failure.error)
        except Exception as exc:  # noqa: BLE001 - one odd input must not end the batch
            return Prepared(source.path, error=_input_error(exc))
        kept = self.keep_images or self.writes is not None  # records or artifacts need it
        return Prepared(source.path, width, height, inputs=inputs, image=image if kept else None)


def decode_source(source: Source, max_pixels: int | None,
                  draft: tuple[int, int] | None = None) -> tuple[Any, InputError | None]:
    """The source's RGB image, or why there is none. One odd input never raises here; the
    Ray engine's decoding tasks call this too."""
    if source.error is not None:
        return None, source.error
    options = {} if max_pixels is None else {"max_pixels": max_pixels}
    try:
        if source.image is not None:  # an in-memory image, array or tensor
            return from_memory(source.image, **options), None
        return load_image(source.path, draft=draft, **options), None
    except InputFailure as failure:
        return None, failure.error
    except Exception as exc:  # noqa: BLE001 - one odd input must not end the batch
        return None, _input_error(exc)


def _input_error(exc: Exception) -> InputError:
    return InputError(type(exc).__name__, one_line(exc))


def infer_in_halves(infer: Callable, ready: list[Prepared]) -> list[dict[str, Any] | InputError]:
    """Run `infer`; on out-of-memory retry with smaller batches, down to one input."""
    import torch

    try:
        return infer([p.inputs for p in ready], ready)
    except torch.OutOfMemoryError:
        if len(ready) == 1:
            raise ResourceUnavailable("out of memory even with a batch of one; "
                                      "try a smaller model, --precision bf16 or --device cpu")
        _empty_cache()
        half = len(ready) // 2
        return infer_in_halves(infer, ready[:half]) + infer_in_halves(infer, ready[half:])


def _empty_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
