"""Batch prediction on Ray Data: the local engine's reader and stages, run by a pool of actors over a cluster.

`predict_files` is `torchpredict predict --engine ray`: files in (reading.PieceSource: one read task per file,
pieces of whole model batches), a folder of part files out, written by the actors (actors.PieceActor), and the
rejected rows, counts and drift gathered by the driver from each piece's summary into the same rejects file and
report the local engine writes. Before it says done it checks that the pieces of every file tile the file
(every input row predicted or rejected exactly once, whatever tasks Ray retried) and that each part holds the
rows its piece predicted. `predict` gives a Dataset of predictions for the caller to write anywhere Ray writes.

Actors are sized from the cluster's resources (`size_actors`): they never take the CPU the read tasks need,
which on a small cluster would leave reads waiting forever (two whole-CPU actors on two CPUs hang).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import pickle
import shutil
import time
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torchpredict.bundle.loading import load
from torchpredict.device import cpu_cores
from torchpredict.errors import EngineError, InputError, TorchPredictError
from torchpredict.io.formats import STDIO, detect_format
from torchpredict.io.readers import DEFAULT_BATCH_ROWS, DEFAULT_BLOCK_BYTES
from torchpredict.jobs.collisions import check_outputs
from torchpredict.jobs.plan import Plan, check_columns
from torchpredict.jobs.sinks import RejectsFile, add_counts, write_json
from torchpredict.messages import first_line
from torchpredict.predictor import DEFAULT_BATCH_SIZE
from torchpredict.stats import RunStats

__all__ = ["INSTALL_HINT", "RayRun", "Sizing", "predict", "predict_files", "size_actors"]

INSTALL_HINT = "pip install 'torchpredict[ray]'"
_STAGING = ".torchpredict-ray"  # parts are written here and moved into the output folder once all are checked


def import_ray() -> Any:
    """The ray module, or an EngineError with the install hint."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise EngineError(f"the Ray engine needs Ray Data, which is not installed: {INSTALL_HINT}") from None
    return ray


# -- sizing -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizing:
    """How many actors, and what each asks of the cluster; threads: the model's threads in each."""

    actors: int
    cpus_per_actor: float
    gpus_per_actor: float
    threads: int
    read_cpus: float  # what each read task asks for
    cluster_cpus: float
    cluster_gpus: float

    def describe(self) -> str:
        gpus = f", {self.gpus_per_actor:g} GPU" if self.gpus_per_actor else ""
        return (f"{self.actors} actor(s) x {self.cpus_per_actor:g} CPU{gpus} on a cluster of {self.cluster_cpus:g} "
                f"CPU(s), {self.cluster_gpus:g} GPU(s); reads take {self.read_cpus:g} CPU each")


