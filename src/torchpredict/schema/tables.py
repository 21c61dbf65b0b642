"""Tables: every table-like way in (records, one record, pandas, dicts of columns, numpy arrays, Arrow and its
producers) as a pa.Table.

Reading is where a column of mixed Python values fails, so the message is worded here: it names the
column, the first odd value and its row (and the expected dtype, when the schema knows it).
"""

from __future__ import annotations

import datetime
import decimal
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from torchpredict.errors import SchemaError
from torchpredict.messages import quoted, shown

__all__ = ["as_table", "is_record", "kind_group", "past_int64", "value_kind"]

_SCALARS = (str, bytes, bool, int, float, np.generic, pa.Scalar, datetime.date, datetime.time, datetime.timedelta,
            decimal.Decimal)


def as_table(data: Any, *, expected: Mapping[str, str] | None = None) -> pa.Table:
    """Turn a pyarrow Table/RecordBatch, pandas DataFrame, dict of columns, one record (a dict of scalars),
    list of records or numpy array (structured, or 2-D with the columns of `expected` in order) into a Table.

    expected: column -> dtype, in the schema's feature order (`Schema.validate` passes its features): it names
    the columns of a plain 2-D array, and words the error for a column of mixed Python values.

    >>> as_table([{"a": 1}, {"a": 2}]).num_rows
    2
    >>> as_table({"a": 1.5, "b": "x"}).to_pylist()
    [{'a': 1.5, 'b': 'x'}]
    """
    expected = {} if expected is None else expected
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if isinstance(data, np.ndarray):
        data = _numpy_columns(data, list(expected))
    elif is_record(data):
        data = [data]
    try:
        if type(data).__module__.startswith("pandas"):
            return _from_pandas(data, expected)
        if isinstance(data, Mapping):
            return pa.table({str(k): _array(v, str(k), expected.get(str(k))) for k, v in data.items()})
        if isinstance(data, list) and all(isinstance(r, Mapping) for r in data):
            return _from_records(data, expected)
        if hasattr(data, "__arrow_c_stream__"):  # polars and other Arrow producers
            return pa.table(data)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise SchemaError(f"cannot read the input as a table: {exc}") from None
    raise SchemaError(
        f"cannot read input of type {type(data).__name__}; pass a pyarrow Table, pandas DataFrame, "
        "dict of columns, one record (a dict of values), a list of records or a numpy array"
    )


def is_record(data: Any) -> bool:
    """A dict whose values are all scalars is one record ({"age": 31.0}); a dict of lists is columns."""
    return isinstance(data, Mapping) and bool(data) and all(
        v is None or isinstance(v, _SCALARS) or (isinstance(v, np.ndarray) and v.ndim == 0) for v in data.values())


def _numpy_columns(array: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    """A structured array's fields, or the columns of a 2-D array (a 1-D one: one column) named by `names`,
    as the CLI reads a plain .npy file."""
    if array.dtype.names:
        return {name: array[name] for name in array.dtype.names}
    width = 1 if array.ndim == 1 else array.shape[1] if array.ndim == 2 else None
    if width is not None and names and width == len(names):
        return {names[0]: array} if array.ndim == 1 else {name: array[:, j] for j, name in enumerate(names)}
    fix = "pass a 2-D array with one column per model feature, in schema order, or a structured array"
    if not names:
        raise SchemaError(f"a plain numpy array of shape {array.shape} has no column names; {fix}, or a dict of "
                          "columns")
    if width is None:
        raise SchemaError(f"a numpy array of shape {array.shape} is not a table of rows; {fix}")
    one_row = "; one row of features is array.reshape(1, -1)" if array.ndim == 1 else ""
    raise SchemaError(f"a numpy array of shape {array.shape} has {width} column(s), the model takes "
                      f"{len(names)} ({quoted(names)}); {fix}{one_row}")


def _from_pandas(df: Any, expected: Mapping[str, str]) -> pa.Table:
    try:
        return pa.Table.from_pandas(df, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # an object column mixing kinds: say where
        return pa.table({str(n): _list_array(df[n].tolist(), str(n), expected.get(str(n))) for n in df})


def _from_records(records: list[Mapping[str, Any]], expected: Mapping[str, str]) -> pa.Table:
    try:
        return pa.Table.from_pylist(records)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        names = [str(n) for n in dict.fromkeys(k for r in records for k in r)]
        return pa.table({n: _list_array([r.get(n) for r in records], n, expected.get(n)) for n in names})


def _array(values: Any, name: str, expected: str | None) -> pa.Array | pa.ChunkedArray:
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return values
    if isinstance(values, np.ndarray) and values.ndim > 1:  # rows of a tensor column
        inner = _array(values.reshape(-1, *values.shape[2:]), name, expected)
        return pa.FixedSizeListArray.from_arrays(inner, values.shape[1])
    if isinstance(values, np.ndarray) and values.dtype != object:
        return pa.array(values)
    if type(values).__module__.startswith("pandas"):
        return pa.array(values)
    if isinstance(values, str | bytes | Mapping) or not hasattr(values, "__iter__") or \
            (isinstance(values, np.ndarray) and values.ndim == 0):  # list("ab") would be two rows: never guessed
        raise SchemaError(f"column {name!r} of a dict of columns holds {shown(values)}, not a list or array of "
                          "values; pass every column as a list (or array), or one record as a dict of values")
    return _list_array(list(values), name, expected)


def past_int64(value: Any) -> bool:
    """A Python int no 64-bit column holds (Arrow raises OverflowError on one)."""
    return isinstance(value, int) and not -(1 << 63) <= value < 1 << 63


def _list_array(values: list[Any], name: str, expected: str | None) -> pa.Array:
    """pa.array, but a column of mixed Python values names its first odd value and row."""
    try:
        return pa.array(values)
    except OverflowError:
        big = next((i for i, v in enumerate(values) if past_int64(v)), 0)
        raise SchemaError(f"column {shown(name)}: {shown(values[big])} at row {big} is too large for a 64-bit "
                          "integer") from None
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        kinds = [value_kind(v) for v in values]  # error path only: a Python loop is fine here
        first = next((k for k in kinds if k is not None), None)
        group = kind_group(expected or first)
        row = next((i for i, k in enumerate(kinds) if k is not None and kind_group(k) != group), None)
        if row is None:
            raise SchemaError(f"column {shown(name)}: cannot read the values: {exc}") from None
        got = f"{shown(values[row])} ({kinds[row]}) at row {row}"
        if expected:
            raise SchemaError(f"column {shown(name)}: expected {expected}, got {got}") from None
        raise SchemaError(f"column {shown(name)}: mixed value types: {first} values, then {got}") from None


def value_kind(value: Any) -> str | None:
    """The schema dtype a Python value reads as ("int64", "string", ...), its type name otherwise; None for None."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return "bool"
    if isinstance(value, (int, np.integer)):
        return "int64"
    if isinstance(value, (float, np.floating)):
        return "float64"
    return "string" if isinstance(value, str) else type(value).__name__


def kind_group(kind: str | None) -> str | None:
    """Kinds that convert into each other without loss of meaning share a group: every number is "number"."""
    return "number" if kind in ("float32", "float64", "int32", "int64") else kind
