"""manifest.json: what a bundle is, who wrote it, how its model is stored, and every file's sha256.

The manifest also holds settings that change predictions (the heads' labels and scales, the golden
tolerances), so `settings_sha256` records a sha256 of each of its other fields, checked on every read: an
edit made after saving names the field. Bundles written before it (no `settings_sha256`) still read, with
their settings unchecked (`Manifest.settings_hashed`). Reading a manifest needs no torch, so `torchpredict
inspect` and the integrity checks stay fast and never touch weights. A `.zip` of a bundle folder is opened
by extracting the files its manifest lists, within bounds, into a temporary folder (archive.py); its JSON
files are read within bounds of size and nesting.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torchpredict.errors import BundleError
from torchpredict.inference.backends import BACKENDS
from torchpredict.io.archive import MANIFEST_FILE, MAX_MANIFEST_BYTES, load_bounded_json, opened
from torchpredict.io.archive import is_safe as _is_safe  # check_hashes' name for it
from torchpredict.io.writers import write_atomically
from torchpredict.messages import shown

__all__ = ["FORMAT_ID", "FORMAT_VERSION", "MANIFEST_FILE", "PREPROCESSING_FILE", "SCHEMA_FILE", "Manifest",
           "check_hashes", "load_json", "opened", "read_json", "read_manifest", "read_manifest_at", "relative_files",
           "settings_digests", "write_json", "write_manifest"]

FORMAT_ID = "torchpredict.bundle"
SCHEMA_FILE = "schema.json"
PREPROCESSING_FILE = "preprocessing.json"
FORMAT_VERSION = 1
MODEL_FORMATS = ("export", "weights")


@dataclass(frozen=True)
class Manifest:
    """The parsed manifest.json (its JSON Schema is docs/bundle-format.md and manifest.schema.json)."""

    name: str
    model_version: str
    created_at: str
    producer: dict[str, str]
    model: dict[str, Any]
    heads: list[dict[str, Any]]
    examples: dict[str, Any]
    files: dict[str, str] = field(default_factory=dict)
    format: str = FORMAT_ID
    format_version: int = FORMAT_VERSION
    settings_sha256: dict[str, str] | None = None  # field -> sha256; None in bundles written before it
    backends: dict[str, Any] | None = None  # what `torchpredict optimize` stored: the ONNX graph, choices by device

    @property
    def settings_hashed(self) -> bool:
        """Whether an edit of the settings after saving is detected (bundles written before 0.2 are not)."""
        return self.settings_sha256 is not None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("settings_sha256", "backends"):
            if data[key] is None:
                del data[key]
        return data

    @classmethod
    def from_dict(cls, data: Any, origin: str) -> Manifest:
        """The manifest with every field's JSON type and value checked (manifest.schema.json), so that later
        stages can trust them; any violation is a BundleError naming the field."""
        if not isinstance(data, dict) or data.get("format") != FORMAT_ID:
            found = data.get("format") if isinstance(data, dict) else None
            raise BundleError(f"bundle '{origin}': manifest.json is not a torchpredict manifest (format {found!r})")
        version = data.get("format_version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise BundleError(f"bundle '{origin}': manifest.json has no integer format_version")
        if version > FORMAT_VERSION:
            writer = _writer(data.get("producer"))
            raise BundleError(f"bundle '{origin}': format version {version} is newer than this torchpredict "
                              f"reads ({FORMAT_VERSION}); it was written by torchpredict {writer}: "
                              f"upgrade to torchpredict>={writer}")
        missing = [key for key in ("name", "model", "heads", "examples", "files") if key not in data]
        if missing:
            raise BundleError(f"bundle '{origin}': manifest.json lacks {', '.join(missing)}")
        try:
            _check_fields(data)
        except _InvalidField as bad:
            raise BundleError(f"bundle '{origin}': manifest.json {bad}") from None
        _check_settings(data, origin)
        known = {key: data[key] for key in cls.__dataclass_fields__ if key in data}
        return cls(**{"model_version": "1", "created_at": "", "producer": {}} | known)


class _InvalidField(ValueError):
    """A manifest field of the wrong JSON type or value; its text is "field 'x.y' must be ..., got ..."."""

    def __init__(self, where: str, expected: str, value: Any) -> None:
        super().__init__(f"field '{where}' must be {expected}, got {_got(value)}")


def _check_fields(data: dict[str, Any]) -> None:
    """Raise _InvalidField for the first field of a manifest that manifest.schema.json does not allow."""
    for name in ("name", "model_version", "created_at"):
        if name in data:
            _string(data[name], name, empty=name != "name")
    if "producer" in data:
        for key, value in _object(data["producer"], "producer", "an object of strings").items():
            _string(value, f"producer.{key}")
    files = _files(data["files"])
    _model(data["model"])
    _heads(data["heads"])
    _examples(data["examples"], files)
    if "settings_sha256" in data:
        _digests(data["settings_sha256"])
    if "backends" in data:
        _backends(data["backends"], files)


def _writer(producer: Any) -> str:
    """Which torchpredict wrote a manifest, for the upgrade hint."""
    writer = producer.get("torchpredict") if isinstance(producer, dict) else None
    return writer if isinstance(writer, str) else "a newer version"


_SHA256 = re.compile(r"[0-9a-f]{64}")
_MISSING = object()  # a field that is not there, as messages show it: "got nothing"


def _files(value: Any) -> dict[str, Any]:
    files = _object(value, "files", "an object of path -> sha256")
    for rel, digest in files.items():
        _inside(rel, f"files.{rel}")
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise _InvalidField(f"files.{rel}", "a sha256 (64 lowercase hex digits)", digest)
    return files


def _model(value: Any) -> None:
    model = _object(value, "model")
    if model.get("format") not in MODEL_FORMATS:
        raise _InvalidField("model.format", " or ".join(map(repr, MODEL_FORMATS)), model.get("format"))
    if "file" in model:
        _string(model["file"], "model.file", empty=False)
    for i, spec in enumerate(_list(model.get("inputs", _MISSING), "model.inputs", "a list of the model's inputs")):
        _model_input(spec, f"model.inputs[{i}]")
    for key in ("factory", "fallback_reason"):
        if model.get(key) is not None:
            _string(model[key], f"model.{key}")
    if model.get("factory_kwargs") is not None:
        _object(model["factory_kwargs"], "model.factory_kwargs")
    if model.get("call") is not None:
        call = _object(model["call"], "model.call")
        for key in ("kind", "source", "prefix"):
            if key in call:
                _string(call[key], f"model.call.{key}")




def _backends(value: Any, files: dict[str, Any]) -> None:
    """{"onnx": {"file": "model.onnx"}, "choices": {"cpu": {"backend": "onnxruntime", "speedup": 1.4, ...}}}."""
    backends = _object(value, "backends")
    if "onnx" in backends:
        onnx = _object(backends["onnx"], "backends.onnx", "an object with the ONNX graph's file")
        name = _string(onnx.get("file", _MISSING), "backends.onnx.file", empty=False)
        _inside(name, "backends.onnx.file")
        if name not in files:
            raise _InvalidField("backends.onnx.file", "a file the manifest lists", name)
    for device, choice in _object(backends.get("choices", {}), "backends.choices").items():
        where = f"backends.choices.{device}"
        choice = _object(choice, where, "an object naming the backend")
        if choice.get("backend") not in BACKENDS:
            raise _InvalidField(f"{where}.backend", " or ".join(map(repr, BACKENDS)), choice.get("backend"))
        if choice.get("speedup") is not None and not _is_number(choice["speedup"]):
            raise _InvalidField(f"{where}.speedup", "a number", choice["speedup"])


def _model_input(value: Any, where: str) -> None:
    spec = _object(value, where, "an object with name, dtype and shape")
    _string(spec.get("name", _MISSING), f"{where}.name", empty=False)
    _string(spec.get("dtype", _MISSING), f"{where}.dtype", empty=False)
    shape = _list(spec.get("shape", _MISSING), f"{where}.shape", "a list of sizes (integers or null)")
    for j, size in enumerate(shape):
        if size is not None and (not _is_int(size) or size < 0):
            raise _InvalidField(f"{where}.shape[{j}]", "an integer >= 0 or null", size)


def _heads(value: Any) -> None:
    heads = _list(value, "heads", "a non-empty list of output heads")
    if not heads:
        raise _InvalidField("heads", "a non-empty list of output heads", heads)
    for i, head in enumerate(heads):
        entry = _object(head, f"heads[{i}]", "an object with a type")
        _string(entry.get("type", _MISSING), f"heads[{i}].type", empty=False)
        for key in ("params", "state"):
            if key in entry:
                _object(entry[key], f"heads[{i}].{key}")


def _examples(value: Any, files: dict[str, Any]) -> None:
    examples = _object(value, "examples", "an object with inputs, outputs, rows, atol and rtol")
    for key in ("inputs", "outputs", "predictions"):
        if key == "predictions" and key not in examples:
            continue  # bundles written before 0.2 record the raw outputs only
        rel = examples.get(key, _MISSING)
        _inside(rel, f"examples.{key}")
        if rel not in files:
            raise _InvalidField(f"examples.{key}", "a file listed in 'files' (so that its sha256 is checked)", rel)
    rows = examples.get("rows", _MISSING)
    if not _is_int(rows) or rows < 1:
        raise _InvalidField("examples.rows", "an integer >= 1", rows)
    for key in ("atol", "rtol"):
        tol = examples.get(key, _MISSING)
        if not _is_number(tol) or not math.isfinite(tol) or tol < 0:
            raise _InvalidField(f"examples.{key}", "a finite number >= 0", tol)


def _digests(value: Any) -> None:
    for key, digest in _object(value, "settings_sha256", "an object of field -> sha256").items():
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise _InvalidField(f"settings_sha256.{key}", "a sha256 (64 lowercase hex digits)", digest)


def settings_digests(data: dict[str, Any]) -> dict[str, str]:
    """The sha256 of each field of a manifest but `files` and `settings_sha256`, over its canonical JSON
    (sorted keys, no whitespace, ASCII), which is what `settings_sha256` records.

    >>> settings_digests({"name": "wine", "files": {}})["name"][:8]
    '30f81662'
    """
    return {key: hashlib.sha256(_canonical(value)).hexdigest() for key, value in sorted(data.items())
            if key not in _UNHASHED}


_UNHASHED = ("files", "settings_sha256")  # files: each hash-checked itself


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _check_settings(data: dict[str, Any], origin: str) -> None:
    """Every field but files has the sha256 recorded at save time (when one was: bundles before 0.2 have none)."""
    recorded = data.get("settings_sha256")
    if recorded is None:
        return
    fix = "a bundle's settings are part of it: save it again from its model to change them"
    got = settings_digests(data)
    for key in sorted(set(recorded) | set(got)):
        if key not in got:
            raise BundleError(f"bundle '{origin}': manifest.json field {shown(key)} was removed after saving "
                              f"(settings_sha256 lists it); {fix}")
        if key not in recorded:
            raise BundleError(f"bundle '{origin}': manifest.json field {shown(key)} was added after saving "
                              f"(settings_sha256 does not list it); {fix}")
        if got[key] != recorded[key]:
            raise BundleError(f"bundle '{origin}': manifest.json field {shown(key)} was changed after saving "
                              f"(sha256 mismatch: expected {recorded[key][:8]}…, got {got[key][:8]}…); {fix}")


def _inside(rel: Any, where: str) -> None:
    """rel names a file inside the bundle: relative, '/'-separated, without '..', '.', empty parts or drives."""
    parts = rel.split("/") if isinstance(rel, str) else [""]
    if any(part in ("", ".", "..") for part in parts) or "\\" in rel or "\0" in rel or ":" in parts[0]:
        raise _InvalidField(where, "a relative path inside the bundle", rel)


def _object(value: Any, where: str, expected: str = "an object") -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _InvalidField(where, expected, value)
    return value


def _list(value: Any, where: str, expected: str) -> list[Any]:
    if not isinstance(value, list):
        raise _InvalidField(where, expected, value)
    return value


def _string(value: Any, where: str, *, empty: bool = True) -> str:
    if not isinstance(value, str) or (not empty and not value):
        raise _InvalidField(where, "a string" if empty else "a non-empty string", value)
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _got(value: Any) -> str:
    """A JSON value as a message shows it: containers by kind, scalars as they are (long strings cut)."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    if value is _MISSING:
        return "nothing"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and len(value) > 60:
        return f"{value[:60]!r}… ({len(value):,} chars)"
    return repr(value)


