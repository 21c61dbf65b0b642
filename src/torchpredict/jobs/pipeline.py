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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torchpredict.device import cpu_cores
from torchpredict.errors import InputError
from torchpredict.io.formats import STDIO
from torchpredict.io.readers import DEFAULT_BATCH_ROWS, DEFAULT_BLOCK_BYTES, Chunk, read_chunks
from torchpredict.jobs.collisions import check_outputs
from torchpredict.jobs.plan import Piece, Plan
from torchpredict.jobs.sinks import Sink, open_sink, write_json
from torchpredict.jobs.stages import ModelStage, prepare
from torchpredict.stats import RunStats

__all__ = ["DEFAULT_PART_ROWS", "predict_file"]

DEFAULT_PART_ROWS = 1_000_000
QUEUE_CHUNKS = (1, 1, 4)  # chunks waiting after reading, after preparing, after the model (small by then)
Progress = Callable[[int, "int | None"], None]


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
                                   "drift": stats.drift.to_dict(),
                                   "text": {"truncated": stats.text.truncated, "unknown": stats.text.unknown}})
    return stats


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Torch's intra-op threads for the model, leaving a core for the other stages; restored afterwards.

    On a busy machine two OpenMP threads that wait for each other's core cost far more than they give. Where
    torch is not loaded (a model run by ONNX Runtime, whose threads are set when its session is built), nothing.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads or max(1, cpu_cores() - 1))
    try:
        yield
    finally:
        torch.set_num_threads(before)


# -- stages -----------------------------------------------------------------------------------------


def _pieces(plan: Plan, start_row: int, splits: bool) -> Iterator[Piece]:
    """Chunks of every input in order, cut at part boundaries, skipping rows before start_row."""
    sizes = [None if s == STDIO or not os.path.isfile(s) else os.path.getsize(s) for s in plan.sources]
    total_bytes = None if None in sizes else sum(sizes)  # type: ignore[arg-type]
    offset, bytes_before = 0, 0
    for source, size in zip(plan.sources, sizes, strict=True):
        rows = 0
        for chunk in read_chunks(source, format=plan.format, column_types=plan.types, names=plan.npy_names,
                                 batch_rows=plan.batch_rows, block_bytes=plan.block_bytes,
                                 threads=not plan.on_cpu or cpu_cores() >= 4):
            rows = chunk.first_row + chunk.rows
            estimate = None
            if total_bytes and chunk.done:
                estimate = round((offset + rows) * total_bytes / (bytes_before + chunk.done * (size or 0)))
            elif size is None and chunk.done and len(plan.sources) == 1:  # images: the share of the files read
                estimate = round(rows / chunk.done)
            for piece, part, ends in _split(chunk, offset, plan.part_rows if splits else None, start_row):
                yield Piece(source, piece, part, ends, offset + piece.first_row + piece.rows, estimate)
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


def _model_stage(model: ModelStage, inbox: queue.Queue, outbox: queue.Queue, stop: threading.Event) -> None:
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
    boxes: list[queue.Queue] = [queue.Queue(maxsize=size) for size in QUEUE_CHUNKS]
    threads = [
        threading.Thread(target=_source, args=(_pieces(plan, sink.start_row, sink.splits), boxes[0], stop,
                                               plan.on_cpu)),
        threading.Thread(target=_stage, args=(lambda p: prepare(predictor, plan, p), boxes[0], boxes[1], stop,
                                              plan.on_cpu)),
        threading.Thread(target=_model_stage, args=(ModelStage(predictor, plan), boxes[1], boxes[2], stop)),
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
