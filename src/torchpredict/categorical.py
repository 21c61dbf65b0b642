"""Categorical steps: encode strings with the categories seen in training, in a stable order."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from torchpredict.errors import PreprocessingError
from torchpredict.steps import Step, register_step, string_values

__all__ = ["OneHot"]


@register_step
class OneHot(Step):
    """One 0/1 column per category, named "col=category"; categories are strings, sorted unless given."""

    type = "onehot"
    state = ("categories_",)

    def __init__(
        self,
        columns: Sequence[str],
        *,
        handle_unknown: str = "error",
        categories: Sequence[Sequence[Any]] | Mapping[str, Sequence[Any]] | None = None,
    ) -> None:
        if handle_unknown not in ("error", "ignore"):
            raise PreprocessingError(
                f"OneHot handle_unknown must be 'error' or 'ignore', got {handle_unknown!r}"
            )
        super().__init__(columns, handle_unknown=handle_unknown, categories=None)
        self.params["categories"] = self._given(categories)

    def _given(self, categories: Any) -> tuple[tuple[str, ...], ...] | None:
        if categories is None:
            return None
        if isinstance(categories, Mapping):
            categories = [categories.get(c, ()) for c in self.columns]
        if len(categories) != len(self.columns) or not all(len(c) for c in categories):
            raise PreprocessingError(
                f"OneHot categories must give a non-empty list for each of the {len(self.columns)} columns"
            )
        return tuple(tuple(str(v) for v in c) for c in categories)

    def fit(self, frame: pa.Table) -> OneHot:
        given = self.params["categories"]
        self.categories_ = given or tuple(self._learn(frame, n) for n in self.columns)
        return self

    def _learn(self, frame: pa.Table, name: str) -> tuple[str, ...]:
        seen = pc.unique(pc.drop_null(string_values(self._column(frame, name)))).to_pylist()
        if not seen:
            raise PreprocessingError(f"{self!r}: column {name!r} has no non-missing values to fit on")
        return tuple(sorted(seen))

    def transform(self, frame: pa.Table) -> pa.Table:
        self._check_fitted()
        blocks = {
            n: self._encode(frame, n, cats) for n, cats in zip(self.columns, self.categories_, strict=True)
        }
        names, arrays = [], []
        for name, col in zip(frame.column_names, frame.columns, strict=True):
            block = blocks.get(name)
            names += [name] if block is None else list(block)
            arrays += [col] if block is None else list(block.values())
        return pa.Table.from_arrays(arrays, names=names)

    def _encode(self, frame: pa.Table, name: str, categories: tuple[str, ...]) -> dict[str, pa.Array]:
        col = self._column(frame, name)
        keys = string_values(col)
        index = pc.index_in(keys, value_set=pa.array(categories, pa.string()))
        codes = pc.fill_null(index, -1).to_numpy()
        if self.params["handle_unknown"] == "error" and (codes < 0).any():
            _unknown(col, codes, name, categories)
        onehot = codes[:, None] == np.arange(len(categories))
        return {f"{name}={c}": pa.array(onehot[:, j].astype(np.float64)) for j, c in enumerate(categories)}



def _unknown(col: pa.ChunkedArray, codes: np.ndarray, name: str, categories: tuple[str, ...]) -> None:
    rows = np.flatnonzero(codes < 0)
    value = col[int(rows[0])].as_py()
    shown = ", ".join(repr(c) for c in categories[:20]) + (", …" if len(categories) > 20 else "")
    raise PreprocessingError(
        f"column {name!r}: unknown category {'null' if value is None else repr(value)} at row "
        f"{int(rows[0])} ({len(rows)} row(s) unknown); known categories: {shown}; "
        "use OneHot(..., handle_unknown='ignore') to encode unknowns as all zeros"
    )


