"""Class labels: the ints or strings a classifier's outputs stand for, checked and mapped both ways.

Training targets become class indices (`encode_labels`), class indices become label columns
(`take_labels`), and every label list is checked once (`check_labels`): all ints or all strings,
distinct, no missing values, with messages that name the value and its row.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from torchpredict.errors import PreprocessingError

__all__ = ["Labels", "check_labels", "encode_labels", "label_array", "take_labels"]

Labels = tuple[int, ...] | tuple[str, ...]


def take_labels(labels: Labels, indices: np.ndarray) -> pa.Array:
    """Map class indices to an int64 or string label column, vectorised.

    >>> take_labels(("cat", "dog"), np.array([1, 0])).to_pylist()
    ['dog', 'cat']
    """
    if type(labels) is not tuple:
        return pa.array(list(labels)).take(pa.array(indices, type=pa.int64()))
    known = _known(labels)
    if isinstance(known, np.ndarray):  # int labels: taken by numpy, a fraction of Arrow's cost on a small batch
        return pa.array(known[np.asarray(indices, dtype=np.int64)])
    return known.take(pa.array(indices, type=pa.int64()))


@functools.lru_cache(maxsize=64, typed=True)
def _known(labels: Labels) -> pa.Array | np.ndarray:
    """The labels as one Arrow array, or int64 numpy array for int labels (immutable: built once per labels and
    shared)."""
    known = pa.array(list(labels))
    if pa.types.is_int64(known.type) and not known.null_count:
        array = known.to_numpy()
        array.flags.writeable = False
        return array
    return known


def encode_labels(owner: str, labels: Labels, y: Any) -> np.ndarray:
    """Class indices (int64) of y's labels; an unknown label is an error naming it and its row.

    owner: who is encoding (a head's description), the start of the error message.

    >>> encode_labels("head", ("cat", "dog"), ["dog", "dog", "cat"]).tolist()
    [1, 1, 0]
    """
    values, known = label_array(y, "y"), pa.array(list(labels))
    same_kind = values.type == known.type
    indices = pc.index_in(values, value_set=known) if same_kind else pa.nulls(len(values), pa.int32())
    if indices.null_count:
        row = pc.index(indices.is_null(), True).as_py()
        raise PreprocessingError(f"{owner}: unknown label {values[row].as_py()!r} at row {row}; "
                                 f"known labels: {list(labels)}")
    return indices.to_numpy().astype(np.int64)


def label_array(values: Any, what: str) -> pa.Array:
    """Labels as one int64 or string Arrow array; bools and integral floats become ints.

    what: how `values` are named in messages ("y", "labels").

    >>> label_array([1.0, 0.0, True], "y").to_pylist()
    [1, 0, 1]
    """
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not isinstance(values, pa.Array):
        values = _arrow_labels(values, what)
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    if values.null_count:
        first = pc.index(values.is_null(), True).as_py()
        raise PreprocessingError(f"{what} has {values.null_count} missing label(s) (first at row {first})")
    kind = values.type
    if pa.types.is_null(kind):  # only an empty (or all-null, rejected above) input infers no type
        return values.cast(pa.int64())
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return values.cast(pa.string())
    if pa.types.is_integer(kind) or pa.types.is_boolean(kind):
        return values.cast(pa.int64())
    if pa.types.is_floating(kind):
        return _integral(values.to_numpy(zero_copy_only=False), what)
    raise PreprocessingError(f"{what} must hold ints or strings, got {kind}")


def check_labels(labels: Any) -> Labels:
    """Labels given to a head (or restored from a bundle) as a tuple of distinct ints or strings.

    >>> check_labels(["cat", "dog"])
    ('cat', 'dog')
    """
    if isinstance(labels, str | bytes) or not isinstance(labels, Sequence | np.ndarray):
        raise PreprocessingError(f"labels must be a sequence of ints or strings, got {labels!r}")
    if len(labels) == 0:
        raise PreprocessingError("labels must not be empty")
    values = tuple(label_array(list(labels), "labels").to_pylist())
    seen: set[int | str] = set()
    for label in values:
        if label in seen:
            raise PreprocessingError(f"labels must be distinct, got {label!r} twice")
        seen.add(label)
    return values


def _arrow_labels(values: Any, what: str) -> pa.Array:
    if not isinstance(values, list | tuple):
        values = np.asarray(values)
        if values.ndim != 1:
            raise PreprocessingError(f"{what} must be 1-D, got shape {list(values.shape)}")
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        sample = list(values)[:5]
        raise PreprocessingError(f"{what} must be all ints or all strings, got {sample!r}") from None


def _integral(values: np.ndarray, what: str) -> pa.Array:
    bad = ~np.isfinite(values) | (values != np.floor(values))
    if bad.any():
        row = int(np.argmax(bad))
        raise PreprocessingError(f"{what} must hold ints or strings, got {float(values[row])!r} (float) "
                                 f"at row {row}")
    return pa.array(values.astype(np.int64))
