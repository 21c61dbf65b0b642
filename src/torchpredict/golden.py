"""Golden examples: a few input rows and the raw outputs the model gave at save time.

Re-running them on another machine or device (`torchpredict verify`) proves the bundle still predicts
what it predicted when it was saved, before any real data goes through it. Float outputs must agree within
the tolerance; integer ones (the token ids a sequence model decoded) exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from torchpredict.errors import BundleError
from torchpredict.inference import RawOutput, flatten_outputs

__all__ = ["GoldenExamples", "Verification"]

INPUTS_FILE = "examples/inputs.parquet"
OUTPUTS_FILE = "examples/outputs.safetensors"
DEFAULT_ATOL = 1e-5
DEFAULT_RTOL = 1e-4


@dataclass(frozen=True)
class Verification:
    """The outcome of re-running golden examples: the largest deviation per raw output."""

    rows: int
    max_abs_diff: dict[str, float]
    atol: float
    rtol: float
    passed: bool

    def describe(self) -> str:
        worst = max(self.max_abs_diff.values(), default=0.0)
        verdict = "ok" if self.passed else "FAILED"
        return (f"{verdict}: {self.rows} golden rows, largest deviation {worst:.3g} "
                f"(tolerance atol={self.atol:g}, rtol={self.rtol:g})")


@dataclass(frozen=True, eq=False)
class GoldenExamples:
    inputs: pa.Table
    outputs: dict[str, torch.Tensor]
    atol: float = DEFAULT_ATOL
    rtol: float = DEFAULT_RTOL

    @classmethod
    def record(cls, inputs: pa.Table, raw: RawOutput, *, atol: float = DEFAULT_ATOL,
               rtol: float = DEFAULT_RTOL) -> GoldenExamples:
        outputs = {name: tensor.detach().cpu().contiguous() for name, tensor in flatten_outputs(raw).items()}
        return cls(inputs=inputs, outputs=outputs, atol=atol, rtol=rtol)

    def write(self, directory: Path) -> dict:
        """Write both files under directory/examples; return the manifest's "examples" entry."""
        (directory / "examples").mkdir(parents=True, exist_ok=True)
        pq.write_table(self.inputs, directory / INPUTS_FILE)
        save_file(self.outputs, str(directory / OUTPUTS_FILE))
        return {"inputs": INPUTS_FILE, "outputs": OUTPUTS_FILE, "rows": self.inputs.num_rows,
                "atol": self.atol, "rtol": self.rtol}

    @classmethod
    def read(cls, directory: Path, entry: dict) -> GoldenExamples:
        """Read both files of a manifest's (checked) "examples" entry; a file that is not what its name says
        (garbage, or a pickle named .safetensors) is a BundleError naming it, and nothing is unpickled."""
        try:
            inputs = pq.read_table(directory / entry["inputs"])
        except (pa.ArrowException, OSError) as exc:
            raise BundleError(f"golden examples: file '{entry['inputs']}' is not a Parquet file ({exc})") from None
        try:
            outputs = load_file(str(directory / entry["outputs"]))
        except (SafetensorError, OSError) as exc:
            raise BundleError(f"golden examples: file '{entry['outputs']}' is not a safetensors file ({exc})") from None
        return cls(inputs=inputs, outputs=outputs, atol=float(entry["atol"]), rtol=float(entry["rtol"]))

    def compare(self, raw: RawOutput) -> Verification:
        """Compare fresh raw outputs for self.inputs against the recorded ones."""
        fresh = flatten_outputs(raw)
        diffs: dict[str, float] = {}
        passed = set(fresh) == set(self.outputs)
        for name, expected in self.outputs.items():
            got = fresh.get(name)
            if got is None or got.shape != expected.shape:
                diffs[name] = float("inf")
                passed = False
                continue
            got = got.to(expected.dtype)
            diffs[name] = float((got.double() - expected.double()).abs().max()) if got.numel() else 0.0
            passed = passed and _agree(got, expected, self.atol, self.rtol)
        return Verification(rows=self.inputs.num_rows, max_abs_diff=diffs, atol=self.atol, rtol=self.rtol,
                            passed=passed)


def _agree(got: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float) -> bool:
    if expected.is_floating_point() or expected.is_complex():
        return torch.allclose(got, expected, atol=atol, rtol=rtol, equal_nan=True)
    return torch.equal(got, expected)
