"""Batch prediction over files: read → validate → preprocess → infer → interpret → write, overlapped.

Reading, preparing (validation and preprocessing), the model's work and writing run in their own
threads joined by small bounded queues, so parsing the next chunk, the forward pass (torch releases
the GIL) and writing earlier predictions overlap while memory stays flat: a few chunks are in flight
whatever the size of the input. Where the results go, and how a killed job resumes, is sinks.py.
"""

from __future__ import annotations

import contextlib
import os
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from torchpredict.collisions import check_outputs
from torchpredict.errors import InputError, PredictionError, SchemaError
from torchpredict.formats import STDIO, detect_format, expand_inputs
from torchpredict.predictor import RunStats, input_rows, set_aside
from torchpredict.readers import DEFAULT_BATCH_ROWS, DEFAULT_BLOCK_BYTES, Chunk, read_chunks
from torchpredict.sinks import Sink, open_sink, write_json
from torchpredict.validation import free_name

__all__ = ["DEFAULT_PART_ROWS", "predict_file"]

DEFAULT_PART_ROWS = 1_000_000
_REASONS = "\0reasons"  # in _Model.outputs: why a head refused each row (null: it did not); never a column name
QUEUE_CHUNKS = (1, 1, 4)  # chunks waiting after reading, after preparing, after the model (small by then)
Progress = Callable[[int, "int | None"], None]
_PARSE_TYPES = {"float32": pa.float64(), "float64": pa.float64(), "int32": pa.int64(), "int64": pa.int64(),
                "bool": pa.bool_(), "string": pa.string()}


