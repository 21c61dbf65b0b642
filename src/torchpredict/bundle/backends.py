"""Which backend a loaded bundle runs on, decided on the bundle's own evidence.

Each candidate is built from the loaded model, run on the golden rows and held to the bundle's tolerance
against the outputs eager PyTorch recorded at save time; "auto" then times every verified one against eager
on batches of the predictor's size and takes the fastest (by at least 5 %, so that noise does not pick).
An explicit backend that cannot be built or does not verify is a BackendError (unless verify=False); "auto"
falls back to eager and says why in the report. Without a request the bundle's stored choice (written by
`torchpredict optimize` for this kind of device) is verified and used, else eager.
"""

from __future__ import annotations

import statistics
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from torchpredict.errors import BackendError, BackendWarning
from torchpredict.inference.backends import (
    APPROXIMATE,
    BACKENDS,
    Built,
    NotApplicable,
    Unavailable,
    build_backend,
    stored_onnx,
)
from torchpredict.messages import first_line
from torchpredict.predictor import Predictor

if TYPE_CHECKING:
    import torch

__all__ = ["AUTO_TRIES", "CHOICES", "BackendReport", "Trial", "choose_backend", "example_inputs", "run_stored_onnx"]

CHOICES = ("auto", *BACKENDS)
AUTO_TRIES = ("onnxruntime", "int8", "channels_last")  # compile is never tried unasked: it builds for minutes
MARGIN = 1.05  # how much faster than eager a backend must time to be chosen over it
TIMING_ROWS = 1024  # the largest batch timed
_TIMING_BUDGET_S = 0.15  # per backend: a few batches, so that choosing costs a fraction of a second


@dataclass(frozen=True)
class Trial:
    """One backend tried: verdict "verified", "unverified" (verify=False), "failed" (outputs differ beyond the
    tolerance, or it failed on the golden rows), "unavailable" (cannot be built here) or "not tried"."""

    backend: str
    verdict: str
    reason: str = ""
    deviation: float | None = None
    seconds: float | None = None  # per batch of the report's rows
    build_seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {key: value for key, value in self.__dict__.items() if value not in (None, "")}


@dataclass(frozen=True)
class BackendReport:
    """How the backend was chosen: what was asked, what runs, and each backend tried, with why."""

    requested: str
    chosen: str
    device: str
    rows: int  # the batch size timed (0: nothing was timed)
    golden_rows: int
    trials: tuple[Trial, ...]
    stored: bool = False  # the choice came from the bundle (torchpredict optimize)

    def trial(self, backend: str) -> Trial | None:
        return next((t for t in self.trials if t.backend == backend), None)

    def speedup(self, backend: str | None = None) -> float | None:
        """How many times faster than eager a backend (default the chosen one) ran its batches; None if untimed."""
        mine, eager = self.trial(backend or self.chosen), self.trial("eager")
        if mine is None or eager is None or not mine.seconds or not eager.seconds:
            return None
        return eager.seconds / mine.seconds

    def describe(self) -> str:
        """One line: 'backend onnxruntime (auto): 1.41x eager on batches of 1,024 rows, ...; passed over: ...'."""
        chosen = self.trial(self.chosen)
        asked = " (stored by torchpredict optimize)" if self.stored else "" if self.requested == self.chosen else \
            f" ({self.requested})"
        parts = [f"backend {self.chosen}{asked} on {self.device}"]
        speedup = self.speedup()
        if speedup is not None and self.chosen != "eager":
            parts.append(f"{speedup:.2f}x eager on batches of {self.rows:,} rows")
        if chosen is not None and chosen.verdict == "verified" and self.chosen != "eager":
            parts.append(f"verified on {self.golden_rows} golden rows (largest deviation {chosen.deviation:.3g})")
        elif chosen is not None and chosen.verdict == "unverified":
            parts.append("NOT verified against eager (verify=False)")
        if self.chosen in APPROXIMATE:
            parts.append("approximate")
        others = [_passed_over(t, self) for t in self.trials if t.backend not in (self.chosen, "eager")]
        if others:
            parts.append("passed over: " + "; ".join(others))
        return ", ".join(parts[:2]) + "".join(f"; {part}" for part in parts[2:])

    def to_dict(self) -> dict[str, Any]:
        return {"requested": self.requested, "chosen": self.chosen, "device": self.device, "rows": self.rows,
                "golden_rows": self.golden_rows, "stored": self.stored, "speedup": self.speedup(),
                "trials": [t.to_dict() for t in self.trials]}


def _passed_over(trial: Trial, report: BackendReport) -> str:
    if trial.verdict == "verified":
        speedup = report.speedup(trial.backend)
        ran = "" if speedup is None else f", {speedup:.2f}x eager"
        why = "not faster than eager by 5 %" if report.chosen == "eager" else f"{report.chosen} ran faster"
        return f"{trial.backend} (verified{ran}: {why})"
    return f"{trial.backend} ({trial.verdict}{f': {trial.reason}' if trial.reason else ''})"


