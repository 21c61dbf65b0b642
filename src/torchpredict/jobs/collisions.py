"""Output paths that would overwrite an input, or each other: refused before a batch job writes anything.

Every output is written under a temporary name and renamed over its path when complete, so `-o data.csv`
for the input data.csv would replace the input with its predictions. Two paths name one file when they
resolve to the same real path (symlinks, `./`, `..`: os.path.realpath) or, both existing, to the same inode
(hard links, a case-insensitive file system). Only regular input files are protected: a pipe or a terminal
(`/dev/stdin`) holds nothing an output could overwrite. A folder output must not be or hold an input file
(its parts would land beside the inputs, and a later run reading the folder would read them back), and
--rejects and --report must not be files it writes itself (`part-*` and its `.torchpredict/`). No output may
land inside a bundle folder: it could replace one of the bundle's files (then the bundle no longer loads), and
predictions do not belong among them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

from torchpredict.errors import InputError
from torchpredict.io.formats import STDIO
from torchpredict.jobs.sinks import STATE_DIR

__all__ = ["check_outputs"]


@dataclass(frozen=True)
class _File:
    """A path as the file it names: its real path, and its inode when it exists."""

    path: str
    real: str
    inode: tuple[int, int] | None

    @classmethod
    def of(cls, path: str | os.PathLike) -> _File:
        try:
            status = os.stat(path)
        except (OSError, ValueError):
            status = None
        inode = None if status is None else (status.st_dev, status.st_ino)
        return cls(str(path), os.path.realpath(path), inode)

    def same(self, other: _File) -> bool:
        return self.real == other.real or (self.inode is not None and self.inode == other.inode)


@dataclass(frozen=True)
class _Output:
    what: str  # as the message names it: "output", "rejects file", "report file"
    file: _File
    fix: str


def check_outputs(sources: Sequence[str], output: str | os.PathLike, rejects: str | os.PathLike | None = None,
                  report: str | os.PathLike | None = None) -> None:
    """Raise InputError when output, rejects or report would overwrite an input file or one another.

    sources: the input files, expanded (formats.expand_inputs). A folder output (a trailing slash or an
    existing folder) is checked as a whole: it must not be or hold an input file.

    >>> check_outputs(["data.csv"], "./data.csv")                                   # doctest: +SKIP
    Traceback (most recent call last):
    torchpredict.errors.InputError: output './data.csv' is the input file 'data.csv'; choose another output (CLI -o)
    """
    inputs = [_File.of(s) for s in sources if s != STDIO and os.path.isfile(s)]
    text = str(output)
    folder = text.endswith(("/", os.sep)) or Path(text).is_dir()
    outputs = [_Output(what, _File.of(path), fix) for what, path, fix in (
        ("output", None if folder else output, "choose another output (CLI -o)"),
        ("rejects file", rejects, "choose another rejects=... (CLI --rejects)"),
        ("report file", report, "choose another report=... (CLI --report)"),
    ) if path is not None and str(path) != STDIO]
    if folder:
        _check_folder(text, inputs, outputs)
    for out in [*outputs, *([_Output("output folder", _File.of(text), "choose another output (CLI -o)")]
                            if folder else [])]:
        bundle = _bundle_holding(Path(out.file.real))
        if bundle is not None:
            raise InputError(f"{out.what} '{out.file.path}' is inside the bundle '{bundle}' (a bundle folder holds "
                             f"the bundle's own files, which an output could replace); {out.fix}")
    for out in outputs:
        for source in inputs:
            if out.file.same(source):
                raise InputError(f"{out.what} '{out.file.path}' is the input file '{source.path}'; {out.fix}")
    for first, second in combinations(outputs, 2):
        if first.file.same(second.file):
            raise InputError(f"{second.what} '{second.file.path}' is the {first.what} '{first.file.path}'; "
                             f"{second.fix}")


def _check_folder(folder: str, inputs: list[_File], outputs: list[_Output]) -> None:
    """A folder output holds no input file, and the rejects and report files are none of its own files."""
    real = Path(os.path.realpath(folder))
    for source in inputs:
        if Path(source.real).is_relative_to(real):
            raise InputError(f"output folder '{folder}' holds the input file '{source.path}'; write the parts to "
                             "a folder without inputs (CLI -o)")
    for out in outputs:
        path = Path(out.file.real)
        if (path.parent == real and path.name.startswith("part-")) or path.is_relative_to(real / STATE_DIR):
            raise InputError(f"{out.what} '{out.file.path}' is a file the output folder '{folder}' writes; "
                             f"{out.fix}")


BUNDLE_MARK = b'"torchpredict.bundle"'  # the manifest's format id, within its first bytes


def _bundle_holding(path: Path) -> Path | None:
    """The nearest folder at or above path whose manifest.json is a torchpredict bundle's, if any."""
    for folder in (path, *path.parents):
        manifest = folder / "manifest.json"
        try:
            with open(manifest, "rb") as file:
                if BUNDLE_MARK in file.read(1 << 16):
                    return folder
        except OSError:
            continue
    return None
