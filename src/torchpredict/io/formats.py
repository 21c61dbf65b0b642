"""The file formats torchpredict reads and writes, and how a path or a stream says which one it is.

Formats: CSV, TSV, Parquet, JSONL and NumPy .npy, and "images": a folder (searched recursively) or a glob of
image files, read as one row per file; gzip, zstd, bz2 and lz4 compressed inputs (recognised by
their first bytes, see readers.py) and text outputs (by extension); '-' for stdin and stdout. Arrow is the
one columnar format inside torchpredict: readers.py yields chunks of rows, writers.py takes record batches.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path

from torchpredict.errors import InputError

__all__ = ["CODECS", "FORMATS", "IMAGE_SUFFIXES", "INPUT_FORMATS", "STDIO", "SUFFIXES", "detect_format",
           "expand_inputs", "image_files", "split_suffix"]

FORMATS = ("csv", "tsv", "parquet", "jsonl", "npy")  # read and written
INPUT_FORMATS = (*FORMATS, "images")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
STDIO = "-"
SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl",
            ".ndjson": "jsonl", ".json": "jsonl", ".npy": "npy"}
CODECS = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd", ".bz2": "bz2", ".lz4": "lz4"}


def detect_format(path: str | Path, format: str | None = None) -> str:
    """The file format: the explicit one when given, else from the extension (after any .gz/.zst)."""
    if format is not None:
        if format not in INPUT_FORMATS:
            raise InputError(f"format must be one of {', '.join(INPUT_FORMATS)}, got {format!r}")
        return format
    if str(path) == STDIO:
        raise InputError("cannot tell the format of '-' (stdin/stdout); pass format=... (CLI --format)")
    if os.path.isdir(path) or glob.has_magic(str(path)):  # what expand_inputs keeps whole: images
        return "images"
    suffix, _ = split_suffix(path)
    if suffix not in SUFFIXES:
        known = ", ".join(sorted(SUFFIXES))
        raise InputError(f"file '{path}': cannot tell the format from extension {suffix!r} "
                         f"(known: {known}); pass format=... (CLI --format)")
    return SUFFIXES[suffix]


def split_suffix(path: str | Path) -> tuple[str, str | None]:
    """('.csv', 'gzip') for 'a.csv.gz'; ('.csv', None) for 'a.csv'."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in CODECS:
        return Path(path.stem).suffix.lower(), CODECS[suffix]
    return suffix, None


def expand_inputs(source: str | Path | Sequence[str | Path]) -> list[str]:
    """Input files in order: '-' (stdin), a file, every data file of a folder, a glob's matches, or a list."""
    if not isinstance(source, (str, Path)):
        return [path for item in source for path in expand_inputs(item)]
    text = str(source)
    if text == STDIO or (os.path.exists(text) and not os.path.isdir(text)):  # a file, or a pipe: <(zcat a.gz)
        return [text]
    if os.path.isdir(text):  # not Path.is_dir, which raises on a name too long for the file system
        found = sorted(str(p) for p in Path(text).iterdir()
                       if p.is_file() and not p.name.startswith(".") and split_suffix(p)[0] in SUFFIXES)
        if not found and image_files(text):
            return [text]  # a folder of images: one input, a row per image
        if not found:
            raise InputError(f"input folder '{text}' holds no {', '.join(sorted(SUFFIXES))} files and no images "
                             f"({', '.join(IMAGE_SUFFIXES)})")
        return found
    if glob.has_magic(text):
        found = sorted(p for p in glob.glob(text) if Path(p).is_file())
        if not found:
            raise InputError(f"no input file matches '{text}'")
        images = [p for p in found if Path(p).suffix.lower() in IMAGE_SUFFIXES]
        if images and len(images) < len(found):
            other = Path(next(p for p in found if p not in images)).name
            raise InputError(f"'{text}' matches images and other files ({other}); match one kind")
        return [text] if images else found
    raise InputError(f"input file '{text}' does not exist")



def image_files(source: str | Path) -> list[str]:
    """The image files of a folder (recursively, hidden files and folders left out) or of a glob, in path order."""
    text = str(source)
    if os.path.isdir(text):
        found = [p for p in Path(text).rglob("*")
                 if not any(part.startswith(".") for part in p.relative_to(text).parts)]
    else:
        found = [Path(p) for p in glob.glob(text, recursive=True)]
    return sorted(str(p) for p in found if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