def write_json(path: Path, data: Any) -> None:
    """A bundle's JSON file, written whole or not at all: a crash or a failing encode never leaves half of one."""
    write_atomically(path, json.dumps(data, indent=2) + "\n")


def write_manifest(root: Path, manifest: Manifest) -> None:
    """Write manifest.json with the sha256 of every other file under root and of each of its own settings."""
    files = {rel: sha256(root / rel) for rel in relative_files(root) if rel != MANIFEST_FILE}
    data = json.loads(json.dumps(manifest.to_dict() | {"files": files}))  # hashed as a reader will parse it
    data.pop("settings_sha256", None)
    write_json(root / MANIFEST_FILE, data | {"settings_sha256": settings_digests(data)})


def relative_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(path: str | Path) -> Manifest:
    """The manifest alone: JSON only, never weights (what `torchpredict inspect` shows)."""
    with opened(Path(path), members=()) as root:
        return read_manifest_at(root, str(path))


def read_manifest_at(root: Path, origin: str) -> Manifest:
    try:
        data = load_bounded_json(root, MANIFEST_FILE, origin, MAX_MANIFEST_BYTES)
    except FileNotFoundError:
        raise BundleError(f"bundle '{origin}': manifest.json is missing; is this a torchpredict bundle?") from None
    return Manifest.from_dict(data, origin)


