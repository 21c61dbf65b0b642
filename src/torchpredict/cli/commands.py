"""The `torchpredict` command: predict, inspect, verify, pack, optimize, serve, demo.

The only place that turns flags and the environment into arguments, and the only place that maps
errors to exit codes: 0 ok, 2 bad usage or bad input (one readable line), 1 internal error.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from torchpredict.errors import InputError, TorchPredictError
from torchpredict.messages import first_line, one_line, shown
from torchpredict.version import __version__

__all__ = ["main"]

EXIT_OK, EXIT_INTERNAL, EXIT_BAD_INPUT = 0, 1, 2
BATCH_SIZE = 4096  # rows per forward pass for batch jobs: big enough for the CPU's matrix kernels


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return EXIT_BAD_INPUT
    try:
        code = args.run(args)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter shutdown
        return code
    except BrokenPipeError:
        return _closed_stdout()
    except TorchPredictError as exc:
        if args.debug:
            raise
        _say(one_line(f"error: {exc}"))
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        _say("interrupted")
        return 130
    except Exception as exc:
        if args.debug:
            raise
        _say(f"internal error: {first_line(exc, with_type=True)} (rerun with --debug for the traceback)")
        return EXIT_INTERNAL


def _closed_stdout() -> int:
    """The reader of our stdout went away (`| head`): it chose to stop reading, which is not an error. Exit 0
    quietly, with stdout pointed at /dev/null so that Python's flush at shutdown cannot complain (the
    recipe of Python's signal docs)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_OK


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _names(text: str) -> list[str]:
    """'a,b , c' -> ['a', 'b', 'c'] for comma-separated column lists."""
    return [part.strip() for part in text.split(",") if part.strip()]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="torchpredict", description="Predict with a trained PyTorch model, "
                                     "correctly: one bundle of model, fitted preprocessing, schema and outputs.")
    parser.add_argument("--version", action="version", version=f"torchpredict {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors "
                        "(also after the command)")
    common = argparse.ArgumentParser(add_help=False)  # --debug after the command too; SUPPRESS: an absent one
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,  # keeps the one before it
                        help="show tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_predict(sub, common)
    _add_inspect(sub, common)
    _add_verify(sub, common)
    _add_pack(sub, common)
    _add_optimize(sub, common)
    _add_serve(sub, common)
    _add_demo(sub, common)
    return parser