def predict_file(predictor: Any, input: str | Path | Sequence[str | Path], output: str | Path, *,
                 format: str | None = None, output_format: str | None = None, keep: Sequence[str] = (),
                 columns: Sequence[str] | None = None, rejects: str | Path | None = None,
                 report: str | Path | None = None, resume: bool = False, part_rows: int = DEFAULT_PART_ROWS,
                 batch_rows: int = DEFAULT_BATCH_ROWS, block_bytes: int = DEFAULT_BLOCK_BYTES,
                 threads: int | None = None, progress: Progress | None = None) -> RunStats:
    """Predict every row of `input` into `output` in bounded memory; returns what the run saw.

    input: a file, '-' (stdin; needs format), a folder or glob of files, or a list of them; compressed
    files (.gz, .zst, ...) are read as they are. format: the input format when extensions do not say it.
    output: a file (written under a temporary name and renamed when complete), '-' (stdout), or a folder
    (a path ending in '/' or an existing folder) that receives part-00000.<ext>, ... of part_rows input
    rows each, committed one by one. output_format: for '-' and folders (default: format, else csv for
    stdout, parquet for folders). keep: input columns copied to the output; columns: the prediction
    columns to write (default all). rejects: a file that receives the rows failing validation (row, reason,
    their values) while the run goes on; None stops at the first bad row with its row number. report: a
    JSON file for the run's counts and drift report. resume: with a folder output, skip the parts an
    interrupted run committed. threads: torch's threads for the model while the job runs (default: one
    less than the CPU cores, which leaves one for reading and writing; restored afterwards).
    progress(rows_done, rows_total_estimate) is called after each chunk.

    >>> stats = predict_file(predictor, "new.csv", "predictions.parquet", keep=["id"])   # doctest: +SKIP
    >>> stats.rows_predicted                                                            # doctest: +SKIP
    """
    started = time.perf_counter()
    if threads is not None and threads < 1:
        raise InputError(f"threads must be >= 1, got {threads}")
    plan = Plan.make(predictor, input, format, keep, columns, rejects, part_rows, batch_rows, block_bytes)
    check_outputs(plan.sources, output, rejects, report)  # before anything is written
    sink = open_sink(predictor, plan, str(output), output_format, rejects, report, resume)
    with _torch_threads(threads):
        stats = _run(predictor, plan, sink, progress)
    if report is not None:
        write_json(Path(report), {"input": plan.sources, "output": str(output), "rows_in": stats.rows_in,
                                   "rows_predicted": stats.rows_predicted, "rows_rejected": stats.rows_rejected,
                                   "seconds": round(time.perf_counter() - started, 3),
                                   "drift": stats.drift.to_dict()})
    return stats


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Torch's intra-op threads for the model, leaving a core for the other stages; restored afterwards.

    On a busy machine two OpenMP threads that wait for each other's core cost far more than they give.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(threads or max(1, _cores() - 1))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Plan:
    """What to read and how: the input files, parse types, kept and written columns, error policy."""

    sources: list[str]
    format: str | None
    keep: tuple[str, ...]
    columns: tuple[str, ...] | None
    on_error: str
    types: dict[str, pa.DataType]
    npy_names: list[str] | None
    part_rows: int
    batch_rows: int
    block_bytes: int
    on_cpu: bool  # the model runs on the CPU: it is the bottleneck, and the other stages yield to it

    @classmethod
    def make(cls, predictor: Any, input: Any, format: str | None, keep: Sequence[str],
             columns: Sequence[str] | None, rejects: Any, part_rows: int, batch_rows: int,
             block_bytes: int) -> Plan:
        for name, value in (("part_rows", part_rows), ("batch_rows", batch_rows), ("block_bytes", block_bytes)):
            if value < 1:
                raise InputError(f"{name} must be >= 1, got {value}")
        sources = expand_inputs(input)
        for source in sources:
            detect_format(source, format)
        if STDIO in sources and len(sources) > 1:
            raise InputError("stdin ('-') cannot be read together with other inputs")
        if columns is not None:
            unknown = [c for c in columns if c not in predictor.prediction_columns]
            if unknown:
                raise InputError(f"unknown prediction column(s) {', '.join(map(repr, unknown))}; the bundle "
                                 f"writes {', '.join(map(repr, predictor.prediction_columns))}")
        features = predictor.schema.features
        types = {c.name: _PARSE_TYPES[c.dtype] for c in features if not c.shape}
        types.update({c.name: pa.string() for c in predictor.schema.passthrough if c.dtype == "string"})
        names = [c.name for c in features] if all(not c.shape for c in features) else None
        return cls(sources, format, tuple(dict.fromkeys(keep)), None if columns is None else tuple(columns),
                   "raise" if rejects is None else "reject", types, names, part_rows, batch_rows, block_bytes,
                   torch.device(predictor.device).type == "cpu")

    @property
    def many(self) -> bool:
        return len(self.sources) > 1


# -- stages -----------------------------------------------------------------------------------------


@dataclass
class _Piece:
    """A chunk of one input file, within one part of the output."""

    source: str
    chunk: Chunk
    part: int
    ends_part: bool
    rows_done: int  # input rows up to the end of this piece, over all files
    rows_total: int | None  # estimate, for progress


@dataclass
class _Prepared:
    piece: _Piece
    rows: int  # rows that passed validation
    table: pa.Table  # those rows, validated (when there are none, an empty output's shape)
    input_rows: np.ndarray  # the input row number of each
    kept: list[str]
    inputs: dict
    stats: RunStats
    rejected: pa.Table | None
    reject_names: list[str]


@dataclass
class Result:
    piece: _Piece
    batch: pa.RecordBatch | None
    stats: RunStats
    rejected: pa.Table | None
    reject_names: list[str]