def read_json(path: str | Path, file: str) -> Any:
    """One hash-checked JSON file of a bundle (schema.json, preprocessing.json)."""
    with opened(Path(path), members=[file]) as root:
        manifest = read_manifest_at(root, str(path))
        if file not in manifest.files:
            raise BundleError(f"bundle '{path}': manifest does not list '{file}'")
        check_hashes(root, manifest, str(path), only=[file])
        return load_json(root, file, str(path))


def check_hashes(root: Path, manifest: Manifest, origin: str, only: Sequence[str] | None = None) -> None:
    """Every listed file exists and has its recorded sha256; else a BundleError naming the file."""
    for rel, expected in manifest.files.items():
        if only is not None and rel not in only:
            continue
        if not _is_safe(rel):
            raise BundleError(f"bundle '{origin}': manifest lists unsafe path {rel!r}")
        target = root / rel
        if not target.is_file():
            raise BundleError(f"bundle '{origin}': file '{rel}' is missing")
        got = sha256(target)
        if got != expected:
            raise BundleError(f"bundle '{origin}': file '{rel}' sha256 mismatch "
                              f"(expected {expected[:8]}…, got {got[:8]}…); the file was changed or corrupted")


def load_json(root: Path, rel: str, origin: str) -> Any:
    """One JSON file of a bundle, within archive.py's bounds of size and nesting."""
    try:
        return load_bounded_json(root, rel, origin)
    except FileNotFoundError:
        raise BundleError(f"bundle '{origin}': file '{rel}' is missing") from None
