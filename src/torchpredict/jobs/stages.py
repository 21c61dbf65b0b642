"""The work a file job does on each piece of its input, shared by the local pipeline (pipeline.py, in threads)
and the Ray engine's actors (torchpredict.ray), so that no engine predicts differently from another: validate and
preprocess a piece (prepare), then run the model over prepared pieces in batches laid out the same way whatever
the engine (ModelStage) and assemble each piece's output rows and rejected rows (a Result)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from torchpredict.errors import PredictionError, SchemaError
from torchpredict.inference.rebatching import Rebatcher, batch_breaks
from torchpredict.io.formats import STDIO
from torchpredict.jobs.plan import Piece, Plan, Result
from torchpredict.schema.schema import Validated
from torchpredict.schema.validation import free_name
from torchpredict.stats import RunStats

__all__ = ["ModelStage", "Prepared", "prepare", "where", "with_file"]

REASONS = "\0reasons"  # in ModelStage's outputs: why a head refused each row (null: it did not); never a column name


@dataclass
class Prepared:
    piece: Piece
    validated: Validated  # the rows that passed (the features stay only to show in rows rejected after the model)
    inputs: dict[str, np.ndarray]  # their model inputs
    stats: RunStats
    rejected: pa.Table | None  # the rows validation rejected, with their file when the job reads several


def prepare(predictor: Any, plan: Plan, piece: Piece) -> Prepared:
    """Validate one piece (rejecting or raising on bad rows) and preprocess the rows that passed."""
    try:
        validated = predictor.validate(piece.chunk.data, keep=plan.keep, first_row=piece.chunk.first_row,
                                       on_error=plan.on_error)
    except SchemaError as exc:
        raise SchemaError(f"{where(piece.source)}: {exc}") from None
    stats = RunStats()
    stats.add(validated)
    rejected = None if validated.rejected is None else with_file(validated.rejected, plan, piece.source)
    inputs = predictor.preprocess(validated, stats) if validated.num_rows else {}
    return Prepared(piece, validated, inputs, stats, rejected)


def with_file(rejected: pa.Table, plan: Plan, source: str) -> pa.Table:
    """Rejected rows with the file they came from first, when the run reads several."""
    if not plan.many:
        return rejected
    return rejected.add_column(0, free_name("file", rejected.column_names),
                               pa.array([source] * rejected.num_rows, pa.string()))


class ModelStage:
    """Runs the model on the prepared rows through the re-batcher, each batch holding the rows that passed
    validation among input rows [k * batch_size, (k + 1) * batch_size) of one file, as Predictor.predict lays
    them out over that file whatever the chunk sizes (so that the outputs are bit-identical: a matrix kernel may
    round differently for another batch size). So a file's predictions depend neither on the files read with it,
    nor on where its chunks or the Ray engine's pieces (whole blocks each) end, nor on rows rejected in other
    blocks. No batch spans two output parts either, so that a resumed run computes every part as an uninterrupted
    one does."""

    def __init__(self, predictor: Any, plan: Plan) -> None:
        self.predictor, self.plan = predictor, plan
        self.rebatcher: Rebatcher[Prepared] = Rebatcher(predictor.batch_size, self._run)
        self._source: str | None = None
        self._last_row: int | None = None  # the input row number of the last row queued

    def feed(self, prepared: Prepared) -> list[Result]:
        done = []
        if self._source is not None and prepared.piece.source != self._source:
            done = self.rebatcher.flush()
            self._last_row = None
        self._source = prepared.piece.source
        rows = prepared.validated.passed_rows(prepared.piece.chunk.first_row)
        done += self.rebatcher.add(prepared, prepared.inputs, batch_breaks(rows, self.rebatcher.batch_size,
                                                                           self._last_row))
        if len(rows):
            self._last_row = int(rows[-1])
        if prepared.piece.ends_part:
            done += self.rebatcher.flush()
        return [self._result(piece, outputs) for piece, outputs in done]

    def finish(self) -> list[Result]:
        return [self._result(piece, outputs) for piece, outputs in self.rebatcher.flush()]

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, pa.Array]:
        """One model batch through the infer and interpret stages, with why a head refused each row."""
        [batch] = self.predictor.infer(inputs)
        columns = self.predictor.interpret(batch)
        reasons = self.predictor.refused(batch)
        rows = len(next(iter(inputs.values())))
        return {**columns, REASONS: pa.nulls(rows, pa.string()) if reasons is None else reasons}

    def _result(self, prepared: Prepared, outputs: dict[str, pa.Array]) -> Result:
        """The assemble stage for one piece; rows a head refused join the rows validation rejected."""
        reasons = outputs.pop(REASONS, None)
        try:
            assembled = self.predictor.assemble(prepared.validated, outputs, reasons,
                                                first_row=prepared.piece.chunk.first_row, select=self.plan.columns,
                                                reject=self.plan.on_error == "reject")
        except PredictionError as exc:
            raise PredictionError(f"{where(prepared.piece.source)}: {exc}") from None
        rejected = prepared.rejected
        if assembled.refused is not None:
            prepared.stats.refuse(assembled.refused.num_rows)
            rejected = self._joined(rejected, with_file(assembled.refused, self.plan, prepared.piece.source))
        return Result(prepared.piece, assembled.batch, prepared.stats, rejected,
                      prepared.validated.table.column_names)

    def _joined(self, rejected: pa.Table | None, refused: pa.Table) -> pa.Table:
        """Rows rejected by validation and by a head, in input order."""
        if rejected is None:
            return refused
        row = refused.column_names[1 if self.plan.many else 0]
        return pa.concat_tables([rejected, refused]).sort_by(row)


def where(source: str) -> str:
    return "stdin" if source == STDIO else f"file '{source}'"