def _pieces(plan: Plan, start_row: int, splits: bool) -> Iterator[_Piece]:
    """Chunks of every input in order, cut at part boundaries, skipping rows before start_row."""
    sizes = [None if s == STDIO else os.path.getsize(s) for s in plan.sources]
    total_bytes = None if None in sizes else sum(sizes)  # type: ignore[arg-type]
    offset, bytes_before = 0, 0
    for source, size in zip(plan.sources, sizes, strict=True):
        rows = 0
        for chunk in read_chunks(source, format=plan.format, column_types=plan.types, names=plan.npy_names,
                                 batch_rows=plan.batch_rows, block_bytes=plan.block_bytes,
                                 threads=not plan.on_cpu or _cores() >= 4):
            rows = chunk.first_row + chunk.rows
            estimate = None
            if total_bytes and chunk.done:
                estimate = round((offset + rows) * total_bytes / (bytes_before + chunk.done * (size or 0)))
            for piece, part, ends in _split(chunk, offset, plan.part_rows if splits else None, start_row):
                yield _Piece(source, piece, part, ends, offset + piece.first_row + piece.rows, estimate)
        offset += rows
        bytes_before += size or 0


def _split(chunk: Chunk, offset: int, part_rows: int | None, start_row: int) -> Iterator[tuple[Chunk, int, bool]]:
    """(piece, part, whether the piece ends its part) for the rows of chunk at or after start_row."""
    first = offset + chunk.first_row
    start = max(0, start_row - first)
    if chunk.rows == 0 and first >= start_row:  # no rows, but the columns (an empty output still has them)
        yield chunk, 0 if part_rows is None else first // part_rows, False
    while start < chunk.rows:
        if part_rows is None:
            yield chunk.slice(start, chunk.rows) if start else chunk, 0, False
            return
        part = (first + start) // part_rows
        stop = min(chunk.rows, (part + 1) * part_rows - first)
        yield chunk.slice(start, stop), part, first + stop == (part + 1) * part_rows
        start = stop


def _prepare(predictor: Any, plan: Plan, piece: _Piece) -> _Prepared:
    """Validate one piece (rejecting or raising on bad rows) and preprocess the rows that passed."""
    try:
        validated = predictor.schema.validate(piece.chunk.data, keep=plan.keep, first_row=piece.chunk.first_row,
                                              on_error=plan.on_error, row_check=predictor.preprocessor.check_rows)
    except SchemaError as exc:
        raise SchemaError(f"{_where(piece.source)}: {exc}") from None
    stats = RunStats()
    stats.add(validated)
    rejected = None if validated.rejected is None else _with_file(validated.rejected, plan, piece.source)
    table = validated.table
    kept = table.column_names[len(predictor.schema.features):]
    rows = input_rows(validated, piece.chunk.first_row)
    if not table.num_rows:
        return _Prepared(piece, 0, table, rows, kept, {}, stats, rejected, table.column_names)
    inputs = predictor.preprocess(table, stats)  # the features stay only to show in rows rejected after the model
    return _Prepared(piece, table.num_rows, table, rows, kept, inputs, stats, rejected, table.column_names)


def _with_file(rejected: pa.Table, plan: Plan, source: str) -> pa.Table:
    """Rejected rows with the file they came from first, when the run reads several."""
    if not plan.many:
        return rejected
    return rejected.add_column(0, free_name("file", rejected.column_names),
                               pa.array([source] * rejected.num_rows, pa.string()))


