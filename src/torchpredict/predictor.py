"""The facade every front door uses: validate → preprocess → infer → interpret.

A Predictor is built by `torchpredict.load` from a bundle; it holds the fitted preprocessing, the model
on its device, how the model is called (one forward pass, or a decoding loop for sequence-to-sequence
models) and the output heads, and is safe to share between threads (it keeps no per-call state).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from torchpredict.drift import DriftReport
from torchpredict.errors import ModelLoadError, OutOfRangeWarning, PredictionError, SchemaError
from torchpredict.golden import GoldenExamples, Verification
from torchpredict.inference import to_tensors
from torchpredict.interpretation import ModelBatch
from torchpredict.preprocessing import Preprocessor
from torchpredict.schema import Schema, Validated
from torchpredict.sequences import Call
from torchpredict.storage import check_inputs
from torchpredict.text import TextCounts
from torchpredict.validation import RowProblems

__all__ = ["Predictor", "RunStats", "input_rows", "set_aside"]

DEFAULT_BATCH_SIZE = 1024
CPU = torch.device("cpu")
Rejects = Callable[[pa.Table], Any]  # receives the rejected rows of each batch


@dataclass
class RunStats:
    """What a run saw: input rows, rows predicted, rows rejected, the drift of the predicted rows, and what
    encoding their text lost (texts truncated, unknown tokens)."""

    rows_in: int = 0
    rows_predicted: int = 0
    rows_rejected: int = 0
    drift: DriftReport = field(default_factory=DriftReport)
    text: TextCounts = field(default_factory=TextCounts)

    def add(self, validated: Validated) -> None:
        """Count one validated batch."""
        self.rows_in += validated.rows_in
        self.rows_predicted += validated.table.num_rows
        self.rows_rejected += validated.rows_in - validated.table.num_rows
        self.drift.add(validated.drift)

    def refuse(self, rows: int) -> None:
        """Count rows that passed validation but whose model output was refused (a NaN score) as rejected."""
        self.rows_predicted -= rows
        self.rows_rejected += rows

    def describe(self) -> list[str]:
        """Parts of a summary line: ['998 of 1,000 rows predicted', '2 rejected', '1 column drifted ...']."""
        if self.rows_rejected:
            parts = [f"{self.rows_predicted:,} of {self.rows_in:,} rows predicted", f"{self.rows_rejected:,} rejected"]
        else:
            parts = [f"{self.rows_predicted:,} rows predicted"]
        return parts + ([self.drift.summary()] if self.drift else []) + ([self.text.summary()] if self.text else [])


class Predictor:
    """Predicts with a bundle's model exactly as it was trained.

    >>> import torchpredict                                   # doctest: +SKIP
    >>> predictor = torchpredict.load("wine.tpk")             # doctest: +SKIP
    >>> predictor.predict([{"alcohol": 13.2, ...}])           # doctest: +SKIP
    """

    def __init__(self, *, model: Any, preprocessor: Preprocessor, heads: Sequence[Any], model_entry: dict,
                 device: torch.device, batch_size: int = DEFAULT_BATCH_SIZE, manifest: Any = None,
                 golden: GoldenExamples | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.preprocessor = preprocessor
        self.heads = tuple(heads)
        self.model_entry = model_entry
        self.device = device
        self.batch_size = batch_size
        self.manifest = manifest
        self.golden = golden
        self.call = Call.from_entry(model_entry)
        self.call.check(self.heads)

    @property
    def schema(self) -> Schema:
        return self.preprocessor.schema_

    @property
    def prediction_columns(self) -> list[str]:
        return [name for head in self.heads for name in head.column_names()]

    def predict(self, data: Any, *, keep: Sequence[str] = (), rejects: Rejects | None = None) -> pa.Table:
        """Predict for a table, records, a pandas DataFrame or a dict of columns; returns an Arrow table.

        Columns the schema marks as passthrough (and those named in keep) come first, then the
        prediction columns of each head. rejects: None raises a SchemaError at the first bad row; a
        callable receives the rows failing validation (see Schema.validate) and the others are predicted.
        Inputs that drifted from training give an OutOfRangeWarning whose message is the drift summary; text
        that was truncated or held unknown tokens gives a TruncationWarning / UnknownTokenWarning with the counts.

        >>> rejected = []                                              # doctest: +SKIP
        >>> predictor.predict(rows, rejects=rejected.append)           # doctest: +SKIP
        """
        stats = RunStats()
        batches = list(self.predict_batches([data], keep=keep, stats=stats, rejects=rejects))
        if stats.drift:
            warnings.warn(stats.drift.summary(), OutOfRangeWarning, stacklevel=2)
        stats.text.warn(stacklevel=2)
        if not batches:  # every row rejected, and no golden row to shape an empty result with
            raise SchemaError(f"all {stats.rows_in:,} input row(s) were rejected; nothing to predict")
        return pa.Table.from_batches(batches)

    def predict_batches(self, batches: Iterable[Any], *, keep: Sequence[str] = (), stats: RunStats | None = None,
                        rejects: Rejects | None = None, text: bool = False) -> Iterator[pa.RecordBatch]:
        """Stream predictions, one output batch per model batch, in input order.

        Each item is a record batch or anything `predict` accepts; row numbers (in errors and in rejected
        rows) count rows across them. rejects: None raises at the first bad row; a callable gets each
        batch's rejected rows (columns row, reason, then the input values as text) and the run goes on.
        text: the batches were read from a text format (CSV/TSV), so numbers may arrive as strings.
        With stats, what encoding text lost is counted in stats.text; without, TextEncode steps warn.
        """
        on_error = "raise" if rejects is None else "reject"
        first_row = 0
        for batch in batches:
            validated = self.schema.validate(batch, keep=keep, first_row=first_row, on_error=on_error, text=text,
                                             row_check=self.preprocessor.check_rows)
            rows = input_rows(validated, first_row)
            first_row += validated.rows_in
            if stats is not None:
                stats.add(validated)
            if validated.rejected is not None and rejects is not None:
                rejects(validated.rejected)
                if validated.table.num_rows == 0 and self.golden is None:
                    continue
            yield from self._predict_validated(validated.table, keep, stats, rows, rejects)

    def _predict_validated(self, table: pa.Table, keep: Sequence[str], stats: RunStats | None, rows: np.ndarray,
                           rejects: Rejects | None) -> Iterator[pa.RecordBatch]:
        """Predictions for validated rows (rows: their input row numbers); rows whose output a head refuses go to
        rejects, or raise a PredictionError without it."""
        if table.num_rows == 0:
            yield self._empty_batch(table, keep)
            return
        inputs = self.preprocess(table, stats)
        passthrough = self._passthrough_names(table, keep)
        start = 0
        for batch in self.infer(inputs):
            columns = self.interpret(batch)
            n = len(next(iter(columns.values())))
            part, columns, refused = set_aside(table.slice(start, n), columns, self.refused(batch),
                                               rows[start:start + n], reject=rejects is not None)
            if refused is not None:
                rejects(refused)  # type: ignore[misc]  # set_aside raised if rejects is None
                if stats is not None:
                    stats.refuse(refused.num_rows)
            yield self._assemble(part, passthrough, 0, columns)
            start += n

    @staticmethod
    def _assemble(table: pa.Table, passthrough: list[str], start: int, columns: dict) -> pa.RecordBatch:
        """Kept input columns for rows start.. followed by the prediction columns."""
        clash = set(passthrough) & set(columns)
        if clash:
            raise SchemaError(f"kept column(s) {sorted(clash)} would overwrite prediction columns of the same name")
        n_rows = len(next(iter(columns.values())))
        kept = {name: table.column(name).slice(start, n_rows).combine_chunks() for name in passthrough}
        return pa.RecordBatch.from_pydict({**kept, **columns})

    def _empty_batch(self, table: pa.Table, keep: Sequence[str]) -> pa.RecordBatch:
        """No rows in, no rows out, but with the columns a non-empty input would have had."""
        if self.golden is None:
            raise SchemaError("the input holds no rows")
        one_row = self.schema.validate(self.golden.inputs.slice(0, 1)).table
        columns = self.interpret(next(iter(self.infer(self.preprocessor.transform(one_row)))))
        empty = {name: column.slice(0, 0) for name, column in columns.items()}
        return self._assemble(table, self._passthrough_names(table, keep), 0, empty)

    def _passthrough_names(self, table: pa.Table, keep: Sequence[str]) -> list[str]:
        wanted = [column.name for column in self.schema.passthrough] + list(keep)
        return [name for name in dict.fromkeys(wanted) if name in table.column_names]

    def predict_file(self, input: Any, output: Any, **options: Any) -> RunStats:
        """Stream the rows of files (CSV, TSV, Parquet, JSONL, .npy; a folder or glob) into a predictions file.

        The options are those of `torchpredict predict` (keep, columns, rejects, report, resume, ...); see
        torchpredict.pipeline.predict_file.

        >>> stats = predictor.predict_file("new.csv", "predictions.parquet", keep=["id"])   # doctest: +SKIP
        """
        from torchpredict.pipeline import predict_file  # local: pipeline imports predictor

        return predict_file(self, input, output, **options)

    def preprocess(self, table: pa.Table, stats: RunStats | None = None) -> dict[str, np.ndarray]:
        """Model inputs for validated rows; what encoding text lost goes to stats.text when stats is given."""
        return self.preprocessor.transform(table, counts=None if stats is None else stats.text)

    def infer(self, inputs: Mapping[str, np.ndarray]) -> Iterator[ModelBatch]:
        """The model's outputs for preprocessed inputs, batch by batch: one forward pass per batch, or for a
        seq2seq model the head's decoding loop around it; each with its inputs, for heads that read them."""
        if inputs:
            check_inputs(self.model_entry, {name: torch.from_numpy(a[:1]) for name, a in inputs.items()})
        return self._batches(inputs)

    def _batches(self, inputs: Mapping[str, np.ndarray]) -> Iterator[ModelBatch]:
        rows = len(next(iter(inputs.values()))) if inputs else 0
        for start in range(0, rows, self.batch_size):
            chunk = {name: array[start:start + self.batch_size] for name, array in inputs.items()}
            raw = self.call.run(self.model, to_tensors(chunk, self.device), self.heads)
            yield ModelBatch(raw, to_tensors(chunk, CPU))

    def interpret(self, batch: ModelBatch) -> dict[str, pa.Array]:
        """Prediction columns of every head for one batch of the infer stage."""
        columns: dict[str, pa.Array] = {}
        for head in self.heads:
            columns.update(head.read(batch))
        return columns

    def refused(self, batch: ModelBatch) -> pa.Array | None:
        """Per row of the batch, why a head cannot read its output (null where all can); None when all can."""
        reasons = None
        for head in self.heads:
            mine = head.refused(batch)
            if mine is not None:
                reasons = mine if reasons is None else pc.coalesce(reasons, mine)
        return reasons

    def verify(self) -> Verification:
        """Re-run the bundle's golden examples on this device: the raw outputs must reproduce within the
        tolerance, and the heads must make the recorded predictions of the recorded outputs."""
        if self.golden is None:
            raise ModelLoadError("this predictor has no golden examples to verify against")
        inputs = self.preprocessor.transform(self.schema.validate(self.golden.inputs).table)
        try:
            raw = self.call.run(self.model, to_tensors(inputs, self.device), self.heads)
        except RuntimeError as exc:
            raise ModelLoadError(f"the model failed on its own golden examples: {str(exc).splitlines()[0]}") from None
        cpu_inputs = to_tensors(inputs, CPU)
        report = self.golden.compare(raw, lambda recorded: self.interpret(ModelBatch(recorded, cpu_inputs)))
        if self.manifest is None or self.manifest.settings_hashed:
            return report
        writer = self.manifest.producer.get("torchpredict", "?")
        note = (f"settings not hash-checked (written by torchpredict {writer}, before settings_sha256): save it "
                "again from its model to protect them")
        return replace(report, notes=(*report.notes, note))

    def __repr__(self) -> str:
        name = getattr(self.manifest, "name", "?")
        return f"Predictor(bundle={name!r}, device='{self.device}', heads={len(self.heads)})"


