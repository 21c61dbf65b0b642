"""What a run saw, counted the same way by every front door: rows in, predicted, rejected, drift, text lost."""

from __future__ import annotations

from dataclasses import dataclass, field

from torchpredict.preprocessing.text import TextCounts
from torchpredict.schema.drift import DriftReport
from torchpredict.schema.schema import Validated

__all__ = ["RunStats"]


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
        self.rows_predicted += validated.num_rows
        self.rows_rejected += validated.rows_in - validated.num_rows
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
