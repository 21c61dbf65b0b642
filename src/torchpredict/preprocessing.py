"""The Preprocessor: fitted steps that travel with the model, so inference reuses the training statistics.

It routes the input columns through the steps in order and assembles the result into the model's
input arrays: one float32 matrix by default, or several named inputs (`inputs=`), int64 where they hold
only IndexEncode codes (for embedding tables). The step types live in numeric.py, missing.py and
categorical.py; importing this module registers them all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from torchpredict.binning import Bucketize
from torchpredict.categorical import IndexEncode, OneHot
from torchpredict.errors import PreprocessingError
from torchpredict.missing import Impute
from torchpredict.numeric import Clip, Log1p, MaxAbs, MinMax, Robust, Standardize
from torchpredict.power import Power
from torchpredict.schema import Schema
from torchpredict.steps import STEP_TYPES, Step, float64_values, is_numeric, register_step
from torchpredict.tables import as_table

__all__ = ["STEP_TYPES", "Bucketize", "Clip", "Impute", "IndexEncode", "Log1p", "MaxAbs", "MinMax", "OneHot", "Power",
           "Preprocessor", "Robust", "Standardize", "Step", "from_sklearn", "register_step"]

FLOAT32, INT64 = "float32", "int64"  # the dtypes of model inputs


class Preprocessor:
    """The ordered steps that turn a validated table into the model's input arrays.

    inputs: model input name -> columns of the transformed data, in the order `forward` takes them; a column
    a step replaced (e.g. "city" after OneHot) stands for all the columns that took its place. An input is
    int64 when it holds only IndexEncode codes, float32 otherwise. Without it, one input named input_name
    holds every column.

    >>> pre = Preprocessor([Standardize(["a"])]).fit({"a": [1.0, 3.0]})
    >>> pre.transform({"a": [3.0]})["x"].tolist()
    [[1.0]]
    >>> pre = Preprocessor([IndexEncode(["c"], handle_unknown="reserved")], inputs={"codes": ["c"], "x": ["a"]})
    >>> {k: v.dtype.name for k, v in pre.fit_transform({"a": [1.0, 3.0], "c": ["u", "v"]}).items()}
    {'codes': 'int64', 'x': 'float32'}
    """

    def __init__(
        self,
        steps: Sequence[Step] = (),
        *,
        features: Sequence[str] | None = None,
        passthrough: Sequence[str] = (),
        input_name: str = "x",
        inputs: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.steps = tuple(steps)
        self.features = None if features is None else tuple(features)
        self.passthrough = tuple(passthrough)
        self.input_name = input_name
        self.inputs = None if inputs is None else _inputs(inputs, input_name)

    def fit(self, data: Any) -> Preprocessor:
        """Learn every step in order, each on the previous one's output, and record the input schema."""
        table = as_table(data)
        features = self.features or tuple(n for n in table.column_names if n not in self.passthrough)
        nullable = self._nullable(table)
        _check_training_missing(table, [n for n in features if n not in nullable])
        schema = Schema.from_table(table, features=features, passthrough=self.passthrough, nullable=nullable)
        frame = schema.validate(table.select(list(features))).table
        lineage = _Lineage(frame.column_names)
        for step in self.steps:
            before = frame.column_names
            frame = step.fit(frame).transform(frame)
            lineage.record(step, before, frame.column_names)
        _check_model_ready(frame)
        names = tuple(frame.column_names)
        inputs = lineage.resolve(self.inputs or {self.input_name: names})
        self.schema_, self.feature_names_ = schema, names
        self.inputs_ = inputs
        self.input_dtypes_ = {n: INT64 if lineage.all_codes(cols) else FLOAT32 for n, cols in inputs.items()}
        return self

    def transform(self, data: Any) -> dict[str, np.ndarray]:
        """{input name: [rows, columns] array} in `inputs` order; expects data that passed schema_.validate."""
        if not hasattr(self, "schema_"):
            raise PreprocessingError("Preprocessor is not fitted; call fit(...) on training data first")
        table = as_table(data)
        names = [c.name for c in self.schema_.features]
        missing = [n for n in names if n not in table.column_names]
        if missing:
            raise PreprocessingError(
                f"missing column(s) {', '.join(map(repr, missing))}; check inputs with schema_.validate first"
            )
        frame = table.select(names)
        for step in self.steps:
            frame = step.transform(frame)
        return {name: _matrix(frame, cols, self.input_dtypes_[name]) for name, cols in self.inputs_.items()}

    def fit_transform(self, data: Any) -> dict[str, np.ndarray]:
        return self.fit(data).transform(data)

    @property
    def n_features_(self) -> int:
        if not hasattr(self, "feature_names_"):
            raise PreprocessingError("Preprocessor is not fitted; call fit(...) on training data first")
        return len(self.feature_names_)

    def _nullable(self, table: pa.Table) -> frozenset[str]:
        """Columns a step accepts missing values in: imputed ones, and encoded ones whose encoder takes them
        (a missing value seen in training is a category, as in scikit-learn; other unknown policies map it)."""
        names: set[str] = set()
        for step in self.steps:
            if isinstance(step, Impute):
                names.update(step.columns)
            elif isinstance(step, (OneHot, IndexEncode)):
                names.update(n for n in step.columns if step.accepts_missing(n, _has_missing(table, n)))
        return frozenset(names)

    def to_dict(self) -> dict[str, Any]:
        fitted = hasattr(self, "schema_")
        state = {
            "schema": self.schema_.to_dict(),
            "feature_names": list(self.feature_names_),
            "inputs": {n: {"columns": list(c), "dtype": self.input_dtypes_[n]} for n, c in self.inputs_.items()},
        } if fitted else None
        return {
            "steps": [s.to_dict() for s in self.steps],
            "features": None if self.features is None else list(self.features),
            "passthrough": list(self.passthrough),
            "input_name": self.input_name,
            "inputs": None if self.inputs is None else {n: list(c) for n, c in self.inputs.items()},
            "state": state,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Preprocessor:
        steps = [Step.from_dict(s) for s in d["steps"]]
        pre = cls(
            steps,
            features=d.get("features"),
            passthrough=d.get("passthrough", ()),
            input_name=d["input_name"],
            inputs=d.get("inputs"),
        )
        state = d.get("state")
        if state:
            pre.schema_ = Schema.from_dict(state["schema"])
            pre.feature_names_ = tuple(state["feature_names"])
            # bundles written before `inputs` existed: one float32 input holding every column
            inputs = state.get("inputs") or {pre.input_name: {"columns": state["feature_names"], "dtype": FLOAT32}}
            pre.inputs_ = {n: tuple(i["columns"]) for n, i in inputs.items()}
            pre.input_dtypes_ = {n: i["dtype"] for n, i in inputs.items()}
        return pre

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Preprocessor) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]  # mutable: fit changes it

    def __repr__(self) -> str:
        if self.inputs is None:
            return f"Preprocessor({list(self.steps)!r}, input_name={self.input_name!r})"
        return f"Preprocessor({list(self.steps)!r}, inputs={dict(self.inputs)!r})"