def input_rows(validated: Validated, first_row: int) -> np.ndarray:
    """The input row number of each row that passed validation (the rows between the rejected ones)."""
    rows = np.arange(first_row, first_row + validated.rows_in, dtype=np.int64)
    if validated.rejected is None:
        return rows
    return np.setdiff1d(rows, validated.rejected.column(0).to_numpy(), assume_unique=True)


def set_aside(table: pa.Table, columns: dict[str, pa.Array], reasons: pa.Array | None, rows: np.ndarray, *,
              reject: bool) -> tuple[pa.Table, dict[str, pa.Array], pa.Table | None]:
    """Take the rows a head refused (reasons not null) out of a batch's validated rows and predictions.

    With reject they come back as rejected rows, in the columns validation gives them (row: the input row
    number from rows, reason, the values as text), so that every input row is predicted or rejected; without,
    the first is a PredictionError naming its row.
    """
    bad = np.array([], dtype=np.int64) if reasons is None else np.flatnonzero(reasons.is_valid().to_numpy(False))
    if not len(bad):
        return table, columns, None
    if not reject:
        raise PredictionError(f"row {int(rows[bad[0]])}: {reasons[int(bad[0])]} ({len(bad)} such row(s) in this "
                              "batch); pass rejects=... (CLI --rejects FILE) to set such rows aside")
    problems = RowProblems(collect=True)
    problems.add(bad, lambda some: [reasons[int(i)].as_py() for i in some], lambda: "")
    refused = problems.rejected(table, table.column_names, 0)
    refused = refused.set_column(0, refused.field(0), pa.array(rows[bad], pa.int64()))  # type: ignore[union-attr]
    keep = pa.array(~np.isin(np.arange(table.num_rows), bad))
    return table.filter(keep), {name: column.filter(keep) for name, column in columns.items()}, refused
