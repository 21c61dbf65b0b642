"""The server's dynamic batcher: concurrent requests joined into model batches by one model thread, no HTTP.

Validation has a large fixed cost per call, so the requests the model thread takes together are validated and
preprocessed as one input, then cut into model batches by the file pipeline's re-batcher
(`torchpredict.inference.rebatching.Rebatcher`) and handed back to their requests for the assemble stage, all
through the Predictor's public stages. Requests are joined only where that cannot change what they get: as
Arrow tables of the very same columns and types (a request that cannot be read as one runs alone, as do empty
requests), so each row is checked, cast and preprocessed exactly as `Predictor.predict` of its request alone
would. A request that would fail (a bad row without rejects, a head refusing its output) or whose group fails
(a model error, say) is run again alone, so that its error is exactly predict's and never its neighbours'.

The model outputs of a row are those predict gives only where the model's kernels round a row the same way
whatever the batch around it: a matrix product on the CPU or GPU may not for small batches (a property of the
model and the hardware, not of the batching; the file pipeline sidesteps it by cutting batches as predict does,
which concurrent requests cannot).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from torchpredict.errors import InputError, TorchPredictError
from torchpredict.inference.rebatching import Rebatcher
from torchpredict.predictor import Predictor
from torchpredict.schema.drift import DriftReport
from torchpredict.schema.schema import Validated
from torchpredict.schema.tables import as_table, past_int64
from torchpredict.server.columns import BlockColumns, join
from torchpredict.stats import RunStats

__all__ = ["Answer", "BatchObserver", "Batcher", "NoObserver", "Overloaded", "Request"]

_log = logging.getLogger(__name__)
_REASONS = "\0reasons"  # in a model batch's outputs: why a head refused each row (null: it did not)
Deliver = Callable[["Answer | None", "BaseException | None"], None]


@dataclass(frozen=True)
class Request:
    """One client request: columns (name -> numpy array or list, one value per row) and its options, as
    Predictor.predict takes them (rejects=True: bad rows come back in Answer.rejected, else they fail it)."""

    columns: Mapping[str, Any]
    rows: int
    rejects: bool = False
    keep: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.rows, bool) or not isinstance(self.rows, int | np.integer) or self.rows < 0:
            raise InputError(f"a request's rows must be a count >= 0, got {self.rows!r}")
        object.__setattr__(self, "rows", int(self.rows))
        object.__setattr__(self, "keep", tuple(self.keep))


@dataclass(frozen=True)
class Answer:
    """What predictor.predict(columns, keep=keep, rejects=...) returns for the request alone, and the rows it
    set aside (those validation rejected and those a head refused, by row within the request; None: none)."""

    table: pa.Table
    rejected: pa.Table | None


class Overloaded(TorchPredictError, RuntimeError):
    """The batcher's queue is full, or it is closed: the request was not taken (retry later, elsewhere)."""


class BatchObserver(Protocol):
    """What the model thread reports after each batch (for metrics); it runs on the model thread, so keep it cheap."""

    def batch(self, *, requests: int, rows: int, queued_s: float, run_s: float) -> None: ...

    def stats(self, stats: RunStats) -> None: ...


class NoObserver:
    """A BatchObserver that records nothing: subclass it and override what you record."""

    def batch(self, *, requests: int, rows: int, queued_s: float, run_s: float) -> None:
        """requests and rows of one batch; queued_s: how long its oldest request waited; run_s: the batch's run."""

    def stats(self, stats: RunStats) -> None:
        """The batch's rows in, predicted, rejected, their drift and the text they lost."""


@dataclass
class _Job:
    request: Request
    deliver: Deliver
    wanted: Callable[[], bool]  # False once nobody waits for the answer (a cancelled task)
    queued_at: float
    future: tuple[asyncio.AbstractEventLoop, asyncio.Future[Answer]] | None = None  # what deliver settles, if known


