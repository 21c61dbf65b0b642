"""Ray Data read tasks that read input files exactly as the local engine does, in pieces of whole model batches.

Each input file is one read task running the local reader (io.readers.read_chunks with the plan's parse types),
so that a file parses to the same values on either engine; it yields the file's rows as *pieces* of exactly
`piece_rows` rows (a multiple of the batch size) counted from the file's first row, the last piece holding the
rest. A piece travels as one Ray row, its chunks serialised whole (a chunk Arrow could not type holds Python
values, which no Arrow block could carry), with the file's index and the piece's first row: the actor that
predicts it batches it as the local engine batches that file (jobs.stages.ModelStage), and names its rows in
errors and rejected rows by their row in the file. The same (file, first_row) on a retried task is the same
piece, which is what makes a retry idempotent.
"""

from __future__ import annotations

import functools
import os
import pickle
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from torchpredict.io.readers import Chunk, read_chunks
from torchpredict.jobs.plan import Plan

__all__ = ["PIECE_SCHEMA", "PieceSource", "chunks_of", "piece_rows_for"]

DEFAULT_PIECE_ROWS = 65_536  # rows a piece holds at least (rounded up to whole batches): a few MB of features
PIECE_SCHEMA = pa.schema([("file", pa.int32()), ("first_row", pa.int64()), ("rows", pa.int64()),
                          ("chunks", pa.large_binary())])


def piece_rows_for(batch_size: int, piece_rows: int | None = None) -> int:
    """Rows per piece: piece_rows (default 65,536) rounded up to a whole number of model batches."""
    wanted = piece_rows or DEFAULT_PIECE_ROWS
    return batch_size * max(1, -(-wanted // batch_size))


class PieceSource(Datasource):
    """The plan's input files as pieces; one read task per file (Ray reads files, not parts of them, in parallel)."""

    def __init__(self, plan: Plan, piece_rows: int) -> None:
        self.plan, self.piece_rows = plan, piece_rows

    def get_name(self) -> str:
        return "TorchpredictFiles"

    def estimate_inmemory_data_size(self) -> int | None:
        return sum(os.path.getsize(source) for source in self.plan.sources)

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context: Any = None) -> list[ReadTask]:
        tasks = []
        for index, source in enumerate(self.plan.sources):
            metadata = BlockMetadata(num_rows=None, size_bytes=os.path.getsize(source), input_files=(source,),
                                     exec_stats=None)
            read = functools.partial(_read_pieces, self.plan, index, self.piece_rows)
            tasks.append(ReadTask(read, metadata, schema=PIECE_SCHEMA))
        return tasks


def _read_pieces(plan: Plan, index: int, piece_rows: int) -> Iterator[pa.Table]:
    """One file's pieces, in file order; an empty file gives one piece of no rows (its columns)."""
    pending: list[Chunk] = []
    held, first_row, given = 0, 0, False
    for chunk in read_chunks(plan.sources[index], format=plan.format, column_types=plan.types,
                             names=plan.npy_names, batch_rows=plan.batch_rows, block_bytes=plan.block_bytes,
                             threads=False):
        if not chunk.rows:
            if not pending and not given:
                pending.append(chunk)
            continue
        start = 0
        while start < chunk.rows:
            stop = min(chunk.rows, start + piece_rows - held)
            pending.append(chunk.slice(start, stop) if (start, stop) != (0, chunk.rows) else chunk)
            held += stop - start
            start = stop
            if held == piece_rows:
                yield _piece(index, first_row, held, pending)
                pending, first_row, held, given = [], first_row + held, 0, True
    if pending or not given:
        yield _piece(index, first_row, held, pending)


def _piece(index: int, first_row: int, rows: int, chunks: list[Chunk]) -> pa.Table:
    data = pickle.dumps([c for c in chunks if c.rows] or chunks[:1], protocol=5)
    return pa.Table.from_pydict({"file": [index], "first_row": [first_row], "rows": [rows], "chunks": [data]},
                                schema=PIECE_SCHEMA)


def chunks_of(data: bytes) -> list[Chunk]:
    """A piece's chunks. They are unpickled because this job's own read task pickled them (Ray moves every
    value between its workers this way): nothing here comes from a bundle or from a file's bytes as such."""
    return pickle.loads(data)
