"""The actors of a Ray job: each loads the bundle once and predicts pieces with the local engine's own stages.

`PieceActor` takes the pieces of reading.PieceSource and runs jobs.stages' prepare and ModelStage on them, the
code `torchpredict predict` runs, so a piece's predictions are the local engine's for the same rows. For a file
job it writes the piece's predictions as one part file named by its file and first row (under a temporary name,
renamed when complete: a retried piece rewrites the same part, never adds one) and returns a summary row (its
counts, drift and rejected rows) for the driver to gather; for `predict` it returns the predictions themselves.
`TableActor` predicts the batches of a Dataset the caller built, through Predictor.predict.

The bundle reaches each actor as bytes through Ray's object store (a zip of it), so that no node needs the
bundle on its disk; each actor checks its hashes on load as any load does.
"""

from __future__ import annotations

import pickle
import shutil
import sys
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa

from torchpredict.bundle.loading import load
from torchpredict.io.writers import TableWriter
from torchpredict.jobs.plan import Piece, Plan, Result
from torchpredict.jobs.sinks import add_counts
from torchpredict.jobs.stages import ModelStage, prepare
from torchpredict.ray.reading import chunks_of
from torchpredict.stats import RunStats

__all__ = ["SUMMARY_SCHEMA", "PieceActor", "TableActor", "part_name"]

SUMMARY_SCHEMA = pa.schema([("file", pa.int32()), ("first_row", pa.int64()), ("rows", pa.int64()),
                            ("part", pa.string()), ("written", pa.int64()), ("stats", pa.binary()),
                            ("rejected", pa.binary()), ("names", pa.list_(pa.string()))])


def part_name(file: int, first_row: int, fmt: str) -> str:
    """A part's file name: names sort in input order (file, then row)."""
    return f"part-{file:05d}-{first_row:012d}.{fmt}"


def _loaded(bundle: list[Any], options: Mapping[str, Any]) -> tuple[Any, str]:
    """The Predictor of the bundle bytes in bundle[0] (an object reference), and the folder holding them."""
    import ray

    folder = tempfile.mkdtemp(prefix="tp-ray-bundle-")
    path = Path(folder) / "bundle.zip"
    path.write_bytes(ray.get(bundle[0]))
    threads = options.get("threads")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        predictor = load(path, **options)
    torch = sys.modules.get("torch")
    if torch is not None and threads:
        torch.set_num_threads(threads)
    return predictor, folder


class _BundleActor:
    """An actor holding the Predictor of the bundle it was given, and the folder its bytes were written to."""

    def __init__(self, bundle: list[Any], options: Mapping[str, Any]) -> None:
        self.predictor, self._folder = _loaded(bundle, options)

    def __del__(self) -> None:
        shutil.rmtree(getattr(self, "_folder", ""), ignore_errors=True)


class PieceActor(_BundleActor):
    """Predicts pieces (reading.PIECE_SCHEMA rows). output: None to return the predictions; else
    {"folder": where parts go, "format": their format} to write them and return SUMMARY_SCHEMA rows."""

    def __init__(self, bundle: list[Any], plan: Plan, options: Mapping[str, Any],
                 output: Mapping[str, str] | None = None) -> None:
        super().__init__(bundle, options)
        self.plan, self.output = plan, output

    def __call__(self, batch: pa.Table) -> pa.Table:
        out = [self._piece(batch.column("file")[i].as_py(), batch.column("first_row")[i].as_py(),
                           batch.column("rows")[i].as_py(), batch.column("chunks")[i].as_py())
               for i in range(batch.num_rows)]
        if self.output is not None:
            return pa.concat_tables(out)
        tables = [t for t in out if t.num_rows]  # a piece of no rows (an empty file) adds none, nor its null types
        return pa.concat_tables(tables) if tables else pa.table({})

    def _piece(self, file: int, first_row: int, rows: int, data: bytes) -> pa.Table:
        source = self.plan.sources[file]
        model = ModelStage(self.predictor, self.plan)
        results: list[Result] = []
        for chunk in chunks_of(data):
            results += model.feed(prepare(self.predictor, self.plan, Piece(source, chunk, 0, False, 0, None)))
        results += model.finish()
        batches = [r.batch for r in results if r.batch is not None]
        if self.output is None:
            return pa.Table.from_batches(batches) if batches else pa.table({})
        stats = RunStats()
        rejected = []
        for result in results:
            add_counts(stats, result.stats)
            if result.rejected is not None and result.rejected.num_rows:
                rejected.append(result.rejected)
        name, written = "", 0
        if any(b.num_rows for b in batches):
            name = part_name(file, first_row, self.output["format"])
            with TableWriter(Path(self.output["folder"]) / name, batches[0].schema,
                             format=self.output["format"]) as writer:
                for b in batches:
                    writer.write(b)
            written = writer.rows
        return pa.Table.from_pydict({"file": [file], "first_row": [first_row], "rows": [rows], "part": [name],
                                     "written": [written], "stats": [pickle.dumps(stats)],
                                     "rejected": [_ipc(pa.concat_tables(rejected)) if rejected else b""],
                                     "names": [results[0].reject_names if results else []]},
                                    schema=SUMMARY_SCHEMA)


class TableActor(_BundleActor):
    """Predicts the Arrow batches of a caller's Dataset with Predictor.predict (a bad row raises, naming its row
    within the batch)."""

    def __init__(self, bundle: list[Any], options: Mapping[str, Any], keep: tuple[str, ...],
                 columns: tuple[str, ...] | None) -> None:
        super().__init__(bundle, options)
        self.keep, self.columns = keep, columns

    def __call__(self, batch: pa.Table) -> pa.Table:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # drift: the job's driver cannot gather it from here
            table = self.predictor.predict(batch, keep=self.keep)
        if self.columns is not None:
            table = table.select([*[c for c in table.column_names if c not in self.predictor.prediction_columns],
                                  *self.columns])
        return table


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def rejected_of(data: bytes) -> pa.Table | None:
    """The rejected rows a summary row carries (None: none)."""
    return pa.ipc.open_stream(data).read_all() if data else None
