"""Open a bundle's files within bounds: a zip's listed members only, JSON capped in size and nesting.

A bundle is a file people share, so every size in it is the sender's choice. A `.zip` bundle is opened by
reading its manifest first, then extracting only the members the manifest lists, each checked before it
is written (a safe relative path, its declared size against a total and a compression-ratio limit) and
cut off should it yield more bytes than it declared. JSON files are refused past a size and a nesting
depth, so a hostile file costs an error, never the machine.

A bundle folder is read the same way: its manifest and listed files are first copied into a private temporary
folder, and everything (hash checks, the parts, the model) is read from that copy. A bundle replaced or rewritten
in place while it loads (a deploy copying the next version over it, a server worker starting meanwhile) thus
either loads whole, as one version, or fails its hash check; it is never read half old, half new, and no file
is read twice (so none can change between its check and its use, e.g. between torch_loader's check of
model.pt2 and torch's reading of it).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import IO, Any

from torchpredict.errors import BundleError

__all__ = ["MANIFEST_FILE", "MAX_BUNDLE_BYTES", "MAX_JSON_BYTES", "MAX_JSON_DEPTH", "MAX_MANIFEST_BYTES",
           "MAX_RATIO", "RATIO_FREE_BYTES", "copy_exactly", "is_safe", "load_bounded_json", "member_problem",
           "opened"]

MANIFEST_FILE = "manifest.json"
MAX_BUNDLE_BYTES = 32 << 30  # all the members extracted from one zip, uncompressed
MAX_RATIO = 200  # uncompressed:compressed; real weights compress ~1.1:1, JSON ~10:1, zeros ~1000:1
RATIO_FREE_BYTES = 16 << 20  # a member (or a whole zip) this small may compress as well as it likes
MAX_MANIFEST_BYTES = 16 << 20  # manifest.json: names, hashes and a few settings
MAX_JSON_BYTES = 256 << 20  # schema.json, preprocessing.json (which may hold large vocabularies)
MAX_JSON_DEPTH = 64  # levels of nested arrays and objects; bundles written by torchpredict use under 10
_COPY_BYTES = 1 << 20
# what zipfile raises for a corrupt, truncated, encrypted (RuntimeError) or oddly compressed member
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, OSError)


@contextmanager
def opened(path: Path, members: Collection[str] | None = None) -> Iterator[Path]:
    """The bundle's root folder: the folder itself, or its manifest and listed files extracted from the zip.

    members: extract only these of the listed files (`inspect` needs the JSON, not the weights).
    """
    if not path.is_dir():
        if not path.exists():
            raise BundleError(f"bundle '{path}' does not exist")
        if not zipfile.is_zipfile(path):
            raise BundleError(f"bundle '{path}' is neither a bundle folder nor a .zip of one")
    with tempfile.TemporaryDirectory(prefix="tp-bundle-") as tmp:
        if path.is_dir():
            _snapshot(path, Path(tmp), members)
        else:
            _extract(path, Path(tmp), members)
        yield Path(tmp)


def is_safe(rel: str) -> bool:
    """A relative path that stays inside the bundle (no absolute path, '..' or backslash)."""
    member = PurePosixPath(rel)
    return not member.is_absolute() and ".." not in member.parts and "\\" not in rel


def _extract(path: Path, target: Path, members: Collection[str] | None) -> None:
    """manifest.json, then the members it lists (those of `members`), each checked before it is written."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = _infos(zf, path)
            if MANIFEST_FILE not in infos:
                return  # reading the manifest says it is missing
            _copy(zf, _checked(path, infos[MANIFEST_FILE], MAX_MANIFEST_BYTES), target, path)
            names = [n for n in _listed(target, str(path)) if n in infos and (members is None or n in members)]
            chosen = [_checked(path, infos[name], MAX_BUNDLE_BYTES) for name in names]
            _check_total(path, [infos[MANIFEST_FILE], *chosen])
            for info in chosen:
                _copy(zf, info, target, path)
    except BundleError:
        raise
    except _ZIP_ERRORS as exc:
        raise BundleError(f"bundle '{path}': cannot read the zip ({exc})") from None


def _snapshot(folder: Path, target: Path, members: Collection[str] | None) -> None:
    """manifest.json, then the regular files it lists (those of `members`), copied from the folder: what the
    bundle is read from (a listed file that is missing or not a regular file is left out: its check says so)."""
    manifest = folder / MANIFEST_FILE
    if not manifest.exists():
        return  # reading the manifest says it is missing
    (target / MANIFEST_FILE).write_bytes(_read_at_most(manifest, MAX_MANIFEST_BYTES, f"bundle '{folder}': "
                                                                                     f"{MANIFEST_FILE}"))
    for name in _listed(target, str(folder)):
        source = folder / name
        if not is_safe(name) or (members is not None and name not in members) or not source.is_file():
            continue
        out = target / name
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copyfile(source, out)
        except OSError as exc:
            raise BundleError(f"bundle '{folder}': file '{name}' cannot be read ({exc.strerror or exc})") from None


def _infos(zf: zipfile.ZipFile, path: Path) -> dict[str, zipfile.ZipInfo]:
    """The zip's file members by name, every name checked to stay inside the bundle."""
    infos = {}
    for info in zf.infolist():
        if not is_safe(info.filename):
            raise BundleError(f"bundle '{path}': refusing unsafe path {info.filename!r} in the zip")
        if not info.is_dir():
            infos[info.filename] = info
    return infos


