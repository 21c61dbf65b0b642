"""Golden examples: a few input rows, the raw outputs the model gave at save time, and the predictions.

Re-running them on another machine or device (`torchpredict verify`) proves the bundle still predicts
what it predicted when it was saved, before any real data goes through it. Float outputs must agree within
the tolerance; integer ones (the token ids a sequence model decoded) exactly. The predictions (labels,
probabilities, un-scaled targets) are recomputed by the loaded heads from the recorded raw outputs, so a
changed setting shows as the column it changes, and device noise is judged once, on the raw outputs.
Bundles written before 0.2 hold no predictions; their raw outputs alone are compared.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from safetensors import SafetensorError, deserialize
from safetensors.numpy import save_file

from torchpredict.errors import BundleError
from torchpredict.heads.outputs import as_array
from torchpredict.inference.tensors import RawOutput, flatten_outputs
from torchpredict.messages import counted, quoted, shown

__all__ = ["GoldenExamples", "Verification"]

INPUTS_FILE = "examples/inputs.parquet"
OUTPUTS_FILE = "examples/outputs.safetensors"
PREDICTIONS_FILE = "examples/predictions.parquet"
DEFAULT_ATOL = 1e-5
DEFAULT_RTOL = 1e-4
_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1", "U64": "<u8",
           "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?", "C64": "<c8"}  # safetensors' dtypes that numpy has


Interpret = Callable[[RawOutput], Mapping[str, pa.Array]]  # raw outputs -> the heads' prediction columns


@dataclass(frozen=True)
class Verification:
    """The outcome of re-running golden examples: the largest deviation per raw output, whether the recorded
    predictions were compared (and the first column that differs), and notes on what was not checked."""

    rows: int
    max_abs_diff: dict[str, float]
    atol: float
    rtol: float
    passed: bool
    predictions_checked: bool = False
    prediction_mismatch: str | None = None
    notes: tuple[str, ...] = ()

    def describe(self) -> str:
        """One line: 'ok: 8 golden rows, largest deviation 0 (tolerance ...); predictions reproduce'."""
        worst = max(self.max_abs_diff.values(), default=0.0)
        verdict = "ok" if self.passed else "FAILED"
        parts = [f"{verdict}: {self.rows} golden rows, largest deviation {worst:.3g} "
                 f"(tolerance atol={self.atol:g}, rtol={self.rtol:g})"]
        if self.prediction_mismatch is not None:
            parts.append(self.prediction_mismatch)
        elif self.predictions_checked:
            parts.append("predictions reproduce")
        return "; ".join(parts + list(self.notes))


@dataclass(frozen=True, eq=False)
class GoldenExamples:
    inputs: pa.Table
    outputs: dict[str, np.ndarray]  # the raw outputs by name, as numpy arrays (torch is not needed to compare)
    atol: float = DEFAULT_ATOL
    rtol: float = DEFAULT_RTOL
    predictions: pa.Table | None = None  # None: a bundle written before 0.2

    @classmethod
    def record(cls, inputs: pa.Table, raw: RawOutput, predictions: Mapping[str, pa.Array] | None = None, *,
               atol: float = DEFAULT_ATOL, rtol: float = DEFAULT_RTOL) -> GoldenExamples:
        outputs = {name: np.ascontiguousarray(as_array(value)) for name, value in flatten_outputs(raw).items()}
        table = None if predictions is None else pa.table(dict(predictions))
        return cls(inputs=inputs, outputs=outputs, atol=atol, rtol=rtol, predictions=table)

    def write(self, directory: Path) -> dict:
        """Write the files under directory/examples; return the manifest's "examples" entry."""
        (directory / "examples").mkdir(parents=True, exist_ok=True)
        pq.write_table(self.inputs, directory / INPUTS_FILE)
        save_file(self.outputs, str(directory / OUTPUTS_FILE))  # the same file format as safetensors.torch
        entry = {"inputs": INPUTS_FILE, "outputs": OUTPUTS_FILE, "rows": self.inputs.num_rows,
                 "atol": self.atol, "rtol": self.rtol}
        if self.predictions is not None:
            pq.write_table(self.predictions, directory / PREDICTIONS_FILE)
            entry["predictions"] = PREDICTIONS_FILE
        return entry

    @classmethod
    def read(cls, directory: Path, entry: dict) -> GoldenExamples:
        """Read both files of a manifest's (checked) "examples" entry; a file that is not what its name says
        (garbage, or a pickle named .safetensors) is a BundleError naming it, and nothing is unpickled."""
        inputs, outputs = _parquet(directory, entry["inputs"]), _safetensors(directory, entry["outputs"])
        predictions = _parquet(directory, entry["predictions"]) if "predictions" in entry else None
        return cls(inputs=inputs, outputs=outputs, atol=float(entry["atol"]), rtol=float(entry["rtol"]),
                   predictions=predictions)

    def compare(self, raw: RawOutput, interpret: Interpret | None = None) -> Verification:
        """Compare fresh raw outputs for self.inputs against the recorded ones, and (given interpret, the heads)
        the predictions the heads make of the recorded outputs against the recorded predictions."""
        report = self._compare_raw(raw)
        if interpret is None:
            return report
        if self.predictions is None:
            note = "no predictions recorded (bundle written before torchpredict 0.2): raw outputs compared only"
            return replace(report, notes=(note,))
        recorded = _recorded_like(raw, self.outputs)
        mismatch = "the raw outputs differ in structure" if recorded is None else \
            _prediction_mismatch(self.predictions, interpret(recorded), self.atol, self.rtol)
        return replace(report, passed=report.passed and mismatch is None, predictions_checked=True,
                        prediction_mismatch=mismatch)

    def _compare_raw(self, raw: RawOutput) -> Verification:
        fresh = flatten_outputs(raw)
        diffs: dict[str, float] = {}
        passed = set(fresh) == set(self.outputs)
        for name, expected in self.outputs.items():
            got = None if fresh.get(name) is None else as_array(fresh[name])
            if got is None or got.shape != expected.shape:
                diffs[name] = float("inf")
                passed = False
                continue
            got = got.astype(expected.dtype)
            with np.errstate(invalid="ignore"):  # inf - inf: NaN, as torch gives it, without a warning
                diffs[name] = float(np.abs(got.astype(np.float64) - expected.astype(np.float64)).max()) if got.size \
                    else 0.0
            passed = passed and _agree(got, expected, self.atol, self.rtol)
        return Verification(rows=self.inputs.num_rows, max_abs_diff=diffs, atol=self.atol, rtol=self.rtol,
                            passed=passed)


