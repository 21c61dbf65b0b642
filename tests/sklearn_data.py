"""Real data for the scikit-learn parity tests of the preprocessing steps: diabetes, breast cancer, wine."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
import pyarrow as pa
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine

from torchpredict.preprocessing.steps import Step, float64_values

PARITY = {"rtol": 1e-6, "atol": 1e-6}  # against the float64 scikit-learn reference


@dataclass(frozen=True)
class Data:
    name: str
    columns: tuple[str, ...]
    train: np.ndarray  # float64 [rows, columns]
    test: np.ndarray  # other values: the rows reversed, scaled and shifted beyond the training range

    def table(self, x: np.ndarray) -> pa.Table:
        return pa.table({c: x[:, j] for j, c in enumerate(self.columns)})


@cache
def datasets(missing: float = 0.0) -> tuple[Data, ...]:
    """The three data sets, with a fraction `missing` of the values set to NaN (never a whole column)."""
    rng = np.random.default_rng(0)
    out = []
    for load in (load_diabetes, load_breast_cancer, load_wine):
        bunch = load()
        train = np.array(bunch.data, dtype=np.float64)
        train[rng.random(train.shape) < missing] = np.nan
        test = train[::-1] * 1.25 + 0.1 * np.nanstd(train, axis=0)
        columns = tuple(str(c) for c in bunch.feature_names)
        out.append(Data(load.__name__.removeprefix("load_"), columns, train, test))
    return tuple(out)


def transformed(step: Step, data: Data, x: np.ndarray, names: Sequence[str] | None = None) -> np.ndarray:
    """The step (already fitted) applied to x, as a float64 matrix of the output columns `names`."""
    out = step.transform(data.table(x))
    return np.column_stack([float64_values(out.column(n)) for n in names or data.columns])


def same(a: pa.Table, b: pa.Table) -> bool:
    """Equal names and values, NaN equal to NaN (Table.equals holds NaN unequal to itself)."""
    return a.column_names == b.column_names and all(
        np.array_equal(float64_values(x), float64_values(y), equal_nan=True)
        for x, y in zip(a.columns, b.columns, strict=True)
    )


def via_json(step: Step) -> Step:
    """The step rebuilt from its JSON text, as a bundle stores it."""
    return Step.from_dict(json.loads(json.dumps(step.to_dict(), allow_nan=False)))
