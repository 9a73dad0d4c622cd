"""`--engine ray`: the same batch run on a Ray cluster, through Ray Data.

The inputs become a dataset (one row per input, in order); decoding runs in Ray tasks
(`decode_source`, as the local engine decodes); the predictor runs in a pool of actors, each
building the same predictor from the same plain options (`map_batches` with a callable class).
Records come back to the driver in input order, as JSON, and go to the same writers as the
local engine's (stdout, `-o DIR/records.jsonl`); artifacts are written by the actors into `-o`,
so on a cluster `-o`, the inputs and `--weights` must be on a filesystem every node shares.

This is the only module that imports Ray: its Data API has changed its batch and actor-pool
arguments twice since 2.9, and whatever changes next is mended here. Without Ray installed,
`--engine ray` is a `ResourceUnavailable` (exit 3) naming the install command.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from cvtool.core.options import PredictorOptions
from cvtool.core.results import InputError, Record, one_line, record_from_dict
from cvtool.core.status import CvtoolError, ResourceUnavailable, UsageError
from cvtool.io.sources import Source
from cvtool.io.writers import strict_json

INSTALL = 'pip install "cvtool[ray]"'
DECODE_BATCH = 16  # inputs per decoding task
DECODE_CPUS = 0.5  # a decoding task's CPU share: unlike the actors', so Ray does not fuse them
NO_IMAGE = np.zeros((0, 0, 3), np.uint8)  # the image column of an input that failed to decode


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide the Ray engine runs."""

    address: str | None = None  # auto | HOST:PORT; None: RAY_ADDRESS, else a new local Ray
    actors: int = 1  # predictor actors
    gpus_per_actor: float = 0.0

    def __post_init__(self) -> None:
        if self.actors < 1:
            raise UsageError(f"invalid --actors {self.actors}; expected at least 1")
        if self.gpus_per_actor < 0:
            raise UsageError(f"invalid --gpus-per-actor {self.gpus_per_actor}; expected 0 or more")

    def to_dict(self) -> dict[str, Any]:
        return {"name": "ray", "address": self.address, "actors": self.actors,
                "gpus_per_actor": self.gpus_per_actor}


def require_ray() -> Any:
    """The `ray` module, or exit 3 naming the extra to install."""
    try:
        import ray
        import ray.data  # noqa: F401 - the part of Ray this engine uses (pyarrow, pandas)
    except ImportError as error:
        raise ResourceUnavailable(f"--engine ray needs Ray Data, which is not installed "
                                  f"({one_line(error)}); install it with: {INSTALL}") from None
    return ray


def run(task: str, options: PredictorOptions, sources: Iterable[Source], engine: RayOptions,
        *, offline: bool, warn: Callable[[str], None],
        absorb: Callable[[dict[str, Any]], None] | None = None) -> Iterator[Record]:
    """Records for `sources`, in their order, computed on Ray. `warn` gets the actors'
    warnings; `absorb` (a semantic evaluation's) each actor batch's share of the metrics."""
    ray = require_ray()
    rows = [_row(source) for source in sources]  # a stdin list is read to its end first
    if not rows:
        return
    started = _connect(ray, engine.address)
    try:
        dataset = _dataset(ray, rows, task, options, engine, offline)
        for batch in _batches(ray, dataset):
            for notes in batch["notes"]:
                if notes:
                    shared = json.loads(notes)
                    for message in shared["warnings"]:
                        warn(message)
                    if absorb is not None and shared.get("evaluation") is not None:
                        absorb(shared["evaluation"])
            for line in batch["record"]:
                record = record_from_dict(json.loads(line))
                yield record
                if options.fail_fast and not record.ok:
                    return
    finally:
        if started:
            ray.shutdown()


def _row(source: Source) -> dict[str, Any]:
    if source.image is not None:
        raise UsageError("--engine ray takes paths, not images in memory")
    error = source.error
    return {"path": _path_bytes(source.path), "error_type": error.type if error else "",
            "error_message": error.message if error else ""}