def _parquet(directory: Path, rel: str) -> pa.Table:
    try:
        return pq.read_table(directory / rel)
    except (pa.ArrowException, OSError) as exc:
        raise BundleError(f"golden examples: file '{rel}' is not a Parquet file ({exc})") from None


def _safetensors(directory: Path, rel: str) -> dict[str, np.ndarray]:
    """The arrays of a safetensors file; bfloat16 ones (what a bfloat16 model's outputs were recorded as before
    torchpredict read them with numpy, which lacks the type) as float32, which holds them exactly."""
    try:
        views = deserialize((directory / rel).read_bytes())
    except (SafetensorError, OSError) as exc:
        raise BundleError(f"golden examples: file '{rel}' is not a safetensors file ({exc})") from None
    arrays = {}
    for name, view in views:
        kind, data = view["dtype"], view["data"]
        if kind == "BF16":  # a bfloat16 is the upper half of the float32 of the same value
            arrays[name] = (np.frombuffer(data, "<u2").astype("<u4") << 16).view("<f4").reshape(view["shape"])
        elif kind in _DTYPES:
            arrays[name] = np.frombuffer(data, _DTYPES[kind]).reshape(view["shape"])
        else:
            raise BundleError(f"golden examples: file '{rel}': output {name!r} has dtype {kind}, which torchpredict "
                              f"does not read (expected one of {', '.join(['BF16', *_DTYPES])})")
    return arrays


def _recorded_like(fresh: RawOutput, recorded: Mapping[str, np.ndarray], name: str = "output") -> RawOutput | None:
    """The recorded outputs in the structure (tuple, namedtuple, dict) of a fresh raw output, which
    outputs.safetensors does not keep; None when the names differ."""
    if not isinstance(fresh, dict | tuple | list):
        return recorded.get(name)
    items = fresh.items() if isinstance(fresh, dict) else enumerate(fresh)
    parts = {key: _recorded_like(value, recorded, f"{name}.{key}") for key, value in items}
    if any(part is None for part in parts.values()):
        return None
    if isinstance(fresh, dict):
        return parts
    values: list[Any] = list(parts.values())
    return type(fresh)(*values) if hasattr(fresh, "_fields") else type(fresh)(values)


def _prediction_mismatch(expected: pa.Table, got: Mapping[str, pa.Array], atol: float, rtol: float) -> str | None:
    """The first way the heads' predictions differ from the recorded ones, as a message part; None if none.
    Floats agree within atol + rtol * |expected| (NaN with NaN), everything else (labels, ids) exactly."""
    names = list(expected.column_names)
    missing, unexpected = [n for n in names if n not in got], [n for n in got if n not in names]
    if missing or unexpected:
        parts = ([counted("recorded prediction column", missing) + " not predicted"] if missing else []) + \
                ([counted("prediction column", unexpected) + " not recorded"] if unexpected else [])
        return f"{' and '.join(parts)}; a head's settings were changed"
    for name in names:
        want, have = expected.column(name).to_pylist(), got[name].to_pylist()
        for row, (a, b) in enumerate(zip(want, have, strict=False)):
            if not _same(a, b, atol, rtol):
                return (f"prediction column {shown(name)} differs from the recorded one at row {row} (expected "
                        f"{shown(a)}, got {shown(b)}); a setting it depends on was changed")
        if len(want) != len(have):
            return f"prediction column {shown(name)} has {len(have)} rows, the recorded one {len(want)}"
    if list(got) != names:
        return f"the heads predict the recorded columns in another order ({quoted(list(got))}); a head's settings " \
               "were changed"
    return None


def _same(a: Any, b: Any, atol: float, rtol: float) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b)) or abs(a - b) <= atol + rtol * abs(a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y, atol, rtol) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def _agree(got: np.ndarray, expected: np.ndarray, atol: float, rtol: float) -> bool:
    """torch.allclose's rule (|got - expected| <= atol + rtol * |expected|, NaN with NaN) for floats, else equal."""
    if expected.dtype.kind in "fc":
        return bool(np.allclose(got, expected, atol=atol, rtol=rtol, equal_nan=True))
    return bool(np.array_equal(got, expected))
