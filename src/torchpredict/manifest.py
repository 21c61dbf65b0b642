"""manifest.json: what a bundle is, who wrote it, how its model is stored, and every file's sha256.

Reading a manifest needs no torch, so `torchpredict inspect` and the integrity checks stay fast and never
touch weights. A `.zip` of a bundle folder is opened by extracting it, safely, into a temporary folder.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from torchpredict.errors import BundleError

__all__ = ["FORMAT_ID", "FORMAT_VERSION", "MANIFEST_FILE", "Manifest", "check_hashes", "load_json", "opened",
           "read_json", "read_manifest", "read_manifest_at", "relative_files", "write_json", "write_manifest"]

FORMAT_ID = "torchpredict.bundle"
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, origin: str) -> Manifest:
        if not isinstance(data, dict) or data.get("format") != FORMAT_ID:
            found = data.get("format") if isinstance(data, dict) else None
            raise BundleError(f"bundle '{origin}': manifest.json is not a torchpredict manifest (format {found!r})")
        version = data.get("format_version")
        if not isinstance(version, int):
            raise BundleError(f"bundle '{origin}': manifest.json has no integer format_version")
        if version > FORMAT_VERSION:
            writer = data.get("producer", {}).get("torchpredict", "a newer version")
            raise BundleError(f"bundle '{origin}': format version {version} is newer than this torchpredict "
                              f"reads ({FORMAT_VERSION}); it was written by torchpredict {writer}: "
                              f"upgrade to torchpredict>={writer}")
        missing = [key for key in ("name", "model", "heads", "examples", "files") if key not in data]
        if missing:
            raise BundleError(f"bundle '{origin}': manifest.json lacks {', '.join(missing)}")
        known = {key: data[key] for key in cls.__dataclass_fields__ if key in data}
        return cls(**{"model_version": "1", "created_at": "", "producer": {}} | known)


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def write_manifest(root: Path, manifest: Manifest) -> None:
    """Write manifest.json with the sha256 of every other file under root."""
    files = {rel: sha256(root / rel) for rel in relative_files(root) if rel != MANIFEST_FILE}
    write_json(root / MANIFEST_FILE, manifest.to_dict() | {"files": files})


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
    with opened(Path(path)) as root:
        return read_manifest_at(root, str(path))


def read_manifest_at(root: Path, origin: str) -> Manifest:
    try:
        data = json.loads((root / MANIFEST_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"bundle '{origin}': manifest.json is missing; is this a torchpredict bundle?") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"bundle '{origin}': manifest.json is not valid JSON ({exc})") from None
    return Manifest.from_dict(data, origin)


def read_json(path: str | Path, file: str) -> Any:
    """One hash-checked JSON file of a bundle (schema.json, preprocessing.json)."""
    with opened(Path(path)) as root:
        manifest = read_manifest_at(root, str(path))
        if file not in manifest.files:
            raise BundleError(f"bundle '{path}': manifest does not list '{file}'")
        check_hashes(root, manifest, str(path), only=[file])
        return load_json(root, file, str(path))


@contextmanager
def opened(path: Path) -> Iterator[Path]:
    """The bundle's root folder: the folder itself, or a zip extracted into a temporary folder."""
    if path.is_dir():
        yield path
        return
    if not path.exists():
        raise BundleError(f"bundle '{path}' does not exist")
    if not zipfile.is_zipfile(path):
        raise BundleError(f"bundle '{path}' is neither a bundle folder nor a .zip of one")
    with tempfile.TemporaryDirectory(prefix="tp-bundle-") as tmp:
        _extract(path, Path(tmp))
        yield Path(tmp)


def _extract(path: Path, target: Path) -> None:
    try:
        with zipfile.ZipFile(path) as zf:
            for name in zf.namelist():
                if not _is_safe(name):
                    raise BundleError(f"bundle '{path}': refusing unsafe path {name!r} in the zip")
            zf.extractall(target)
    except (zipfile.BadZipFile, OSError) as exc:
        raise BundleError(f"bundle '{path}': cannot read the zip ({exc})") from None


def _is_safe(rel: str) -> bool:
    member = PurePosixPath(rel)
    return not member.is_absolute() and ".." not in member.parts and "\\" not in rel


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
    try:
        return json.loads((root / rel).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"bundle '{origin}': file '{rel}' is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"bundle '{origin}': file '{rel}' is not valid JSON ({exc})") from None