class _Model:
    """Runs the model on the prepared rows in batches of exactly predictor.batch_size, laid out as
    Predictor.predict lays them out over the whole input whatever the chunk sizes (so that the outputs are
    bit-identical: a matrix kernel may round differently for another batch size), except that no batch
    spans two output parts (so that a resumed run computes every part as an uninterrupted one does)."""

    def __init__(self, predictor: Any, plan: Plan) -> None:
        self.predictor, self.plan = predictor, plan
        self.size = predictor.batch_size
        self.waiting: deque[_Prepared] = deque()  # pieces whose predictions are not all computed yet
        self.inputs: list[dict[str, np.ndarray]] = []  # their model inputs not yet run
        self.queued = 0  # rows in self.inputs
        self.outputs: dict[str, list[pa.Array]] = {}  # predictions not yet handed to a piece
        self.ready = 0  # rows in self.outputs

    def feed(self, prepared: _Prepared) -> list[Result]:
        self.waiting.append(prepared)
        if prepared.rows:
            self.inputs.append(prepared.inputs)
            self.queued += prepared.rows
        self._run(self.queued - self.queued % self.size)
        if prepared.piece.ends_part:
            self._run(self.queued)
        return self._finished()

    def finish(self) -> list[Result]:
        self._run(self.queued)
        return self._finished()

    def _run(self, rows: int) -> None:
        if not rows:
            return
        inputs = _take_rows(self.inputs, rows)
        self.queued -= rows
        for raw in self.predictor.infer(inputs):
            columns = self.predictor.interpret(raw)
            reasons = self.predictor.refused(raw)
            n = len(next(iter(columns.values())))
            columns[_REASONS] = pa.nulls(n, pa.string()) if reasons is None else reasons
            for name, column in columns.items():
                self.outputs.setdefault(name, []).append(column)
        self.ready += rows

    def _finished(self) -> list[Result]:
        results = []
        while self.waiting and self.waiting[0].rows <= self.ready:
            prepared = self.waiting.popleft()
            results.append(self._result(prepared, self._predictions(prepared.rows)))
        return results

    def _predictions(self, rows: int) -> dict[str, pa.Array]:
        if not rows:
            return {}
        taken = {}
        for name, arrays in self.outputs.items():
            column = arrays[0] if len(arrays) == 1 else pa.concat_arrays(arrays)
            taken[name] = column.slice(0, rows)
            self.outputs[name] = [column.slice(rows)] if rows < len(column) else []
        self.ready -= rows
        return taken

    def _result(self, prepared: _Prepared, predictions: dict[str, pa.Array]) -> Result:
        table, kept, rejected = prepared.table, prepared.kept, prepared.rejected
        if prepared.rows:
            table, predictions, rejected = self._set_aside(prepared, predictions)
        if not prepared.rows:
            batch = _empty_predictions(self.predictor, table, self.plan)
        else:
            names = self.plan.columns or list(predictions)
            clash = sorted(set(kept) & set(names))
            if clash:
                raise SchemaError(f"kept column(s) {clash} would overwrite prediction columns of the same name")
            columns = {n: table.column(n).combine_chunks() for n in kept}
            columns.update({n: predictions[n] for n in names})
            batch = pa.RecordBatch.from_pydict(columns)
        return Result(prepared.piece, batch, prepared.stats, rejected, prepared.reject_names)

    def _set_aside(self, prepared: _Prepared, predictions: dict[str, pa.Array]
                   ) -> tuple[pa.Table, dict[str, pa.Array], pa.Table | None]:
        """Rows whose output a head refused (a NaN score) leave the predictions and join the rejected rows."""
        reasons = predictions.pop(_REASONS)
        try:
            table, predictions, refused = set_aside(prepared.table, predictions, reasons, prepared.input_rows,
                                                    reject=self.plan.on_error == "reject")
        except PredictionError as exc:
            raise PredictionError(f"{_where(prepared.piece.source)}: {exc}") from None
        if refused is None:
            return table, predictions, prepared.rejected
        prepared.stats.refuse(refused.num_rows)
        refused = _with_file(refused, self.plan, prepared.piece.source)
        if prepared.rejected is None:
            return table, predictions, refused
        row = refused.column_names[1 if self.plan.many else 0]
        return table, predictions, pa.concat_tables([prepared.rejected, refused]).sort_by(row)


def _take_rows(queued: list[dict[str, np.ndarray]], rows: int) -> dict[str, np.ndarray]:
    """The first `rows` rows of the queued inputs (joined); the rest stays queued."""
    taken: list[dict[str, np.ndarray]] = []
    need = rows
    while need:
        first = queued[0]
        n = len(next(iter(first.values())))
        if n <= need:
            taken.append(queued.pop(0))
            need -= n
        else:
            taken.append({name: a[:need] for name, a in first.items()})
            queued[0] = {name: a[need:] for name, a in first.items()}
            need = 0
    if len(taken) == 1:
        return taken[0]
    return {name: np.concatenate([t[name] for t in taken]) for name in taken[0]}


