"""The facade every front door uses: validate → preprocess → infer → interpret → assemble.

A Predictor is built by `torchpredict.load` from a bundle; it holds the fitted preprocessing, the model on its
device (or what a backend runs in its place, see inference.backends; for ONNX Runtime alone the device is
device.HOST_CPU and torch is never imported), how the model is called (one forward pass, or a decoding loop for
sequence-to-sequence models) and the output heads, and is safe to share between threads (it keeps no per-call
state). The stages are public methods, and `predict`, `predict_batches`, the file pipeline, `verify` and the
save-time check all call them (the last through `run_batch` and `read_heads`, for a model not saved yet), so that
no front door predicts differently from another.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from torchpredict.errors import InputError, ModelLoadError, OutOfRangeWarning, PredictionError, SchemaError
from torchpredict.golden import GoldenExamples, Verification
from torchpredict.inference.batch import ModelBatch, run_batch
from torchpredict.inference.calls import Call
from torchpredict.inference.rebatching import batch_breaks
from torchpredict.messages import first_line
from torchpredict.model.entry import ModelEntry, check_same_batch
from torchpredict.preprocessing import Preprocessor
from torchpredict.schema.schema import Schema, Validated
from torchpredict.schema.validation import RowProblems
from torchpredict.stats import RunStats

if TYPE_CHECKING:
    import torch

__all__ = ["Assembled", "Predictor", "RunStats", "input_rows", "read_heads", "set_aside"]

REJECTS_HINT = "pass rejects=... (CLI --rejects FILE) to set such rows aside"  # the server words it its way

DEFAULT_BATCH_SIZE = 1024
IMAGE_BATCH_BYTES = 8 << 20  # a model of images: the model input per forward pass (13 RGB images of 224 x 224)
_LAYOUTS = 16  # input layouts whose model-input check is remembered per predictor
Rejects = Callable[[pa.Table], Any]  # receives the rejected rows of each batch


@dataclass(frozen=True)
class Assembled:
    """The output of the assemble stage: kept columns then prediction columns (None: no rows, and no golden
    example to give an empty output its columns), and the rows whose output a head refused (None: none)."""

    batch: pa.RecordBatch | None
    refused: pa.Table | None


class Predictor:
    """Predicts with a bundle's model exactly as it was trained.

    >>> import torchpredict                                   # doctest: +SKIP
    >>> predictor = torchpredict.load("wine.tpk")             # doctest: +SKIP
    >>> predictor.predict([{"alcohol": 13.2, ...}])           # doctest: +SKIP
    """

    def __init__(self, *, model: Any, preprocessor: Preprocessor, heads: Sequence[Any],
                 model_entry: ModelEntry | Mapping[str, Any],
                 device: torch.device | Any, batch_size: int | None = None, manifest: Any = None,
                 golden: GoldenExamples | None = None) -> None:
        if batch_size is None:
            batch_size = default_batch_size(preprocessor)
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.preprocessor = preprocessor
        self.heads = tuple(heads)
        self.model_entry = model_entry if isinstance(model_entry, ModelEntry) else ModelEntry.from_dict(model_entry)
        self.device = device
        self.batch_size = batch_size
        self.manifest = manifest
        self.golden = golden
        self.call = Call.from_entry(self.model_entry.to_dict())
        self.call.check(self.heads)
        self.backend = "eager"
        self.backend_report: Any = None  # how the backend was chosen (bundle.backends.BackendReport), if it was
        self._checked_layouts: set[tuple[Any, ...]] = set()  # input layouts check_inputs passed (see infer)

    def with_backend(self, backend: str, model: Any, report: Any = None) -> Predictor:
        """This predictor with its model run by another backend (a callable taking and giving what the model
        does; see inference.backends), which the caller has checked against this one."""
        other = copy.copy(self)
        other.model, other.backend, other.backend_report = model, backend, report
        other._checked_layouts = set()
        return other

    @property
    def schema(self) -> Schema:
        return self.preprocessor.schema_

    @property
    def prediction_columns(self) -> list[str]:
        return [name for head in self.heads for name in head.column_names()]

    # -- front doors ----------------------------------------------------------------------------------

    def predict(self, data: Any, *, keep: Sequence[str] = (), rejects: Rejects | None = None) -> pa.Table:
        """Predict for a table, records (a list of dicts, or one dict), a pandas DataFrame, a dict of columns or
        a numpy array (2-D in the schema's feature order, or structured); returns an Arrow table.

        Columns the schema marks as passthrough (and those named in keep) come first, then the
        prediction columns of each head. rejects: None raises a SchemaError at the first bad row; a
        callable receives the rows failing validation (see Schema.validate) and the others are predicted.
        Inputs that drifted from training give an OutOfRangeWarning whose message is the drift summary; text
        that was truncated or held unknown tokens gives a TruncationWarning / UnknownTokenWarning with the counts.

        >>> rejected = []                                              # doctest: +SKIP
        >>> predictor.predict(rows, rejects=rejected.append)           # doctest: +SKIP
        """
        stats = RunStats()
        validated = self.validate(data, keep=keep, on_error=_on_error(rejects))
        inputs = self.preprocess(validated, stats)
        outputs = [(self.interpret(batch), self.refused(batch)) for batch in self._blocks(validated, inputs)]
        batch = self._deliver(self.assemble(validated, *_joined(outputs), reject=rejects is not None),
                              validated, stats, rejects)
        if stats.drift:
            warnings.warn(stats.drift.summary(), OutOfRangeWarning, stacklevel=2)
        stats.text.warn(stacklevel=2)
        if batch is None:  # every row rejected, and no golden row to shape an empty result with
            raise SchemaError(f"all {stats.rows_in:,} input row(s) were rejected; nothing to predict")
        return pa.Table.from_batches([batch])

    def predict_batches(self, batches: Iterable[Any], *, keep: Sequence[str] = (), stats: RunStats | None = None,
                        rejects: Rejects | None = None) -> Iterator[pa.RecordBatch]:
        """Stream predictions, one output batch per input batch, in input order.

        Each item is a record batch or anything `predict` accepts; row numbers (in errors and in rejected
        rows) count rows across them, and each is cut into model batches of its own. rejects: None raises at
        the first bad row; a callable gets each batch's rejected rows (columns row, reason, then the input
        values as text) and the run goes on. With stats, what encoding text lost is counted in stats.text;
        without, TextEncode steps warn.
        """
        first_row = 0
        for data in batches:
            validated = self.validate(data, keep=keep, first_row=first_row, on_error=_on_error(rejects))
            inputs = self.preprocess(validated, stats)
            outputs = [(self.interpret(batch), self.refused(batch)) for batch in self._blocks(validated, inputs)]
            assembled = self.assemble(validated, *_joined(outputs), first_row=first_row, reject=rejects is not None)
            batch = self._deliver(assembled, validated, stats, rejects)
            first_row += validated.rows_in
            if batch is not None:
                yield batch

    def _blocks(self, validated: Validated, inputs: dict[str, np.ndarray]) -> Iterator[ModelBatch]:
        """The infer stage over validated rows, each batch holding the rows that passed among input rows
        [k * batch_size, (k + 1) * batch_size), as every engine's file jobs batch them (jobs.stages.ModelStage):
        a rejected row changes no batch but its own."""
        if validated.rejected is None or not inputs:
            yield from self.infer(inputs)
            return
        start = 0
        rows = validated.num_rows
        for stop in (*batch_breaks(validated.passed_rows(0), self.batch_size), rows):
            if stop > start:
                yield from self.infer({name: array[start:stop] for name, array in inputs.items()})
            start = stop

    def _deliver(self, assembled: Assembled, validated: Validated, stats: RunStats | None,
                 rejects: Rejects | None) -> pa.RecordBatch | None:
        """Count a batch's rows and hand its rejected ones (by validation, then by a head) to rejects."""
        if stats is not None:
            stats.add(validated)
        for rejected in (validated.rejected, assembled.refused):
            if rejected is not None and rejects is not None:
                rejects(rejected)
        if assembled.refused is not None and stats is not None:
            stats.refuse(assembled.refused.num_rows)
        if assembled.batch is None and not validated.rows_in:
            raise SchemaError("the input holds no rows")
        return assembled.batch

    def predict_file(self, input: Any, output: Any, **options: Any) -> RunStats:
        """Stream the rows of files (CSV, TSV, Parquet, JSONL, .npy; a folder or glob) into a predictions file.

        The options are those of `torchpredict predict` (keep, columns, rejects, report, resume, ...); see
        torchpredict.jobs.pipeline.predict_file.

        >>> stats = predictor.predict_file("new.csv", "predictions.parquet", keep=["id"])   # doctest: +SKIP
        """
        # The one upward import: the file pipeline is a front door above the predictor. It imports nothing
        # from this module (it takes the predictor as an argument), so this makes no cycle.
        from torchpredict.jobs.pipeline import predict_file

        return predict_file(self, input, output, **options)

    def verify(self) -> Verification:
        """Re-run the bundle's golden examples on this device: the raw outputs must reproduce within the
        tolerance, and the heads must make the recorded predictions of the recorded outputs."""
        if self.golden is None or not self.golden.inputs.num_rows:
            raise ModelLoadError("this predictor has no golden examples to verify against")
        inputs = self.preprocess(self.validate(self.golden.inputs))
        try:  # one model batch of every golden row, as they were run when the bundle was saved
            [batch] = self.infer(inputs, batch_size=self.golden.inputs.num_rows)
        except RuntimeError as exc:
            raise ModelLoadError(f"the model failed on its own golden examples: {first_line(exc)}") from None
        report = self.golden.compare(batch.raw, lambda recorded: self.interpret(ModelBatch(recorded, batch.inputs)))
        if self.manifest is None or self.manifest.settings_hashed:
            return report
        writer = self.manifest.producer.get("torchpredict", "?")
        note = (f"settings not hash-checked (written by torchpredict {writer}, before settings_sha256): save it "
                "again from its model to protect them")
        return replace(report, notes=(*report.notes, note))

    # -- the stages -----------------------------------------------------------------------------------

    def validate(self, data: Any, *, keep: Sequence[str] = (), first_row: int = 0,
                 on_error: str = "raise") -> Validated:
        """Stage 1: check input rows against the schema (and the categories the encoders accept), cast them
        and count their drift; on_error "raise" stops at the first bad row, "reject" sets bad rows aside.

        first_row: the input row number of data's first row, for errors and rejected rows.
        """
        accepts = self.preprocessor.accepts_strings if self.preprocessor.plan is not None else None
        return self.schema.validate(data, keep=keep, first_row=first_row, on_error=on_error,  # type: ignore[arg-type]
                                    row_check=self.preprocessor.check_rows, accepts=accepts)

    def preprocess(self, validated: Validated | pa.Table, stats: RunStats | None = None) -> dict[str, np.ndarray]:
        """Stage 2: model inputs for validated rows; what encoding text lost goes to stats.text when stats is given."""
        return self.preprocessor.transform(validated, counts=None if stats is None else stats.text)

    def infer(self, inputs: Mapping[str, np.ndarray], *, batch_size: int | None = None) -> Iterator[ModelBatch]:
        """Stage 3: the model's outputs for preprocessed inputs, in batches of batch_size (default the
        predictor's): one forward pass per batch, or for a seq2seq model the head's decoding loop around it;
        each with its inputs, for heads that read them."""
        if inputs:
            self._check_inputs(inputs)
        return self._batches(inputs, batch_size or self.batch_size)

    def _check_inputs(self, inputs: Mapping[str, np.ndarray]) -> None:
        """ModelEntry.check_inputs, run once per layout of the inputs (names, dtypes, per-row shapes) that
        passes it; a layout seen before is checked only for one batch size."""
        layout = tuple((name, a.dtype, a.shape[1:]) for name, a in inputs.items())
        if layout in self._checked_layouts:
            if len({min(len(a), 1) for a in inputs.values()}) > 1:  # as check_inputs sees them: a[:1]
                check_same_batch({name: a[:1] for name, a in inputs.items()}, SchemaError)
            return
        self.model_entry.check_inputs({name: a[:1] for name, a in inputs.items()})
        if len(self._checked_layouts) < _LAYOUTS:
            self._checked_layouts.add(layout)

    def _batches(self, inputs: Mapping[str, np.ndarray], size: int) -> Iterator[ModelBatch]:
        rows = len(next(iter(inputs.values()))) if inputs else 0
        for start in range(0, rows, size):
            chunk = {name: array[start:start + size] for name, array in inputs.items()}
            yield run_batch(self.call, self.model, self.heads, chunk, self.device)

    def interpret(self, batch: ModelBatch) -> dict[str, pa.Array]:
        """Stage 4: prediction columns of every head for one batch of the infer stage."""
        return read_heads(self.heads, batch)

    def refused(self, batch: ModelBatch) -> pa.Array | None:
        """Per row of the batch, why a head cannot read its output (null where all can); None when all can."""
        reasons = None
        for head in self.heads:
            mine = head.refused(batch)
            if mine is not None:
                reasons = mine if reasons is None else pc.coalesce(reasons, mine)
        return reasons

    def assemble(self, validated: Validated, columns: Mapping[str, pa.Array], reasons: pa.Array | None = None, *,
                 first_row: int = 0, select: Sequence[str] | None = None, reject: bool = False) -> Assembled:
        """Stage 5: the output rows: kept input columns, then the prediction columns (those in select, in its
        order; default all).

        columns and reasons: the interpret stage's columns and refusal reasons for all of validated's rows.
        Rows a head refused (a NaN score) leave the output; with reject they come back as refused rows, in
        the columns validation gives rejected rows, without the first is a PredictionError naming its row.
        """
        kept = validated.column_names[len(self.schema.features):]
        if not validated.num_rows:
            return Assembled(self._empty_batch(validated.table, kept, select), None)
        if reasons is None:  # no head refused a row: nothing to set aside
            return Assembled(_output(validated.column, kept, columns, select), None)
        table, columns, refused = set_aside(validated.table, dict(columns), reasons, input_rows(validated, first_row),
                                            reject=reject)
        return Assembled(_output(_combined(table), kept, columns, select), refused)

    def _empty_batch(self, table: pa.Table, kept: list[str], select: Sequence[str] | None) -> pa.RecordBatch | None:
        """No rows in, no rows out, but with the columns a non-empty input would have had (typed by a golden
        row's predictions); None without golden examples."""
        if self.golden is None or not self.golden.inputs.num_rows:
            return None
        one_row = self.preprocess(self.validate(self.golden.inputs.slice(0, 1)))
        columns = self.interpret(next(iter(self.infer(one_row))))
        return _output(_combined(table), kept, {name: column.slice(0, 0) for name, column in columns.items()}, select)

    def __repr__(self) -> str:
        name = getattr(self.manifest, "name", "?")
        backend = "" if self.backend == "eager" else f", backend={self.backend!r}"
        return f"Predictor(bundle={name!r}, device='{self.device}'{backend}, heads={len(self.heads)})"