def size_actors(resources: Mapping[str, float], *, actors: int | None = None, cpus_per_actor: float | None = None,
                gpus_per_actor: float = 0.0) -> Sizing:
    """Actors that fit the cluster's resources and leave the read tasks a CPU (half the cluster's, when it has
    fewer than two).

    Defaults: with GPUs per actor, one actor per that many GPUs, else one per CPU left; each actor's CPUs are
    what is left shared between them, at most one. Asking for more than fits is an EngineError that says what
    would fit: Ray would not fail such a job, it would wait forever for a CPU.
    """
    cpus, gpus = float(resources.get("CPU", 0.0)), float(resources.get("GPU", 0.0))
    if cpus <= 0:
        raise EngineError("the Ray cluster has no CPU to run the job on")
    for name, value in (("actors", actors), ("cpus_per_actor", cpus_per_actor)):
        if value is not None and value <= 0:
            raise EngineError(f"{name} must be > 0, got {value}")
    if gpus_per_actor < 0:
        raise EngineError(f"gpus_per_actor must be >= 0, got {gpus_per_actor}")
    reserve = min(1.0, cpus / 2)
    usable = cpus - reserve
    if gpus_per_actor:
        if gpus_per_actor > gpus:
            raise EngineError(f"{gpus_per_actor:g} GPU per actor asked for; the Ray cluster has {gpus:g} GPU(s)")
        actors = actors or int(gpus // gpus_per_actor)
        if actors * gpus_per_actor > gpus + 1e-9:
            raise EngineError(f"{actors} actors x {gpus_per_actor:g} GPU do not fit the cluster's {gpus:g} GPU(s)")
    if actors is None:
        actors = max(1, int(usable // cpus_per_actor) if cpus_per_actor else int(usable))
    if cpus_per_actor is None:
        cpus_per_actor = min(1.0, _floor(usable / actors))
        if cpus_per_actor <= 0:
            raise EngineError(f"{actors} actors do not fit the cluster's {cpus:g} CPU(s) with {reserve:g} left for "
                              "reading: ask for fewer actors")
    if actors * cpus_per_actor > usable + 1e-9:
        most = _floor(usable / actors)
        fix = f"at most {most:g} CPU per actor (--cpus-per-actor)" if most > 0 else "fewer actors"
        raise EngineError(f"{actors} actors x {cpus_per_actor:g} CPU leave {cpus - actors * cpus_per_actor:g} of "
                          f"the cluster's {cpus:g} CPU(s) for reading, which needs {reserve:g}: the job would "
                          f"wait forever for a CPU; ask for {fix}")
    return Sizing(actors, cpus_per_actor, gpus_per_actor, max(1, int(cpus_per_actor)), reserve, cpus, gpus)


def _floor(value: float) -> float:
    """value rounded down to a hundredth (Ray counts fractional resources in steps of 1/10,000)."""
    return int(value * 100) / 100


# -- the runtime ------------------------------------------------------------------------------------


@contextlib.contextmanager
def ray_runtime(address: str | None) -> Iterator[Any]:
    """Ray connected for one job (see connect), and shut down afterwards if the job started or joined it."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    connect(address)
    try:
        yield ray
    finally:
        ray.shutdown()


def connect(address: str | None) -> None:
    """Initialise Ray, unless this process already did: join the cluster at address ("auto": the one RAY_ADDRESS
    or this machine runs; "HOST:PORT"), or start a local runtime on this machine's cores (address None). A
    local runtime, or a cluster at a loopback address, is listened for on 127.0.0.1 only (loopback_only)."""
    ray = import_ray()
    if ray.is_initialized():
        return
    options: dict[str, Any] = {"logging_level": logging.WARNING, "include_dashboard": False}
    if address is None:
        options["num_cpus"] = cpu_cores()
    else:
        options["address"] = address
    local = address is None or address.rsplit(":", 1)[0] in ("127.0.0.1", "localhost")
    if local:  # a cluster on this machine's loopback address: this driver listens there too
        options["_node_ip_address"] = "127.0.0.1"
    try:
        with loopback_only() if local else contextlib.nullcontext():
            ray.init(**options)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = "start a local Ray runtime" if address is None else f"connect to the Ray cluster at '{address}'"
        raise EngineError(f"cannot {where}: {first_line(exc)}") from None


_ONE_MACHINE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray's processes take the loopback address as the node's


@contextlib.contextmanager
def loopback_only() -> Iterator[None]:
    """Ray processes started meanwhile listen on 127.0.0.1 only. `_node_ip_address="127.0.0.1"` alone still
    has the GCS, raylet and workers listen on every interface (measured with ss); Ray's one-machine mode (its
    default on macOS and Windows, chosen by this variable, read by the processes it starts and, already
    imported, by this one) binds them to the loopback address."""
    from ray._private import ray_constants

    before, flag = os.environ.get(_ONE_MACHINE), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[_ONE_MACHINE], ray_constants.ENABLE_RAY_CLUSTER = "0", False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = flag
        if before is None:
            os.environ.pop(_ONE_MACHINE, None)
        else:
            os.environ[_ONE_MACHINE] = before


def _cause(exc: BaseException) -> BaseException | None:
    """The torchpredict error an actor or read task raised, inside the exceptions Ray wraps it in (Ray's wrapper
    subclasses the error's class too, but its message is Ray's: the error itself is its `cause`)."""
    seen = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        inner = getattr(current, "cause", None)
        if isinstance(current, TorchPredictError) and not isinstance(inner, BaseException):
            return current
        current = inner if isinstance(inner, BaseException) else (current.__cause__ or current.__context__)
    return None


@contextlib.contextmanager
def _job_errors() -> Iterator[None]:
    """A failed Ray job as the error its actor raised (a bad row: SchemaError, as the local engine's), else an
    EngineError with Ray's first line."""
    try:
        yield
    except Exception as exc:
        cause = _cause(exc)
        if cause is not None:
            raise type(cause)(_without_ray_notes(str(cause))) from None
        raise EngineError(f"the Ray job failed: {first_line(exc)}") from None


def _without_ray_notes(message: str) -> str:
    """The error's own message, without the lines Ray adds to it on the way (its retries, its advice)."""
    return message.split("\nFailed to apply UDF transform", 1)[0]


# -- the bundle -------------------------------------------------------------------------------------


def bundle_bytes(path: str | Path) -> bytes:
    """The bundle as the bytes of a zip (a zip as it is, a folder zipped), for Ray to give every actor."""
    path = Path(path)
    if not path.is_dir():
        return path.read_bytes()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        for file in sorted(path.rglob("*")):
            if file.is_file():
                zf.write(file, file.relative_to(path).as_posix())
    return buffer.getvalue()


# -- the jobs ---------------------------------------------------------------------------------------


@dataclass
class RayRun:
    """What a Ray file job saw (stats, as the local engine counts them), where its parts are, how the actors
    were sized, and the seconds until the first piece came back (starting or joining Ray, loading the bundle
    here and in the actors, one piece's work: the fixed cost, less a piece) and in all."""

    stats: RunStats
    parts: list[str]
    sizing: Sizing
    startup_seconds: float
    seconds: float


_LOAD_OPTIONS = ("trust_factory", "trust_torch_loader", "verify_backend", "atol", "rtol")


def _load_here(bundle: str | Path, batch_size: int, options: Mapping[str, Any]) -> Any:
    """The bundle loaded on this (the driver's) machine: its schema and outputs plan the job, and a bundle that
    does not load fails here, before any actor starts."""
    unknown = sorted(set(options) - set(_LOAD_OPTIONS))
    if unknown:
        raise TypeError(f"unexpected keyword argument(s) {unknown}; load options are {list(_LOAD_OPTIONS)}")
    trust = {k: options[k] for k in ("trust_factory", "trust_torch_loader") if k in options}
    return load(bundle, device="cpu", batch_size=batch_size, **trust)


def _actor_options(batch_size: int, device: str | None, backend: str | None, sizing: Sizing,
                   options: Mapping[str, Any]) -> dict[str, Any]:
    chosen = device or ("cuda" if sizing.gpus_per_actor else "cpu")
    return {"device": chosen, "batch_size": batch_size, "backend": backend, "threads": sizing.threads, **options}


def predict_files(input: str | Path | Sequence[str | Path], bundle: str | Path, output: str | Path, *,
                  format: str | None = None, output_format: str | None = None, keep: Sequence[str] = (),
                  columns: Sequence[str] | None = None, rejects: str | Path | None = None,
                  report: str | Path | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                  actors: int | None = None, cpus_per_actor: float | None = None, gpus_per_actor: float = 0.0,
                  device: str | None = None, backend: str | None = None, address: str | None = None,
                  piece_rows: int | None = None, batch_rows: int = DEFAULT_BATCH_ROWS,
                  block_bytes: int = DEFAULT_BLOCK_BYTES, **load_options: Any) -> RayRun:
    """Predict every row of the input files on Ray into a folder of part files; returns what the run saw.

    input: files, folders or globs (CSV, TSV, Parquet, JSONL, .npy) that every node of the cluster can read.
    output: a folder, new or empty, that every node can write: it receives part-FFFFF-RRRRRRRRRRRR.<ext>
    (output_format, default parquet), one per piece of each input file, whose names sort in input order. keep,
    columns, rejects and report: as for the local engine (torchpredict.jobs.pipeline.predict_file); the rejects
    file and report are written here, on the driver. actors, cpus_per_actor, gpus_per_actor: see size_actors;
    device: the actors' device (default cuda with GPUs per actor, else cpu); backend: as for load. address:
    None starts a local Ray runtime (or uses the one this process initialised), "auto" or "HOST:PORT" joins a
    cluster. piece_rows: rows per unit of work (default 65,536, rounded up to whole batches). load_options: the
    trust_factory, trust_torch_loader, verify_backend, atol and rtol options of load, for every actor (the trust
    options for the driver too, which loads the bundle on the CPU to plan the job).

    >>> run = predict_files("data/*.parquet", "wine.tpk", "predictions/", keep=["id"])   # doctest: +SKIP
    >>> run.stats.rows_predicted                                                       # doctest: +SKIP
    """
    started = time.perf_counter()
    import_ray()  # before the bundle loads: without Ray, say so first
    predictor = _load_here(bundle, batch_size, load_options)
    plan = Plan.make(predictor, input, format, keep, columns, rejects, 1 << 62, batch_rows, block_bytes)
    if STDIO in plan.sources:
        raise InputError("the Ray engine reads files, not stdin; use the local engine for '-'")
    if any(detect_format(source, plan.format) == "images" for source in plan.sources):
        raise InputError("the Ray engine predicts data files, not a folder or glob of images (their paths would "
                         "be read by workers elsewhere); use the local engine, or a Parquet file of the images' bytes")
    folder = Path(output)
    fmt = output_format or "parquet"
    detect_format(f"part.{fmt}", output_format)
    check_outputs(plan.sources, f"{folder}/", rejects, report)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise InputError(f"output '{folder}' exists and is not an empty folder; the Ray engine writes into a new "
                         "or empty folder (remove it, or choose another)")
    staging = folder / _STAGING
    with ray_runtime(address) as ray:
        sizing = size_actors(ray.cluster_resources(), actors=actors, cpus_per_actor=cpus_per_actor,
                             gpus_per_actor=gpus_per_actor)
        staging.mkdir(parents=True, exist_ok=True)
        first: list[float] = []
        try:
            summaries = _run_pieces(ray, plan, bundle, sizing, piece_rows,
                                    _actor_options(batch_size, device, backend, sizing, load_options),
                                    {"folder": str(staging.resolve()), "format": fmt})
            stats, parts = _gathered(plan, _timed_first(summaries, first), staging, rejects)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    for name in parts:
        os.replace(staging / name, folder / name)
    shutil.rmtree(staging, ignore_errors=True)
    seconds = time.perf_counter() - started
    startup = (first[0] if first else time.perf_counter()) - started
    if report is not None:
        write_json(Path(report), {"input": plan.sources, "output": str(folder), "engine": "ray",
                                   "actors": sizing.describe(), "rows_in": stats.rows_in,
                                   "rows_predicted": stats.rows_predicted, "rows_rejected": stats.rows_rejected,
                                   "seconds": round(seconds, 3), "startup_seconds": round(startup, 3),
                                   "drift": stats.drift.to_dict(),
                                   "text": {"truncated": stats.text.truncated, "unknown": stats.text.unknown}})
    return RayRun(stats, [str(folder / name) for name in parts], sizing, startup, seconds)


def _run_pieces(ray: Any, plan: Plan, bundle: str | Path, sizing: Sizing, piece_rows: int | None,
                options: dict[str, Any], output: dict[str, str] | None) -> Iterator[dict[str, Any]]:
    """The pieces of the plan's files through an actor pool: their summaries (output given) or predictions."""
    from torchpredict.ray.actors import PieceActor
    from torchpredict.ray.reading import PieceSource, piece_rows_for

    source = PieceSource(plan, piece_rows_for(options["batch_size"], piece_rows))
    data = ray.data.read_datasource(source, num_cpus=sizing.read_cpus)
    mapped = data.map_batches(PieceActor, fn_constructor_kwargs={"bundle": [ray.put(bundle_bytes(bundle))],
                                                                 "plan": plan, "options": options,
                                                                 "output": output},
                              batch_size=1, **_pool(ray, sizing))
    _raise_our_errors(mapped)
    with _job_errors():
        yield from mapped.iter_rows()


def _timed_first(items: Iterator[Any], first: list[float]) -> Iterator[Any]:
    """items, noting in first when the first one came."""
    for item in items:
        if not first:
            first.append(time.perf_counter())
        yield item


def _raise_our_errors(dataset: Any) -> None:
    """An actor's error reaches the driver as itself (a SchemaError naming the file and row), not as Ray's
    "UDF failed to process a data block", which would hide it (the dataset's own context: no other changes)."""
    dataset.context.raise_original_map_exception = True


def _pool(ray: Any, sizing: Sizing) -> dict[str, Any]:
    """map_batches' arguments for the sized actor pool."""
    return {"batch_format": "pyarrow", "compute": ray.data.ActorPoolStrategy(size=sizing.actors),
            "num_cpus": sizing.cpus_per_actor, "num_gpus": sizing.gpus_per_actor or None}


def _gathered(plan: Plan, summaries: Iterator[dict[str, Any]], staging: Path,
              rejects: str | Path | None) -> tuple[RunStats, list[str]]:
    """The pieces' counts and rejected rows, each piece once, after checking that they tile every input file
    and that each part file holds its piece's predictions; returns the stats and the part names in order."""
    from torchpredict.ray.actors import rejected_of

    pieces: dict[tuple[int, int], dict[str, Any]] = {}
    for summary in summaries:
        key = (summary["file"], summary["first_row"])
        pieces.setdefault(key, summary)  # a piece Ray ran twice (a retried task) is the same piece
    stats = RunStats()
    ends = dict.fromkeys(range(len(plan.sources)), 0)
    writer = RejectsFile(None if rejects is None else Path(rejects), plan.many)
    try:
        for (file, first_row), piece in sorted(pieces.items()):
            if first_row != ends[file]:
                raise EngineError(f"file '{plan.sources[file]}': rows {ends[file]:,} to {first_row - 1:,} came back "
                                  "from no actor; the job is incomplete (nothing was written)")
            ends[file] = first_row + piece["rows"]
            part_stats: RunStats = pickle.loads(piece["stats"])  # this job's own actors' counts
            if piece["written"] != part_stats.rows_predicted or (
                    piece["part"] and not (staging / piece["part"]).is_file()):
                raise EngineError(f"file '{plan.sources[file]}': the part of rows {first_row:,}+ holds "
                                  f"{piece['written']:,} rows for {part_stats.rows_predicted:,} predicted")
            add_counts(stats, part_stats)
            writer.write(rejected_of(piece["rejected"]), piece["names"])
        missing = [plan.sources[f] for f in ends if not any(k[0] == f for k in pieces)]
        if missing:
            raise EngineError(f"file '{missing[0]}' came back from no actor; the job is incomplete")
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    return stats, [pieces[k]["part"] for k in sorted(pieces) if pieces[k]["part"]]


def predict(data: Any, bundle: str | Path, *, keep: Sequence[str] = (), columns: Sequence[str] | None = None,
            format: str | None = None, batch_size: int = DEFAULT_BATCH_SIZE, actors: int | None = None,
            cpus_per_actor: float | None = None, gpus_per_actor: float = 0.0, device: str | None = None,
            backend: str | None = None, preserve_order: bool = False, piece_rows: int | None = None,
            address: str | None = None, **load_options: Any) -> Any:
    """A Ray Dataset of predictions (kept columns, then prediction columns), computed when it is consumed.

    data: input files, folders or globs (read as the local engine reads them, row numbers in errors counting
    rows in their file) or a ray.data.Dataset (each batch predicted with Predictor.predict). A bad row fails the
    job with the SchemaError the local engine raises; for rejects, counts and the drift report use
    predict_files (CLI --engine ray). Ray is initialised as connect(address) does unless it is already, and
    stays up for the Dataset to run.
    preserve_order: give rows in input order (Ray's execution_options.preserve_order; costs throughput). The
    other options are predict_files'.

    >>> ds = torchpredict.ray.predict("s3://bucket/in/*.parquet", "wine.tpk", keep=["id"])   # doctest: +SKIP
    >>> ds.write_parquet("s3://bucket/predictions/")                                        # doctest: +SKIP
    """
    ray = import_ray()
    connect(address)
    predictor = _load_here(bundle, batch_size, load_options)
    sizing = size_actors(ray.cluster_resources(), actors=actors, cpus_per_actor=cpus_per_actor,
                         gpus_per_actor=gpus_per_actor)
    options = _actor_options(batch_size, device, backend, sizing, load_options)
    payload = [ray.put(bundle_bytes(bundle))]
    common = _pool(ray, sizing)
    if isinstance(data, ray.data.Dataset):
        from torchpredict.ray.actors import TableActor

        check_columns(predictor, columns)
        mapped = data.map_batches(TableActor, fn_constructor_kwargs={
            "bundle": payload, "options": options, "keep": tuple(keep),
            "columns": None if columns is None else tuple(columns)}, batch_size=batch_size * 16, **common)
    else:
        from torchpredict.ray.actors import PieceActor
        from torchpredict.ray.reading import PieceSource, piece_rows_for

        plan = Plan.make(predictor, data, format, keep, columns, None, 1 << 62, DEFAULT_BATCH_ROWS,
                         DEFAULT_BLOCK_BYTES)
        source = PieceSource(plan, piece_rows_for(batch_size, piece_rows))
        mapped = ray.data.read_datasource(source, num_cpus=sizing.read_cpus).map_batches(
            PieceActor, fn_constructor_kwargs={"bundle": payload, "plan": plan, "options": options, "output": None},
            batch_size=1, **common)
    _raise_our_errors(mapped)
    if preserve_order:
        mapped.context.execution_options.preserve_order = True
    return mapped