@dataclass(frozen=True)
class _Asked:
    """What every trial is held to and built with."""

    atol: float | None
    rtol: float | None
    onnx: bytes | None
    threads: int | None


def choose_backend(predictor: Predictor, backend: str | None = None, *, verify: bool = True,
                   atol: float | None = None, rtol: float | None = None, onnx: bytes | None = None,
                   stored: Mapping[str, Any] | None = None, rows: int | None = None, threads: int | None = None,
                   tries: Sequence[str] = AUTO_TRIES) -> Predictor:
    """The predictor running on the backend asked for (None: the stored choice for this device, else eager),
    with its report as `predictor.backend_report`.

    atol, rtol: the tolerance against eager (default the bundle's golden tolerance). onnx: the bundle's stored
    ONNX graph. stored: the bundle's choice for this kind of device, {"backend": ...}. rows: the batch size
    to time (default the predictor's, at most 1,024). threads: ONNX Runtime's intra-op threads (default
    torch's). tries: the backends "auto" tries besides eager.
    """
    if backend is not None and backend not in CHOICES:
        raise BackendError(f"backend must be one of {', '.join(CHOICES)}, got {backend!r}")
    if backend == "auto" and not verify:
        raise BackendError("backend 'auto' chooses among verified backends only; verify=False (--no-verify) goes "
                           "with an explicit backend")
    asked = _Asked(atol, rtol, onnx, threads)
    if backend is None:
        wanted = (stored or {}).get("backend", "eager")
        return predictor if wanted not in BACKENDS or wanted == "eager" else _stored(predictor, wanted, asked)
    if backend == "eager":
        return predictor.with_backend("eager", predictor.model, _report(predictor, "eager", "eager",
                                                                        [Trial("eager", "verified")]))
    if backend == "auto":
        return _auto(predictor, asked, rows, tries)
    return _explicit(predictor, backend, verify, asked)


def _report(predictor: Predictor, requested: str, chosen: str, trials: Sequence[Trial], *, rows: int = 0,
            stored: bool = False) -> BackendReport:
    return BackendReport(requested, chosen, predictor.device.type, rows, _golden_rows(predictor), tuple(trials),
                         stored)


def _stored(predictor: Predictor, backend: str, asked: _Asked) -> Predictor:
    """The bundle's stored choice, verified here; one that no longer verifies leaves eager, with a warning."""
    trial, built = _try(predictor, backend, asked)
    if built is None:
        warnings.warn(f"the bundle's stored backend {backend} is not used ({trial.verdict}: {trial.reason}); "
                      "running eager", BackendWarning, stacklevel=3)
        report = _report(predictor, backend, "eager", [Trial("eager", "verified"), trial])
        return predictor.with_backend("eager", predictor.model, report)
    return predictor.with_backend(backend, built.model, _report(predictor, backend, backend, [trial], stored=True))


def _explicit(predictor: Predictor, backend: str, verify: bool, asked: _Asked) -> Predictor:
    if verify:
        trial, built = _try(predictor, backend, asked)
        if built is None:
            unavailable = trial.verdict in ("unavailable", "not tried")
            what = "is not available" if unavailable else "does not reproduce eager PyTorch"
            fix = "" if unavailable else "; pass verify=False (CLI --no-verify) to use it anyway"
            raise BackendError(f"backend {backend} {what}: {trial.reason}{fix}")
    else:
        started = time.perf_counter()
        try:
            built = _build(predictor, backend, asked)
        except Unavailable as exc:
            raise BackendError(f"backend {backend} is not available: {exc}") from None
        trial = Trial(backend, "unverified", build_seconds=time.perf_counter() - started)
    return predictor.with_backend(backend, built.model, _report(predictor, backend, backend, [trial]))


def _auto(predictor: Predictor, asked: _Asked, rows: int | None, tries: Sequence[str]) -> Predictor:
    trials, built = [], {"eager": Built("eager", predictor.model)}
    for name in tries:
        trial, maybe = _try(predictor, name, asked)
        trials.append(trial)
        if maybe is not None:
            built[name] = maybe
    rows = max(1, min(rows or predictor.batch_size, TIMING_ROWS))
    seconds = {name: _timed(predictor.with_backend(name, b.model), rows) for name, b in built.items()}
    fastest = min(seconds, key=seconds.__getitem__)
    chosen = fastest if seconds[fastest] * MARGIN < seconds["eager"] else "eager"
    trials = [Trial("eager", "verified", seconds=seconds["eager"]),
              *(replace(t, seconds=seconds.get(t.backend)) for t in trials),
              *(Trial(name, "not tried", _NOT_TRIED.get(name, "not among the backends auto was given"))
                for name in BACKENDS if name != "eager" and name not in tries)]
    report = _report(predictor, "auto", chosen, trials, rows=rows)
    if chosen == "eager" and any(t.verdict in ("failed", "unavailable") for t in trials):
        warnings.warn(f"auto runs eager: {report.describe()}", BackendWarning, stacklevel=3)
    return predictor.with_backend(chosen, built[chosen].model, report)


_NOT_TRIED = {"compile": "compiling takes seconds to minutes: ask for it (--backend compile) for long jobs"}