def default_batch_size(preprocessor: Preprocessor, rows: int = DEFAULT_BATCH_SIZE) -> int:
    """Rows per forward pass when none is asked for: rows; for a model of images, as many as fit IMAGE_BATCH_BYTES
    of model input (at most DEFAULT_BATCH_SIZE). A batch's activations are held whole while the model runs, a
    ResNet-18's about 9.5 MB a 224 x 224 image; and on a CPU, small batches of large images run faster (a
    ResNet-18 here: 28 images/s at 8 a batch, 22 at 64)."""
    row_bytes = preprocessor.image_row_bytes
    return max(1, min(DEFAULT_BATCH_SIZE, IMAGE_BATCH_BYTES // row_bytes)) if row_bytes else rows


def read_heads(heads: Sequence[Any], batch: ModelBatch) -> dict[str, pa.Array]:
    """Every head's prediction columns for one model batch: the interpret stage, shared by the save-time check."""
    columns: dict[str, pa.Array] = {}
    for head in heads:
        columns.update(head.read(batch))
    return columns


def _on_error(rejects: Rejects | None) -> str:
    return "raise" if rejects is None else "reject"


def _joined(outputs: list[tuple[dict[str, pa.Array], pa.Array | None]]
            ) -> tuple[dict[str, pa.Array], pa.Array | None]:
    """The columns and refusal reasons of several model batches as those of one."""
    if len(outputs) == 1:
        return outputs[0]
    columns = {name: pa.concat_arrays([c[name] for c, _ in outputs]) for name in outputs[0][0]} if outputs else {}
    if all(reasons is None for _, reasons in outputs):
        return columns, None
    reasons = [pa.nulls(len(next(iter(c.values()))), pa.string()) if r is None else r for c, r in outputs]
    return columns, pa.concat_arrays(reasons)


def _combined(table: pa.Table) -> Callable[[str], pa.Array]:
    return lambda name: table.column(name).combine_chunks()


def _output(column: Callable[[str], pa.Array], kept: list[str], columns: Mapping[str, pa.Array],
            select: Sequence[str] | None) -> pa.RecordBatch:
    """Kept input columns (column(name): one as an array), then the selected prediction columns."""
    names = list(columns) if select is None else list(select)
    clash = sorted(set(kept) & set(names))
    if clash:
        raise SchemaError(f"kept column(s) {clash} would overwrite prediction columns of the same name")
    output = {name: column(name) for name in kept}
    output.update({name: columns[name] for name in names})
    return pa.RecordBatch.from_pydict(output)


def input_rows(validated: Validated, first_row: int) -> np.ndarray:
    """The input row number of each row that passed validation (the rows between the rejected ones)."""
    return validated.passed_rows(first_row)


def set_aside(table: pa.Table, columns: dict[str, pa.Array], reasons: pa.Array | None, rows: np.ndarray, *,
              reject: bool) -> tuple[pa.Table, dict[str, pa.Array], pa.Table | None]:
    """Take the rows a head refused (reasons not null) out of a batch's validated rows and predictions.

    With reject they come back as rejected rows, in the columns validation gives them (row: the input row
    number from rows, reason, the values as text), so that every input row is predicted or rejected; without,
    the first is a PredictionError naming its row.
    """
    if reasons is None:
        return table, columns, None
    bad = np.flatnonzero(reasons.is_valid().to_numpy(False))
    if not len(bad):
        return table, columns, None
    if not reject:
        raise PredictionError(f"row {int(rows[bad[0]])}: {reasons[int(bad[0])]} ({len(bad)} such row(s) in this "
                              f"batch); {REJECTS_HINT}")
    problems = RowProblems(collect=True)
    problems.add(bad, lambda some: [reasons[int(i)].as_py() for i in some], lambda row: "")
    refused = problems.rejected(table, table.column_names, 0)
    refused = refused.set_column(0, refused.field(0), pa.array(rows[bad], pa.int64()))  # type: ignore[union-attr]
    keep = pa.array(~np.isin(np.arange(table.num_rows), bad))
    return table.filter(keep), {name: column.filter(keep) for name, column in columns.items()}, refused
