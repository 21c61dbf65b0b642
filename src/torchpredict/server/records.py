"""The records endpoint's codec: POST /v2/models/{name}/records (or /predict) with rows as JSON objects.

Request: `{"rows": [{"col": value, ...}, ...], "rejects": false, "keep": ["id"]}`, or the rows alone as a JSON list.
Response: `{"model_name", "model_version", "predictions": [{...}, ...], "rejected": [{"row", "reason"}, ...]}`:
the rows go through the same validation as `Predictor.predict` and `torchpredict predict`, with the same
messages; with `"rejects": true` bad rows are set aside (their row counted from 0 in the request) instead of
failing the request. Pure functions: no HTTP, no model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from torchpredict.messages import described, first_line, shown
from torchpredict.server.oip import RequestError

__all__ = ["RecordsRequest", "encode_records", "parse_records"]


@dataclass(frozen=True)
class RecordsRequest:
    """The rows as columns (names in the order they first appear; a row without a column holds null there)."""

    columns: dict[str, list[Any]]
    rows: int
    rejects: bool
    keep: tuple[str, ...]


def parse_records(body: bytes) -> RecordsRequest:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestError(f"the request is not valid JSON: {first_line(exc)}") from None
    if isinstance(document, list):
        document = {"rows": document}
    if not isinstance(document, dict):
        raise RequestError(f'the request must be {{"rows": [...]}} or a JSON list of rows, got {described(document)}')
    unknown = sorted(set(document) - {"rows", "rejects", "keep"})
    if unknown:
        raise RequestError(f"unknown field(s) {', '.join(map(shown, unknown))}; a records request has 'rows', "
                           "'rejects' and 'keep'")
    rows = document.get("rows")
    if not isinstance(rows, list):
        raise RequestError(f"'rows' must be a list of objects (one per row), got {described(rows)}")
    if not rows:
        raise RequestError("'rows' holds no rows")
    bad = next((i for i, row in enumerate(rows) if not isinstance(row, dict)), None)
    if bad is not None:
        raise RequestError(f"rows[{bad}] must be an object of column values, got {described(rows[bad])}")
    rejects = document.get("rejects", False)
    if not isinstance(rejects, bool):
        raise RequestError(f"'rejects' must be true or false, got {described(rejects)}")
    keep = document.get("keep", [])
    if not isinstance(keep, list) or not all(isinstance(k, str) for k in keep):
        raise RequestError(f"'keep' must be a list of column names, got {described(keep)}")
    names = list(dict.fromkeys(name for row in rows for name in row))
    columns = {name: [row.get(name) for row in rows] for name in names}
    return RecordsRequest(columns, len(rows), rejects, tuple(keep))


def encode_records(model_name: str, model_version: str, table: pa.Table, rejected: pa.Table | None) -> bytes:
    """The response body: one object per predicted row (kept columns, then predictions), and the rejected rows."""
    names = table.schema.names  # the same list as table.column_names, at a sixth of its cost
    columns = [_values(table.column(name)) for name in names]
    predictions = [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]
    refused = []
    if rejected is not None and rejected.num_rows:
        refused = [{"row": row, "reason": reason} for row, reason in
                   zip(rejected.column("row").to_pylist(), rejected.column("reason").to_pylist(), strict=True)]
    document = {"model_name": model_name, "model_version": model_version, "predictions": predictions,
                "rejected": refused}
    return orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)


def _values(column: pa.ChunkedArray) -> Any:
    """A column's values as JSON writes them; float32 ones as numpy scalars, so that 0.93 stays 0.93."""
    if not column.null_count and (pa.types.is_floating(column.type) or pa.types.is_integer(column.type)):
        return column.to_numpy()
    if pa.types.is_list(column.type) and pa.types.is_float32(column.type.value_type):
        return [None if row is None else np.asarray(row, np.float32) for row in column.to_pylist()]
    return column.to_pylist()