def _inputs(inputs: Mapping[str, Sequence[str]], input_name: str) -> dict[str, tuple[str, ...]]:
    """`inputs` checked: a non-empty mapping of input names to non-empty lists of distinct column names."""
    if input_name != "x":
        raise PreprocessingError(
            f"pass either input_name ({input_name!r}) or inputs, not both: inputs names every model input"
        )
    if not isinstance(inputs, Mapping) or not inputs:
        raise PreprocessingError(f"inputs must map model input names to lists of columns, got {inputs!r}")
    checked = {}
    for name, columns in inputs.items():
        if not isinstance(name, str) or not name:
            raise PreprocessingError(f"inputs: model input names must be non-empty strings, got {name!r}")
        if isinstance(columns, str) or not all(isinstance(c, str) for c in columns) or not columns:
            raise PreprocessingError(
                f"inputs[{name!r}] must be a non-empty list of column names, got {columns!r}"
            )
        dupes = sorted({c for c in columns if list(columns).count(c) > 1})
        if dupes:
            raise PreprocessingError(f"inputs[{name!r}] names {', '.join(map(repr, dupes))} more than once")
        checked[name] = tuple(columns)
    return checked


class _Lineage:
    """Where each column of the transformed data came from, and which ones hold IndexEncode codes.

    Steps replace their columns in place (OneHot turns `city` into `city=a`, `city=b` at its position), so a
    column that appears where one disappeared descends from it; when a step replaced several neighbours at
    once, a new column descends from the one whose name starts it.
    """

    def __init__(self, names: Sequence[str]) -> None:
        self.ancestors: dict[str, tuple[str, ...]] = {n: () for n in names}
        self.codes: set[str] = set()

    def record(self, step: Step, before: Sequence[str], after: Sequence[str]) -> None:
        kept = set(before) & set(after)
        removed, added = _gaps(before, kept), _gaps(after, kept)
        sources = {name: removed.get(gap, []) for gap, names in added.items() for name in names}
        self.ancestors = {n: self.ancestors[n] if n in kept else self._inherited(n, sources[n]) for n in after}
        changed = {n for n in step.columns if n in kept}
        codes = {n for n in self.codes if n in kept}
        self.codes = (codes | changed) if isinstance(step, IndexEncode) else (codes - changed)

    def _inherited(self, name: str, sources: list[str]) -> tuple[str, ...]:
        source = sources[0] if len(sources) == 1 else max(
            (s for s in sources if name.startswith(s)), key=len, default=None
        )
        return () if source is None else (*self.ancestors[source], source)

    def resolve(self, inputs: Mapping[str, Sequence[str]]) -> dict[str, tuple[str, ...]]:
        """Each input's columns, names of replaced columns expanded; every column must go to some input."""
        names = list(self.ancestors)
        resolved = {}
        for input_name, wanted in inputs.items():
            columns: list[str] = []
            for name in wanted:
                expanded = [name] if name in self.ancestors else [n for n in names if name in self.ancestors[n]]
                if not expanded:
                    raise PreprocessingError(
                        f"inputs[{input_name!r}]: {name!r} is not a column of the transformed data nor one a step "
                        f"replaced; the transformed columns are {_shown(names)}"
                    )
                columns += expanded
            dupes = sorted({c for c in columns if columns.count(c) > 1})
            if dupes:
                raise PreprocessingError(f"inputs[{input_name!r}] holds {_shown(dupes)} more than once")
            resolved[input_name] = tuple(columns)
        claimed = {c for columns in resolved.values() for c in columns}
        unclaimed = [n for n in names if n not in claimed]
        if unclaimed:
            raise PreprocessingError(
                f"column(s) {_shown(unclaimed)} of the transformed data go to no model input; add them to "
                "inputs={...}, or leave them out of features"
            )
        return resolved

    def all_codes(self, columns: Sequence[str]) -> bool:
        return all(c in self.codes for c in columns)


