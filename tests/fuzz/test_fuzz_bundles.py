"""Fuzzing the bundle opener: the manifest, schema and preprocessing JSON of a real bundle with a part replaced by
random JSON (of random types and depths), resealed so that the hashes pass and the reader meets the content;
zips whose member tables lie; and every preprocessing step's from_dict given random parameters and state. Each
is loaded (or described, as `inspect` does) or refused with a torchpredict error of one short line."""

from __future__ import annotations

import io
import json
import warnings
import zipfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzzing import FUZZ, corpus
from hostile import copy_bundle, edit_json
from torchpredict.bundle import load
from torchpredict.bundle.inspection import describe
from torchpredict.bundle.manifest import read_json, read_manifest
from torchpredict.errors import TorchPredictError
from torchpredict.preprocessing.steps import STEP_TYPES, Step

WINE = Path(__file__).parents[1] / "data" / "wine-v1" / "wine.tpk"
FILES = ["manifest.json", "schema.json", "preprocessing.json"]
STEPS = {step["type"]: step for path in sorted((WINE.parents[1]).rglob("preprocessing.json"))
         for step in json.loads(path.read_text()).get("steps", [])}

_json = st.recursive(st.none() | st.booleans() | st.floats() | st.integers(-2**70, 2**70) | st.text(max_size=6),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                                 max_size=4), max_leaves=20)


def _refused_in_one_line(call) -> Any:
    try:
        return call()
    except TorchPredictError as exc:
        assert str(exc) and len(str(exc)) < 1500, str(exc)
        return None


def _mutated(data: Any, draw: st.DrawFn) -> Any:
    """data with one node, reached by a random walk from the top, replaced by random JSON (or its key removed)."""
    if not isinstance(data, (dict, list)) or not data or draw(st.integers(0, 3)) == 0:
        return draw(_json)
    if isinstance(data, dict):
        key = draw(st.sampled_from(sorted(data)))
        if draw(st.integers(0, 5)) == 0:
            return {k: v for k, v in data.items() if k != key}
        return {**data, key: _mutated(data[key], draw)}
    index = draw(st.integers(0, len(data) - 1))
    return [*data[:index], _mutated(data[index], draw), *data[index + 1:]]


def _open_both_ways(bundle: Path) -> None:
    """As `inspect` reads it (JSON only), then as load does."""
    def inspected() -> str:
        schema, preprocessing = read_json(bundle, "schema.json"), read_json(bundle, "preprocessing.json")
        return describe(read_manifest(bundle), schema, preprocessing)

    _refused_in_one_line(inspected)
    _refused_in_one_line(lambda: load(bundle, device="cpu"))


@FUZZ
@given(rel=st.sampled_from(FILES), data=st.data())
def test_a_bundle_with_mutated_json_loads_or_is_refused(tmp_path_factory, rel: str, data: st.DataObject):
    bundle = copy_bundle(WINE, tmp_path_factory.mktemp("mutated") / "wine.tpk")
    edit_json(bundle, rel, lambda document: _mutated_but_files(document, data.draw))
    _open_both_ways(bundle)


def _mutated_but_files(document: Any, draw: st.DrawFn) -> Any:
    """A mutated JSON document; a manifest keeps its file table, so that its hashes are resealed (lying hash
    tables are tests/test_tampering.py's)."""
    if not isinstance(document, dict) or "files" not in document:
        return _mutated(document, draw)
    files = document.pop("files")
    mutated = _mutated(document, draw)
    return {**mutated, "files": files} if isinstance(mutated, dict) else mutated


_NAMES = st.sampled_from(["manifest.json", "schema.json", "preprocessing.json", "model.pt2", "../escape", "/abs",
                          "a\\b", "dir/", "preprocessing.safetensors", "x" * 300])
REAL = {path.relative_to(WINE).as_posix(): path.read_bytes() for path in sorted(WINE.rglob("*")) if path.is_file()}


@FUZZ
@given(dropped=st.sets(st.sampled_from(sorted(REAL))), extra=st.lists(st.tuples(_NAMES, st.binary(max_size=200)),
                                                                       max_size=4),
       cut=st.one_of(st.none(), st.integers(0, 10**6)), flips=st.lists(st.integers(0, 10**6), max_size=3))
def test_a_zip_whose_member_table_lies_is_refused(tmp_path_factory, dropped: set, extra: list, cut: int | None,
                                                  flips: list):
    """The real bundle zipped, less some members, plus members that escape, repeat or lie, then cut or with bytes
    flipped."""
    buffer = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        warnings.simplefilter("ignore")  # "Duplicate name": on purpose
        for name, content in [*((n, c) for n, c in REAL.items() if n not in dropped), *extra]:
            zf.writestr(name, content)
    data = bytearray(buffer.getvalue())
    for at in flips:
        data[at % len(data)] ^= 0xFF
    path = tmp_path_factory.mktemp("zip") / "bundle.zip"
    path.write_bytes(bytes(data if cut is None else data[:cut % (len(data) + 1)]))
    _open_both_ways(path)


@FUZZ
@given(kind=st.sampled_from(sorted(STEP_TYPES)), columns=st.one_of(st.lists(st.text(max_size=4), max_size=3), _json),
       params=st.one_of(st.dictionaries(st.text(max_size=10), _json, max_size=3), _json),
       state=st.one_of(st.none(), st.dictionaries(st.text(max_size=10), _json, max_size=4), _json))
def test_every_steps_from_dict_builds_or_says_what_is_wrong(kind: str, columns: Any, params: Any, state: Any):
    _refused_in_one_line(lambda: Step.from_dict({"type": kind, "columns": columns, "params": params,
                                                 "state": state}))


@FUZZ
@given(kind=st.sampled_from(sorted(STEP_TYPES)), data=st.data())
def test_a_real_steps_dict_mutated_builds_or_says_what_is_wrong(kind: str, data: st.DataObject):
    """Start from a real step of the kind (one of the bundles' the tests save, or a plain one), mutate one part."""
    document = STEPS.get(kind, {"type": kind, "columns": ["a"], "params": {}, "state": None})
    _refused_in_one_line(lambda: Step.from_dict(_mutated(document, data.draw)))


@pytest.mark.parametrize("path", corpus("bundles"), ids=lambda p: p.name)
def test_the_kept_bundle_files_are_refused_in_one_line(tmp_path, path: Path):
    """Each kept file <target>.<name>.json replaces <target> (manifest.json, schema.json or preprocessing.json)."""
    bundle = copy_bundle(WINE, tmp_path / "wine.tpk")
    rel = next(f for f in FILES if path.name.startswith(f.removesuffix(".json") + "."))
    edit_json(bundle, rel, lambda _: json.loads(path.read_text()))
    _open_both_ways(bundle)
