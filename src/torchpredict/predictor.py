"""The facade every front door uses: validate → preprocess → infer → interpret.

A Predictor is built by `torchpredict.load` from a bundle; it holds the fitted preprocessing, the model
on its device and the output heads, and is safe to share between threads (it keeps no per-call state).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import torch

from torchpredict.errors import ModelLoadError, OutOfRangeWarning, SchemaError
from torchpredict.golden import GoldenExamples, Verification
from torchpredict.inference import RawOutput, forward, iter_forward, to_tensors
from torchpredict.outputs import select_output
from torchpredict.preprocessing import Preprocessor
from torchpredict.schema import Schema, Validated
from torchpredict.storage import check_inputs

__all__ = ["Predictor", "RunStats"]

DEFAULT_BATCH_SIZE = 1024


@dataclass
class RunStats:
    """What a streaming run saw: rows predicted and values outside the training range per column."""

    rows: int = 0
    out_of_range: dict[str, int] = field(default_factory=dict)

    def add(self, validated: Validated) -> None:
        self.rows += validated.table.num_rows
        for column, count in validated.out_of_range.items():
            if count:
                self.out_of_range[column] = self.out_of_range.get(column, 0) + count

    def describe_out_of_range(self) -> str:
        """'12 value(s) outside the training range: 'age' (10), 'bmi' (2)', or '' when none."""
        if not self.out_of_range:
            return ""
        total = sum(self.out_of_range.values())
        parts = ", ".join(f"'{name}' ({count})" for name, count in self.out_of_range.items())
        return f"{total} value(s) outside the training range or categories: {parts}"


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

    @property
    def schema(self) -> Schema:
        return self.preprocessor.schema_

    @property
    def prediction_columns(self) -> list[str]:
        return [name for head in self.heads for name in head.column_names()]

    def predict(self, data: Any, *, keep: Sequence[str] = ()) -> pa.Table:
        """Predict for a table, records, a pandas DataFrame or a dict of columns; returns an Arrow table.

        Columns the schema marks as passthrough (and those named in keep) come first, then the
        prediction columns of each head. Values outside the training range raise an OutOfRangeWarning.
        """
        stats = RunStats()
        table = pa.Table.from_batches(list(self.predict_batches([data], keep=keep, stats=stats)))
        if stats.out_of_range:
            warnings.warn(stats.describe_out_of_range(), OutOfRangeWarning, stacklevel=2)
        return table

    def predict_batches(self, batches: Iterable[Any], *, keep: Sequence[str] = (),
                        stats: RunStats | None = None) -> Iterator[pa.RecordBatch]:
        """Stream predictions, one output batch per model batch, in input order.

        Each item is a record batch or anything `predict` accepts; error messages count rows across them.
        """
        first_row = 0
        for batch in batches:
            validated = self.schema.validate(batch, keep=keep, first_row=first_row)
            first_row += validated.table.num_rows
            if stats is not None:
                stats.add(validated)
            yield from self._predict_validated(validated.table, keep)

    def _predict_validated(self, table: pa.Table, keep: Sequence[str]) -> Iterator[pa.RecordBatch]:
        if table.num_rows == 0:
            yield self._empty_batch(table, keep)
            return
        inputs = self.preprocessor.transform(table)
        passthrough = self._passthrough_names(table, keep)
        start = 0
        for raw in self.infer(inputs):
            columns = self.interpret(raw)
            yield self._assemble(table, passthrough, start, columns)
            start += len(next(iter(columns.values())))

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

    def infer(self, inputs: dict) -> Iterator[RawOutput]:
        """Raw model outputs for preprocessed inputs, batch by batch."""
        if inputs:
            check_inputs(self.model_entry, {name: torch.from_numpy(a[:1]) for name, a in inputs.items()})
        return iter_forward(self.model, inputs, device=self.device, batch_size=self.batch_size)

    def interpret(self, raw: RawOutput) -> dict[str, pa.Array]:
        """Prediction columns of every head for one batch of raw outputs."""
        columns: dict[str, pa.Array] = {}
        for head in self.heads:
            columns.update(head.interpret(select_output(raw, head.output)))
        return columns

    def verify(self) -> Verification:
        """Re-run the bundle's golden examples on this device; report the largest deviation."""
        if self.golden is None:
            raise ModelLoadError("this predictor has no golden examples to verify against")
        inputs = self.preprocessor.transform(self.schema.validate(self.golden.inputs).table)
        try:
            raw = forward(self.model, to_tensors(inputs, self.device))
        except RuntimeError as exc:
            raise ModelLoadError(f"the model failed on its own golden examples: {str(exc).splitlines()[0]}") from None
        return self.golden.compare(raw)

    def __repr__(self) -> str:
        name = getattr(self.manifest, "name", "?")
        return f"Predictor(bundle={name!r}, device='{self.device}', heads={len(self.heads)})"
