"""Bundles crafted to run code on the loading side: each must be refused, through the API and the CLI.

Every case starts from a real bundle saved here, is tampered with as an attacker would (hashes recomputed with
tests/hostile.py) and names a marker file that must never appear. A control next to each shows the attack is
real: the callable or loader it reaches does create the marker when called directly.
"""

from __future__ import annotations

import contextlib
import functools
import json
import pickle
import re
import runpy
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv
import pytest
import torch

from hostile import copy_bundle, edit_json, one_line, rehash, run_cli
from models_for_tests import make_mlp
from torchpredict.bundle import load, save
from torchpredict.errors import ModelLoadError
from torchpredict.heads.classification import MulticlassClassification
from torchpredict.model.storage import EXPORT_FILE
from torchpredict.preprocessing import Preprocessor, Standardize

FEATURES = ["a", "b", "c", "d"]
TESTS = Path(__file__).parent


@pytest.fixture(scope="module")
def table() -> pa.Table:
    rng = np.random.default_rng(0)
    return pa.table({name: rng.normal(size=32) for name in FEATURES})


def save_mlp(path: Path, table: pa.Table, **storage: Any) -> Path:
    torch.manual_seed(0)
    preprocessor = Preprocessor([Standardize(FEATURES)]).fit(table)
    head = MulticlassClassification(target="label", labels=["x", "y", "z"])
    return save(path, make_mlp().eval(), preprocessor=preprocessor, heads=head, examples=table, **storage)


@pytest.fixture(scope="module")
def weights_bundle(table: pa.Table, tmp_path_factory: pytest.TempPathFactory) -> Path:
    with pytest.warns(UserWarning, match="the loading side must pass trust_factory=\\['models_for_tests'\\]"):
        return save_mlp(tmp_path_factory.mktemp("weights") / "mlp.tpk", table, storage="weights",
                        factory="models_for_tests:make_mlp")


