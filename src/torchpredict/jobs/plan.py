"""A file job's plan and what flows through it: the pieces read, the results written.

Shared by the pipeline (which makes them) and the sinks (which write them), so that neither imports the other's
internals; it knows the predictor only by the attributes it reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from torchpredict.errors import InputError
from torchpredict.io.formats import STDIO, detect_format, expand_inputs
from torchpredict.io.readers import Chunk
from torchpredict.messages import counted, quoted
from torchpredict.stats import RunStats

__all__ = ["Piece", "Plan", "Result", "check_columns"]

_PARSE_TYPES = {"float32": pa.float64(), "float64": pa.float64(), "int32": pa.int64(), "int64": pa.int64(),
                "bool": pa.bool_(), "string": pa.string(), "image": pa.string()}  # a CSV image column: paths


@dataclass(frozen=True)
class Plan:
    """What to read and how: the input files, parse types, kept and written columns, error policy."""

    sources: list[str]
    format: str | None
    keep: tuple[str, ...]
    columns: tuple[str, ...] | None
    on_error: str
    types: dict[str, pa.DataType]
    npy_names: list[str] | None
    part_rows: int
    batch_rows: int
    block_bytes: int
    on_cpu: bool  # the model runs on the CPU: it is the bottleneck, and the other stages yield to it

    @classmethod
    def make(cls, predictor: Any, input: Any, format: str | None, keep: Sequence[str],
             columns: Sequence[str] | None, rejects: Any, part_rows: int, batch_rows: int,
             block_bytes: int) -> Plan:
        for name, value in (("part_rows", part_rows), ("batch_rows", batch_rows), ("block_bytes", block_bytes)):
            if value < 1:
                raise InputError(f"{name} must be >= 1, got {value}")
        sources = expand_inputs(input)
        for source in sources:
            detect_format(source, format)
        if STDIO in sources and len(sources) > 1:
            raise InputError("stdin ('-') cannot be read together with other inputs")
        check_columns(predictor, columns)
        features = predictor.schema.features
        types = {c.name: _PARSE_TYPES[c.dtype] for c in features if not c.shape}
        types.update({c.name: pa.string() for c in predictor.schema.passthrough if c.dtype == "string"})
        names = [c.name for c in features] if all(not c.shape for c in features) else None
        images = [detect_format(source, format) == "images" for source in sources]
        if any(images):
            names, keep = _image_names(predictor, sources, images, keep)
            batch_rows = min(batch_rows, image_chunk_rows(predictor.preprocessor, predictor.batch_size))
        return cls(sources, format, tuple(dict.fromkeys(keep)), None if columns is None else tuple(columns),
                   "raise" if rejects is None else "reject", types, names, part_rows, batch_rows, block_bytes,
                   getattr(predictor.device, "type", str(predictor.device)) == "cpu")

    @property
    def many(self) -> bool:
        return len(self.sources) > 1


IMAGE_CHUNK_BYTES = 32 << 20  # decoded images per chunk read from a folder: 53 of 3 x 224 x 224 float32, 1,024 small


def image_chunk_rows(preprocessor: Any, batch_size: int) -> int:
    """Image files per chunk of a folder: about IMAGE_CHUNK_BYTES of decoded tensors (at most 1,024 files), in
    whole model batches (at least one), so that small images are decoded in chunks large enough to pay for a
    chunk's own cost, large ones in few, and no model batch waits on two chunks."""
    rows = min(1024, IMAGE_CHUNK_BYTES // max(1, preprocessor.image_row_bytes))
    return max(1, rows // batch_size) * batch_size


def _image_names(predictor: Any, sources: list[str], images: list[bool], keep: Sequence[str]
                 ) -> tuple[list[str], list[str]]:
    """A folder or glob of images fills the bundle's one image column and a path column, kept first."""
    features = predictor.schema.features
    wanted = [c.name for c in features if c.dtype == "image"]
    if not all(images):
        raise InputError(f"'{sources[images.index(True)]}' is a folder or glob of images; it cannot be read with "
                         "data files in one job")
    takes = ", ".join(f"{c.name!r} ({c.dtype})" for c in features)
    if not wanted:
        raise InputError(f"'{sources[0]}' is a folder or glob of images, and this bundle takes no images ({takes}); "
                         "predict a data file")
    if len(wanted) != 1 or len(features) != 1:
        raise InputError(f"a folder or glob of images fills one image column, and this bundle takes {takes}: "
                         "predict a table (CSV, Parquet) holding them, with image paths or bytes in its image column")
    path = "path" if wanted[0] != "path" else "file"
    return [path, wanted[0]], [path, *(k for k in keep if k != path)]


@dataclass
class Piece:
    """A chunk of one input file, within one part of the output."""

    source: str
    chunk: Chunk
    part: int
    ends_part: bool
    rows_done: int  # input rows up to the end of this piece, over all files
    rows_total: int | None  # estimate, for progress


@dataclass
class Result:
    """What one piece gives the sink: its output rows (None: no rows and no columns to give them), its counts
    and its rejected rows (with the columns they are written with)."""

    piece: Piece
    batch: pa.RecordBatch | None
    stats: RunStats
    rejected: pa.Table | None
    reject_names: list[str]



def check_columns(predictor: Any, columns: Sequence[str] | None) -> None:
    """The prediction columns asked for are ones the bundle writes (None: all)."""
    if columns is None:
        return
    unknown = [c for c in columns if c not in predictor.prediction_columns]
    if unknown:
        raise InputError(f"{counted('unknown prediction column', unknown)}; the bundle "
                         f"writes {quoted(predictor.prediction_columns)}")