@dataclass(frozen=True)
class _Alone:
    """Run the request alone; counted: its rows are in the batch's stats already (do not count them twice)."""

    counted: bool


@dataclass
class _Group:
    """Requests of the same columns, types and keep, validated and preprocessed as one input."""

    keep: tuple[str, ...]
    schema: pa.Schema | None  # None: a group of joined columns (its own, whatever else reads alike)
    members: list[tuple[int, int]] = field(default_factory=list)  # (job index, its rows), in row order
    tables: list[pa.Table] = field(default_factory=list)  # the members' rows as read (like requests: one table)
    columns: dict[str, Any] | None = None  # or, for schema None, their columns joined (columns.join)


Outcome = Any  # Answer | BaseException | _Alone


class Batcher:
    """Joins concurrent requests into model batches of at most max_batch_size rows on one model thread.

    The thread takes what is queued the moment it is free and runs it; requests arriving meanwhile form the next
    batch. It waits for more rows (never beyond max_delay_ms after the oldest queued request arrived) only while
    requests arrive faster than that: a lone request on an idle model runs at once. At most max_queue_rows rows
    wait; beyond, predict raises Overloaded rather than letting the queue grow. clock: for the observer's times
    and those waits (tests pass a fake one).
    """

    def __init__(self, predictor: Predictor, *, max_batch_size: int = 256, max_delay_ms: float = 0.0,
                 max_queue_rows: int = 65536, observer: BatchObserver | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_batch_size < 1 or max_queue_rows < 1 or not max_delay_ms >= 0:
            raise InputError(f"max_batch_size and max_queue_rows must be >= 1 and max_delay_ms >= 0, got "
                             f"{max_batch_size}, {max_queue_rows} and {max_delay_ms}")
        self.predictor = predictor
        self._expected = {c.name: c.dtype for c in predictor.schema.features}  # as_table's types for odd values
        self.max_batch_size, self.max_queue_rows = max_batch_size, max_queue_rows
        self.max_delay = max_delay_ms / 1000
        self.observer: BatchObserver = NoObserver() if observer is None else observer
        self.clock = clock
        self._ready = threading.Condition()
        self._queue: deque[_Job] = deque()
        self._queued_rows = 0
        self._last_arrival: float | None = None
        self._gap: float | None = None  # between the last two arrivals: whether more are on their way
        self._closed = False
        self._thread: threading.Thread | None = None

    @property
    def queued_rows(self) -> int:
        """Rows waiting for the model thread (not those it runs now)."""
        return self._queued_rows

    def start(self) -> None:
        """Start the model thread (a request does too, so that one sent before start is answered)."""
        with self._ready:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._serve_forever, name="torchpredict-batcher", daemon=True)
                self._thread.start()

    async def predict(self, request: Request) -> Answer:
        """The answer predict gives the request alone, or its exception; from an asyncio event loop."""
        return await self.submit(request)

    def submit(self, request: Request) -> asyncio.Future[Answer]:
        """predict's future, from the event loop's thread: cancel it and the request is dropped if the model has
        not taken it yet (a timeout without a task per request: the server's hot path)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Answer] = loop.create_future()

        def deliver(answer: Answer | None, error: BaseException | None) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits for this answer
                loop.call_soon_threadsafe(_settle, future, answer, error)

        self._submit(request, deliver, lambda: not future.cancelled(), (loop, future))
        return future

    def predict_now(self, request: Request) -> Answer:
        """predict, blocking this thread (not an event loop's, nor the observer's: that is the model thread)."""
        future: concurrent.futures.Future[Answer] = concurrent.futures.Future()

        def deliver(answer: Answer | None, error: BaseException | None) -> None:
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(answer)  # type: ignore[arg-type]

        self._submit(request, deliver, lambda: True)
        return future.result()

    def close(self, timeout: float | None = None) -> None:
        """Take no more requests, answer every queued one, then end the model thread (waiting up to timeout)."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    # -- the queue ------------------------------------------------------------------------------------

    def check_room(self) -> None:
        """Overloaded when a request could not be taken now (closed, or the queue full): said before its body is
        read and parsed, so that refusing a request under overload costs next to nothing."""
        with self._ready:
            if self._closed:
                raise Overloaded("the model is shutting down and takes no more requests")
            if self._queued_rows >= self.max_queue_rows:
                raise Overloaded(f"{self._queued_rows:,} rows are queued for the model, at most "
                                 f"{self.max_queue_rows:,} may wait")

    def _submit(self, request: Request, deliver: Deliver, wanted: Callable[[], bool],
                future: tuple[asyncio.AbstractEventLoop, asyncio.Future[Answer]] | None = None) -> None:
        if request.rows > self.max_queue_rows:  # it could never be taken: not a reason to retry
            raise InputError(f"the request has {request.rows:,} rows, more than this server queues "
                             f"({self.max_queue_rows:,}); send them in smaller requests")
        with self._ready:
            if self._closed:
                raise Overloaded("the model is shutting down and takes no more requests")
            if self._queued_rows + request.rows > self.max_queue_rows:
                raise Overloaded(f"{self._queued_rows:,} rows are queued for the model, at most "
                                 f"{self.max_queue_rows:,} may wait")
            now = self.clock()
            if self._last_arrival is not None:
                self._gap = now - self._last_arrival
            self._last_arrival = now
            self._queue.append(_Job(request, deliver, wanted, now, future))
            self._queued_rows += request.rows
            self._ready.notify_all()
            started = self._thread is not None
        if not started:
            self.start()

    def _take(self) -> list[_Job]:
        """The next batch's requests (up to max_batch_size rows, or one larger request); [] once closed and idle."""
        with self._ready:
            jobs: list[_Job] = []
            while not jobs:  # a batch whose every caller went away is no batch: wait for the next one
                while not self._queue and not self._closed:
                    self._ready.wait()
                if not self._queue:
                    return []
                self._wait_for_more()
                rows = 0
                while self._queue:
                    job = self._queue[0]
                    wanted = job.wanted()
                    if wanted and jobs and rows + job.request.rows > self.max_batch_size:
                        break
                    self._queue.popleft()
                    self._queued_rows -= job.request.rows
                    if wanted:  # else dropped: its caller went away
                        jobs.append(job)
                        rows += job.request.rows
            return jobs

    def _wait_for_more(self) -> None:
        """Wait (lock held) while requests arrive faster than max_delay allows, until the batch is full or
        the oldest has waited max_delay; a request after a quiet spell has nothing to wait for."""
        while self._queue and not self._closed and self._queued_rows < self.max_batch_size:
            gap, last = self._gap, self._last_arrival
            if gap is None or last is None or gap >= self.max_delay:
                return
            until = min(self._queue[0].queued_at + self.max_delay, last + 2 * gap)  # the next one is late by then
            now = self.clock()
            if now >= until:
                return
            self._ready.wait(until - now)

    # -- the model thread -----------------------------------------------------------------------------

    def _serve_forever(self) -> None:
        while jobs := self._take():
            started = self.clock()
            try:
                outcomes, stats = self._serve(jobs)
            except BaseException as exc:  # a bug here: still answer everyone who waits
                for job in jobs:
                    job.deliver(None, exc)
                if not isinstance(exc, Exception):
                    raise
                continue
            run_s = self.clock() - started
            _deliver(jobs, outcomes)
            try:
                self.observer.batch(requests=len(jobs), rows=sum(job.request.rows for job in jobs),
                                    queued_s=started - min(job.queued_at for job in jobs), run_s=run_s)
                self.observer.stats(stats)
            except Exception:
                _log.exception("the batch observer failed")

    def _serve(self, jobs: list[_Job]) -> tuple[list[Answer | BaseException], RunStats]:
        """Every job's answer or exception, and the batch's stats."""
        stats = RunStats()
        try:
            outcomes = self._together([job.request for job in jobs], stats)
        except Exception:  # the group failed (the model, say): each request alone fails only itself
            stats = RunStats()
            outcomes = [_Alone(counted=False)] * len(jobs)
        return [self._alone(job.request, RunStats() if outcome.counted else stats) if isinstance(outcome, _Alone)
                else outcome for job, outcome in zip(jobs, outcomes, strict=True)], stats

    def _together(self, requests: list[Request], stats: RunStats) -> list[Outcome]:
        """Validate and preprocess each group of like requests once, run their rows through the re-batcher and
        assemble each request's answer; _Alone where only running it alone gives what predict gives.

        A group none of whose rows validation rejected goes to the re-batcher whole (its rows in the same order
        as its requests' would, so the model batches are the same) and is assembled once (see _assemble_group);
        any other is split into its requests' shares first."""
        outcomes: list[Outcome] = [_Alone(counted=False)] * len(requests)
        groups = self._groups(requests, outcomes)
        parts: list[tuple[int | _Group, Validated, dict[str, np.ndarray]]] = []  # (whose rows, ...)
        for group in groups:
            try:
                validated, inputs = self._prepare(group, stats)
            except Exception:  # e.g. a column all of them lack: each alone says so exactly
                continue
            if (validated.rejected is None or not validated.rejected.num_rows) and \
                    validated.num_rows == sum(n for _, n in group.members):
                parts.append((group, validated, inputs))
            else:
                parts += self._split(group, validated, inputs, requests, outcomes)
        rebatcher: Rebatcher[int] = Rebatcher(self.max_batch_size, self._run)
        done = []
        for part, (_, _, inputs) in enumerate(parts):
            done += rebatcher.add(part, inputs)
        done += rebatcher.flush()
        for part, outputs in done:
            owner, validated, _ = parts[part]
            if isinstance(owner, _Group):
                self._assemble_group(owner, validated, outputs, requests, outcomes, stats)
            else:
                outcomes[owner] = self._assemble(requests[owner], validated, outputs, stats)
        return outcomes

    def _groups(self, requests: list[Request], outcomes: list[Outcome]) -> list[_Group]:
        """Requests read as Arrow tables, grouped by columns, types and keep: joining these changes nothing.

        Requests whose columns hold values of the same kinds (see _key) are read as one table and sliced: Arrow
        infers the same types for their joined values as for each alone, and reading one table per request would
        cost more than the model. Any doubt (a kind not listed, a read that fails) reads each alone."""
        groups: list[_Group] = []
        buckets: dict[tuple[Hashable, ...], list[int]] = {}
        for index in self._read_blocks(requests, groups):
            request = requests[index]
            key = _key(request)
            members = None if key is None else buckets.get(key)
            if members is None and key is not None and _readable(key):
                members = buckets[key] = []
            if members is None:
                self._read_each([index], requests, outcomes, groups)
            else:
                members.append(index)
        for kinds, members in buckets.items():
            if len(members) == 1 or not self._read_joined(members, requests, groups, counted=kinds[0] != _MIXED):
                self._read_each(members, requests, outcomes, groups)
        return groups

    def _read_blocks(self, requests: list[Request], groups: list[_Group]) -> list[int]:
        """Join requests of BlockColumns (as the OIP codec gives them) of one keep and layout into one group's
        columns, a block at a time (see torchpredict.server.columns.join; a lone one too): validation then takes
        them as they are (a few rows: no Arrow table at all, see schema.plans) or reads them as one table; the
        others, with rows, to read as _groups does."""
        others: list[int] = []
        blocked: dict[tuple[Any, ...], list[tuple[int, BlockColumns]]] = {}  # by keep, layout and blocks' dtypes
        for index, request in enumerate(requests):
            if not request.rows:
                continue  # alone: no rows, as predict on no rows
            columns = request.columns
            if isinstance(columns, BlockColumns) and all(b.shape[1:] == (request.rows,) for b in columns.blocks):
                key = (request.keep, columns.layout, *(block.dtype for block in columns.blocks))
                blocked.setdefault(key, []).append((index, columns))
            else:
                others.append(index)
        for (keep, *_), found in blocked.items():
            members = [index for index, _ in found]
            rows = [requests[i].rows for i in members]
            joined = join([columns for _, columns in found], rows)
            if joined is None:
                others += members
            else:  # validated as columns: a few rows without an Arrow table (schema.plans.small), else read then
                groups.append(_Group(keep, None, list(zip(members, rows, strict=True)), columns=joined))
        return sorted(others)

    def _read_joined(self, members: list[int], requests: list[Request], groups: list[_Group], *,
                     counted: bool = False) -> bool:
        """Read like requests as one table and hand each its slice; False when that fails or a count disagrees
        (counted: _key saw that every column of each holds its rows)."""
        names = list(requests[members[0]].columns)
        values = zip(*[requests[i].columns.values() for i in members], strict=True)  # per column, like _key's
        joined = dict(zip(names, map(_joined_values, values), strict=True))
        try:
            table = as_table(joined, expected=self._expected)
        except Exception:
            return False
        if table.num_rows != sum(requests[i].rows for i in members) or (not counted and any(
                len(requests[i].columns[name]) != requests[i].rows for i in members for name in names)):
            return False
        _place(groups, requests[members[0]].keep, [(i, requests[i].rows) for i in members], table)
        return True

    def _read_each(self, members: list[int], requests: list[Request], outcomes: list[Outcome],
                   groups: list[_Group]) -> None:
        for index in members:
            request = requests[index]
            try:
                table = as_table(request.columns, expected=self._expected)
            except Exception:  # mixed values (validation rejects or names them) or no table: alone
                continue
            if table.num_rows != request.rows:
                outcomes[index] = InputError(f"the request says it has {request.rows:,} rows but its columns hold "
                                             f"{table.num_rows:,}")
                continue
            _place(groups, request.keep, [(index, request.rows)], table)

    def _prepare(self, group: _Group, stats: RunStats) -> tuple[Validated, dict[str, np.ndarray]]:
        """The validate and preprocess stages, once for the group's rows (bad rows rejected, not raised)."""
        tables = group.tables
        joined = group.columns if group.columns is not None else tables[0] if len(tables) == 1 else \
            pa.concat_tables(tables).combine_chunks()
        validated = self.predictor.validate(joined, keep=group.keep, on_error="reject")
        text = RunStats()
        inputs = self.predictor.preprocess(validated, text) if validated.num_rows else {}
        stats.add(validated)
        stats.text.add(text.text)
        return validated, inputs

    def _split(self, group: _Group, validated: Validated, inputs: dict[str, np.ndarray], requests: list[Request],
               outcomes: list[Outcome]) -> list[tuple[int, Validated, dict[str, np.ndarray]]]:
        """Each request's share of the group's validated rows and model inputs, its rejected rows numbered
        from its own first row; a request without rejects that has a bad row runs alone (to raise predict's error)."""
        bad = np.empty(0, np.int64) if validated.rejected is None else validated.rejected.column(0).to_numpy()
        parts = []
        start = accepted = 0  # the request's first row in the group's input, and in its validated rows
        for index, n in group.members:
            mine = (bad >= start) & (bad < start + n)
            k = n - int(mine.sum())
            if k < n and not requests[index].rejects:
                outcomes[index] = _Alone(counted=True)
            else:
                rejected = None
                if k < n:
                    rejected = validated.rejected.filter(pa.array(mine))  # type: ignore[union-attr]
                    rejected = rejected.set_column(0, rejected.field(0), pa.array(bad[mine] - start, pa.int64()))
                own = Validated(validated.table.slice(accepted, k), DriftReport(), rejected)
                parts.append((index, own, {name: array[accepted:accepted + k] for name, array in inputs.items()}))
            start += n
            accepted += k
        return parts

    def _assemble_group(self, group: _Group, validated: Validated, outputs: dict[str, Any], requests: list[Request],
                        outcomes: list[Outcome], stats: RunStats) -> None:
        """The assemble stage for a group none of whose rows validation rejected: once for all its rows, each
        request answered with its slice, where no head refused a row (then the stage keeps every row, in order,
        whatever the request's rejects, and a request's slice is what it alone gives); else per request."""
        reasons = outputs.pop(_REASONS, None)
        if reasons is None or reasons.null_count == len(reasons):
            try:  # no reasons: nothing to set aside, nor the validated table to read (a few rows may have none)
                assembled = self.predictor.assemble(validated, outputs, None)
            except Exception:  # a kept column clashes: each request alone raises predict's error
                assembled = None
            if assembled is not None and assembled.batch is not None and assembled.refused is None and \
                    assembled.batch.num_rows == validated.num_rows:
                table = pa.Table.from_batches([assembled.batch])
                start = 0
                for index, n in group.members:
                    outcomes[index] = Answer(table.slice(start, n), None)
                    start += n
                return
        start = 0
        for index, n in group.members:
            own = Validated(validated.table.slice(start, n), DriftReport(), None)
            mine = {name: values[start:start + n] for name, values in outputs.items()}
            if reasons is not None:
                mine[_REASONS] = reasons[start:start + n]
            outcomes[index] = self._assemble(requests[index], own, mine, stats)
            start += n

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, Any]:
        """One model batch through the infer and interpret stages, with why a head refused each row."""
        rows = len(next(iter(inputs.values())))
        [batch] = self.predictor.infer(inputs, batch_size=rows)
        columns = self.predictor.interpret(batch)
        reasons = self.predictor.refused(batch)
        return {**columns, _REASONS: pa.nulls(rows, pa.string()) if reasons is None else reasons}

    def _assemble(self, request: Request, validated: Validated, outputs: dict[str, Any], stats: RunStats) -> Outcome:
        """The assemble stage for one request; alone where predict would raise (to raise exactly its error)."""
        reasons = outputs.pop(_REASONS, None)
        try:
            assembled = self.predictor.assemble(validated, outputs, reasons, reject=request.rejects)
        except Exception:  # a head refused a row and rejects is off, or a kept column clashes: predict's error
            return _Alone(counted=True)
        if assembled.batch is None:  # every row rejected, and no golden row to shape an empty answer
            return _Alone(counted=True)
        if assembled.refused is not None:
            stats.refuse(assembled.refused.num_rows)
        return Answer(pa.Table.from_batches([assembled.batch]), _joined([validated.rejected, assembled.refused]))

    def _alone(self, request: Request, stats: RunStats) -> Answer | BaseException:
        """The request by itself, exactly as predict runs it (its rows counted in stats)."""
        rejected: list[pa.Table] = []
        try:
            batches = list(self.predictor.predict_batches([request.columns], keep=request.keep, stats=stats,
                                                          rejects=rejected.append if request.rejects else None))
            if not batches:  # every row rejected, and no golden row: predict's own error (nothing was preprocessed)
                return Answer(self.predictor.predict(request.columns, keep=request.keep, rejects=lambda _: None),
                              _joined(rejected))
            return Answer(pa.Table.from_batches(batches), _joined(rejected))
        except Exception as exc:
            return exc


