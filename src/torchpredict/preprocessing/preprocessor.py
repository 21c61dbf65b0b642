"""The Preprocessor: fitted steps that travel with the model, so inference reuses the training statistics.

It routes the input columns through the steps in order and assembles the result into the model's
input arrays: one float32 matrix by default, or several named inputs (`inputs=`), int64 where they hold
only IndexEncode codes (for embedding tables) or one column of token ids (TextEncode). The step types live
in numeric.py, power.py, binning.py, missing.py, categorical.py, copying.py and text.py; importing this module
registers them all. `torchpredict.preprocessing` is the public face of all of them and of from_sklearn.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from torchpredict.errors import PreprocessingError, SchemaError
from torchpredict.messages import described
from torchpredict.preprocessing import binning, numeric, plans, power  # noqa: F401  # every step type registers on import (from_dict)
from torchpredict.preprocessing.categorical import IndexEncode, OneHot
from torchpredict.preprocessing.copying import Copy, copied_from, named_as_copied
from torchpredict.preprocessing.images import ImageEncode, is_image_tensor
from torchpredict.preprocessing.missing import Impute
from torchpredict.preprocessing.plans import TransformPlan
from torchpredict.preprocessing.steps import Step, float64_values, is_numeric
from torchpredict.preprocessing.text import TextCounts, TextEncode
from torchpredict.schema.drift import with_image_drift
from torchpredict.schema.schema import Schema, Validated
from torchpredict.schema.tables import as_table
from torchpredict.schema.validation import RowReport, forward_reports, report_values

__all__ = ["FLOAT32", "INT64", "Preprocessor"]

FLOAT32, INT64 = "float32", "int64"  # the dtypes of model inputs
ROW_BLOCK = 2048  # rows of a model input filled at a time (with 100 float32 columns: 800 KB)


class Preprocessor:
    """The ordered steps that turn a validated table into the model's input arrays.

    inputs: model input name -> columns of the transformed data, in the order `forward` takes them; a column
    a step replaced (e.g. "city" after OneHot) stands for all the columns that took its place. An input is
    int64 when it holds only IndexEncode codes, float32 otherwise; an input made of one TextEncode column is
    its int64 [rows, max_length] token ids. Without it, one input named input_name
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
        text = {n for step in self.steps if isinstance(step, TextEncode) for n in step.columns}
        images = self.image_columns
        _check_training_missing(table, [n for n in features if n not in nullable], text)
        schema = Schema.from_table(table, features=features, passthrough=self.passthrough, nullable=nullable,
                                   free_text=text, images=images)
        frame = schema.validate(table.select(list(features))).table
        lineage = _Lineage(frame.column_names)
        for step in self.steps:
            before = frame.column_names
            frame = step.fit(frame).transform(frame)
            lineage.record(step, before, frame.column_names)
        _check_model_ready(frame)
        names = tuple(frame.column_names)
        inputs = lineage.resolve(self.inputs or {self.input_name: names})
        empty = [name for name, columns in inputs.items() if not columns]
        if empty:  # e.g. OneHot(drop="first") of a column with one category: a model input of width 0
            raise PreprocessingError(f"model input {empty[0]!r} gets no columns from the steps (for example a "
                                     "one-hot with drop='first' of a column with one category); a model input "
                                     "needs at least one")
        self.schema_, self.feature_names_ = schema, names
        self.inputs_ = inputs
        self.input_dtypes_ = {n: _input_dtype(frame, n, cols, lineage) for n, cols in inputs.items()}
        return self

    def transform(self, data: Any, *, counts: TextCounts | None = None,
                  floats: Mapping[tuple[str, ...], np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """{input name: [rows, columns] array} in `inputs` order; expects data that passed schema_.validate.

        counts: where TextEncode steps add what they truncated and did not know, instead of warning.
        floats: float feature columns of data already read as [rows, columns] arrays (Validated.floats).
        data may be the Validated itself (its floats then used, and a few records it holds without a table
        transformed as they are).
        """
        if not hasattr(self, "schema_"):
            raise PreprocessingError("Preprocessor is not fitted; call fit(...) on training data first")
        if isinstance(data, Validated):  # with the float blocks validation read, not to read them again
            floats = data.floats
            plan = self.plan
            if data.small is not None and plan is not None and plans.ENABLED:
                fast = plan.run_small(data.small, floats)
                if fast is not None:
                    return fast
            data = data.table
        table = as_table(data)
        names = [c.name for c in self.schema_.features]
        present = set(table.schema.names)
        missing = [n for n in names if n not in present]
        if missing:
            raise PreprocessingError(
                f"missing column(s) {', '.join(map(repr, missing))}; check inputs with schema_.validate first"
            )
        plan = self.plan
        if plan is not None and plans.ENABLED:
            fast = plan.run(table, floats)
            if fast is not None:
                return fast
        frame = table.select(names)
        for step in self.steps:
            frame = _apply(step, frame, counts)
        return {name: _matrix(frame, cols, self.input_dtypes_[name]) for name, cols in self.inputs_.items()}

    def fit_transform(self, data: Any) -> dict[str, np.ndarray]:
        return self.fit(data).transform(data)

    @property
    def image_columns(self) -> tuple[str, ...]:
        """The input columns of images (ImageEncode's), which the schema holds as bytes or file paths."""
        return tuple(n for step in self.steps if isinstance(step, ImageEncode) for n in step.columns)

    @property
    def image_row_bytes(self) -> int:
        """Bytes of model input a row's images make (float32 tensors of the fitted shapes); 0 without images."""
        return sum(4 * math.prod(step.shape_) for step in self.steps if isinstance(step, ImageEncode))

    def check_rows(self, table: pa.Table, report: RowReport) -> pa.Table | None:
        """Report the rows holding a category an encoder refuses (handle_unknown="error"), or an image that
        cannot be encoded, for Schema.validate's row_check: such rows are then rejected, or named by their input
        row, before transform runs. Images are encoded here, once: the table comes back with each image column
        replaced by its tensors (a bad row's are zeros, and the row leaves), for transform to take as they are.

        An encoder sees its columns as the steps before it left them (Impute, then OneHot): those earlier steps
        run here too, on just the columns a refusing encoder after them reads. An encoder of a copy (Copy) is
        reported under the name of the column copied, the one the caller knows.
        """
        encoded = self._encode_images(table, report)
        self._check_categories(table, report)
        return encoded

    def _encode_images(self, table: pa.Table, report: RowReport) -> pa.Table | None:
        changed, drift = None, {}
        for step in self.steps:
            if not isinstance(step, ImageEncode):
                continue
            for name in step.columns:
                if name not in table.column_names or is_image_tensor(table.schema.field(name).type):
                    continue
                tensors, bad, reasons, stats = step.encode(table.column(name))
                drift[name] = step.drift(stats)
                if len(bad):
                    report_values(report, name, bad, reasons)
                changed = (changed or table).set_column(table.column_names.index(name), name, tensors)
        return None if changed is None else with_image_drift(changed, drift)

    def _check_categories(self, table: pa.Table, report: RowReport) -> None:
        refusing = [i for i, step in enumerate(self.steps) if _refuses_unknown(step)]
        feeding, origin = _feeding(self.steps, refusing), copied_from(self.steps)
        if plans.ENABLED and not feeding and not origin:  # encoders of input columns: nothing to report if none refuses
            present = set(table.schema.names)
            if not any(self.steps[i].refuses_some(table, [n for n in self.steps[i].columns if n in present])
                       for i in refusing):
                return
        frame, rows = table, np.arange(table.num_rows)  # rows: where each row of frame is in table
        for i, step in enumerate(self.steps[: refusing[-1] + 1] if refusing else ()):
            if i in refusing:
                frame, rows = _drop_unknown(step, frame, rows, named_as_copied(report, step.columns, origin))
            elif i in feeding:
                frame = _advance(step, frame)

    def accepts_strings(self, strings: Mapping[str, list[str]]) -> bool:
        """Whether check_rows would report none of the rows whose string features hold these values (column ->
        values), told without their table (Schema.validate's accepts): where the steps have their array form (plan:
        then every encoder reads input columns), when each encoder refusing unknown categories knows all the values
        of its columns; no where that cannot be told so (no plan, or a column not given)."""
        plan = self.plan
        if plan is None:
            return False
        return all(name in strings and step.knows(name, strings[name]) for step, name in plan.refusing)

    @property
    def plan(self) -> TransformPlan | None:
        """transform's fast path for the fitted steps (None: they take the step-by-step path), worked out on first
        use and again whenever the steps or what they learned change."""
        key = (self.steps, self.schema_, self.feature_names_, self.inputs_, self.input_dtypes_,
               *(getattr(step, name, None) for step in self.steps for name in step.state))
        cached = self.__dict__.get("_plan")
        if cached is None or len(cached[0]) != len(key) or any(a is not b for a, b in zip(cached[0], key, strict=True)):
            compiled = TransformPlan.compile(self.steps, self.schema_.features, self.feature_names_, self.inputs_,
                                             self.input_dtypes_)
            cached = self._plan = (key, compiled)
        return cached[1]

    @property
    def n_features_(self) -> int:
        if not hasattr(self, "feature_names_"):
            raise PreprocessingError("Preprocessor is not fitted; call fit(...) on training data first")
        return len(self.feature_names_)

    def _nullable(self, table: pa.Table) -> frozenset[str]:
        """Columns a step accepts missing values in: imputed ones, and encoded ones whose encoder takes them
        (a missing value seen in training is a category, as in scikit-learn; other unknown policies map it).
        A column copied before that (Copy) is nullable only when each of its copies is handled too."""
        names: set[str] = set()
        origin: dict[str, str] = {}  # a copy -> the column it copies
        for step in self.steps:
            if isinstance(step, Copy):
                for name, source in step.copies.items():
                    origin[name] = origin.get(source, source)
                    if source in names:  # a copy of values already imputed
                        names.add(name)
            else:
                names.update(_handles_missing(step, table, origin))
        return frozenset(n for n in names if n not in origin and {c for c, s in origin.items() if s == n} <= names)

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
    def from_dict(cls, d: Any) -> Preprocessor:
        """Rebuild from `to_dict()`; every field is checked, and errors name the step or field at fault."""
        if not isinstance(d, Mapping) or not isinstance(d.get("steps"), list):
            raise PreprocessingError(f"must be an object with a list of 'steps', got {described(d)}")
        steps = []
        for i, step in enumerate(d["steps"], start=1):
            try:
                steps.append(Step.from_dict(step))
            except PreprocessingError as exc:
                kind = step.get("type") if isinstance(step, Mapping) and isinstance(step.get("type"), str) else "?"
                raise PreprocessingError(f"step {i} ({kind}): {exc}") from None
        pre = cls(
            steps,
            features=_names(d.get("features"), "features", none=True),
            passthrough=_names(d.get("passthrough", []), "passthrough"),
            input_name=_text(d.get("input_name"), "input_name"),
            inputs=_inputs_read(d.get("inputs")),
        )
        state = d.get("state")
        if state:
            pre._load_state(state)
        return pre

    def _load_state(self, state: Any) -> None:
        """The fitted schema, feature names and model inputs, checked against each other."""
        if not isinstance(state, Mapping):
            raise PreprocessingError(f"'state' must be an object, got {described(state)}")
        try:
            self.schema_ = Schema.from_dict(state.get("schema"))
        except SchemaError as exc:
            raise PreprocessingError(f"state.schema: {exc}") from None
        self.feature_names_ = _names(state.get("feature_names"), "state.feature_names")
        # bundles written before `inputs` existed: one float32 input holding every column
        inputs = state.get("inputs") or {self.input_name: {"columns": list(self.feature_names_), "dtype": FLOAT32}}
        if not isinstance(inputs, Mapping):
            raise PreprocessingError(f"'state.inputs' must be an object, got {described(inputs)}")
        self.inputs_, self.input_dtypes_ = {}, {}
        for name, entry in inputs.items():
            where = f"state.inputs.{name}"
            if not isinstance(entry, Mapping) or entry.get("dtype") not in (FLOAT32, INT64):
                raise PreprocessingError(f"'{where}' must be an object with columns and dtype 'float32' or 'int64', "
                                         f"got {described(entry)}")
            self.inputs_[name] = _names(entry.get("columns"), f"{where}.columns")
            self.input_dtypes_[name] = entry["dtype"]
            unknown = [c for c in self.inputs_[name] if c not in self.feature_names_]
            if unknown:
                raise PreprocessingError(f"'{where}.columns' names {_shown(unknown)}, not among state.feature_names")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Preprocessor) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]  # mutable: fit changes it

    def __repr__(self) -> str:
        if self.inputs is None:
            return f"Preprocessor({list(self.steps)!r}, input_name={self.input_name!r})"
        return f"Preprocessor({list(self.steps)!r}, inputs={dict(self.inputs)!r})"


