"""The fast path of transform: a Preprocessor of Standardize and OneHot steps as numpy kernels over the batch.

Preprocessor.transform runs step after step on an Arrow table, a few pyarrow calls and a new table per column
and step: about 50 µs a column whatever the row count. A TransformPlan, worked out once from the fitted steps
(Preprocessor.plan), computes the same model inputs without the tables between the steps: every float column
in one [rows, columns] float64 block, standardized in one operation ((x - mean) / scale, as Standardize
computes it element by element, so the numbers are the same to the bit) and cast to float32 once, and each
one-hot column set by an index lookup into the output. Other steps, or inputs this path does not take (a
column of another type, say), answer None, and the step-by-step path runs (it raises what is to be raised).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from torchpredict.errors import PreprocessingError
from torchpredict.preprocessing.categorical import OneHot
from torchpredict.preprocessing.numeric import Standardize
from torchpredict.preprocessing.steps import Step
from torchpredict.schema.plans import SmallRows

__all__ = ["ENABLED", "TransformPlan"]

ENABLED = True  # False: every call takes the step-by-step path (the property tests compare the two)
FLOAT32 = "float32"
ALIGNMENT = 64  # bytes: the model inputs start where the infer stage would otherwise copy them (inference.batch)


class TransformPlan:
    """Preprocessor.transform's fast path for one fitted preprocessor (see the module docstring)."""

    def __init__(self, names: Sequence[str], floats: list[tuple[str, float, float, str, int]],
                 onehots: list[tuple[OneHot, int, str, np.ndarray]], widths: Mapping[str, int]) -> None:
        self.names = list(names)  # the features, in schema order
        self.float_names = [name for name, *_ in floats]
        self.float_key = tuple(self.float_names)  # how validation names the same block (Validated.floats)
        self.mean = np.array([mean for _, mean, _, _, _ in floats], dtype=np.float64)
        self.scale = np.array([scale for _, _, scale, _, _ in floats], dtype=np.float64)
        # model input -> (positions in the block, columns of the input, or the slice of them where that is the
        # whole block in order)
        self.float_targets: dict[str, tuple[np.ndarray, np.ndarray | slice]] = {}
        for input_name in widths:
            chosen = [j for j, (*_, name, _) in enumerate(floats) if name == input_name]
            if chosen:
                columns = np.array([floats[j][4] for j in chosen])
                start = int(columns[0])
                in_order = len(chosen) == len(floats) and bool((columns == np.arange(start, start + len(chosen))).all())
                self.float_targets[input_name] = (np.array(chosen), slice(start, start + len(chosen)) if in_order
                                                  else columns)
        self.onehots = onehots
        self.widths = dict(widths)
        # the columns of encoders refusing unknown categories (all read input columns: no step feeds another here)
        self.refusing = [(step, step.columns[i]) for step, i, _, _ in onehots
                         if step.params["handle_unknown"] == "error"]

    @classmethod
    def compile(cls, steps: Sequence[Step], features: Sequence[Any], feature_names: Sequence[str],
                inputs: Mapping[str, Sequence[str]], dtypes: Mapping[str, str]) -> TransformPlan | None:
        """The plan of these fitted steps, or None where this path does not take them: steps other than
        Standardize and OneHot, a column in two steps, features other than floats (standardized or as they
        are) and strings (one-hot encoded), model inputs other than float32."""
        names = [c.name for c in features]
        dtype = {c.name: c.dtype for c in features}
        if any(dtypes[name] != FLOAT32 for name in inputs) or any(type(s) not in (Standardize, OneHot) for s in steps):
            return None
        stats: dict[str, tuple[float, float]] = {}
        hot: dict[str, tuple[OneHot, int]] = {}
        for step in steps:
            for i, name in enumerate(step.columns):
                if name in stats or name in hot or name not in dtype:
                    return None
                if isinstance(step, Standardize):
                    stats[name] = (step.mean_[i], step.scale_[i])
                else:
                    hot[name] = (step, i)  # type: ignore[assignment]
        if any(dtype[n] != "float64" for n in names if n not in hot) or any(dtype[n] != "string" for n in hot):
            return None
        out: list[str] = []
        for name in names:
            out += list(hot[name][0].output_names()[hot[name][1]]) if name in hot else [name]
        if out != list(feature_names):
            return None
        where = {column: (input_name, j) for input_name, columns in inputs.items() for j, column in enumerate(columns)}
        floats = [(n, *stats.get(n, (0.0, 1.0)), *where[n]) for n in names if n not in hot]
        onehots = []
        for name in names:
            if name in hot:
                step, i = hot[name]
                targets = [where[n] for n in step.output_names()[i]]
                if len({t[0] for t in targets}) > 1:
                    return None  # one column's one-hot columns split between model inputs
                input_name = targets[0][0] if targets else next(iter(inputs))
                onehots.append((step, i, input_name, np.array([j for _, j in targets], dtype=np.int64)))
        return cls(names, floats, onehots, {n: len(c) for n, c in inputs.items()})

    def run(self, table: pa.Table, floats: Mapping[tuple[str, ...], np.ndarray] | None = None
            ) -> dict[str, np.ndarray] | None:
        """The model inputs, as Preprocessor.transform gives them; None where this path does not take the table.
        floats: the table's float columns already read as [rows, columns] arrays, by column names."""
        n = table.num_rows
        if not n:
            return None
        x = None
        if self.float_names:
            x = None if floats is None else floats.get(self.float_key)
            if x is None or x.shape != (n, len(self.float_names)):
                block = table.select(self.float_names)
                batches = block.to_batches()
                if len(batches) != 1:
                    batches = block.combine_chunks().to_batches()
                try:
                    x = np.asarray(batches[0].to_tensor(null_to_nan=True, row_major=True))
                except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
                    return None  # columns of several types

        def hot(step: OneHot, i: int) -> np.ndarray | None:
            try:
                return step.hot(table, i)
            except PreprocessingError:
                return None  # the step-by-step path raises it

        return self._inputs(n, x, hot)

    def run_small(self, rows: SmallRows, floats: Mapping[tuple[str, ...], np.ndarray]) -> dict[str, np.ndarray] | None:
        """run, of a few records validated without a table (schema.plans.SmallRows): their float block and their
        string features' values; None where this path does not take them."""
        x = floats.get(self.float_key) if self.float_names else None
        if self.float_names and (x is None or x.shape != (rows.n_rows, len(self.float_names))):
            return None

        def hot(step: OneHot, i: int) -> np.ndarray | list[int] | None:
            values = rows.strings.get(step.columns[i])
            return None if values is None else step.hot_strings(values, i)

        return self._inputs(rows.n_rows, x, hot)

    def _inputs(self, n: int, x: np.ndarray | None, hot: Callable[[OneHot, int], np.ndarray | list[int] | None]
                ) -> dict[str, np.ndarray] | None:
        """The model inputs of n rows: x, the float block (None without floats), standardized into them, and each
        one-hot column set where hot(step, i) places its 1 (an array, or a list for a few rows); None where that
        answers None."""
        out = {name: _zeros(n, width) for name, width in self.widths.items()}
        if x is not None:
            if x.dtype != np.float64:
                return None
            scaled = (x - self.mean) / self.scale
            with np.errstate(over="ignore"):  # beyond float32: inf, as the step-by-step path gives
                for input_name, (chosen, columns) in self.float_targets.items():
                    if isinstance(columns, slice):
                        out[input_name][:, columns] = scaled
                    else:
                        out[input_name][:, columns] = scaled[:, chosen]
        for step, i, input_name, columns in self.onehots:
            positions = hot(step, i)
            if positions is None:
                return None
            if isinstance(positions, list):  # a few rows: one at a time costs less than indexing by arrays
                target = out[input_name]
                for row, position in enumerate(positions):
                    if position >= 0:
                        target[row, columns[position]] = 1.0
                continue
            rows = np.flatnonzero(positions >= 0)
            out[input_name][rows, columns[positions[rows]]] = 1.0
        return out


def _zeros(rows: int, width: int) -> np.ndarray:
    """A float32 [rows, width] array of zeros starting at an ALIGNMENT-byte boundary."""
    nbytes = rows * width * 4
    buffer = np.zeros(nbytes + ALIGNMENT, np.uint8)
    start = -buffer.ctypes.data % ALIGNMENT
    return buffer[start:start + nbytes].view(np.float32).reshape(rows, width)