def _listed(target: Path, origin: str) -> list[str]:
    """The file names manifest.json lists (none when it lists them wrongly: reading it says how)."""
    manifest = load_bounded_json(target, MANIFEST_FILE, origin, MAX_MANIFEST_BYTES)
    files = manifest.get("files") if isinstance(manifest, dict) else None
    return [name for name in files if isinstance(name, str)] if isinstance(files, dict) else []


def _checked(path: Path, info: zipfile.ZipInfo, limit: int) -> zipfile.ZipInfo:
    """The member, once its declared size is within limit and its compression ratio within MAX_RATIO."""
    problem = member_problem(info, limit)
    if problem:
        raise BundleError(f"bundle '{path}': {problem}")
    return info


def member_problem(info: zipfile.ZipInfo, limit: int) -> str | None:
    """Why a zip member may not be inflated (it declares more than `limit`, or it is bomb-like), or None.

    Read from the zip's directory, so it costs nothing; zipfile then stops at the declared size.
    """
    if info.file_size > limit:
        return f"member '{info.filename}' declares {_size(info.file_size)}, more than the {_size(limit)} allowed"
    if info.file_size > RATIO_FREE_BYTES and info.file_size > MAX_RATIO * max(info.compress_size, 1):
        return (f"member '{info.filename}' inflates to {_size(info.file_size)} from {_size(info.compress_size)} "
                f"({_ratio(info.file_size, info.compress_size)}; the limit is {MAX_RATIO}:1)")
    return None


def _check_total(path: Path, infos: Sequence[zipfile.ZipInfo]) -> None:
    """Refuse members that are each within the limits but together a bomb (many small ones)."""
    total, packed = sum(i.file_size for i in infos), path.stat().st_size
    if total > MAX_BUNDLE_BYTES:
        raise BundleError(f"bundle '{path}': its members inflate to {_size(total)}; the limit is "
                          f"{_size(MAX_BUNDLE_BYTES)}")
    if total > RATIO_FREE_BYTES and total > MAX_RATIO * packed:
        raise BundleError(f"bundle '{path}': its members inflate to {_size(total)} from a zip of {_size(packed)} "
                          f"({_ratio(total, packed)}; the limit is {MAX_RATIO}:1)")


def _copy(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, path: Path) -> None:
    """Write one member under target, failing as soon as it yields more bytes than it declared."""
    out = target / info.filename
    out.parent.mkdir(parents=True, exist_ok=True)
    with zf.open(info) as source, open(out, "wb") as sink:
        copy_exactly(source, sink, info.file_size, f"bundle '{path}': member '{info.filename}'")


def copy_exactly(source: IO[bytes], sink: IO[bytes], declared: int, what: str) -> None:
    """Copy the `declared` bytes of source to sink in blocks; a BundleError naming `what` as soon as more
    come, or if fewer do."""
    written = 0
    while block := source.read(min(_COPY_BYTES, declared - written + 1)):
        written += len(block)
        if written > declared:
            raise BundleError(f"{what} yields more than the {_size(declared)} it declares")
        sink.write(block)
    if written < declared:
        raise BundleError(f"{what} yields {_size(written)} of the {_size(declared)} it declares")


def load_bounded_json(root: Path, rel: str, origin: str, limit: int = MAX_JSON_BYTES) -> Any:
    """A JSON file of a bundle, refused past `limit` bytes or MAX_JSON_DEPTH levels of nesting.

    A missing file raises FileNotFoundError, for the caller to say what it means.
    """
    what = MANIFEST_FILE if rel == MANIFEST_FILE else f"file '{rel}'"  # as the other messages name them
    raw = _read_at_most(root / rel, limit, f"bundle '{origin}': {what}")
    too_deep = BundleError(f"bundle '{origin}': {what} nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        data = json.loads(raw.decode("utf-8"))
    except RecursionError:  # json gave up before our count would have
        raise too_deep from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"bundle '{origin}': {what} is not valid JSON ({exc})") from None
    if _depth_exceeds(data, MAX_JSON_DEPTH):
        raise too_deep
    return data


def _read_at_most(file: Path, limit: int, what: str) -> bytes:
    """The bytes of a regular file of at most limit bytes (checked before reading, and while)."""
    if file.exists() and not file.is_file():
        raise BundleError(f"{what} is not a regular file")
    too_big = BundleError(f"{what} is larger than {_size(limit)}, the limit for it")
    if file.exists() and file.stat().st_size > limit:
        raise too_big
    with open(file, "rb") as handle:
        raw = handle.read(limit + 1)  # the file may have grown since
    if len(raw) > limit:
        raise too_big
    return raw


def _depth_exceeds(data: Any, limit: int) -> bool:
    """Whether arrays and objects nest deeper than limit levels, walked level by level (no recursion)."""
    level = [data] if isinstance(data, (dict, list)) else []
    for _ in range(limit):
        level = [v for item in level for v in (item.values() if isinstance(item, dict) else item)
                 if isinstance(v, (dict, list))]
        if not level:
            return False
    return True


def _size(n: int) -> str:
    """Bytes as people read them: '512 B', '2.0 MiB', '2.0 GiB'."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}"
    return f"{n} B"


def _ratio(big: int, small: int) -> str:
    return f"ratio {big // max(small, 1):,}:1"