def _names(value: Any, where: str, *, none: bool = False) -> tuple[str, ...] | None:
    """A list of column names read from JSON (or null, where none is allowed)."""
    if value is None and none:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PreprocessingError(f"'{where}' must be a list of column names, got {described(value)}")
    return tuple(value)


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise PreprocessingError(f"'{where}' must be a string, got {described(value)}")
    return value


def _inputs_read(value: Any) -> dict[str, tuple[str, ...]] | None:
    """`inputs` read from JSON: null, or input name -> list of column names (checked further by _inputs)."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise PreprocessingError(f"'inputs' must be an object of input name -> columns, got {described(value)}")
    return {name: _names(columns, f"inputs.{name}") for name, columns in value.items()}


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
        codes = {n for n in self.codes if n in kept}
        changed = {n for n in step.columns if n in kept}
        if isinstance(step, Copy):  # the copied columns are unchanged; a copy of codes holds codes
            self.codes = codes | {n for n, source in step.copies.items() if source in codes}
        else:
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


def _handles_missing(step: Step, table: pa.Table, origin: Mapping[str, str]) -> list[str]:
    """The columns of step that take missing values; origin names the input column each copy holds."""
    if isinstance(step, Impute) or (isinstance(step, TextEncode) and step.params["nulls"] == "empty"):
        return list(step.columns)
    if isinstance(step, (OneHot, IndexEncode)):
        return [n for n in step.columns if step.accepts_missing(n, _has_missing(table, origin.get(n, n)))]
    return []


def _feeding(steps: Sequence[Step], refusing: Sequence[int]) -> set[int]:
    """The steps before the last refusing encoder whose output one of them reads, directly or through later
    steps (a Copy feeds the encoder of its copy, and the steps before the Copy feed it in turn)."""
    needed: set[str] = set()
    feeding: set[int] = set()
    for i in reversed(range(refusing[-1] + 1 if refusing else 0)):
        step = steps[i]
        written = set(step.columns) | (set(step.copies) if isinstance(step, Copy) else set())
        if i in refusing:
            needed |= set(step.columns)
        elif written & needed:
            feeding.add(i)
            needed |= set(step.columns)
    return feeding


def _refuses_unknown(step: Step) -> bool:
    return isinstance(step, (OneHot, IndexEncode)) and step.params["handle_unknown"] == "error"


def _drop_unknown(step: OneHot | IndexEncode, frame: pa.Table, rows: np.ndarray,
                  report: RowReport) -> tuple[pa.Table, np.ndarray]:
    """Report the rows of frame holding categories step refuses (as rows of the checked table); the others."""
    present = set(frame.column_names)
    names = [n for n in step.columns if n in present]
    flagged = forward_reports(lambda inner: step.report_unknown(frame, names, inner), report, rows)
    if not flagged.any():
        return frame, rows
    return frame.filter(pa.array(~flagged)), rows[~flagged]


def _advance(step: Step, frame: pa.Table) -> pa.Table:
    """frame with step applied to its columns (the others as they are)."""
    columns = list(dict.fromkeys(step.columns))  # a Copy may list a column twice
    if not all(name in frame.column_names for name in columns):
        return frame  # an earlier step replaced one; transform will say so
    done = step.transform(frame.select(columns))
    rest = frame.drop_columns(columns)
    return pa.Table.from_arrays([*rest.columns, *done.columns], names=[*rest.column_names, *done.column_names])


def _apply(step: Step, frame: pa.Table, counts: TextCounts | None) -> pa.Table:
    """step.transform, except that a TextEncode step adds its losses to counts (when given) instead of warning."""
    if counts is None or not isinstance(step, TextEncode):
        return step.transform(frame)
    encoded = step.encode(frame)
    counts.add(encoded)
    return encoded.table


def _input_dtype(frame: pa.Table, input_name: str, columns: Sequence[str], lineage: _Lineage) -> str:
    """int64 for IndexEncode codes or one column of token ids, float32 otherwise; lists and images mix with
    nothing."""
    images = [c for c in columns if is_image_tensor(frame.schema.field(c).type)]
    if images and len(columns) > 1:
        raise PreprocessingError(
            f"inputs[{input_name!r}] mixes image column(s) {_shown(images)} with other columns "
            f"({_shown([c for c in columns if c not in images])}); give each image column a model input of its own"
        )
    lists = [c for c in columns if _is_ids(frame.schema.field(c).type)]
    if lists and len(columns) > 1:
        raise PreprocessingError(
            f"inputs[{input_name!r}] mixes token-id column(s) {_shown(lists)} with other columns "
            f"({_shown([c for c in columns if c not in lists])}); give each token-id column a model input of its own"
        )
    return INT64 if lists or lineage.all_codes(columns) else FLOAT32


def _is_ids(t: pa.DataType) -> bool:
    """A fixed-size list of integers: token ids from TextEncode."""
    return pa.types.is_fixed_size_list(t) and pa.types.is_integer(t.value_type)


def _has_missing(table: pa.Table, name: str) -> bool:
    if name not in table.column_names:
        return False
    return bool(pc.any(pc.is_null(table.column(name), nan_is_null=True)).as_py())


def _shown(names: Sequence[str], limit: int = 20) -> str:
    return ", ".join(map(repr, names[:limit])) + (f", … ({len(names)} in all)" if len(names) > limit else "")


def _check_training_missing(table: pa.Table, names: Sequence[str], text: set[str]) -> None:
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
            if name in text:
                fix = "nulls='empty' to its TextEncode step to encode them as empty strings"
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
        if not is_numeric(col.type) and not _is_ids(col.type) and not is_image_tensor(col.type):
            raise PreprocessingError(
                f"column {name!r} holds {col.type} values; the model input needs one number per column"
            )


def _matrix(frame: pa.Table, names: Sequence[str], dtype: str) -> np.ndarray:
    """[rows, columns], filled a block of rows at a time so that each block is written while it is in cache
    (whole strided columns, or filling the transpose and copying it, cost 2-5x more on 1M rows);
    for a column of token ids, its [rows, max_length] ids."""
    if is_image_tensor(frame.schema.field(names[0]).type):  # [rows, C, H, W] (or [rows, H, W, C])
        return np.array(frame.column(names[0]).combine_chunks().to_numpy_ndarray())  # a writable copy
    if _is_ids(frame.schema.field(names[0]).type):
        ids = frame.column(names[0]).combine_chunks()
        return np.array(ids.flatten(), dtype=np.int64).reshape(len(ids), ids.type.list_size)  # a writable copy
    out = np.empty((frame.num_rows, len(names)), dtype=np.int64 if dtype == INT64 else np.float32)
    columns = [_values(frame.column(name), dtype) for name in names]
    with np.errstate(over="ignore"):  # a value beyond float32 becomes inf, and the heads refuse the rows it spoils
        for start in range(0, frame.num_rows, ROW_BLOCK):
            block = out[start:start + ROW_BLOCK]
            for j, values in enumerate(columns):
                block[:, j] = values[start:start + ROW_BLOCK]
    return out


def _values(col: pa.ChunkedArray, dtype: str) -> np.ndarray:
    if dtype == INT64 or (col.type == pa.float64() and col.null_count == 0):
        return col.to_numpy()  # without a copy (IndexEncode codes have no nulls; a NaN stays NaN)
    return float64_values(col)