def _build(predictor: Predictor, backend: str, asked: _Asked) -> Built:
    tensors, dynamic = example_inputs(predictor)
    return build_backend(backend, predictor.model, tensors, predictor.device, dynamic=dynamic, onnx=asked.onnx,
                         threads=asked.threads)


def run_stored_onnx(predictor: Predictor, graph: bytes, *, stored: bool, atol: float | None = None,
                    rtol: float | None = None, threads: int | None = None) -> Predictor:
    """The predictor on the bundle's stored ONNX graph, built and verified without torch: the torch-free route,
    where nothing else could run the model, so a graph that does not verify is a BackendError.

    stored: the bundle's own choice (no backend was asked for) rather than an explicit onnxruntime.
    """
    asked = _Asked(atol, rtol, graph, threads)
    names = [spec.name for spec in predictor.model_entry.inputs]
    trial, built = _try(predictor, "onnxruntime", asked, lambda: stored_onnx(graph, names, "cpu", threads))
    if built is None:
        what = "is not available" if trial.verdict == "unavailable" else "does not reproduce eager PyTorch"
        raise BackendError(f"backend onnxruntime {what}: {trial.reason}; without torch nothing else can run this "
                           "bundle (pip install torch)")
    report = _report(predictor, "onnxruntime", "onnxruntime", [trial], stored=stored)
    return predictor.with_backend("onnxruntime", built.model, report)


def _try(predictor: Predictor, backend: str, asked: _Asked,
         build: Callable[[], Built] | None = None) -> tuple[Trial, Built | None]:
    """Build a backend (by build, default from the eager model) and hold its outputs for the golden rows to the
    tolerance; (trial, None) if it failed."""
    golden = predictor.golden
    if golden is None or not golden.inputs.num_rows:
        return Trial(backend, "unavailable", "the bundle has no golden rows to verify it against"), None
    started = time.perf_counter()
    try:
        built = build() if build is not None else _build(predictor, backend, asked)
    except NotApplicable as exc:
        return Trial(backend, "not tried", str(exc)), None
    except Unavailable as exc:
        return Trial(backend, "unavailable", str(exc)), None
    build_seconds = time.perf_counter() - started
    inputs = predictor.preprocess(predictor.validate(golden.inputs))
    try:
        [batch] = predictor.with_backend(backend, built.model).infer(inputs, batch_size=golden.inputs.num_rows)
    except Exception as exc:  # whatever a backend raises on its own golden rows, it is not used
        reason = f"it fails on the golden rows: {first_line(exc, with_type=True)}"
        return Trial(backend, "failed", reason, build_seconds=build_seconds), None
    held = replace(golden, atol=golden.atol if asked.atol is None else asked.atol,
                   rtol=golden.rtol if asked.rtol is None else asked.rtol)
    verification = held.compare(batch.raw)
    deviation = max(verification.max_abs_diff.values(), default=0.0)
    if not verification.passed:
        reason = (f"outputs deviate from eager by {deviation:.3g} on the {golden.inputs.num_rows} golden rows, beyond "
                  f"the tolerance (atol={held.atol:g}, rtol={held.rtol:g})")
        return Trial(backend, "failed", reason, deviation, build_seconds=build_seconds), None
    return Trial(backend, "verified", deviation=deviation, build_seconds=build_seconds), built


def example_inputs(predictor: Predictor) -> tuple[dict[str, torch.Tensor], dict[str, dict[int, None]]]:
    """The golden rows as model inputs, in forward's order, with a decoding loop's prefix, and the dimensions
    besides the batch that vary (what a backend is exported or compiled for)."""
    import torch

    if predictor.golden is None:
        raise BackendError("the bundle has no golden rows to build a backend from")
    arrays = predictor.preprocess(predictor.validate(predictor.golden.inputs))
    tensors = {name: torch.from_numpy(np.ascontiguousarray(array)) for name, array in arrays.items()}
    tensors, _ = predictor.call.example_inputs(tensors, predictor.heads)
    dynamic = {spec.name: {dim + 1: None for dim, size in enumerate(spec.shape) if size is None}
               for spec in predictor.model_entry.inputs}
    return tensors, {name: dims for name, dims in dynamic.items() if dims}


def _timed(predictor: Predictor, rows: int) -> float:
    """Median seconds per batch of rows (the golden rows repeated), within a small budget."""
    assert predictor.golden is not None
    inputs = predictor.preprocess(predictor.validate(predictor.golden.inputs))
    batch = {name: np.resize(array, (rows, *array.shape[1:])) for name, array in inputs.items()}
    list(predictor.infer(batch, batch_size=rows))  # warm: first calls allocate
    times: list[float] = []
    deadline = time.perf_counter() + _TIMING_BUDGET_S
    while len(times) < 3 or (time.perf_counter() < deadline and len(times) < 50):
        started = time.perf_counter()
        list(predictor.infer(batch, batch_size=rows))
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _golden_rows(predictor: Predictor) -> int:
    return 0 if predictor.golden is None else predictor.golden.inputs.num_rows