def _joined(tables: list[pa.Table | None]) -> pa.Table | None:
    """Rows rejected by validation and refused by a head, in row order; None when none."""
    found = [table for table in tables if table is not None]
    if len(found) <= 1:
        return found[0] if found else None
    return pa.concat_tables(found).sort_by(found[0].column_names[0])


def _deliver(jobs: list[_Job], outcomes: list[Answer | BaseException]) -> None:
    """Hand each job its outcome, in order: those of one event loop in one call (one wake-up of the loop)."""
    loops: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Answer], Answer | None, BaseException | None]]]
    loops = {}
    for job, outcome in zip(jobs, outcomes, strict=True):
        answer, error = (outcome, None) if isinstance(outcome, Answer) else (None, outcome)
        if job.future is None:
            job.deliver(answer, error)
        else:
            loop, future = job.future
            loops.setdefault(loop, []).append((future, answer, error))
    for loop, settled in loops.items():
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits for these answers
            loop.call_soon_threadsafe(_settle_all, settled)


def _settle_all(settled: list[tuple[asyncio.Future[Answer], Answer | None, BaseException | None]]) -> None:
    for future, answer, error in settled:
        _settle(future, answer, error)


def _settle(future: asyncio.Future[Answer], answer: Answer | None, error: BaseException | None) -> None:
    if future.done():  # cancelled: the caller went away
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(answer)  # type: ignore[arg-type]