def _path_bytes(path: str) -> bytes:
    """Bytes, not str, in the dataset: Arrow strings must be UTF-8, and a path held with lone
    surrogates (undecodable bytes) is not; surrogatepass round-trips any str exactly."""
    return path.encode("utf-8", "surrogatepass")


def _connect(ray: Any, address: str | None) -> bool:
    """Join the Ray this process already runs, the cluster at `address` (or RAY_ADDRESS), or
    start a local one. Returns whether this call started the connection (and so ends it)."""
    _quiet_logs()
    if ray.is_initialized():
        return False
    try:
        with _no_library_warnings():
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.ERROR, configure_logging=True)
    except (ConnectionError, RuntimeError, ValueError) as error:
        where = address or os.environ.get("RAY_ADDRESS") or "a new local Ray"
        raise ResourceUnavailable(f"--engine ray: cannot start or reach {where}: "
                                  f"{one_line(error)}") from None
    return True


def _quiet_logs() -> None:
    """Ray's INFO lines (dataset started, finished) would drown cvtool's own on stderr."""
    logging.getLogger("ray").setLevel(logging.ERROR)
    # Its ERROR lines too: a failed run's cause reaches stderr as cvtool's one-line error.
    logging.getLogger("ray.data").setLevel(logging.CRITICAL)