def _empty_predictions(predictor: Any, table: pa.Table, plan: Plan) -> pa.RecordBatch | None:
    """No rows, but the output's columns (from the bundle's golden examples); None when it has none."""
    try:
        empty = predictor.predict(table.slice(0, 0), keep=list(plan.keep))
    except SchemaError:
        return None
    names = empty.column_names if plan.columns is None else [
        n for n in empty.column_names if n not in predictor.prediction_columns or n in plan.columns]
    return pa.RecordBatch.from_pydict({n: empty.column(n).combine_chunks() for n in names})


def _where(source: str) -> str:
    return "stdin" if source == STDIO else f"file '{source}'"


# -- threads ----------------------------------------------------------------------------------------

_END = object()


@dataclass
class _Failed:
    error: BaseException


def _give(box: queue.Queue, item: Any, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            box.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


def _take(box: queue.Queue, stop: threading.Event) -> Any:
    while not stop.is_set():
        try:
            return box.get(timeout=0.1)
        except queue.Empty:
            continue
    return _END


def _yield_to_the_model() -> None:
    """Lower this thread's priority (Linux): with the model on the CPU, reading and preparing fill the time
    the model leaves, instead of taking cores from it (measured: about 8% faster on two cores)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


def _source(items: Iterator[Any], outbox: queue.Queue, stop: threading.Event, background: bool) -> None:
    if background:
        _yield_to_the_model()
    try:
        for item in items:
            if stop.is_set():
                return
            _give(outbox, item, stop)
        _give(outbox, _END, stop)
    except BaseException as exc:  # handed to the main thread, which raises it after the earlier chunks
        _give(outbox, _Failed(exc), stop)


def _stage(work: Callable[[Any], Any], inbox: queue.Queue, outbox: queue.Queue, stop: threading.Event,
           background: bool) -> None:
    if background:
        _yield_to_the_model()
    while True:
        item = _take(inbox, stop)
        if item is _END or isinstance(item, _Failed):
            _give(outbox, item, stop)
            return
        try:
            result = work(item)
        except BaseException as exc:
            _give(outbox, _Failed(exc), stop)
            return
        _give(outbox, result, stop)


def _model_stage(model: _Model, inbox: queue.Queue, outbox: queue.Queue, stop: threading.Event) -> None:
    while True:
        item = _take(inbox, stop)
        if isinstance(item, _Failed):
            _give(outbox, item, stop)
            return
        try:
            results = model.finish() if item is _END else model.feed(item)
        except BaseException as exc:
            _give(outbox, _Failed(exc), stop)
            return
        for result in results:
            _give(outbox, result, stop)
        if item is _END:
            _give(outbox, _END, stop)
            return


def _run(predictor: Any, plan: Plan, sink: Sink, progress: Progress | None) -> RunStats:
    stop = threading.Event()
    boxes = [queue.Queue(maxsize=size) for size in QUEUE_CHUNKS]
    threads = [
        threading.Thread(target=_source, args=(_pieces(plan, sink.start_row, sink.splits), boxes[0], stop,
                                               plan.on_cpu)),
        threading.Thread(target=_stage, args=(lambda p: _prepare(predictor, plan, p), boxes[0], boxes[1], stop,
                                              plan.on_cpu)),
        threading.Thread(target=_model_stage, args=(_Model(predictor, plan), boxes[1], boxes[2], stop)),
    ]
    for thread in threads:
        thread.daemon = True  # an interrupted run must not wait for them
        thread.start()
    try:
        while (item := _take(boxes[2], stop)) is not _END:
            if isinstance(item, _Failed):
                raise item.error
            sink.write(item)
            if progress is not None:
                progress(item.piece.rows_done, item.piece.rows_total)
        return sink.finish()
    except BaseException:
        stop.set()
        sink.abort()
        raise
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=5)