def _place(groups: list[_Group], keep: tuple[str, ...], members: list[tuple[int, int]], table: pa.Table) -> None:
    """Put the table of requests (members: one, or like ones read together) in the group of their keep and Arrow
    schema (a new one if none)."""
    group = next((g for g in groups if g.keep == keep and g.schema is not None and g.schema.equals(table.schema, True)),
                 None)
    if group is None:
        groups.append(group := _Group(keep, table.schema))
    group.members += members
    group.tables.append(table)


_SCALARS = frozenset({int, float, str, bool, type(None)})
_COUNTED, _MIXED = "counted", "mixed"  # the two kinds of _key: its counts checked, or not


def _key(request: Request) -> tuple[Hashable, ...] | None:
    """A request's bucket: requests of equal keys may be read as one table (where _readable says so).

    For the usual requests, every column a 1-D numpy array or a list of Python scalars (ints within int64),
    each holding the request's rows, the key is told cheaply: per column the array's dtype or the set of the
    list's value types. Any other request is keyed by _kinds (its counts checked when read); None: read alone."""
    rows = request.rows
    shape, array = (rows,), np.ndarray
    kinds: list[Hashable] = []
    add = kinds.append
    for values in request.columns.values():
        kind = type(values)
        if kind is array:
            if values.shape != shape:
                break
            add(values.dtype)
        elif kind is list:
            if len(values) != rows:
                break
            types = _scalar_types(values)
            if types is None:
                return None
            add(types)
        else:
            break
    else:
        return _COUNTED, request.keep, tuple(request.columns), tuple(kinds)
    general = _kinds(request)
    return None if general is None else (_MIXED, general)