def _add_predict(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("predict", parents=[common], help="predict for files of rows (CSV, TSV, Parquet, JSONL, .npy)",
                       description="Predict for every row of INPUT and write the predictions, streaming in bounded "
                       "memory with reading, the model and writing overlapped.")
    p.add_argument("bundle", help="bundle folder or .zip")
    p.add_argument("input", nargs="+", help="input files, folders of files, globs ('data/*.csv') or '-' for "
                   "stdin; .gz/.zst/.bz2/.lz4 files are decompressed on the fly")
    p.add_argument("-o", "--output", default="-", help="output file; a folder (ending in '/') for parts committed "
                   "one by one; '-' or absent: stdout")
    p.add_argument("--format", help="input format (csv, tsv, parquet, jsonl, npy) when the extension does not say "
                   "it; also the format written to stdout")
    p.add_argument("--output-format", help="output format when the extension does not say it "
                   "(default: parquet for folders, --format or csv for stdout)")
    p.add_argument("--keep", type=_names, default=[], help="comma-separated input columns to copy to the output")
    p.add_argument("--columns", type=_names, default=None, help="comma-separated prediction columns to write "
                   "(default: all)")
    p.add_argument("--rejects", metavar="FILE", help="write rows that fail validation here, with their row number "
                   "and reason, and go on (default: stop at the first bad row)")
    p.add_argument("--report", metavar="FILE", help="write the run's counts and drift report as JSON")
    p.add_argument("--resume", action="store_true", help="with a folder output, skip the parts an interrupted run "
                   "committed")
    p.add_argument("--part-rows", type=int, default=None, help="input rows per part of a folder output "
                   "(default 1,000,000)")
    p.add_argument("--batch-size", type=int, default=None,
                   help=f"rows per forward pass (default {BATCH_SIZE:,}; for a model of images, as many as fit 8 MB "
                   "of input: 13 of 3x224x224)")
    p.add_argument("--threads", type=int, default=None, help="torch threads for the model (default: CPU cores "
                   "minus one, leaving one for reading and writing)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps (default auto)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    ray = p.add_argument_group("the Ray engine (--engine ray; needs pip install 'torchpredict[ray]')")
    ray.add_argument("--engine", choices=("local", "ray"), default="local", help="local: this process (default); "
                     "ray: a pool of Ray Data actors, writing a folder of parts (-o OUT_DIR) whose names sort in "
                     "input order")
    ray.add_argument("--ray-address", default=None, metavar="auto|HOST:PORT", help="the Ray cluster to join "
                     "(default: start a local Ray runtime on this machine's cores)")
    ray.add_argument("--actors", type=int, default=None, help="actors, each loading the bundle once (default: "
                     "one per GPU-per-actor share, else one per CPU left after reading)")
    ray.add_argument("--cpus-per-actor", type=float, default=None, help="CPUs each actor asks for (default: "
                     "what leaves the read tasks a CPU, at most 1)")
    ray.add_argument("--gpus-per-actor", type=float, default=0.0, help="GPUs each actor asks for (default 0; "
                     "the actors then predict on cuda)")
    _add_backend(p)
    _add_trust(p)
    p.set_defaults(run=_run_predict)


def _add_inspect(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("inspect", parents=[common], help="describe a bundle (reads JSON only, never weights)",
                       description="Describe a bundle from its JSON files only (torch is not imported, no weights "
                       "are read): the model, every input column with its training range or categories, the "
                       "preprocessing steps with their learned state, the outputs with their labels or target "
                       "scaling, and the golden examples.")
    p.add_argument("bundle", help="bundle folder or .zip")
    p.add_argument("--json", action="store_true", help="print the manifest, schema and preprocessing as one JSON "
                   "object")
    p.set_defaults(run=_run_inspect)


def _add_verify(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("verify", parents=[common], help="re-run the bundle's golden examples on this machine",
                       description="Load the bundle on the device and re-run the golden examples saved in it, "
                       "printing the largest deviation from the outputs recorded at save time; exit 2 when they "
                       "do not reproduce.")
    p.add_argument("bundle", help="bundle folder or .zip")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps (default auto)")
    _add_backend(p)
    _add_trust(p)
    p.set_defaults(run=_run_verify)


def _add_backend(p: argparse.ArgumentParser) -> None:
    from torchpredict.inference.backends import BACKENDS  # no torch

    p.add_argument("--backend", choices=("auto", *BACKENDS), default=None, help="what runs the model: eager "
                   "PyTorch, ONNX Runtime, torch.compile, int8 (approximate), channels_last (convolutions), or auto "
                   "(the fastest of those that reproduce eager on the golden rows); default: the choice "
                   "`torchpredict optimize` stored, else eager")
    p.add_argument("--no-verify", dest="verify_backend", action="store_false", help="run an explicit --backend "
                   "without checking it against eager PyTorch on the golden rows")
    p.add_argument("--atol", type=float, default=None, help="tolerance a backend is held to against eager: "
                   "absolute (default: the bundle's)")
    p.add_argument("--rtol", type=float, default=None, help="... and relative (default: the bundle's)")


def _backend_options(args: argparse.Namespace) -> dict[str, Any]:
    """load()'s backend arguments from the flags, checked before the model loads."""
    for flag, value in (("--atol", args.atol), ("--rtol", args.rtol)):
        if value is not None and not value >= 0:
            raise InputError(f"{flag} must be >= 0, got {value:g}")
    if args.backend == "auto" and not args.verify_backend:
        raise InputError("--no-verify goes with an explicit --backend: auto chooses among verified backends only")
    if not args.verify_backend and args.backend in (None, "eager"):
        raise InputError("--no-verify needs a --backend other than eager and auto")
    return {"backend": args.backend, "verify_backend": args.verify_backend, "atol": args.atol, "rtol": args.rtol}


def _say_backend(predictor: Any) -> None:
    if predictor.backend_report is not None:
        _say(predictor.backend_report.describe())


def _add_trust(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trust-factory", metavar="MODULE", type=_names, action="extend", default=[],
                   help="a module you vouch for (repeatable or comma-separated; 'mypkg' covers mypkg.nets): a "
                   "weights bundle's factory from it may be imported and run")
    p.add_argument("--trust-torch-loader", action="store_true", help="let torch.export.load build a model.pt2 "
                   "torchpredict's reader does not; it can run code from a crafted archive: trusted bundles only")


def _add_pack(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("pack", parents=[common], help="make a bundle from a checkpoint trained without torchpredict",
                       description="Import a checkpoint (state_dict + --factory, TorchScript, or a full-model "
                       "pickle with --trust-pickle) and fit its preprocessing on the training data.")
    p.add_argument("checkpoint", help=".pt/.pth/.safetensors state_dict, TorchScript file, or model pickle")
    p.add_argument("-o", "--output", required=True, help="bundle folder (or .zip) to write")
    p.add_argument("--train", required=True, help="the training data file the model was trained on")
    p.add_argument("--target", type=_names, default=[], help="target column(s) in --train")
    p.add_argument("--task", default=None, help="regression | binary | multiclass | multilabel | raw (default: "
                   "inferred from the target and the model's output width, and said)")
    p.add_argument("--factory", help="'package.module:function' building the model (the current folder is searched "
                   "first, as by python -m) or 'file.py:function' (only the file's imports, definitions and "
                   "constants run, as for --source)")
    p.add_argument("--factory-kwargs", default=None, help="JSON object of factory arguments")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow unpickling a full-model checkpoint: runs code from the file; trusted files only")
    p.add_argument("--source", help="training script defining classes pickled from __main__: only its imports, "
                   "class/def statements and constant assignments (literals, no calls) run; every other top-level "
                   "statement (training, saving, if __name__ == '__main__') is skipped")
    for step, text in (("standardize", "standardize with the training mean/std ('*' = all numeric)"),
                       ("minmax", "scale to [0, 1] with the training min/max"),
                       ("impute", "fill missing values with the training mean"),
                       ("one-hot", "one-hot encode (unknown categories -> all zeros)")):
        p.add_argument(f"--{step}", type=_names, default=[], help=f"comma-separated columns to {text}")
    p.add_argument("--keep", type=_names, default=[], help="passthrough columns (ids) copied to every output")
    p.add_argument("--scale-target", action="store_true", help="the regression target was standardized")
    p.add_argument("--labels", type=_names, default=None, help="class labels in the model's output order")
    p.add_argument("--name", help="bundle name (default: the output file name)")
    p.add_argument("--storage", default="auto", choices=["auto", "export", "weights"], help="auto (torch.export, "
                   "falling back to weights + factory), export, or weights (default auto)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle (only once the new one "
                   "passed its check)")
    p.add_argument("--no-check", dest="check", action="store_false", help="do not predict the training rows to "
                   "check the bundle (label order, target and input scaling): pack it even if it looks wrong")
    p.set_defaults(run=_run_pack)


def _add_optimize(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("optimize", parents=[common], help="store the model as ONNX in the bundle, with the backend "
                       "that runs it fastest here", description="Export the bundle's model to ONNX (model.onnx, "
                       "kept only if ONNX Runtime reproduces eager PyTorch on the golden rows), time every backend "
                       "that verifies against eager on this device, and store the graph and the choice in the "
                       "bundle: later loads run the stored choice (verified again) without a flag.")
    p.add_argument("bundle", help="bundle folder or .zip")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("-o", "--output", help="write the optimized bundle here (a folder, or a path ending in .zip)")
    where.add_argument("--in-place", action="store_true", help="rewrite the bundle itself")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    p.add_argument("--device", default="cpu", help="the device to choose for: cpu | cuda | cuda:N (default cpu)")
    p.add_argument("--backends", type=_names, default=None, help="backends to try besides eager, comma-separated "
                   "(default onnxruntime,int8,channels_last; compile only when named)")
    p.add_argument("--rows", type=int, default=None, help="batch size to time (default 1,024)")
    p.add_argument("--atol", type=float, default=None, help="absolute tolerance against eager (default: the bundle's)")
    p.add_argument("--rtol", type=float, default=None, help="relative tolerance against eager (default: the bundle's)")
    _add_trust(p)
    p.set_defaults(run=_run_optimize)


def _add_serve(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("serve", parents=[common], help="serve bundles over HTTP (Open Inference Protocol V2, as "
                       "KServe and Triton speak it, and a records endpoint)",
                       description="Serve a bundle, or every bundle in a folder under its name and model_version, "
                       "over HTTP: the Open Inference Protocol V2 REST API (tritonclient and KServe clients work "
                       "as they are) and POST /v2/models/NAME/records for rows as JSON objects, with concurrent "
                       "requests batched together and Prometheus metrics at /metrics. SIGTERM finishes the "
                       "requests in flight and exits 0. Needs pip install 'torchpredict[server]'.")
    p.add_argument("bundle", help="bundle folder or .zip, or a folder of bundles")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1, this machine "
                   "only; 0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--workers", type=int, default=1, help="processes, each loading the bundles (default 1)")
    p.add_argument("--max-batch-size", type=int, default=256, help="most rows per model batch (default 256)")
    p.add_argument("--max-delay-ms", type=float, default=0.0, help="how long a batch may wait for more requests "
                   "(default 0: take whatever is queued when the model is free)")
    p.add_argument("--max-queue-rows", type=int, default=65536, help="rows queued per model before requests are "
                   "refused with 503 (default 65536)")
    p.add_argument("--max-body-mb", type=float, default=64, help="largest request body in MiB; 413 beyond "
                   "(default 64)")
    p.add_argument("--timeout-s", type=float, default=30, help="longest a prediction may take, queue included; 504 "
                   "beyond (default 30)")
    p.add_argument("--read-timeout-s", type=float, default=30, help="longest a client may take to send a request's "
                   "headers, and then its body; 408 and the connection closed beyond (default 30)")
    p.add_argument("--token", default=None, help="bearer token every request but the health checks must carry "
                   "(default: the TORCHPREDICT_TOKEN environment variable, else none)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps (default auto)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per worker (default: the cores this "
                   "process may use, shared among the workers, less one for HTTP; at least 1)")
    p.add_argument("--quiet", action="store_true", help="no access log, warnings and errors only")
    _add_backend(p)
    _add_trust(p)
    p.set_defaults(run=_run_serve)


def _add_demo(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("demo", parents=[common], help="train a small model on scikit-learn data (wine, or digits "
                       "as PNG files), save it as a bundle and predict new data",
                       description="wine (the default): train a small MLP on scikit-learn's wine data with "
                       "standardization fitted at training time, save OUTPUT/wine.tpk (with 'id' as a passthrough "
                       "column), write 40 held-out rows to OUTPUT/new_wines.csv, predict them into "
                       "OUTPUT/predictions.csv and print the accuracy and the command that does the same from the "
                       "shell. digits: write scikit-learn's digits as PNG files under OUTPUT/train and OUTPUT/new, "
                       "train a small CNN with its image steps (grayscale, resize, rescale, normalise) fitted at "
                       "training time, save OUTPUT/digits.tpk, predict the folder OUTPUT/new into "
                       "OUTPUT/predictions.csv and print the accuracy.")
    p.add_argument("which", nargs="?", choices=["wine", "digits"], default="wine",
                   help="which demo (default wine)")
    p.add_argument("--output", default=None, help="folder for the bundle and files (default demo-output, or "
                   "demo-digits for digits)")
    p.set_defaults(run=_run_demo)


def _at_least_one(flag: str, value: int | None) -> None:
    """A count flag that must be positive, refused before the bundle loads."""
    if value is not None and value < 1:
        raise InputError(f"{flag} must be >= 1, got {value}")


def _known_format(flag: str, value: str | None) -> None:
    from torchpredict.io.formats import FORMATS, INPUT_FORMATS

    known = INPUT_FORMATS if flag == "--format" else FORMATS
    if value is not None and value not in known:
        raise InputError(f"{flag} must be one of {', '.join(known)}, got {shown(value)}")


def _check_device(value: str) -> None:
    """The --device syntax and hardware, checked before the model loads (resolve_device probes only)."""
    from torchpredict.device import check_device

    check_device(value)


def _check_predict(args: argparse.Namespace) -> None:
    """Every predict flag a user can get wrong, refused in one line before the (slow) model load."""
    for flag, value in (("--batch-size", args.batch_size), ("--part-rows", args.part_rows),
                        ("--threads", args.threads)):
        _at_least_one(flag, value)
    _known_format("--format", args.format)
    _known_format("--output-format", args.output_format)
    if args.columns is not None and not args.columns:
        raise InputError("--columns must name at least one prediction column")
    if args.engine == "ray":
        _check_ray_predict(args)
    elif args.resume and not (args.output.endswith(("/", os.sep)) or Path(args.output).is_dir()):  # as open_sink
        raise InputError("--resume needs a folder output (-o out/), whose parts are committed one by one")
    else:
        for flag, value in (("--ray-address", args.ray_address), ("--actors", args.actors),
                            ("--cpus-per-actor", args.cpus_per_actor), ("--gpus-per-actor", args.gpus_per_actor)):
            if value:
                raise InputError(f"{flag} is for the Ray engine: add --engine ray")
    _check_device(args.device)


def _check_ray_predict(args: argparse.Namespace) -> None:
    if args.output == "-":
        raise InputError("--engine ray writes a folder of parts: pass -o OUT_DIR")
    for flag, value, why in (("--resume", args.resume, "a failed Ray job leaves no parts to resume from"),
                             ("--part-rows", args.part_rows, "its parts are one per piece of each input file"),
                             ("--threads", args.threads, "each actor's threads follow --cpus-per-actor")):
        if value:
            raise InputError(f"{flag} is for the local engine: {why}")


def _json_object(text: str) -> dict:
    """--factory-kwargs: a JSON object, or one line saying what it is instead."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"--factory-kwargs must be a JSON object: {first_line(exc)}") from None
    if not isinstance(value, dict):
        raise InputError(f"--factory-kwargs must be a JSON object, got {shown(text)}")
    return value


def _run_predict(args: argparse.Namespace) -> int:
    from torchpredict.bundle.loading import load
    from torchpredict.device import cpu_cores, reuse_freed_memory
    from torchpredict.jobs.pipeline import predict_file

    _check_predict(args)
    backend = _backend_options(args)
    if args.engine == "ray":
        return _run_ray_predict(args, backend)
    reuse_freed_memory()  # this process is the command's own
    with _quiet_torch(args.bundle, args.device, args.backend):
        predictor = load(args.bundle, device=args.device, batch_size=args.batch_size,
                         trust_factory=args.trust_factory, trust_torch_loader=args.trust_torch_loader,
                         threads=args.threads or max(1, cpu_cores() - 1), **backend)  # the job's threads
    if args.batch_size is None:
        from torchpredict.predictor import default_batch_size

        predictor.batch_size = default_batch_size(predictor.preprocessor, BATCH_SIZE)
    if not args.quiet:
        _say_backend(predictor)
    gc.collect()
    gc.freeze()  # the model and the libraries are permanent: the collector's full passes leave them alone
    options = {"part_rows": args.part_rows} if args.part_rows is not None else {}
    started = time.perf_counter()
    with _progress_bar(quiet=args.quiet) as progress, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # drift is reported in the summary
        stats = predict_file(predictor, _inputs(args), args.output, format=args.format,
                             output_format=args.output_format, keep=args.keep, columns=args.columns,
                             rejects=args.rejects, report=args.report, resume=args.resume, threads=args.threads,
                             progress=progress, **options)
    if not args.quiet:
        for line in _summary(stats, time.perf_counter() - started, args):
            _say(line)
    return EXIT_OK


def _inputs(args: argparse.Namespace) -> str | list[str]:
    return args.input[0] if len(args.input) == 1 else args.input


def _run_ray_predict(args: argparse.Namespace, backend: dict[str, Any]) -> int:
    """--engine ray: the job on a Ray cluster (torchpredict.ray.engine.predict_files); Ray draws the progress."""
    from torchpredict.ray.engine import import_ray, predict_files

    import_ray()
    if args.quiet:
        from ray.data import DataContext

        DataContext.get_current().enable_progress_bars = False
    with _quiet_torch(args.bundle, "cpu", backend["backend"]), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # drift is reported in the summary
        run = predict_files(_inputs(args), args.bundle, args.output, format=args.format,
                            output_format=args.output_format, keep=args.keep, columns=args.columns,
                            rejects=args.rejects, report=args.report, batch_size=args.batch_size or BATCH_SIZE,
                            actors=args.actors, cpus_per_actor=args.cpus_per_actor,
                            gpus_per_actor=args.gpus_per_actor, device=None if args.device == "auto" else args.device,
                            address=args.ray_address, trust_factory=args.trust_factory,
                            trust_torch_loader=args.trust_torch_loader, **backend)
    if not args.quiet:
        lines = _summary(run.stats, run.seconds, args)
        lines[0] += f" ({len(run.parts):,} part(s))"
        lines.insert(1, f"ray: {run.sizing.describe()}; start-up {run.startup_seconds:.2f} s")
        for line in lines:
            _say(line)
    return EXIT_OK


@contextlib.contextmanager
def _quiet_torch(bundle: str | None = None, device: str = "auto", backend: str | None = None) -> Iterator[None]:
    """Torch's warnings and log lines off while a bundle loads: a bad bundle is one error line, not the
    traceback torch logs on its way to raising (levels restored afterwards; importing torch sets them). A
    bundle its stored ONNX graph runs without torch (see bundle.loading.needs_torch) does not import it."""
    if bundle is None or _needs_torch(bundle, device, backend):
        import torch  # noqa: F401  # its import configures the torch loggers this silences

    names = ["torch", *(n for n in logging.root.manager.loggerDict if n.startswith("torch."))]
    loggers = [logging.getLogger(n) for n in names]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.CRITICAL + 1)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


def _needs_torch(bundle: str, device: str, backend: str | None) -> bool:
    from torchpredict.bundle.loading import needs_torch
    from torchpredict.bundle.manifest import read_manifest

    try:
        manifest = read_manifest(bundle)
    except TorchPredictError:
        return True  # loading says what is wrong with it
    return needs_torch(manifest, device, backend) is not None


@contextlib.contextmanager
def _progress_bar(*, quiet: bool) -> Iterator[Callable[[int, int | None], None] | None]:
    """A progress callback drawing rows, rows/s and ETA on a terminal; None when quiet or not a tty."""
    if quiet or not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm

    with tqdm(total=None, unit=" rows", unit_scale=True, file=sys.stderr, dynamic_ncols=True) as bar:

        def update(done: int, total: int | None) -> None:
            if total is not None and total != bar.total:
                bar.total = max(total, done)
            bar.update(done - bar.n)

        yield update


def _summary(stats: Any, seconds: float, args: argparse.Namespace) -> list[str]:
    """'predicted 998 of 1,000 rows (2 rejected -> bad.csv) in 1.20 s (833 rows/s) -> out.csv', + drift."""
    where = "stdout" if args.output == "-" else args.output
    rate = f"{stats.rows_in / max(seconds, 1e-9):,.0f} rows/s"
    if args.rejects is not None:
        line = (f"predicted {stats.rows_predicted:,} of {stats.rows_in:,} rows ({stats.rows_rejected:,} rejected "
                f"-> {args.rejects}) in {seconds:.2f} s ({rate}) -> {where}")
    else:
        line = f"predicted {stats.rows_predicted:,} rows in {seconds:.2f} s ({rate}) -> {where}"
    drift, text = stats.drift.summary(), stats.text.summary() if stats.text else ""
    return [line] + ([f"drift: {drift}"] if drift else []) + ([f"text: {text}"] if text else [])


def _run_inspect(args: argparse.Namespace) -> int:
    from torchpredict.bundle.inspection import describe
    from torchpredict.bundle.manifest import read_json, read_manifest

    manifest = read_manifest(args.bundle)
    schema = read_json(args.bundle, "schema.json")
    preprocessing = read_json(args.bundle, "preprocessing.json")
    if args.json:
        print(json.dumps({"manifest": manifest.to_dict(), "schema": schema, "preprocessing": preprocessing},
                         indent=2))
        return EXIT_OK
    print(describe(manifest, schema, preprocessing))
    return EXIT_OK


def _run_verify(args: argparse.Namespace) -> int:
    from torchpredict.bundle.loading import load
    from torchpredict.errors import BundleError

    _check_device(args.device)
    backend = _backend_options(args)
    with _quiet_torch(args.bundle, args.device, args.backend):
        predictor = load(args.bundle, device=args.device, trust_factory=args.trust_factory,
                         trust_torch_loader=args.trust_torch_loader, **backend)
    _say_backend(predictor)
    report = predictor.verify()
    if not report.passed:
        raise BundleError(f"bundle '{args.bundle}' on {predictor.device}: {report.describe()}")
    print(f"bundle '{args.bundle}' on {predictor.device}: {report.describe()}")
    return EXIT_OK


def _run_pack(args: argparse.Namespace) -> int:
    from torchpredict.packing.packer import pack

    factory_kwargs = None if args.factory_kwargs is None else _json_object(args.factory_kwargs)
    target = args.target[0] if len(args.target) == 1 else args.target
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"bundle '.*' stores weights")  # printed below instead
        packed = pack(args.checkpoint, args.output, train=args.train, target=target, task=args.task,
                      factory=args.factory, factory_kwargs=factory_kwargs, trust_pickle=args.trust_pickle,
                      source=args.source, standardize=args.standardize, minmax=args.minmax, impute=args.impute,
                      one_hot=args.one_hot, passthrough=args.keep, scale_target=args.scale_target,
                      labels=args.labels, name=args.name, storage=args.storage, overwrite=args.overwrite,
                      check=args.check)
    print(f"wrote bundle '{packed}'{_trust_needed(packed.path)}")
    for line in packed.describe():  # the task when inferred, then the fit on the training rows
        print(line)
    return EXIT_OK


def _trust_needed(path: Path) -> str:
    """What loading a weights bundle will need, said when it is written."""
    from torchpredict.bundle.manifest import read_manifest
    from torchpredict.model.factories import trusted_package

    factory = read_manifest(path).model.get("factory")
    if not isinstance(factory, str):
        return ""
    return f" (weights + factory {factory!r}: load it with --trust-factory {trusted_package(factory)})"


def _run_serve(args: argparse.Namespace) -> int:
    import importlib.util

    missing = [m for m in ("uvicorn", "orjson", "prometheus_client") if importlib.util.find_spec(m) is None]
    if missing:
        raise InputError(f"serving needs {', '.join(missing)}: pip install 'torchpredict[server]'")
    from torchpredict.server.app import find_bundles
    from torchpredict.server.run import check_options, serve

    check_options(workers=args.workers, port=args.port, max_batch_size=args.max_batch_size,
                  max_delay_ms=args.max_delay_ms, max_body_mb=args.max_body_mb, timeout_s=args.timeout_s,
                  max_queue_rows=args.max_queue_rows, threads=args.threads, read_timeout_s=args.read_timeout_s)
    _check_device(args.device)
    backend = _backend_options(args)
    backend.pop("atol"), backend.pop("rtol")
    if args.atol is not None or args.rtol is not None:
        raise InputError("serve holds backends to each bundle's own tolerance: --atol/--rtol are for predict, "
                         "verify and optimize")
    find_bundles(args.bundle)
    token = args.token if args.token is not None else os.environ.get("TORCHPREDICT_TOKEN") or None
    serve(args.bundle, host=args.host, port=args.port, workers=args.workers, max_batch_size=args.max_batch_size,
          max_delay_ms=args.max_delay_ms, device=args.device, token=token, max_body_mb=args.max_body_mb,
          timeout_s=args.timeout_s, read_timeout_s=args.read_timeout_s, max_queue_rows=args.max_queue_rows,
          trust_factory=args.trust_factory,
          trust_torch_loader=args.trust_torch_loader, quiet=args.quiet, threads=args.threads, **backend)
    return EXIT_OK


def _run_optimize(args: argparse.Namespace) -> int:
    from torchpredict.bundle.backends import AUTO_TRIES, BACKENDS

    backends = AUTO_TRIES if args.backends is None else tuple(args.backends)
    unknown = [b for b in backends if b not in BACKENDS or b == "eager"]
    if unknown or not backends:
        raise InputError(f"--backends must name some of {', '.join(b for b in BACKENDS if b != 'eager')}, got "
                         f"{shown(','.join(backends))}")
    _at_least_one("--rows", args.rows)
    _check_device(args.device)
    from torchpredict.bundle.optimizing import optimize

    with _quiet_torch():
        done = optimize(args.bundle, args.output, in_place=args.in_place, device=args.device, backends=backends,
                        rows=args.rows, atol=args.atol, rtol=args.rtol, overwrite=args.overwrite,
                        trust_factory=args.trust_factory, trust_torch_loader=args.trust_torch_loader)
    for line in done.describe():
        print(line)
    return EXIT_OK


def _run_demo(args: argparse.Namespace) -> int:
    if args.which == "digits":
        from torchpredict.cli.digits_demo import run_digits_demo

        run_digits_demo(Path(args.output or "demo-digits"))
        return EXIT_OK
    from torchpredict.cli.demo import run_demo

    run_demo(Path(args.output or "demo-output"))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
