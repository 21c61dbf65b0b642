"""Where a batch job's results go: one file (or stdout), or the parts of a folder that a job can resume.

Nothing looks complete before it is: a file is written under a temporary name and renamed by `finish`; a
folder receives parts committed one by one (data, then a marker under .torchpredict/), and resuming skips the
committed parts after checking that the job's signature (inputs, bundle, options) is unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from torchpredict.errors import InputError
from torchpredict.io.formats import STDIO, detect_format
from torchpredict.io.readers import read_table
from torchpredict.io.writers import TableWriter, write_atomically
from torchpredict.jobs.plan import Plan, Result
from torchpredict.preprocessing.text import TextCounts
from torchpredict.schema.drift import DriftReport
from torchpredict.schema.validation import free_name
from torchpredict.stats import RunStats

__all__ = ["STATE_DIR", "RejectsFile", "Sink", "add_counts", "open_sink", "write_json"]

STATE_DIR = ".torchpredict"  # in a folder output: the job's signature and one marker per committed part


class Sink:
    """Where results go: one file (or stdout), or the parts of a folder."""

    start_row = 0
    splits = False

    def write(self, result: Result) -> None:
        raise NotImplementedError

    def finish(self) -> RunStats:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError


def open_sink(predictor: Any, plan: Plan, output: str, output_format: str | None, rejects: Any, report: Any,
              resume: bool) -> Sink:
    """A folder output (a trailing slash, or an existing folder) gets parts; anything else one file."""
    folder = output.endswith(("/", os.sep)) or Path(output).is_dir()
    if resume and not folder:
        raise InputError("resume needs a folder output (-o out/), whose parts are committed one by one")
    rejects_path = None if rejects is None else Path(rejects)
    if rejects_path is not None:
        detect_format(rejects_path)
    for side in (rejects_path, report):
        if side is not None and not Path(side).parent.is_dir():
            raise InputError(f"output folder '{Path(side).parent}' does not exist")
    if folder:
        fmt = detect_format(output, output_format or "parquet")
        return _Parts(predictor, plan, Path(output), fmt, rejects_path, resume)
    if output == STDIO:
        fmt = detect_format(output, output_format or (plan.format if plan.format != "images" else None) or "csv")
    else:
        try:
            fmt = detect_format(output, output_format)
        except InputError as exc:
            fix = "output_format=... (CLI --output-format)"
            raise InputError(str(exc).replace("format=... (CLI --format)", fix)) from None
        if not Path(output).parent.is_dir():
            raise InputError(f"output folder '{Path(output).parent}' does not exist")
    return _OneFile(output, fmt, rejects_path, plan.many)


# -- one file ------------------------------------------------------------------------------------------


class RejectsFile:
    """The rejected rows of a run, into one file written under a temporary name (empty when none)."""

    def __init__(self, path: Path | None, many: bool) -> None:
        self.path, self.many = path, many
        self._writer: TableWriter | None = None
        self._names: list[str] | None = None

    def write(self, rejected: pa.Table | None, names: list[str]) -> None:
        if self.path is None:
            return
        if self._names is None:
            self._names = names
        if rejected is None or not rejected.num_rows:
            return
        if self._writer is None:
            self._writer = TableWriter(self.path, rejected.schema)
        self._writer.write(_aligned(rejected, self._writer.schema))

    def commit(self) -> None:
        if self.path is None:
            return
        if self._writer is None:
            self._writer = TableWriter(self.path, _reject_schema(self._names or [], self.many))
        self._writer.commit()

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.abort()


def _reject_schema(names: list[str], many: bool) -> pa.Schema:
    """The columns of a rejects file that received no row: (file,) row, reason, then the input columns as text."""
    fields = [pa.field(free_name("row", names), pa.int64()), pa.field(free_name("reason", names), pa.string())]
    fields += [pa.field(n, pa.string()) for n in names]
    if many:
        fields.insert(0, pa.field(free_name("file", [f.name for f in fields]), pa.string()))
    return pa.schema(fields)


def _aligned(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """table with exactly the schema's columns (inputs whose columns differ: missing ones null)."""
    if table.schema.names == schema.names:
        return table
    columns = [table.column(f.name) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
               for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


class _OneFile(Sink):
    def __init__(self, output: str, fmt: str, rejects: Path | None, many: bool) -> None:
        self.output, self.format = output, fmt
        self.stats = RunStats()
        self.rejects = RejectsFile(rejects, many)
        self._writer: TableWriter | None = None
        self._empty: pa.RecordBatch | None = None

    def write(self, result: Result) -> None:
        add_counts(self.stats, result.stats)
        self.rejects.write(result.rejected, result.reject_names)
        batch = result.batch
        if batch is None:
            return
        if self._writer is None:
            if not batch.num_rows and self._empty is None:
                self._empty = batch  # an output with columns, should no row come at all
                return
            self._writer = TableWriter(self.output, batch.schema, format=self.format)
        self._writer.write(batch)

    def finish(self) -> RunStats:
        if self._writer is None:
            if self._empty is None:
                raise InputError("the input holds no rows (and the bundle has no golden examples to shape an "
                                 "empty output with); nothing to predict")
            self._writer = TableWriter(self.output, self._empty.schema, format=self.format)
        self._writer.commit()
        self.rejects.commit()
        return self.stats

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.abort()
        self.rejects.abort()


def add_counts(total: RunStats, part: RunStats) -> None:
    """Add what part of a run saw to what the whole saw."""
    total.rows_in += part.rows_in
    total.rows_predicted += part.rows_predicted
    total.rows_rejected += part.rows_rejected
    total.drift.add(part.drift)
    total.text.add(part.text)


# -- a folder of parts -------------------------------------------------------------------------------


@dataclass
class _Part:
    number: int
    stats: RunStats = field(default_factory=RunStats)
    writer: TableWriter | None = None
    rejects: TableWriter | None = None
    reject_names: list[str] = field(default_factory=list)


class _Parts(Sink):
    """part-00000.<ext>, part-00001.<ext>, ... each committed (data, then a marker) once complete."""

    splits = True

    def __init__(self, predictor: Any, plan: Plan, folder: Path, fmt: str, rejects: Path | None,
                 resume: bool) -> None:
        self.folder, self.format, self.plan = folder, fmt, plan
        self.state = folder / STATE_DIR
        self.rejects = rejects
        signature = _signature(predictor, plan, fmt)
        self.markers = self._resume(signature) if resume else self._start(signature)
        self.start_row = len(self.markers) * plan.part_rows
        self._part: _Part | None = None

    def _start(self, signature: dict) -> list[dict]:
        if self.state.is_dir() and any(self.state.glob("part-*.json")):
            raise InputError(f"output folder '{self.folder}' holds parts of an earlier run; pass --resume "
                             "(resume=True) to finish it, or write to an empty folder")
        if not self.folder.parent.is_dir():
            raise InputError(f"output folder '{self.folder.parent}' does not exist")
        self.state.mkdir(parents=True, exist_ok=True)
        self._remove_partial_files()
        write_json(self.state / "job.json", signature)
        return []

    def _remove_partial_files(self) -> None:
        """What a killed run was writing (never committed): parts (TableWriter) and markers (write_atomically)."""
        for folder in (self.folder, self.state):
            for stale in [*folder.glob(".*.partial-*"), *folder.glob(".*.partial")]:
                stale.unlink()

    def _resume(self, signature: dict) -> list[dict]:
        if STDIO in self.plan.sources:
            raise InputError("cannot resume a run that reads stdin: its rows cannot be read again")
        job = self.state / "job.json"
        if not job.is_file():
            raise InputError(f"cannot resume into '{self.folder}': it holds no parts of an earlier run "
                             f"({job} is missing); run without --resume")
        before = json.loads(job.read_text())
        changed = [key for key in signature if before.get(key) != signature[key]]
        if changed:
            raise InputError(f"cannot resume into '{self.folder}': the {', '.join(changed)} differ from the run "
                             "that wrote its parts; rerun without --resume into an empty folder")
        self._remove_partial_files()
        markers: list[dict[str, Any]] = []
        while (marker := self.state / f"part-{len(markers):05d}.json").is_file():
            entry = json.loads(marker.read_text())
            if entry["file"] is not None and not (self.folder / entry["file"]).is_file():
                break
            markers.append(entry)
        return markers

    def write(self, result: Result) -> None:
        piece = result.piece
        if self._part is None or self._part.number != piece.part:
            self._commit()
            self._part = _Part(piece.part)
        part = self._part
        add_counts(part.stats, result.stats)
        part.reject_names = result.reject_names
        if self.rejects is not None and result.rejected is not None and result.rejected.num_rows:
            if part.rejects is None:
                part.rejects = TableWriter(self.state / f"rejects-{part.number:05d}.parquet", result.rejected.schema)
            part.rejects.write(result.rejected)
        if result.batch is not None:
            if part.writer is None:
                name = f"part-{part.number:05d}.{self.format}"
                part.writer = TableWriter(self.folder / name, result.batch.schema, format=self.format)
            part.writer.write(result.batch)
        if piece.ends_part:
            self._commit()

    def _commit(self) -> None:
        part, self._part = self._part, None
        if part is None:
            return
        if part.rejects is not None:
            part.rejects.commit()
        if part.writer is not None:
            part.writer.commit()
        stats = part.stats
        entry = {"part": part.number, "file": None if part.writer is None else part.writer.path.name,
                 "rejects": None if part.rejects is None else part.rejects.path.name,
                 "reject_columns": part.reject_names, "rows_in": stats.rows_in,
                 "rows_predicted": stats.rows_predicted, "rows_rejected": stats.rows_rejected,
                 "drift": stats.drift.to_dict(),
                 "text": {"truncated": stats.text.truncated, "unknown": stats.text.unknown}}
        write_json(self.state / f"part-{part.number:05d}.json", entry)  # the commit point
        self.markers.append(entry)

    def finish(self) -> RunStats:
        self._commit()
        stats = RunStats()
        for entry in self.markers:
            add_counts(stats, _marked(entry))
        if self.rejects is not None:
            self._gather_rejects()
        return stats

    def _gather_rejects(self) -> None:
        fragments = [self.state / e["rejects"] for e in self.markers if e.get("rejects")]
        names: list[str] = next((e["reject_columns"] for e in reversed(self.markers) if e["reject_columns"]), [])
        writer = None
        try:
            for fragment in fragments:
                table = read_table(fragment)
                writer = writer or TableWriter(self.rejects, table.schema)  # type: ignore[arg-type]
                writer.write(_aligned(table, writer.schema))
            writer = writer or TableWriter(self.rejects, _reject_schema(names, self.plan.many))  # type: ignore[arg-type]
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        writer.commit()

    def abort(self) -> None:
        part, self._part = self._part, None
        if part is not None:
            for writer in (part.writer, part.rejects):
                if writer is not None:
                    writer.abort()


def _signature(predictor: Any, plan: Plan, fmt: str) -> dict:
    """What must not change between a run and its resumption."""
    inputs = []
    for source in plan.sources:
        status = os.stat(source) if source != STDIO else None
        inputs.append({"path": str(Path(source).resolve()) if status else source,
                       "size": status and status.st_size, "mtime_ns": status and status.st_mtime_ns})
    manifest = getattr(predictor, "manifest", None)
    bundle = None if manifest is None else hashlib.sha256(
        json.dumps(manifest.to_dict(), sort_keys=True, default=str).encode()).hexdigest()
    return {"input files": inputs, "bundle": bundle, "keep columns": list(plan.keep),
            "prediction columns": None if plan.columns is None else list(plan.columns),
            "part rows": plan.part_rows, "output format": fmt}


def _marked(entry: dict) -> RunStats:
    """A committed part's counts, as its marker stored them (a marker of an older run has no text counts)."""
    text = entry.get("text") or {}
    return RunStats(rows_in=entry["rows_in"], rows_predicted=entry["rows_predicted"],
                    rows_rejected=entry["rows_rejected"], drift=DriftReport.from_dict(entry["drift"]),
                    text=TextCounts(dict(text.get("truncated", {})), dict(text.get("unknown", {}))))



def write_json(path: Path, data: Any) -> None:
    """Write a JSON file atomically."""
    if not path.parent.is_dir():
        raise InputError(f"output folder '{path.parent}' does not exist")
    write_atomically(path, json.dumps(data, indent=1, default=str) + "\n")