def _readable(key: tuple[Any, ...]) -> bool:
    """Whether requests of a _key may be read together (an object array is read alone, as _kinds has it)."""
    return key[0] == _MIXED or all(kind.kind != "O" for kind in key[-1] if isinstance(kind, np.dtype))


def _kinds(request: Request) -> Hashable | None:
    """What Arrow infers a request's columns from: per column a numpy dtype and row shape, or the set of Python
    scalar types of a list (ints within int64); None when the request holds anything else (read it alone)."""
    kinds: list[Hashable] = [request.keep]
    for name, values in request.columns.items():
        if isinstance(values, np.ndarray) and values.dtype != object:
            kinds.append((name, values.dtype.str, values.shape[1:]))
        elif isinstance(values, list):
            types = _scalar_types(values)
            if types is None:
                return None
            kinds.append((name, types))
        else:
            return None
    return tuple(kinds)


def _scalar_types(values: list[Any]) -> frozenset[type] | None:
    """The Python types of a list's values, when all are scalars Arrow reads alike (ints within int64); else None."""
    types = frozenset(map(type, values))
    if not types <= _SCALARS or (int in types and any(map(past_int64, values))):
        return None
    return types


def _joined_values(parts: Sequence[Any]) -> Any:
    """One column's values of like requests, one after another."""
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts)
    return list(chain.from_iterable(parts))