def _gaps(names: Sequence[str], kept: set[str]) -> dict[int, list[str]]:
    """The names not kept, grouped by how many kept names precede them."""
    gaps: dict[int, list[str]] = {}
    position = 0
    for name in names:
        if name in kept:
            position += 1
        else:
            gaps.setdefault(position, []).append(name)
    return gaps


def _has_missing(table: pa.Table, name: str) -> bool:
    if name not in table.column_names:
        return False
    return bool(pc.any(pc.is_null(table.column(name), nan_is_null=True)).as_py())


def _shown(names: Sequence[str], limit: int = 20) -> str:
    return ", ".join(map(repr, names[:limit])) + (f", … ({len(names)} in all)" if len(names) > limit else "")


def _check_training_missing(table: pa.Table, names: Sequence[str]) -> None:
    for name in names:
        if name not in table.column_names:
            continue  # Schema.from_table reports missing columns
        col = table.column(name)
        n = pc.sum(pc.is_null(col, nan_is_null=True)).as_py() or 0
        if n:
            fix = f"Impute([{name!r}])"
            if not is_numeric(col.type):
                fix = (f"{fix[:-1]}, strategy='most_frequent'), OneHot([{name!r}]) or "
                       f"IndexEncode([{name!r}], handle_unknown='reserved')")
            raise PreprocessingError(
                f"column {name!r} has {n} missing value(s) in the training data and no step handles "
                f"them; add {fix}"
            )


def _check_model_ready(frame: pa.Table) -> None:
    """Every output column must be numeric and scalar: the model input is one 2-D float32 array."""
    for name, col in zip(frame.column_names, frame.columns, strict=True):
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            raise PreprocessingError(
                f"column {name!r} holds strings and no step encodes it; add OneHot([{name!r}]) or "
                f"IndexEncode([{name!r}]) to the steps"
            )
        if not is_numeric(col.type):
            raise PreprocessingError(
                f"column {name!r} holds {col.type} values; the model input needs one number per column"
            )


def _matrix(frame: pa.Table, names: Sequence[str], dtype: str) -> np.ndarray:
    """[rows, columns], filled by contiguous column writes into its transpose (strided writes cost 3x more)."""
    out = np.empty((len(names), frame.num_rows), dtype=np.int64 if dtype == INT64 else np.float32)
    for j, name in enumerate(names):
        col = frame.column(name)
        out[j] = col.to_numpy() if dtype == INT64 else float64_values(col)  # IndexEncode codes have no nulls
    return np.ascontiguousarray(out.T)


def from_sklearn(fitted: Any) -> Preprocessor:
    """Convert a fitted scikit-learn ColumnTransformer / Pipeline into an equivalent, fitted Preprocessor.

    >>> pre = from_sklearn(column_transformer)      # doctest: +SKIP
    """
    from torchpredict.sklearn_import import convert

    return convert(fitted)
