"""Copies of columns, so that one input column can feed several steps that each replace their columns.

Steps transform their columns in place; a column scaled in one place and passed through (or bucketized,
or one-hot encoded) in another needs a copy for each further use. This is how a scikit-learn
ColumnTransformer whose branches share a column converts (see sklearn_import).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pyarrow as pa

from torchpredict.errors import PreprocessingError
from torchpredict.preprocessing.numeric import replace_columns
from torchpredict.preprocessing.steps import Step, register_step
from torchpredict.schema.validation import RowReport

__all__ = ["Copy", "copied_from", "named_as_copied"]


@register_step
class Copy(Step):
    """Add `names[i]` as a copy of `columns[i]`, right after it; a column listed twice gets two copies.

    Learns nothing. The copy shares the column's buffers (no values are copied), and a name that already
    exists in the data is refused rather than overwritten.

    >>> Copy(["volts"], names=["volts_raw"]).transform(pa.table({"volts": [1.5]})).to_pydict()
    {'volts': [1.5], 'volts_raw': [1.5]}
    """

    type = "copy"

    def __init__(self, columns: Sequence[str], *, names: Sequence[str]) -> None:
        super().__init__(columns, names=_names(columns, names))

    def fit(self, frame: pa.Table) -> Copy:
        return self

    def transform(self, frame: pa.Table) -> pa.Table:
        blocks: dict[str, dict[str, pa.ChunkedArray]] = {}
        for source, name in zip(self.columns, self.params["names"], strict=True):
            column = self._column(frame, source)
            blocks.setdefault(source, {source: column})[name] = column
        return replace_columns(frame, blocks)

    @property
    def copies(self) -> dict[str, str]:
        """Each new column's name -> the column it copies."""
        return dict(zip(self.params["names"], self.columns, strict=True))


def copied_from(steps: Sequence[Step]) -> dict[str, str]:
    """Each column a Copy step among steps makes -> the column it copies (through copies of copies)."""
    origin: dict[str, str] = {}
    for step in steps:
        if isinstance(step, Copy):
            origin.update({name: origin.get(source, source) for name, source in step.copies.items()})
    return origin


def named_as_copied(report: RowReport, columns: Sequence[str], origin: Mapping[str, str]) -> RowReport:
    """report, where a reason or message about a copy among columns (they start "column 'name':") names the
    column copied instead: the one the caller passed in."""
    prefixes = {f"column {n!r}:": f"column {origin[n]!r}:" for n in columns if n in origin}
    if not prefixes:
        return report

    def renamed(text: str) -> str:
        prefix = next((p for p in prefixes if text.startswith(p)), None)
        return text if prefix is None else prefixes[prefix] + text[len(prefix):]

    def forward(rows: np.ndarray, reasons: Callable[[np.ndarray], list[str]], message: Callable[[int], str]) -> None:
        report(rows, lambda some: [renamed(r) for r in reasons(some)], lambda row: renamed(message(row)))

    return forward


def _names(columns: Sequence[str], names: Sequence[str]) -> tuple[str, ...]:
    """The copies' names, checked: one distinct new name (a non-empty string) per column copied."""
    columns = (columns,) if isinstance(columns, str) else tuple(columns)
    if isinstance(names, str) or not all(isinstance(n, str) and n for n in names):
        raise PreprocessingError(f"Copy names must be a list of non-empty column names, got {names!r}")
    names = tuple(names)
    if len(names) != len(columns):
        raise PreprocessingError(
            f"Copy needs one name per column copied: {len(columns)} column(s), got {len(names)} name(s)"
        )
    reused = sorted({n for n in names if names.count(n) > 1 or n in columns})
    if reused:
        raise PreprocessingError(
            f"Copy names {', '.join(map(repr, reused))} repeat or name a copied column; give each copy a new name"
        )
    return names