@contextlib.contextmanager
def _no_library_warnings() -> Iterator[None]:
    """Ray warns of its own API moving on; users cannot act on that."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        yield


def _dataset(ray: Any, rows: list[dict[str, Any]], task: str, options: PredictorOptions,
             engine: RayOptions, offline: bool) -> Any:
    with _no_library_warnings():
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # records in input order
        context.enable_progress_bars = False  # cvtool's own progress is on stderr
        dataset = ray.data.from_items(rows)
        dataset = dataset.map_batches(_decode, batch_size=DECODE_BATCH, num_cpus=DECODE_CPUS,
                                      batch_format="numpy",
                                      fn_kwargs={"max_pixels": options.max_pixels})
        pool = _actor_pool(ray, engine.actors)
        return dataset.map_batches(
            PredictorActor, batch_size=options.batch_size, batch_format="numpy",
            fn_constructor_kwargs={"task": task, "options": options.to_dict(),
                                   "offline": offline},
            num_cpus=_actor_cpus(ray, engine.actors), num_gpus=engine.gpus_per_actor or None,
            # An actor that dies fails the run (the records so far are kept; --resume goes on)
            # instead of being restarted over arguments Ray may have dropped (ray#53727).
            max_restarts=0, **pool)


def _actor_cpus(ray: Any, actors: int) -> float:
    """One CPU an actor, less where the actors would leave none for decoding: actors hold
    their CPUs for the whole run, and decoding tasks that cannot start stall it for good."""
    cpus = float(ray.cluster_resources().get("CPU", 1.0))
    return max(0.05, min(1.0, (cpus - DECODE_CPUS) / actors))


def _actor_pool(ray: Any, size: int) -> dict[str, Any]:
    """`map_batches`'s actor-pool argument: `compute=ActorPoolStrategy` (Ray 2.9 and again
    from 2.51), else `concurrency` (2.9 to 2.50 preferred it)."""
    strategy = getattr(ray.data, "ActorPoolStrategy", None)
    if strategy is not None:
        return {"compute": strategy(size=size)}
    return {"concurrency": size}


def _batches(ray: Any, dataset: Any) -> Iterator[dict[str, Any]]:
    """The actors' output batches. An actor's own CvtoolError (a device it lacks, weights it
    cannot read) comes out as itself; a failure of Ray (an actor that died or cannot be placed,
    a lost node) as a ResourceUnavailable with its first line; anything else is a bug."""
    iterator = iter(dataset.iter_batches(batch_size=None, batch_format="numpy"))
    while True:
        try:
            with _no_library_warnings():
                batch = next(iterator)
        except StopIteration:
            return
        except Exception as error:
            causes = _causes(error)
            own = next((c for c in causes if isinstance(c, CvtoolError)), None) or \
                _reported_error(causes)
            if own is not None:
                raise type(own)(f"--engine ray: {own.message}") from None
            ray_failures = [c for c in causes if isinstance(c, ray.exceptions.RayError) and
                            not isinstance(c, ray.exceptions.RayTaskError)]
            if ray_failures:
                raise ResourceUnavailable(f"--engine ray: {_last_line(ray_failures[0])}") \
                    from None
            raise
        yield batch


def _causes(error: BaseException) -> list[BaseException]:
    """`error` and what it wraps, outermost first: Ray wraps a worker's error with every hop
    (`cause`, `__cause__`)."""
    chain: list[BaseException] = []
    while isinstance(error, BaseException) and error not in chain:
        chain.append(error)
        error = getattr(error, "cause", None) or error.__cause__
    return chain


def _reported_error(causes: list[BaseException]) -> CvtoolError | None:
    """A CvtoolError an actor raised while it was being built: Ray passes it on only as the
    text of its traceback (`ActorDiedError.error_msg`), whose last line names it."""
    from cvtool.core import status

    for cause in causes:
        for line in reversed(str(getattr(cause, "error_msg", "") or "").splitlines()):
            found = _ERROR_LINE.match(line.strip())
            kind = getattr(status, found.group(1), None) if found else None
            if isinstance(kind, type) and issubclass(kind, CvtoolError):
                return kind(found.group(2))
    return None


_ERROR_LINE = re.compile(r"^cvtool\.core\.status\.(\w+): (.+)$")


def _last_line(error: BaseException) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    return one_line(lines[-1] if lines else type(error).__name__)


def _decode(batch: dict[str, np.ndarray], max_pixels: int | None) -> dict[str, Any]:
    """A Ray task: decode each input as the local engine does; an input that fails keeps its
    error (no image) for the actor to turn into its error record."""
    from cvtool.inference.pipeline import decode_source

    images, types, messages = [], [], []
    for raw, kind, message in zip(batch["path"], batch["error_type"], batch["error_message"]):
        source = Source(_path(raw), error=InputError(str(kind), str(message)) if kind else None)
        image, error = decode_source(source, max_pixels)
        images.append(NO_IMAGE if image is None else np.asarray(image))
        types.append(error.type if error else "")
        messages.append(error.message if error else "")
    return {"path": batch["path"], "image": _ragged(images),
            "error_type": np.array(types, dtype=object),
            "error_message": np.array(messages, dtype=object)}


def _ragged(images: list[np.ndarray]) -> np.ndarray:
    """Images of different sizes as one object column (Ray stores it variable-shaped)."""
    column = np.empty(len(images), dtype=object)
    column[:] = images
    return column


def _path(raw: bytes) -> str:
    return bytes(raw).decode("utf-8", "surrogatepass")


class PredictorActor:
    """A Ray actor: one predictor, built once from the run's options, over many batches."""

    def __init__(self, task: str, options: dict[str, Any], offline: bool) -> None:
        from cvtool.inference.predictors import PREDICTORS

        kind = PREDICTORS[task]
        self.warnings: list[str] = []
        # The driver holds -o's lock; actors write their artifacts into it.
        self.predictor = kind(kind.options_type.from_dict(options), warn=self.warnings.append,
                              offline=offline, own_output=False)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        sources = []
        for raw, image, kind, message in zip(batch["path"], batch["image"],
                                             batch["error_type"], batch["error_message"]):
            error = InputError(str(kind), str(message)) if kind else None
            sources.append(Source(_path(raw), error=error,
                                  image=None if error else np.asarray(image)))
        lines = [strict_json(record.to_dict()) for record in self.predictor.run(sources)]
        notes = [""] * len(lines)
        shared = self._shared()
        if shared is not None and lines:
            notes[0] = json.dumps(shared)
        return {"record": np.array(lines, dtype=object), "notes": np.array(notes, dtype=object)}

    def _shared(self) -> dict[str, Any] | None:
        """What goes back once per batch: warnings, and the batch's share of an evaluation."""
        evaluation = getattr(self.predictor, "evaluation", None)
        shared = {"warnings": self.warnings[:],
                  "evaluation": evaluation.take() if evaluation is not None else None}
        self.warnings.clear()
        return shared if shared["warnings"] or shared["evaluation"] else None
