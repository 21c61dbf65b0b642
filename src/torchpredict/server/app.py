"""The HTTP front door: a raw ASGI app speaking the Open Inference Protocol V2 (REST), plus a records endpoint.

`create_app(models, ...)` serves bundles (paths, folders of bundles, or loaded Predictors) and returns an ASGI
app to run with any ASGI server or mount in another app. Every prediction goes through the model's Batcher,
which joins concurrent requests into model batches; this module only reads requests and writes answers:

    GET  /v2/health/live, /v2/health/ready             liveness, readiness (no token needed)
    GET  /v2                                           server metadata and extensions
    GET  /v2/models/{name}[/versions/{v}]              model metadata: inputs (schema columns), outputs
    GET  /v2/models/{name}[/versions/{v}]/ready        model readiness
    POST /v2/models/{name}[/versions/{v}]/infer        OIP inference: JSON or binary tensors
    POST /v2/models/{name}[/versions/{v}]/records      rows as JSON objects (also .../predict)
    POST /v2/repository/index                          the served models
    GET  /metrics                                      Prometheus metrics
    GET  /openapi.json                                 the OpenAPI 3.0 document of these routes (server.openapi)

Errors are JSON `{"error": "..."}`: 400 for a bad request (the torchpredict message, naming the input and what
was wrong), 401 without the bearer token, 404 for an unknown model, version or route, 405 for a wrong method,
408 for a body that does not arrive within the read timeout, 413 for a body over the limit, 503 (with
Retry-After) when the model's queue is full, 504 past the timeout.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import zipfile
import zlib
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa

from torchpredict.errors import (
    InputError,
    PredictionError,
    PreprocessingError,
    SchemaError,
    TorchPredictError,
)
from torchpredict.messages import first_line, one_line, quoted, shown
from torchpredict.predictor import REJECTS_HINT
from torchpredict.schema.schema import KEEP_HINT
from torchpredict.server import oip
from torchpredict.server.batcher import Batcher, Overloaded, Request
from torchpredict.server.metrics import Metrics
from torchpredict.server.openapi import openapi_document
from torchpredict.server.records import encode_records, parse_form, parse_records, with_images
from torchpredict.version import __version__

__all__ = ["App", "create_app", "find_bundles"]

logger = logging.getLogger("torchpredict.server")

MB = 1 << 20
HEADER_LENGTH = b"inference-header-content-length"
BAD_REQUEST = (oip.RequestError, SchemaError, PreprocessingError, PredictionError, InputError)
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class HTTPError(Exception):
    """An answer other than 200, with its JSON error message."""

    def __init__(self, status: int, message: str, headers: Sequence[tuple[bytes, bytes]] = (),
                 kind: str = "") -> None:
        super().__init__(message)
        self.status, self.message, self.headers, self.kind = status, message, list(headers), kind


@dataclass
class Served:
    """One model version: its predictor, its batcher and how the protocol sees it."""

    name: str
    version: str
    predictor: Any
    batcher: Batcher
    spec: oip.ModelSpec
    outputs_known: bool


def find_bundles(path: str | Path) -> list[Path]:
    """The bundle at path (a bundle folder or zipped bundle), or every bundle in the folder path, in name order."""
    path = Path(path)
    if _is_bundle(path):
        return [path]
    if not path.exists():
        raise InputError(f"bundle or folder {shown(str(path))} does not exist")
    if not path.is_dir():
        raise InputError(f"{shown(str(path))} is neither a bundle (a folder with manifest.json, or a .zip) nor a "
                         "folder of bundles")
    found = sorted(child for child in path.iterdir() if _is_bundle(child))
    if not found:
        raise InputError(f"folder {shown(str(path))} holds no bundle (a folder with manifest.json, or a zipped "
                         "bundle)")
    return found


def _is_bundle(path: Path) -> bool:
    return (path / "manifest.json").is_file() or (path.is_file() and zipfile.is_zipfile(path))


def create_app(models: Any, *, token: str | None = None, max_body_mb: float = 64, timeout_s: float = 30,
               read_timeout_s: float = 30, max_batch_size: int = 256, max_delay_ms: float = 0.0,
               max_queue_rows: int = 65536, device: str = "auto", trust_factory: Sequence[str] = (),
               trust_torch_loader: bool = False, backend: str | None = None, verify_backend: bool = True,
               threads: int | None = None) -> App:
    """An ASGI app serving models: a bundle path, a folder of bundles, a Predictor, or a list of these (or a
    mapping of names to them, to serve under other names than the bundles' own).

    token: a bearer token every request but the health checks must carry (`Authorization: Bearer ...`).
    max_body_mb: the largest request body (413 beyond). timeout_s: the longest a prediction may take, queue
    included (504 beyond). read_timeout_s: how long a request's body may take to arrive once its headers have
    (408 beyond; the headers' own deadline is the protocol's, server.protocol, under `serve`). max_batch_size,
    max_delay_ms, max_queue_rows: the batcher's (503 when the queue is full). device, trust_factory,
    trust_torch_loader, backend, verify_backend, threads: as for `torchpredict.load`, for the paths.
    """
    if max_body_mb <= 0 or timeout_s <= 0 or read_timeout_s <= 0:
        raise InputError(f"max_body_mb, timeout_s and read_timeout_s must be > 0, got {max_body_mb}, {timeout_s} "
                         f"and {read_timeout_s}")
    metrics = Metrics()
    served = []
    loading = {"device": device, "trust_factory": trust_factory, "trust_torch_loader": trust_torch_loader,
               "backend": backend, "verify_backend": verify_backend, "threads": threads}
    for name, predictor in _predictors(models, loading):
        version = str(getattr(predictor.manifest, "model_version", "1"))
        spec, known = _spec(name, version, predictor)
        batcher = Batcher(predictor, max_batch_size=max_batch_size, max_delay_ms=max_delay_ms,
                          max_queue_rows=max_queue_rows, observer=metrics.observer(name, version))
        served.append(Served(name, version, predictor, batcher, spec, known))
    return App(served, metrics, token=token, max_body=int(max_body_mb * MB), timeout_s=timeout_s,
               read_timeout_s=read_timeout_s)


def _predictors(models: Any, loading: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """(name, Predictor) of every model to serve, loading the paths with the options of `load` in loading."""
    from torchpredict.bundle.loading import load

    named: Iterable[tuple[str | None, Any]]
    if isinstance(models, Mapping):
        named = models.items()
    elif isinstance(models, str | Path) or not isinstance(models, Iterable):
        named = [(None, models)]
    else:
        named = [(None, m) for m in models]
    found: list[tuple[str, Any]] = []
    origins: dict[tuple[str, str], str] = {}
    for given, model in named:
        paths = find_bundles(model) if isinstance(model, str | Path) else [model]
        if given is not None and len(paths) > 1:
            raise InputError(f"name {shown(given)} is given to the folder {shown(str(model))} of {len(paths)} bundles;"
                             " name one bundle at a time")
        for item in paths:
            predictor = load(item, **loading) if isinstance(item, Path) else item
            name = given or str(getattr(predictor.manifest, "name", None) or "model")
            version = str(getattr(predictor.manifest, "model_version", "1"))
            origin = str(item) if isinstance(item, Path) else repr(item)
            if (name, version) in origins:
                raise InputError(f"{origins[name, version]} and {origin} are both model {shown(name)} version "
                                 f"{shown(version)}; serve one, or save one with another name or model_version")
            origins[name, version] = origin
            found.append((name, predictor))
    if not found:
        raise InputError("no model to serve")
    return found


def _spec(name: str, version: str, predictor: Any) -> tuple[oip.ModelSpec, bool]:
    """The model's protocol spec, its output datatypes read from a prediction of its first golden row (which
    warms the model up, through a batcher of its own: not counted in the metrics); without one, from the recorded
    golden predictions, else learned at the first answer."""
    columns = predictor.prediction_columns
    golden = getattr(predictor, "golden", None)
    schema = None
    if golden is not None and golden.inputs.num_rows:
        first = golden.inputs.slice(0, 1)
        warmer = Batcher(predictor)
        try:
            answer = warmer.predict_now(Request({n: first.column(n).to_pylist() for n in first.column_names}, 1))
            schema = answer.table.schema
        except Exception as exc:  # the warm-up is a courtesy: metadata falls back, requests still say what failed
            logger.warning("model %s: warm-up prediction failed: %s", name, first_line(exc, with_type=True))
            if golden.predictions is not None:
                schema = golden.predictions.schema
        finally:
            warmer.close()
    known = schema is not None and all(c in schema.names for c in columns)
    fields = [schema.field(c) if known else pa.field(c, pa.string()) for c in columns]  # type: ignore[union-attr]
    return oip.model_spec(name, version, predictor.schema.columns, predictor.heads, pa.schema(fields)), known


class App:
    """The ASGI application; see the module's docstring for its endpoints."""

    def __init__(self, served: Sequence[Served], metrics: Metrics, *, token: str | None, max_body: int,
                 timeout_s: float, read_timeout_s: float = 30) -> None:
        self.metrics = metrics
        self.token = None if not token else token.encode()
        self.max_body, self.timeout_s, self.read_timeout_s = max_body, timeout_s, read_timeout_s
        self.models: dict[str, dict[str, Served]] = {}
        for model in served:
            self.models.setdefault(model.name, {})[model.version] = model
        self.latest = {name: versions[max(versions, key=_version_key)] for name, versions in self.models.items()}
        self.slashed = {name for name in self.models if "/" in name}  # names the router must look for whole
        self.started = False
        self.closed = False
        self.server_metadata = orjson.dumps({"name": "torchpredict", "version": __version__,
                                             "extensions": list(oip.EXTENSIONS)})

    # -- lifecycle ------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start every model's batcher (done by the ASGI lifespan, or by the first request)."""
        if not self.started:
            for model in self.served():
                model.batcher.start()
            self.started = True

    def close(self, timeout: float | None = None) -> None:
        """Stop taking requests and close the batchers, answering the requests they hold."""
        self.closed = True
        if self.started:
            for model in self.served():
                model.batcher.close(timeout=timeout)

    def served(self) -> list[Served]:
        return [model for versions in self.models.values() for model in versions.values()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self.lifespan(receive, send)

    async def lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    self.start()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": first_line(exc, with_type=True)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await asyncio.to_thread(self.close, self.timeout_s)
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- HTTP -----------------------------------------------------------------------------------------

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        endpoint, model_name = "unknown", ""
        self.metrics.in_flight.inc()
        try:
            path = scope["path"]
            root = scope.get("root_path", "")
            if root and path.startswith(root):
                path = path[len(root):]
            parts = [p for p in path.split("/") if p]
            endpoint, allowed, target = _route(parts, self.slashed)
            if target and target[0] in self.models:
                model_name = target[0]
            if endpoint == "unknown":
                raise HTTPError(404, f"no route {shown(path)}; the API is under /v2 (see /v2 and "
                                     "/v2/models/{name})")
            method = scope["method"]
            if method not in allowed:
                raise HTTPError(405, f"{method} is not allowed on {shown(path)}; use {' or '.join(allowed)}",
                                [(b"allow", ", ".join(allowed).encode())])
            headers = scope["headers"]
            if self.token is not None and endpoint not in ("live", "ready"):
                self.check_token(headers)
            if not self.started and not self.closed:
                self.start()
            status, body, extra = await self.answer(endpoint, target, headers, receive)
        except HTTPError as exc:
            status, body, extra = exc.status, orjson.dumps({"error": exc.message}), exc.headers
            if status >= 500 or exc.kind:
                self.metrics.error(model_name, exc.kind or str(status))
        except Exception as exc:  # a bug, not the request's fault: logged with its traceback, said in one line
            logger.exception("internal error answering %s %s", scope.get("method"), scope.get("path"))
            message = f"internal error: {first_line(exc, with_type=True)}"
            status, body, extra = 500, orjson.dumps({"error": message}), []
            self.metrics.error(model_name, type(exc).__name__)
        finally:
            self.metrics.in_flight.dec()
        content_type = b"application/json"
        headers = list(extra)
        if not any(name == b"content-type" for name, _ in headers):
            headers.append((b"content-type", content_type))
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        self.metrics.request(endpoint, model_name, status, time.perf_counter() - started)

    def check_token(self, headers: Sequence[tuple[bytes, bytes]]) -> None:
        given = next((value for name, value in headers if name == b"authorization"), b"")
        scheme, _, credential = given.partition(b" ")
        assert self.token is not None
        if scheme.lower() != b"bearer" or not hmac.compare_digest(credential.strip(), self.token):
            why = "no bearer token" if not given else "a wrong bearer token"
            raise HTTPError(401, f"this server needs a token: the request has {why} (header Authorization: Bearer "
                                 "<token>)", [(b"www-authenticate", b'Bearer realm="torchpredict"')], "Unauthorized")

    async def answer(self, endpoint: str, target: list[str], headers: Sequence[tuple[bytes, bytes]],
                     receive: Receive) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        if endpoint == "live":
            return 200, b'{"live":true}', []
        if endpoint == "ready":
            ready = self.started and not self.closed
            return (200 if ready else 503), orjson.dumps({"ready": ready}), []
        if endpoint == "server_metadata":
            return 200, self.server_metadata, []
        if endpoint == "metrics":
            for model in self.served():
                self.metrics.queue_rows.labels(model.name, model.version).set(model.batcher.queued_rows)
            body, content_type = await asyncio.to_thread(self.metrics.exposition)
            return 200, body, [(b"content-type", content_type.encode())]
        if endpoint == "openapi":
            served = {name: list(by_version) for name, by_version in self.models.items()}
            return 200, orjson.dumps(openapi_document(served, token=self.token is not None)), []
        if endpoint == "repository":
            await self.body(headers, receive)
            index = [{"name": m.name, "version": m.version, "state": "READY"} for m in self.served()]
            return 200, orjson.dumps(index), []
        model = self.model(target)
        if endpoint == "model_metadata":
            versions = sorted(self.models[model.name], key=_version_key)
            return 200, orjson.dumps(oip.model_metadata(model.spec, versions)), []
        if endpoint == "model_ready":
            ready = self.started and not self.closed
            return (200 if ready else 503), orjson.dumps({"name": model.name, "version": model.version,
                                                          "ready": ready}), []
        try:
            model.batcher.check_room()
        except Overloaded as exc:
            raise _overloaded(model, exc) from None
        body = await self.body(headers, receive)
        if endpoint == "infer":
            return await self.infer(model, body, headers)
        return await self.records(model, body, headers)

    def model(self, target: list[str]) -> Served:
        name, version = target[0], (target[1] if len(target) > 1 else None)
        versions = self.models.get(name)
        if versions is None:
            raise HTTPError(404, f"unknown model {shown(name)}; this server has {quoted(sorted(self.models))}")
        if version is None:
            return self.latest[name]
        if version not in versions:
            raise HTTPError(404, f"model {shown(name)} has no version {shown(version)}; it has "
                                 f"{quoted(sorted(versions, key=_version_key))}")
        return versions[version]

    async def body(self, headers: Sequence[tuple[bytes, bytes]], receive: Receive) -> bytes:
        """The request body, within the size limit (413 beyond, before reading it when Content-Length says so)
        and the read timeout (408 beyond: a client trickling its body holds no more than that); gzip or deflate
        bodies (Content-Encoding) are decompressed within the same size limit."""
        length = next((value for name, value in headers if name == b"content-length"), None)
        if length is not None and length.isdigit() and int(length) > self.max_body:
            raise self.too_large(int(length))
        try:
            body = await asyncio.wait_for(self.read_body(receive), self.read_timeout_s)
        except asyncio.TimeoutError:  # TimeoutError from 3.11 on; its own class on 3.10
            raise HTTPError(408, f"the request body did not arrive within {self.read_timeout_s:g} s of its headers "
                                 "(the server's --read-timeout-s)", [(b"connection", b"close")],
                            "ReadTimeout") from None
        encoding = next((value for name, value in headers if name == b"content-encoding"), b"identity").lower()
        encoding = next((value for name, value in headers if name == b"content-encoding"), b"identity").lower()
        if encoding in (b"gzip", b"deflate"):
            body = self.decompressed(body, encoding)
        elif encoding not in (b"identity", b""):
            raise HTTPError(415, f"Content-Encoding {shown(encoding.decode(errors='replace'))} is not supported; "
                                 "send gzip, deflate or none", kind="UnsupportedEncoding")
        return body

    async def read_body(self, receive: Receive) -> bytes:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise HTTPError(400, "the client went away before sending the whole body", kind="Disconnected")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise self.too_large(size)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def decompressed(self, body: bytes, encoding: bytes) -> bytes:
        inflater = zlib.decompressobj(wbits=31 if encoding == b"gzip" else 15)
        try:
            out = inflater.decompress(body, self.max_body + 1)
        except zlib.error as exc:
            raise HTTPError(400, f"the {encoding.decode()} body cannot be decompressed: {first_line(exc)}",
                            kind="RequestError") from None
        if len(out) > self.max_body or inflater.unconsumed_tail:
            raise self.too_large(len(out))
        return out

    def too_large(self, size: int) -> HTTPError:
        return HTTPError(413, f"the request body ({size:,} bytes or more) is over this server's limit of "
                              f"{self.max_body / MB:g} MiB (--max-body-mb)", kind="BodyTooLarge")

    async def predict(self, model: Served, request: Request, timeout_s: float | None, endpoint: str) -> Any:
        timeout = self.timeout_s if timeout_s is None else min(timeout_s, self.timeout_s)
        expired: list[bool] = []
        try:  # a request that times out is cancelled: the batcher drops it if the model has not taken it yet
            future = model.batcher.submit(request)
            timer = asyncio.get_running_loop().call_later(timeout, lambda: expired.append(future.cancel()))
            try:
                return await future
            finally:
                timer.cancel()
        except asyncio.CancelledError:
            if not expired:  # the task itself was cancelled, not the prediction timed out
                raise
            raise HTTPError(504, f"the prediction took longer than {timeout:g} s (the server's --timeout-s "
                                 f"{self.timeout_s:g}, or the request's timeout parameter)", kind="Timeout") from None
        except Overloaded as exc:
            raise _overloaded(model, exc) from None
        except BAD_REQUEST as exc:
            raise HTTPError(400, _over_http(one_line(str(exc)), endpoint), kind=type(exc).__name__) from None
        except TorchPredictError as exc:  # the model, not the request: a one-line 500
            raise HTTPError(500, f"model {shown(model.name)} failed: {one_line(str(exc))}",
                            kind=type(exc).__name__) from None
        except Exception as exc:  # the model's own code raised on this request's rows (run alone: only its own)
            logger.exception("model %s failed on a request of %d rows", shown(model.name), request.rows)
            raise HTTPError(500, f"model {shown(model.name)} failed on this request's rows: "
                                 f"{first_line(exc, with_type=True)}", kind=type(exc).__name__) from None

    async def infer(self, model: Served, body: bytes,
                    headers: Sequence[tuple[bytes, bytes]]) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        header = next((value for name, value in headers if name == HEADER_LENGTH), None)
        try:
            request = oip.parse_request(body, None if header is None else header.decode("latin-1"))
            oip.check_outputs(model.spec, request)
            columns, rows = oip.columns_of(model.spec, request)
        except oip.RequestError as exc:
            raise HTTPError(400, one_line(str(exc)), kind="RequestError") from None
        answer = await self.predict(model, Request(columns, rows), request.timeout_s, "infer")
        if not model.outputs_known:
            self.learn_outputs(model, answer.table)
        try:
            payload, json_length = oip.encode_response(model.spec, request, answer.table)
        except oip.RequestError as exc:
            raise HTTPError(400, one_line(str(exc)), kind="RequestError") from None
        if json_length is None:
            return 200, payload, []
        return 200, payload, [(b"content-type", b"application/octet-stream"),
                              (b"inference-header-content-length", str(json_length).encode())]

    async def records(self, model: Served, body: bytes,
                      headers: Sequence[tuple[bytes, bytes]]) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        content_type = next((value for name, value in headers if name == b"content-type"), b"").decode("latin-1")
        images = [i.name for i in model.spec.inputs if i.dtype == "image"]
        try:
            if content_type.lower().startswith("multipart/form-data"):
                parsed = parse_form(body, content_type, images)
            else:
                parsed = with_images(parse_records(body), images)
        except oip.RequestError as exc:
            raise HTTPError(400, one_line(str(exc)), kind="RequestError") from None
        request = Request(parsed.columns, parsed.rows, rejects=parsed.rejects, keep=parsed.keep)
        answer = await self.predict(model, request, None, "records")
        return 200, encode_records(model.name, model.version, answer.table, answer.rejected), []

    def learn_outputs(self, model: Served, table: pa.Table) -> None:
        """Output datatypes for metadata from a first answer, for a model that had no golden row to tell them."""
        columns = model.predictor.prediction_columns
        if all(c in table.column_names for c in columns):
            outputs = pa.schema([table.schema.field(c) for c in columns])
            spec = oip.model_spec(model.name, model.version, model.predictor.schema.columns, model.predictor.heads,
                                  outputs)
            model.spec, model.outputs_known = spec, True


# The Python and CLI options a message suggests, as a request of each endpoint says them.
_HINTS = {
    "records": {KEEP_HINT: 'add "keep": [...] to the request to copy them to the output, or drop them',
                REJECTS_HINT: 'send "rejects": true to have such rows set aside'},
    "infer": {KEEP_HINT: "drop them (GET /v2/models/{name} lists the model's inputs)",
              REJECTS_HINT: 'send the rows to .../records with "rejects": true to have such rows set aside'},
}


def _overloaded(model: Served, exc: Overloaded) -> HTTPError:
    """A 503 the client may retry after a second (the queue drains in milliseconds)."""
    return HTTPError(503, f"model {shown(model.name)} is overloaded: {first_line(exc)}; retry later",
                     [(b"retry-after", b"1")], "Overloaded")


def _over_http(message: str, endpoint: str) -> str:
    """A torchpredict message with its Python/CLI hints in the words of the endpoint's requests."""
    for hint, words in _HINTS.get(endpoint, {}).items():
        message = message.replace(hint, words)
    return message


def _route(parts: list[str], names: Collection[str] = ()) -> tuple[str, tuple[str, ...], list[str]]:
    """(endpoint, allowed methods, [model name, version]) of a path's parts; endpoint "unknown" for no route.

    names: the served model names; one may hold "/" (a bundle's name is any text), so the model is the longest
    served name the parts after models/ start with, else their first part."""
    get, post = ("GET",), ("POST",)
    if parts == ["metrics"]:
        return "metrics", get, []
    if parts == ["openapi.json"]:
        return "openapi", get, []
    if not parts or parts[0] != "v2":
        return "unknown", get, []
    rest = parts[1:]
    if not rest:
        return "server_metadata", get, []
    if rest == ["health", "live"]:
        return "live", get, []
    if rest == ["health", "ready"]:
        return "ready", get, []
    if rest == ["repository", "index"]:
        return "repository", post, []
    if len(rest) < 2 or rest[0] != "models":
        return "unknown", get, []
    width = next((k for k in range(len(rest) - 1, 1, -1) if "/".join(rest[1:k + 1]) in names), 1)
    name = "/".join(rest[1:width + 1])
    target, tail = [name], rest[width + 1:]
    if len(tail) >= 2 and tail[0] == "versions":
        target, tail = [name, tail[1]], tail[2:]
    if not tail:
        return "model_metadata", get, target
    if tail == ["ready"]:
        return "model_ready", get, target
    if tail == ["infer"]:
        return "infer", post, target
    if tail in (["records"], ["predict"]):
        return "records", post, target
    return "unknown", get, []


def _version_key(version: str) -> tuple[int, int, str]:
    """Versions in order: names in text order, then numbers by value (the latest is the greatest)."""
    return (1, int(version), "") if version.isdigit() else (0, 0, version)
