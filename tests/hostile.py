"""Tools for the hostile-bundle tests: tamper with a real bundle as an attacker would, then recompute its hashes.

An attacker who sends a bundle controls every byte of it, manifest.json included, so the integrity check
(sha256 per file, and manifest.json's settings_sha256) proves nothing about intent: each case here rewrites
the hashes so that only the checks under test stand between the bundle and the loading side. `run_cli` runs
the real CLI in a subprocess under a memory limit, so a bomb that gets through fails the test instead of
taking down the machine.
"""

from __future__ import annotations

import functools
import json
import os
import resource
import shlex
import shutil
import struct
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torchpredict.bundle.manifest import MANIFEST_FILE, relative_files, settings_digests, sha256

MEMORY_LIMIT = 3 << 30  # bytes of address space for a CLI run: torch needs ~1.5 GB of it, a bomb far more
CLI_TIMEOUT = 120


def copy_bundle(source: Path, target: Path) -> Path:
    """A writable copy of a bundle folder."""
    shutil.copytree(source, target)
    return target


def rehash(bundle: Path, *, files: Sequence[str] | None = None) -> None:
    """Rewrite manifest.json's sha256 list for the files now in the folder (or exactly `files`)."""
    manifest = json.loads((bundle / MANIFEST_FILE).read_text())
    names = files if files is not None else [rel for rel in relative_files(bundle) if rel != MANIFEST_FILE]
    manifest["files"] = {rel: sha256(bundle / rel) for rel in names}
    (bundle / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))


def edit_json(bundle: Path, rel: str, change: Callable[[Any], Any], *, reseal: bool = True) -> None:
    """Replace a JSON file of the bundle by change(its data) (change may edit in place and return None),
    then recompute the hashes (manifest.json's own edits are kept). reseal=False leaves manifest.json's
    settings_sha256 as saved: the edit of someone who changes a setting without recomputing it."""
    path = bundle / rel
    data = json.loads(path.read_text())
    changed = change(data)
    path.write_text(json.dumps(data if changed is None else changed))
    if rel == MANIFEST_FILE:
        manifest = json.loads(path.read_text())
        if isinstance(manifest, dict) and isinstance(manifest.get("files"), dict):
            rehash(bundle, files=list(manifest["files"]))
        if reseal:
            _reseal(bundle)
    else:
        rehash(bundle)


def _reseal(bundle: Path) -> None:
    """Recompute manifest.json's settings_sha256 (when it has one) for its fields as they now are."""
    manifest = json.loads((bundle / MANIFEST_FILE).read_text())
    if isinstance(manifest, dict) and isinstance(manifest.get("settings_sha256"), dict):
        manifest["settings_sha256"] = settings_digests(manifest)
        (bundle / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))


def zip_folder(folder: Path, archive: Path, *, extra: dict[str, bytes] | None = None) -> Path:
    """A .zip of the bundle folder, plus members the manifest does not list."""
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for rel in relative_files(folder):
            zf.write(folder / rel, rel)
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return archive


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def run_cli(*args: str | Path, cwd: Path | None = None, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    """`torchpredict ARGS` in a subprocess with at most MEMORY_LIMIT bytes of address space."""
    return subprocess.run(
        [sys.executable, "-m", "torchpredict", *map(str, args)], cwd=cwd, input=stdin, capture_output=True,
        timeout=CLI_TIMEOUT, preexec_fn=_limit_memory,  # the limit must apply before exec
    )


def one_line(result: subprocess.CompletedProcess) -> str:
    """The CLI's stderr, checked to be exactly one line (what a user sees for bad input)."""
    lines = result.stderr.decode(errors="replace").strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


FILE_LIMIT = 256 << 20  # bytes one file a run_cli_bounded run writes may reach; a bomb extracted in full would not


def _limit_memory_and_files() -> None:
    _limit_memory()
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_LIMIT, FILE_LIMIT))


def run_cli_bounded(*args: str | Path, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    """run_cli, and no file it writes may pass FILE_LIMIT bytes (a bomb extracted to disk gets SIGXFSZ)."""
    return subprocess.run(
        [sys.executable, "-m", "torchpredict", *map(str, args)], input=stdin, capture_output=True,
        timeout=CLI_TIMEOUT, preexec_fn=_limit_memory_and_files,  # the limits must apply before exec
    )


@functools.cache
def deflated_zeros(size: int) -> tuple[bytes, int]:
    """A raw DEFLATE stream of `size` zero bytes and their CRC-32, built from one repeated flushed block
    (milliseconds, where compressing 2 GiB of zeros takes seconds)."""
    mib = 1 << 20
    assert size % mib == 0, size
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = packer.compress(bytes(mib)) + packer.flush(zlib.Z_FULL_FLUSH)  # self-contained: repeatable
    crc = 0
    for _ in range(size // mib):
        crc = zlib.crc32(bytes(mib), crc)
    return block * (size // mib) + zlib.compressobj(9, zlib.DEFLATED, -15).flush(), crc


def add_raw_member(archive: Path, name: str, deflated: bytes, size: int, crc: int) -> None:
    """Append a member to a zip with its DEFLATE stream, size and CRC-32 as given (a liar if they disagree)."""
    blob = archive.read_bytes()
    sig, _, _, count, total, cd_size, cd_offset, _ = struct.unpack("<IHHHHIIH", blob[-22:])
    assert sig == 0x06054B50, "a zip without a comment"
    raw = name.encode()
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0x21, crc, len(deflated), size, len(raw), 0)
    entry = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0x21, crc, len(deflated), size,
                        len(raw), 0, 0, 0, 0, 0, cd_offset)
    central = blob[cd_offset:cd_offset + cd_size] + entry + raw
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count + 1, total + 1, len(central),
                      cd_offset + len(local) + len(raw) + len(deflated), 0)
    archive.write_bytes(blob[:cd_offset] + local + raw + deflated + central + end)


class _Touch:
    """Unpickling this runs `touch MARKER` (os.system): the payload a hostile pickle carries."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return os.system, (f"touch {shlex.quote(self.marker)}",)


def pickle_bomb(path: Path, marker: Path) -> Path:
    """A torch.save zip at path whose unpickling creates marker (torch.load(path, weights_only=False) runs it)."""
    import torch

    torch.save({"model": _Touch(marker)}, path)
    return path
