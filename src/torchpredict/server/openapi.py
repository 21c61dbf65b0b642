"""The server's OpenAPI 3.0 document (GET /openapi.json): every route, what it takes and every status it answers.

Built from the served models (their names and versions are the path parameters' enums), so that a contract
tester (schemathesis, in tests/server/test_contract.py) or a client generator sees this server as it is. Error
bodies are always `{"error": "..."}`; the Open Inference Protocol's binary extension (a JSON header, then raw
tensor bytes, with Inference-Header-Content-Length) is described as an application/octet-stream body.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torchpredict.version import __version__

__all__ = ["openapi_document"]

_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
_REASONS = {
    "400": "a bad request: the message names the input and what was wrong",
    "401": "no bearer token, or a wrong one",
    "404": "an unknown model or version",
    "405": "a method the route does not take",
    "408": "the body did not arrive within the read timeout (--read-timeout-s)",
    "413": "a body over the server's limit (--max-body-mb), inflated or not",
    "415": "a Content-Encoding the server does not read",
    "500": "the model failed on the rows (never the request's fault: logged with its traceback)",
    "503": "the model's queue is full (with Retry-After), or the server is stopping",
    "504": "past the request timeout",
}
_DATATYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32",
              "FP64", "BYTES"]
_TENSOR = {"type": "object", "required": ["name", "shape", "datatype"], "properties": {
    "name": {"type": "string"}, "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
    "datatype": {"type": "string", "enum": _DATATYPES}, "parameters": {"type": "object"},
    "data": {"type": "array", "items": {}}}}
_INFER_REQUEST = {"type": "object", "required": ["inputs"], "properties": {
    "id": {"type": "string"}, "parameters": {"type": "object"},
    "inputs": {"type": "array", "items": _TENSOR},
    "outputs": {"type": "array", "items": {"type": "object", "required": ["name"], "properties": {
        "name": {"type": "string"}, "parameters": {"type": "object"}}}}}}
_INFER_RESPONSE = {"type": "object", "required": ["model_name", "outputs"], "properties": {
    "model_name": {"type": "string"}, "model_version": {"type": "string"}, "id": {"type": "string"},
    "parameters": {"type": "object"}, "outputs": {"type": "array", "items": {"type": "object"}}}}
_ROW = {"type": "object", "additionalProperties": True}
_RECORDS_REQUEST = {"oneOf": [
    {"type": "array", "items": _ROW, "minItems": 1},
    {"type": "object", "required": ["rows"], "additionalProperties": False, "properties": {
        "rows": {"type": "array", "items": _ROW, "minItems": 1}, "rejects": {"type": "boolean"},
        "keep": {"type": "array", "items": {"type": "string"}}}}]}
_RECORDS_FORM = {"type": "object", "description": "image files, one row each, in a file field named after the "
                 "model's image column; their names come back in the column 'file'",
                 "properties": {"rejects": {"type": "string", "enum": ["true", "false"]}},
                 "additionalProperties": {"type": "string", "format": "binary"}}
_RECORDS_RESPONSE = {"type": "object", "required": ["model_name", "predictions"], "properties": {
    "model_name": {"type": "string"}, "model_version": {"type": "string"},
    "predictions": {"type": "array", "items": {"type": "object"}},
    "rejected": {"type": "array", "items": {"type": "object"}}}}


def openapi_document(models: Mapping[str, Sequence[str]], *, token: bool) -> dict[str, Any]:
    """The document for a server serving `models` (name -> versions); token: whether it asks for a bearer token
    (everywhere but the health routes)."""
    names = sorted(models)
    versions = sorted({v for vs in models.values() for v in vs})
    paths: dict[str, Any] = {
        "/v2/health/live": {"get": _get("liveness", _object({"live": {"type": "boolean"}}), public=True)},
        "/v2/health/ready": {"get": _get("readiness (503 while starting or stopping)",
                                         _object({"ready": {"type": "boolean"}}), public=True, also=("503",))},
        "/v2": {"get": _get("server metadata and extensions", _object({
            "name": {"type": "string"}, "version": {"type": "string"},
            "extensions": {"type": "array", "items": {"type": "string"}}}))},
        "/v2/repository/index": {"post": _operation("the served models", None, _json({
            "type": "array", "items": _object({"name": {"type": "string"}, "version": {"type": "string"},
                                               "state": {"type": "string"}})}), ("400", "408", "413", "415"))},
        "/metrics": {"get": _get("Prometheus metrics", None, text=True)},
        "/openapi.json": {"get": _get("this document", {"type": "object"})},
    }
    for prefix, extra in (("/v2/models/{name}", []), ("/v2/models/{name}/versions/{version}", ["version"])):
        parameters = [_path("name", names), *([_path("version", versions)] if extra else [])]
        paths[prefix] = {"get": _get("model metadata: inputs (the schema's columns) and outputs", _object({
            "name": {"type": "string"}, "versions": {"type": "array", "items": {"type": "string"}},
            "platform": {"type": "string"}, "inputs": {"type": "array", "items": {"type": "object"}},
            "outputs": {"type": "array", "items": {"type": "object"}}}), also=("404",)), "parameters": parameters}
        paths[f"{prefix}/ready"] = {"get": _get("model readiness", _object({"ready": {"type": "boolean"}}),
                                                also=("404", "503")), "parameters": parameters}
        infer_body = {"required": True, "content": {"application/json": {"schema": _INFER_REQUEST},
                                                    "application/octet-stream": {"schema": {"type": "string",
                                                                                            "format": "binary"}}}}
        infer = _operation("Open Inference Protocol inference: JSON tensors, or the binary extension", infer_body,
                           {"application/json": {"schema": _INFER_RESPONSE},
                            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
                           ("400", "404", "408", "413", "415", "500", "503", "504"))
        infer["parameters"] = [{"name": "Inference-Header-Content-Length", "in": "header", "required": False,
                                "schema": {"type": "integer", "minimum": 0},
                                "description": "binary extension: the length of the JSON header"}]
        paths[f"{prefix}/infer"] = {"post": infer, "parameters": parameters}
        records = _operation("rows as JSON objects (or a form of image files), predicted as Predictor.predict "
                             "predicts them",
                             {"required": True, "content": {"application/json": {"schema": _RECORDS_REQUEST},
                                                            "multipart/form-data": {"schema": _RECORDS_FORM}}},
                             _json(_RECORDS_RESPONSE), ("400", "404", "408", "413", "415", "500", "503", "504"))
        paths[f"{prefix}/records"] = {"post": records, "parameters": parameters}
        paths[f"{prefix}/predict"] = {"post": {**records, "summary": "the records endpoint, by another name"},
                                      "parameters": parameters}
    if token:
        for route, item in paths.items():
            for method, operation in item.items():
                if method in ("get", "post") and not route.startswith("/v2/health/"):
                    operation["responses"]["401"] = _error("401")
    document: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {"title": "torchpredict serve", "version": __version__,
                 "description": "The Open Inference Protocol V2 (REST) and a records endpoint."},
        "paths": paths,
    }
    if token:
        document["components"] = {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}}
        document["security"] = [{"bearer": []}]
        for route in ("/v2/health/live", "/v2/health/ready"):
            paths[route]["get"]["security"] = []
    return document


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": properties}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _path(name: str, values: list[str]) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string", "enum": values}}


def _error(status: str) -> dict[str, Any]:
    return {"description": _REASONS[status], "content": _json(_ERROR)}


def _get(summary: str, schema: dict[str, Any] | None, *, public: bool = False, text: bool = False,
         also: Sequence[str] = ()) -> dict[str, Any]:
    content = {"text/plain": {"schema": {"type": "string"}}} if text else _json(schema or {"type": "object"})
    operation = _operation(summary, None, content, also)
    if public:
        operation["security"] = []
    return operation


def _operation(summary: str, body: dict[str, Any] | None, content: dict[str, Any],
               errors: Sequence[str]) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "responses": {"200": {"description": "OK", "content": content}}}
    operation["responses"].update({status: _error(status) for status in (*errors, "405")})
    if body is not None:
        operation["requestBody"] = body
    return operation
