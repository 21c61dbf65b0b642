"""Hostile bundles and inputs built to exhaust memory or disk: each costs a one-line error (exit 2), never the machine.

Every case starts from the committed wine bundle, with its hashes recomputed so that only the bounds under
test stand in the way, and runs the real CLI under a memory limit (and a limit on the size of any file it
writes, so that a bomb extracted to disk gets SIGXFSZ) as well as the Python API.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import zlib
from pathlib import Path

import pytest

from hostile import (
    add_raw_member,
    copy_bundle,
    deflated_zeros,
    edit_json,
    one_line,
    rehash,
    run_cli_bounded,
    zip_folder,
)
from torchpredict.bundle import load
from torchpredict.bundle.manifest import read_json
from torchpredict.errors import BundleError, InputError
from torchpredict.io.readers import read_chunks, read_table

DATA = Path(__file__).parent / "data" / "wine-v1"
WINE, INPUT = DATA / "wine.tpk", DATA / "new_wines.csv"
EXIT_BAD_INPUT = 2


def _predict(bundle: Path, source: Path | str, tmp_path: Path, *more: str) -> subprocess.CompletedProcess:
    return run_cli_bounded("predict", bundle, source, "-o", tmp_path / "out.csv", "--keep", "id", "--device", "cpu",
                           "--quiet", *more)


def _refused(result: subprocess.CompletedProcess, pattern: str) -> None:
    """The run failed on bad input (exit 2) with exactly one line matching pattern."""
    assert result.returncode == EXIT_BAD_INPUT, result.stderr
    line = one_line(result)
    assert re.fullmatch(f"error: {pattern}", line), line


def _deepen(bundle: Path, name: str, depth: int) -> None:
    """Give a JSON object file of the bundle a key nested `depth` levels deep (written as text: json.dumps
    recurses), then recompute the hashes."""
    text = (bundle / name).read_text().rstrip().removesuffix("}")
    (bundle / name).write_text(f'{text}, "deep": {"[" * depth}{"]" * depth}}}')
    if name != "manifest.json":
        rehash(bundle)


def _zip_with_zeros(tmp_path: Path, name: str, size: int, *, listed: bool, declared: int | None = None) -> Path:
    """wine.zip plus member `name` inflating to `size` zeros while declaring `declared` (default: size) bytes;
    when listed, the manifest lists it with the sha256 of the declared bytes."""
    declared = size if declared is None else declared
    bundle = copy_bundle(WINE, tmp_path / "wine")
    (bundle / name).unlink(missing_ok=True)
    if listed:
        manifest = json.loads((bundle / "manifest.json").read_text())
        manifest["files"][name] = hashlib.sha256(bytes(declared)).hexdigest()
        (bundle / "manifest.json").write_text(json.dumps(manifest))
    archive = zip_folder(bundle, tmp_path / "wine.zip")
    deflated, crc = deflated_zeros(size)
    add_raw_member(archive, name, deflated, declared, crc if declared == size else zlib.crc32(bytes(declared)))
    return archive


def test_a_small_zip_with_an_unlisted_2_gib_member_costs_nothing(tmp_path):
    archive = _zip_with_zeros(tmp_path, "padding.bin", 2 << 30, listed=False)
    assert archive.stat().st_size < 3 << 20
    predicted = _predict(archive, INPUT, tmp_path)
    assert predicted.returncode == 0, predicted.stderr
    assert len(read_table(tmp_path / "out.csv")) == len(read_table(INPUT))
    assert run_cli_bounded("inspect", archive).returncode == 0
    assert load(archive, device="cpu").predict(read_table(INPUT).slice(0, 3), keep=["id"]).num_rows == 3


def test_a_listed_member_that_inflates_past_the_ratio_limit_is_refused_before_it_inflates(tmp_path):
    archive = _zip_with_zeros(tmp_path, "model.pt2", 512 << 20, listed=True)
    message = (r"bundle '.*wine\.zip': member 'model\.pt2' inflates to 512\.0 MiB from 5\d\d\.\d KiB "
               r"\(ratio 1,0\d\d:1; the limit is 200:1\)")
    _refused(_predict(archive, INPUT, tmp_path), message)
    with pytest.raises(BundleError, match=f"^{message}$"):
        load(archive, device="cpu")
    assert run_cli_bounded("inspect", archive).returncode == 0  # inspect needs no weights, so never looks


def test_a_member_that_inflates_past_what_it_declares_yields_only_what_it_declares(tmp_path):
    archive = _zip_with_zeros(tmp_path, "padding.bin", 2 << 30, listed=True, declared=1 << 20)
    predicted = _predict(archive, INPUT, tmp_path)  # under the file-size limit: 2 GiB written would kill it
    assert predicted.returncode == 0, predicted.stderr
    assert load(archive, device="cpu").manifest.files["padding.bin"] == hashlib.sha256(bytes(1 << 20)).hexdigest()


def test_dev_zero_as_input_stops_at_the_line_limit(tmp_path):
    message = (r"file '/dev/zero': the header runs on past 64 MiB \(the limit\) without a line break; "
               r"is it a text file of lines\?")
    _refused(_predict(WINE, "/dev/zero", tmp_path, "--format", "csv"), message)
    zeros = tmp_path / "zeros.jsonl"  # in this process, a file that ends: no memory limit guards the test run
    zeros.write_bytes(bytes(65 << 20))
    in_process = message.replace("/dev/zero", ".*zeros\\.jsonl").replace("the header", "line 1")
    with pytest.raises(InputError, match=f"^{in_process}$"):
        list(read_chunks(zeros))


def test_a_csv_with_cr_only_line_endings_past_the_line_limit_gets_a_hint(tmp_path):
    text = INPUT.read_text().splitlines()
    body = "\r".join(text[1:]).encode() + b"\r"
    source = tmp_path / "mac.csv"
    source.write_bytes(text[0].encode() + b"\r" + body * (65 * (1 << 20) // len(body) + 1))
    message = (r"file '.*mac\.csv': the header runs on past 64 MiB \(the limit\) without a \\n; its lines seem "
               r"to end in \\r alone \(old Mac style\): convert them to \\n, e\.g\. tr '\\r' '\\n'")
    _refused(_predict(WINE, source, tmp_path), message)
    with pytest.raises(InputError, match=f"^{message}$"):
        list(read_chunks(source))


@pytest.mark.parametrize("depth", [65, 100_000])
def test_json_files_nested_past_the_limit_are_refused(tmp_path, depth):
    for name in ("manifest.json", "schema.json", "preprocessing.json"):
        bundle = copy_bundle(WINE, tmp_path / f"{depth}-{name}")
        _deepen(bundle, name, depth)
        what = "manifest.json" if name == "manifest.json" else f"file '{name}'"
        message = rf"bundle '{re.escape(str(bundle))}': {re.escape(what)} nests deeper than 64 levels"
        with pytest.raises(BundleError, match=f"^{message}$"):
            load(bundle, device="cpu") if name != "schema.json" else read_json(bundle, name)
        if name != "preprocessing.json":
            _refused(run_cli_bounded("inspect", bundle), message)  # quick: inspect imports no torch
        elif depth > 1000:  # once through predict, which imports torch (seconds)
            _refused(_predict(bundle, INPUT, tmp_path), message)


def test_an_oversized_manifest_is_refused_in_a_folder_and_a_zip(tmp_path):
    bundle = copy_bundle(WINE, tmp_path / "wine")
    manifest = bundle / "manifest.json"
    manifest.write_text(manifest.read_text() + " " * (17 << 20))
    _refused(run_cli_bounded("inspect", bundle),
             r"bundle '.*wine': manifest\.json is larger than 16\.0 MiB, the limit for it")
    archive = zip_folder(bundle, tmp_path / "wine.zip")
    _refused(run_cli_bounded("inspect", archive),
             r"bundle '.*wine\.zip': member 'manifest\.json' declares 17\.0 MiB, more than the 16\.0 MiB "
             r"allowed")


def test_an_oversized_preprocessing_json_is_refused(tmp_path):
    bundle = copy_bundle(WINE, tmp_path / "wine")
    with open(bundle / "preprocessing.json", "a") as handle:
        handle.write(" " * ((256 << 20) + 1))
    edit_json(bundle, "manifest.json", lambda manifest: None)  # rehash
    with pytest.raises(BundleError, match=r"^bundle '.*wine': file 'preprocessing\.json' is larger than 256\.0 MiB, "
                                          r"the limit for it$"):
        load(bundle, device="cpu")
    assert read_json(bundle, "schema.json")["columns"]  # what does not need the file never reads it
