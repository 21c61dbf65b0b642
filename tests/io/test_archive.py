"""archive.py: a zip bundle gives up only its listed members, each within bounds; JSON files within bounds."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
import zlib
from pathlib import Path

import pytest

from hostile import add_raw_member, copy_bundle, deflated_zeros, edit_json, rehash, zip_folder
from torchpredict.bundle.manifest import read_json, read_manifest, relative_files, write_json
from torchpredict.errors import BundleError
from torchpredict.io import archive
from torchpredict.io.archive import MAX_JSON_DEPTH, copy_exactly, load_bounded_json, opened

WINE = Path(__file__).parents[1] / "data" / "wine-v1" / "wine.tpk"


@pytest.fixture
def wine_zip(tmp_path: Path) -> Path:
    return zip_folder(WINE, tmp_path / "wine.zip")


def _nested(depth: int) -> list:
    """A list nested `depth` levels deep, built without recursion."""
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


def test_only_the_members_the_manifest_lists_are_extracted(tmp_path):
    extra = {"unlisted.bin": b"x" * 1000, "examples/unlisted.txt": b"y"}
    with opened(zip_folder(WINE, tmp_path / "wine.zip", extra=extra)) as root:
        assert relative_files(root) == relative_files(WINE)


def test_members_narrows_the_extraction_to_the_files_asked_for(wine_zip):
    with opened(wine_zip, members=()) as root:
        assert relative_files(root) == ["manifest.json"]
    with opened(wine_zip, members=["schema.json", "unlisted.json"]) as root:
        assert relative_files(root) == ["manifest.json", "schema.json"]


def test_inspecting_a_zip_reads_its_json_and_never_its_weights(wine_zip, monkeypatch):
    read = []
    real_open = zipfile.ZipFile.open

    def spy(self: zipfile.ZipFile, name: str | zipfile.ZipInfo, *args: object, **kwargs: object) -> object:
        read.append(getattr(name, "filename", name))
        return real_open(self, name, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", spy)
    assert read_manifest(wine_zip).name == "wine"
    assert read_json(wine_zip, "schema.json")["columns"]
    assert set(read) == {"manifest.json", "schema.json"}


def test_unsafe_member_names_are_refused_even_when_unlisted(tmp_path):
    evil = zip_folder(WINE, tmp_path / "evil.zip", extra={"../evil.txt": b"x"})
    with pytest.raises(BundleError, match=r"refusing unsafe path '\.\./evil\.txt' in the zip"), opened(evil):
        pass


def _with_listed_member(tmp_path: Path, name: str, size: int) -> Path:
    """wine.zip plus a listed member of `size` zero bytes whose sha256 is right (so only the bounds refuse it)."""
    bundle = copy_bundle(WINE, tmp_path / "wine")
    digest = hashlib.sha256(bytes(size)).hexdigest()
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"][name] = digest  # listed, but in the zip only (edit_json would hash the folder's copy)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    archive_path = zip_folder(bundle, tmp_path / "wine.zip")
    add_raw_member(archive_path, name, *_zeros(size))
    return archive_path


def _zeros(size: int) -> tuple[bytes, int, int]:
    deflated, crc = deflated_zeros(size)
    return deflated, size, crc


def test_a_listed_member_compressed_past_the_ratio_limit_is_refused_before_it_inflates(tmp_path):
    bomb = _with_listed_member(tmp_path, "big.bin", 32 << 20)
    with pytest.raises(BundleError, match=r"bundle '.*wine\.zip': member 'big\.bin' inflates to 32\.0 MiB from "
                                          r"32\.\d KiB \(ratio 1,0\d\d:1; the limit is 200:1\)"), opened(bomb):
        pass
    with opened(bomb, members=()) as root:  # what does not need it never looks at it
        assert relative_files(root) == ["manifest.json"]


def test_many_small_members_are_refused_when_together_they_pass_the_ratio_limit(tmp_path):
    bundle = copy_bundle(WINE, tmp_path / "wine")
    for i in range(20):
        (bundle / f"part{i}.bin").write_bytes(bytes(1 << 20))  # each under RATIO_FREE_BYTES
    rehash(bundle)
    zipped = zip_folder(bundle, tmp_path / "wine.zip")
    with pytest.raises(BundleError, match=r"its members inflate to 20\.\d MiB from a zip of \d+\.\d KiB "
                                          r"\(ratio \d{3}:1; the limit is 200:1\)"), opened(zipped):
        pass


def test_members_past_the_total_limit_are_refused(wine_zip, monkeypatch):
    monkeypatch.setattr(archive, "MAX_BUNDLE_BYTES", 20 << 10)  # over the whole, not over any one member
    with pytest.raises(BundleError, match=r"its members inflate to \d\d\.\d KiB; the limit is 20\.0 KiB"), \
            opened(wine_zip):
        pass


def test_a_member_never_yields_more_than_it_declares(tmp_path):
    bundle = copy_bundle(WINE, tmp_path / "wine")
    model = (bundle / "model.pt2").read_bytes()
    (bundle / "model.pt2").unlink()
    liar = zip_folder(bundle, tmp_path / "wine.zip")
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    stream = packer.compress(model + bytes(64 << 20)) + packer.flush()  # 64 MiB more than declared
    add_raw_member(liar, "model.pt2", stream, len(model), zlib.crc32(model))
    with opened(liar) as root:
        assert (root / "model.pt2").read_bytes() == model


def test_copying_stops_at_the_first_byte_past_the_declared_size_and_wants_them_all():
    sink = io.BytesIO()
    with pytest.raises(BundleError, match=r"^bundle 'b\.zip': member 'm' yields more than the 4 B it declares$"):
        copy_exactly(io.BytesIO(b"0123456789"), sink, 4, "bundle 'b.zip': member 'm'")
    assert len(sink.getvalue()) <= 4
    with pytest.raises(BundleError, match=r"^bundle 'b\.zip': member 'm' yields 3 B of the 4 B it declares$"):
        copy_exactly(io.BytesIO(b"012"), io.BytesIO(), 4, "bundle 'b.zip': member 'm'")
    exact = io.BytesIO()
    copy_exactly(io.BytesIO(b"0123"), exact, 4, "unused")
    assert exact.getvalue() == b"0123"


def test_a_member_shorter_than_it_declares_is_a_bundle_error(tmp_path):
    bundle = copy_bundle(WINE, tmp_path / "wine")
    model = (bundle / "model.pt2").read_bytes()
    (bundle / "model.pt2").unlink()
    short = zip_folder(bundle, tmp_path / "wine.zip")
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    add_raw_member(short, "model.pt2", packer.compress(model) + packer.flush(), len(model) + 100, zlib.crc32(model))
    with pytest.raises(BundleError, match=r"^bundle '.*wine\.zip': member 'model\.pt2' yields 13\.9 KiB of the "
                                          r"14\.0 KiB it declares$"), opened(short):
        pass


def test_a_manifest_member_past_its_limit_is_refused_before_it_is_written(tmp_path):
    bundle = copy_bundle(WINE, tmp_path / "wine")
    text = (bundle / "manifest.json").read_text()
    (bundle / "manifest.json").write_text(text + " " * (17 << 20))
    with pytest.raises(BundleError, match=r"member 'manifest\.json' declares 17\.0 MiB, more than the 16\.0 MiB "
                                          r"allowed"), \
            opened(zip_folder(bundle, tmp_path / "wine.zip")):
        pass
    with pytest.raises(BundleError, match=r"^bundle '.*wine': manifest\.json is larger than 16\.0 MiB, "
                                          r"the limit for it$"):
        read_manifest(bundle)


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 100_000])
def test_json_nested_past_the_limit_is_a_bundle_error_naming_the_file(tmp_path, depth):
    (tmp_path / "deep.json").write_text("[" * depth + "]" * depth)
    with pytest.raises(BundleError, match=rf"^bundle 'b': file 'deep\.json' nests deeper than {MAX_JSON_DEPTH} "
                                          r"levels$"):
        load_bounded_json(tmp_path, "deep.json", "b")


def test_json_nested_up_to_the_limit_loads(tmp_path):
    (tmp_path / "ok.json").write_text(json.dumps({"a": _nested(MAX_JSON_DEPTH - 1), "b": [1, {"c": 2}]}))
    assert load_bounded_json(tmp_path, "ok.json", "b")["b"] == [1, {"c": 2}]


def test_json_past_its_size_limit_is_refused_without_decoding(tmp_path):
    (tmp_path / "big.json").write_text("[" + "0," * 600 + "0]")
    with pytest.raises(BundleError, match=r"^bundle 'b': file 'big\.json' is larger than 1\.0 KiB, the limit "
                                          r"for it$"):
        load_bounded_json(tmp_path, "big.json", "b", limit=1024)


def test_json_that_is_not_a_regular_file_is_refused(tmp_path):
    (tmp_path / "dir.json").mkdir()
    with pytest.raises(BundleError, match=r"^bundle 'b': file 'dir\.json' is not a regular file$"):
        load_bounded_json(tmp_path, "dir.json", "b")


def test_a_deep_manifest_is_a_bundle_error(tmp_path):
    bundle = copy_bundle(WINE, tmp_path / "wine")
    edit_json(bundle, "manifest.json", lambda m: m["producer"].update({"deep": _nested(200)}))
    with pytest.raises(BundleError, match=r"': manifest\.json nests deeper than 64 levels$"):
        read_manifest(bundle)
    with pytest.raises(BundleError, match=r"': manifest\.json nests deeper than 64 levels$"):
        read_manifest(zip_folder(bundle, tmp_path / "wine.zip"))


def test_a_failing_json_write_leaves_the_old_file_whole_and_no_temporary_file(tmp_path, monkeypatch):
    """Bundle JSON goes to a temporary file first: a failing encode or a crash before the rename keeps the old
    manifest as it was, instead of the half-written one a plain write_text leaves."""
    path = tmp_path / "manifest.json"
    write_json(path, {"version": 1})
    before = path.read_bytes()
    with pytest.raises(TypeError):
        write_json(path, {"version": 2, "bad": object()})  # JSON cannot encode it
    assert path.read_bytes() == before

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("torchpredict.io.writers.os.replace", crash)
    with pytest.raises(OSError, match="disk full"):
        write_json(path, {"version": 3})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]
    monkeypatch.undo()
    write_json(path, {"version": 4})
    assert json.loads(path.read_text()) == {"version": 4}


def test_a_folder_bundle_is_read_from_a_private_copy_of_its_listed_files(tmp_path):
    folder = copy_bundle(WINE, tmp_path / "wine.tpk")
    (folder / "unlisted.bin").write_bytes(b"x" * 100)
    with opened(folder) as root:
        assert root != folder and relative_files(root) == relative_files(WINE)
        before = {rel: (root / rel).read_bytes() for rel in relative_files(root)}
        for rel in relative_files(WINE):  # the folder rewritten in place while it is open
            (folder / rel).write_bytes(b"the next version")
        assert {rel: (root / rel).read_bytes() for rel in relative_files(root)} == before
    assert not root.exists()
    with opened(WINE, members=["schema.json"]) as root:
        assert relative_files(root) == ["manifest.json", "schema.json"]


def test_a_folder_snapshot_leaves_out_missing_and_unsafe_names_for_the_checks_to_name(tmp_path):
    folder = copy_bundle(WINE, tmp_path / "wine.tpk")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"].update({"../outside.json": "0" * 64, "gone.json": "0" * 64})
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "outside.json").write_text("{}")
    with opened(folder) as root:
        assert relative_files(root) == relative_files(WINE)