@pytest.fixture(scope="module")
def export_bundle(table: pa.Table, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_mlp(tmp_path_factory.mktemp("export") / "mlp.tpk", table)


@pytest.fixture
def rows(tmp_path: Path, table: pa.Table) -> Path:
    path = tmp_path / "rows.csv"
    path.write_text(",".join(FEATURES) + "\n" + "\n".join(",".join(str(v) for v in row.values())
                                                          for row in table.slice(0, 5).to_pylist()) + "\n")
    return path


def with_factory(bundle: Path, target: Path, factory: str, kwargs: dict | None = None) -> Path:
    copy = copy_bundle(bundle, target)
    edit_json(copy, "manifest.json", lambda m: m["model"].update(factory=factory, factory_kwargs=kwargs or {}))
    return copy


def refused_everywhere(bundle: Path, marker: Path, rows: Path, message: str, cwd: Path | None = None) -> None:
    """load() and `torchpredict predict` both refuse the bundle with `message`, and the marker never appears."""
    refused_when_trusted(bundle, marker, message)
    output = rows.with_name("predictions.csv")
    result = run_cli("predict", bundle, rows, "-o", output, "--device", "cpu", cwd=cwd)
    assert result.returncode == 2, result.stderr
    assert re.search(message, one_line(result))
    assert not marker.exists()
    assert not output.exists()


def refused_when_trusted(bundle: Path, marker: Path, message: str, *trust: str) -> None:
    """load(trust_factory=trust) refuses the bundle with `message` (the CLI passes its flags on unchanged)."""
    with pytest.raises(ModelLoadError, match=message):
        load(bundle, device="cpu", trust_factory=list(trust))
    assert not marker.exists()


def walk(ref: str) -> Any:
    """What the old resolver reached for "module:dotted.path": the control for each attribute-walk attack."""
    module, _, dotted = ref.partition(":")
    return functools.reduce(getattr, dotted.split("."), __import__(module, fromlist=["_"]))


# --- factories that reach code through another module ---------------------------------------------------


WALKS = {
    "torch-serialization-os-system": ("torch.serialization:os.system", lambda marker: {"command": f"touch {marker}"}),
    "numpy-datasource-os-system": ("numpy.lib._datasource:os.system", lambda marker: {"command": f"touch {marker}"}),
    "cpp-extension-subprocess-run": ("torch.utils.cpp_extension:subprocess.run",
                                     lambda marker: {"args": ["touch", str(marker)]}),
}


@pytest.mark.parametrize("case", list(WALKS))
def test_a_factory_walking_into_another_module_never_runs(weights_bundle: Path, tmp_path: Path, rows: Path,
                                                          case: str) -> None:
    ref, kwargs = WALKS[case]
    marker = tmp_path / "MARK"
    bundle = with_factory(weights_bundle, tmp_path / "evil.tpk", ref, kwargs(marker))
    attribute = ref.partition(":")[2]
    message = re.escape(f"factory {ref!r}: {attribute!r} is not a single name")
    refused_everywhere(bundle, marker, rows, message)
    refused_when_trusted(bundle, marker, message, ref.split(".")[0])  # trusting the package does not help

    walk(ref)(**kwargs(tmp_path / "control"))  # control: what the factory reaches does run a command
    assert (tmp_path / "control").exists()


def test_sympify_as_a_factory_never_evaluates_its_argument(weights_bundle: Path, tmp_path: Path, rows: Path) -> None:
    marker = tmp_path / "MARK"
    code = "__import__('os').system('touch {}')"
    bundle = with_factory(weights_bundle, tmp_path / "evil.tpk", "sympy:sympify", {"a": code.format(marker)})
    refused_everywhere(bundle, marker, rows, re.escape("bundle's factory 'sympy:sympify' is not trusted: loading it "
                                                       "imports and runs module 'sympy'"))
    refused_when_trusted(bundle, marker, re.escape("'sympify' is defined in module 'sympy.core.sympify', not in "
                                                   "'sympy'"), "sympy")

    import sympy  # control: sympify evaluates the string

    sympy.sympify(code.format(tmp_path / "control"))
    assert (tmp_path / "control").exists()


class Payload:
    """Unpickling this touches a marker file: the stand-in for an attacker's code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


def test_torch_load_as_a_factory_never_unpickles(weights_bundle: Path, tmp_path: Path, rows: Path) -> None:
    marker = tmp_path / "MARK"
    bundle = copy_bundle(weights_bundle, tmp_path / "evil.tpk")
    (bundle / "payload.pt").write_bytes(pickle.dumps(Payload(marker)))
    edit_json(bundle, "manifest.json", lambda m: m["model"].update(
        factory="torch:load", factory_kwargs={"f": str(bundle / "payload.pt"), "weights_only": False}))
    refused_everywhere(bundle, marker, rows, re.escape("bundle's factory 'torch:load' is not trusted"))
    refused_when_trusted(bundle, marker, re.escape("'load' is defined in module 'torch.serialization', not in "
                                                   "'torch'"), "torch")

    (tmp_path / "control.pt").write_bytes(pickle.dumps(Payload(tmp_path / "control")))
    with contextlib.suppress(Exception):  # control: torch.load(weights_only=False) runs the pickle
        torch.load(tmp_path / "control.pt", weights_only=False)
    assert (tmp_path / "control").exists()


# --- factories shipped inside the bundle -----------------------------------------------------------------

EVIL_SCRIPT = """
from pathlib import Path

Path({marker!r}).touch()


def make():
    from models_for_tests import make_mlp

    return make_mlp()
"""


def with_script(weights_bundle: Path, tmp_path: Path, marker: Path) -> Path:
    bundle = copy_bundle(weights_bundle, tmp_path / "evil.tpk")
    (bundle / "evil.py").write_text(EVIL_SCRIPT.format(marker=str(marker)))
    rehash(bundle)
    return bundle


@pytest.mark.parametrize("form", ["absolute", "relative", "dotted-relative"])
def test_a_python_file_inside_the_bundle_never_runs(weights_bundle: Path, tmp_path: Path, rows: Path,
                                                    form: str) -> None:
    marker = tmp_path / "MARK"
    bundle = with_script(weights_bundle, tmp_path, marker)
    ref = {"absolute": f"{bundle / 'evil.py'}:make", "relative": "evil.py:make", "dotted-relative": "./evil.py:make"}
    edit_json(bundle, "manifest.json", lambda m: m["model"].update(factory=ref[form]))
    message = re.escape(f"bundle's factory {ref[form]!r} names a file; loading a bundle never runs a file")
    refused_everywhere(bundle, marker, rows, message, cwd=bundle)
    refused_when_trusted(bundle, marker, message, "evil")

    runpy.run_path(str(bundle / "evil.py"))  # control: running the shipped file touches the marker
    assert marker.exists()


def test_a_module_shipped_inside_the_bundle_is_not_trusted_by_being_importable(weights_bundle: Path, tmp_path: Path,
                                                                              rows: Path) -> None:
    """`python -m` puts the working directory on sys.path: run in the bundle, "evil:make" would import."""
    marker = tmp_path / "MARK"
    bundle = with_script(weights_bundle, tmp_path, marker)
    edit_json(bundle, "manifest.json", lambda m: m["model"].update(factory="evil:make"))
    message = re.escape("bundle's factory 'evil:make' is not trusted: loading it imports and runs module 'evil'; if "
                        "you trust it pass trust_factory=['evil'] (CLI --trust-factory evil)")
    sys.path.insert(0, str(bundle))
    try:
        refused_everywhere(bundle, marker, rows, message, cwd=bundle)
    finally:
        sys.path.remove(str(bundle))


# --- model.pt2 that needs torch's loader --------------------------------------------------------------------

EVIL_EXPRESSION = "__import__('os').system('touch {marker}') + {symbol}"
SYMBOL = re.compile(r"Symbol\('s\d+', positive=True, integer=True\)")


def tamper_archive(bundle: Path, marker: Path) -> None:
    """Flip the byte order (so torchpredict's reader declines it) and plant code in a size expression."""
    archive = bundle / EXPORT_FILE
    with zipfile.ZipFile(archive) as original:
        members = [(info, original.read(info)) for info in original.infolist()]
    with zipfile.ZipFile(archive, "w") as tampered:
        for info, data in members:
            if info.filename.endswith("/byteorder"):
                data = b"big" if sys.byteorder == "little" else b"little"
            elif info.filename.endswith("models/model.json"):
                text = data.decode()
                symbol = SYMBOL.search(text).group(0)
                data = text.replace(symbol, EVIL_EXPRESSION.format(marker=marker, symbol=symbol), 1).encode()
            tampered.writestr(info, data)
    rehash(bundle)


def test_a_pt2_needing_torchs_loader_never_evaluates_its_sizes(export_bundle: Path, tmp_path: Path,
                                                               rows: Path) -> None:
    marker = tmp_path / "MARK"
    bundle = copy_bundle(export_bundle, tmp_path / "evil.tpk")
    tamper_archive(bundle, marker)
    untrusted = (r"model file 'model.pt2' holds what torchpredict's reader does not build \(weights stored "
                 r"big-endian on a little-endian machine\); .* pass trust_torch_loader=True "
                 r"\(CLI --trust-torch-loader\)")
    grammar = (r"model file 'model.pt2' could not be loaded: symbolic expression \"__import__\('os'\).system\('touch "
               r".*…\" \(\d+ chars\) is not one torch.export writes: unexpected \".system\('tou\" at character 16")
    with pytest.raises(ModelLoadError, match=untrusted):
        load(bundle, device="cpu")
    with pytest.raises(ModelLoadError, match=grammar):
        load(bundle, device="cpu", trust_torch_loader=True)
    assert not marker.exists()
    for command, flags, message in [("predict", [], untrusted), ("predict", ["--trust-torch-loader"], grammar),
                                    ("verify", [], untrusted), ("verify", ["--trust-torch-loader"], grammar)]:
        files = [rows, "-o", tmp_path / "out.csv"] if command == "predict" else []
        result = run_cli(command, bundle, *files, "--device", "cpu", *flags)
        assert result.returncode == 2, result.stderr
        assert re.search(message, one_line(result)), one_line(result)
        assert not marker.exists()

    control = copy_bundle(export_bundle, tmp_path / "control.tpk")
    tamper_archive(control, tmp_path / "control")
    with contextlib.suppress(Exception):  # control: torch.export.load evaluates the size expression
        torch.export.load(control / EXPORT_FILE)
    assert (tmp_path / "control").exists()


# --- what is trusted loads -----------------------------------------------------------------------------------


def test_a_trusted_factory_loads_and_predicts(weights_bundle: Path, table: pa.Table, rows: Path,
                                              tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="bundle's factory 'models_for_tests:make_mlp' is not trusted"):
        load(weights_bundle, device="cpu")
    predictor = load(weights_bundle, device="cpu", trust_factory=["models_for_tests"], verify=True)
    expected = predictor.predict(table.slice(0, 5))

    output = tmp_path / "predictions.csv"
    result = run_cli("predict", weights_bundle, rows, "-o", output, "--quiet", "--trust-factory", "models_for_tests",
                     cwd=TESTS)
    assert result.returncode == 0, result.stderr
    written = pyarrow.csv.read_csv(output)
    assert written.column("label").to_pylist() == expected.column("label").to_pylist()
    np.testing.assert_allclose(written.column("label_probability").to_numpy(),
                               expected.column("label_probability").to_numpy(), rtol=1e-5)
    result = run_cli("verify", weights_bundle, "--trust-factory", "other,models_for_tests", cwd=TESTS)
    assert result.returncode == 0, result.stderr


def test_a_factory_declared_by_an_installed_package_loads(weights_bundle: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    info = tmp_path / "site" / "tp_models-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tp-models\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[torchpredict.factories]\nmlp = models_for_tests:make_mlp\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert load(weights_bundle, device="cpu", verify=True).verify().passed


def test_pack_says_what_loading_will_need(tmp_path: Path, table: pa.Table) -> None:
    torch.manual_seed(0)
    torch.save(make_mlp().state_dict(), tmp_path / "state.pt")
    train = tmp_path / "train.csv"
    labels = np.array(["x", "y", "z"])[np.arange(table.num_rows) % 3]
    pyarrow.csv.write_csv(table.append_column("label", pa.array(labels)), train)
    result = run_cli("pack", tmp_path / "state.pt", "-o", tmp_path / "packed.tpk", "--train", train,
                     "--target", "label", "--task", "multiclass", "--factory", "models_for_tests:make_mlp",
                     "--standardize", "*", "--storage", "weights", cwd=TESTS)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().splitlines()[0] == (  # then the fit on the training rows
        f"wrote bundle '{tmp_path / 'packed.tpk'}' (weights + factory 'models_for_tests:make_mlp': load it with "
        "--trust-factory models_for_tests)"
    )
    assert json.loads((tmp_path / "packed.tpk" / "manifest.json").read_text())["model"]["format"] == "weights"
