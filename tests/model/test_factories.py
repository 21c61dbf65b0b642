from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from models_for_tests import MLP
from torchpredict.bundle import load
from torchpredict.errors import ModelLoadError
from torchpredict.io.readers import read_table
from torchpredict.model.factories import (
    ENTRY_POINT_GROUP,
    build_model,
    resolve_bundle_factory,
    resolve_factory,
    trust_hint,
)

UNGUARDED = """
from pathlib import Path

from torch import nn


def make_net():
    return nn.Linear(4, 3)

model = make_net()
Path("model.pth").write_text("overwritten")
"""

SCRIPT = """
from torch import nn


def make_net():
    return nn.Linear(4, 2)


if __name__ == "__main__":
    open("ran-main", "w").close()
"""

NETS = """
from pathlib import Path

from torch import nn

Path({marker!r}).touch()  # importing this module is running its code


def make_net(width=2):
    return nn.Linear(4, width)


class Net(nn.Linear):
    def __init__(self):
        super().__init__(4, 2)


from subprocess import run  # noqa: E402 - a name the module has, but does not define
"""


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An importable package `tp_trustpkg` whose module `nets` touches a marker file when imported."""
    root = tmp_path / "site"
    (root / "tp_trustpkg").mkdir(parents=True)
    (root / "tp_trustpkg" / "__init__.py").write_text("")
    marker = tmp_path / "imported"
    (root / "tp_trustpkg" / "nets.py").write_text(NETS.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(root))
    yield marker
    for name in ("tp_trustpkg", "tp_trustpkg.nets"):
        sys.modules.pop(name, None)


def declare_entry_point(site: Path, value: str) -> None:
    """A distribution's metadata on sys.path declaring `value` under torchpredict.factories."""
    info = site / "tp_trustpkg-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tp-trustpkg\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nnets = {value}\n")


# --- your own references ------------------------------------------------------------------------------


def test_resolve_factory_imports_a_function_or_class_of_the_module() -> None:
    assert isinstance(resolve_factory("models_for_tests:make_mlp")(), MLP)
    assert resolve_factory("models_for_tests:MLP") is MLP
    assert resolve_factory("torch.nn.modules.linear:Linear") is torch.nn.Linear


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("nope", "factory 'nope' must look like 'package.module:callable' or 'path/to/file.py:callable'"),
        ("models_for_tests:", "factory 'models_for_tests:' must look like"),
        ("os:nonexistent", "factory 'os:nonexistent': 'os' is a standard-library module"),
        ("os:system", "factory 'os:system': 'os' is a standard-library module"),
        ("__main__:Net", "factory '__main__:Net': '__main__' is a standard-library module"),
        ("torch.nn:Nope", "factory 'torch.nn:Nope': module 'torch.nn' has no attribute 'Nope'"),
        ("no_such_package_xyz.models:f", "cannot import module 'no_such_package_xyz.models': No module named "
                                          "'no_such_package_xyz' (searched the current folder "),
        ("missing_file.py:f", "factory 'missing_file.py:f': file 'missing_file.py' does not exist"),
        ("models_for_tests:NOT_A_FACTORY", "factory 'models_for_tests:NOT_A_FACTORY' names a int, which is not a "
                                           "function or class"),
        ("models_for_tests:MLP.forward", "factory 'models_for_tests:MLP.forward': 'MLP.forward' is not a single name"),
        ("torch.serialization:os.system", "'os.system' is not a single name; a factory is a function or class "
                                          "defined in the module named, not an attribute reached through it"),
        ("torch.nn:Linear", "factory 'torch.nn:Linear': 'Linear' is defined in module 'torch.nn.modules.linear', not "
                            "in 'torch.nn'; name the module that defines it ('torch.nn.modules.linear:Linear')"),
        ("torch:load", "'load' is defined in module 'torch.serialization', not in 'torch'"),
        ("sympy:sympify", "'sympify' is defined in module 'sympy.core.sympify', not in 'sympy'"),
        ("torch nn:Linear", "factory 'torch nn:Linear': 'torch nn' is not a module name like 'package.module'"),
    ],
)
def test_resolve_factory_errors(ref: str, message: str) -> None:
    with pytest.raises(ModelLoadError, match=re.escape(message)):
        resolve_factory(ref)


def test_a_name_the_module_imports_is_not_its_factory(package: Path) -> None:
    with pytest.raises(ModelLoadError, match=re.escape("'run' is defined in module 'subprocess', not in "
                                                       "'tp_trustpkg.nets'")):
        resolve_factory("tp_trustpkg.nets:run")


def test_file_factory_does_not_run_the_scripts_main_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "train.py").write_text(SCRIPT)
    monkeypatch.chdir(tmp_path)
    net = resolve_factory(f"{tmp_path / 'train.py'}:make_net")()
    assert isinstance(net, torch.nn.Linear)
    assert not (tmp_path / "ran-main").exists()


def test_file_factory_runs_only_the_scripts_definitions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "train.py").write_text(UNGUARDED)
    monkeypatch.chdir(tmp_path)
    net = resolve_factory("train.py:make_net")()
    assert isinstance(net, torch.nn.Linear) and net.out_features == 3
    assert sorted(path.name for path in tmp_path.iterdir()) == ["train.py"]


def test_file_factory_set_only_by_skipped_code_is_reported(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text(UNGUARDED)
    with pytest.raises(ModelLoadError) as caught:
        resolve_factory(f"{tmp_path / 'train.py'}:model")
    assert str(caught.value) == (
        f"factory '{tmp_path / 'train.py'}:model': '{tmp_path / 'train.py'}' sets 'model' only in code torchpredict "
        "does not run (line 10: model = make_net()): give it a literal value or set it inside the definition; only "
        "the script's imports, class and function definitions and constant assignments run"
    )


def test_file_factory_whose_script_fails_is_reported(tmp_path: Path) -> None:
    script = tmp_path / "broken.py"
    script.write_text("import no_such_module_xyz\n")
    with pytest.raises(
        ModelLoadError,
        match=r"source '.*broken.py' line 1: import no_such_module_xyz failed: "
        "ModuleNotFoundError: No module named 'no_such_module_xyz'",
    ):
        resolve_factory(f"{script}:make")


# --- your own module in the current folder ----------------------------------------------------------------


@pytest.fixture
def nets_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The current folder holds tp_mynets.py (touching a marker when imported), and is not on sys.path."""
    marker = tmp_path / "imported"
    (tmp_path / "tp_mynets.py").write_text(NETS.format(marker=str(marker)))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [entry for entry in sys.path if entry not in ("", ".", str(tmp_path))])
    yield marker
    sys.modules.pop("tp_mynets", None)


def test_your_factory_module_is_found_in_the_current_folder_as_python_m_does(nets_here: Path) -> None:
    before = list(sys.path)
    assert resolve_factory("tp_mynets:make_net")(width=3).out_features == 3
    assert nets_here.exists()
    assert sys.path == before, "the current folder stays off sys.path after the import"


def test_a_module_found_nowhere_says_where_it_was_searched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelLoadError) as caught:
        resolve_factory("tp_nonets.models:make_net")
    assert str(caught.value) == (
        f"factory 'tp_nonets.models:make_net': cannot import module 'tp_nonets.models': No module named 'tp_nonets' "
        f"(searched the current folder {tmp_path} and sys.path; pass 'path/to/tp_nonets/models.py:make_net' or "
        "install the package)"
    )


def test_a_module_whose_own_import_fails_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "tp_needy.py").write_text("import tp_not_installed_xyz\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelLoadError) as caught:
        resolve_factory("tp_needy:make_net")
    assert str(caught.value) == ("factory 'tp_needy:make_net': cannot import module 'tp_needy': ModuleNotFoundError: "
                                 "No module named 'tp_not_installed_xyz'")


def test_a_bundle_factory_is_not_imported_from_the_current_folder_untrusted(nets_here: Path) -> None:
    with pytest.raises(ModelLoadError, match="bundle's factory 'tp_mynets:make_net' is not trusted"):
        resolve_bundle_factory("tp_mynets:make_net")
    with pytest.raises(ModelLoadError, match="cannot import module 'tp_mynets': ModuleNotFoundError"):
        resolve_bundle_factory("tp_mynets:make_net", ["tp_mynets"])  # the loading side searches sys.path only
    assert not nets_here.exists()


def test_cli_pack_finds_a_factory_module_in_the_current_folder(tmp_path: Path) -> None:
    """As a new user types it, with the installed `torchpredict` command (whose sys.path lacks the folder)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    torch.save(model.state_dict(), tmp_path / "model.pt")
    (tmp_path / "mynets.py").write_text("from torch import nn\n\n\ndef make_net():\n    return nn.Linear(4, 2)\n")
    rows = torch.randn(30, 4)
    (tmp_path / "train.csv").write_text("a,b,c,d\n" + "".join(",".join(f"{v:.5f}" for v in r) + "\n" for r in rows))
    command = [str(Path(sys.executable).with_name("torchpredict")), "pack", "model.pt", "-o", "m.tpk",
               "--train", "train.csv", "--task", "raw", "--factory", "mynets:make_net"]

    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, result.stderr
    with torch.no_grad():
        expected = model(rows.round(decimals=5)).numpy()
    predicted = load(tmp_path / "m.tpk", device="cpu").predict(read_table(tmp_path / "train.csv"))
    got = np.stack([predicted.column(name).to_numpy() for name in predicted.column_names], axis=1)
    np.testing.assert_allclose(got.reshape(expected.shape), expected, rtol=1e-5, atol=1e-5)
    command[4] = "other.tpk"
    missing = subprocess.run([*command[:-1], "nonets:make_net"], cwd=tmp_path, capture_output=True, text=True,
                             timeout=120)
    assert missing.returncode == 2
    assert missing.stderr.strip().endswith(
        f"factory 'nonets:make_net': cannot import module 'nonets': No module named 'nonets' (searched the current "
        f"folder {tmp_path} and sys.path; pass 'path/to/nonets.py:make_net' or install the package)"
    )


def test_build_model_errors() -> None:
    with pytest.raises(ModelLoadError, match=r"factory 'models_for_tests:make_mlp' failed: TypeError: .*'width'"):
        build_model("models_for_tests:make_mlp", {"width": 3})
    with pytest.raises(ModelLoadError, match="factory 'models_for_tests:make_nothing' returned str, expected"):
        build_model("models_for_tests:make_nothing")


# --- a bundle's references ----------------------------------------------------------------------------


def test_an_untrusted_factory_is_refused_before_its_module_is_imported(package: Path) -> None:
    with pytest.raises(ModelLoadError) as caught:
        resolve_bundle_factory("tp_trustpkg.nets:make_net")
    assert str(caught.value) == (
        "bundle's factory 'tp_trustpkg.nets:make_net' is not trusted: loading it imports and runs module "
        "'tp_trustpkg.nets'; if you trust it pass trust_factory=['tp_trustpkg'] (CLI --trust-factory tp_trustpkg) "
        "or install a package that declares it under the 'torchpredict.factories' entry point"
    )
    with pytest.raises(ModelLoadError, match="is not trusted"):
        resolve_bundle_factory("tp_trustpkg.nets:make_net", ["tp_trust", "tp_trustpkg.nets:Net", "other"])
    assert not package.exists()


@pytest.mark.parametrize("trust", [["tp_trustpkg"], ["tp_trustpkg.nets"], ["tp_trustpkg.nets:make_net"],
                                   "tp_trustpkg", ("other", "tp_trustpkg")])
def test_a_trusted_factory_is_imported(package: Path, trust: list[str]) -> None:
    build = resolve_bundle_factory("tp_trustpkg.nets:make_net", trust)
    assert isinstance(build(), torch.nn.Linear)
    assert package.exists()


def test_an_installed_entry_point_trusts_a_factory(package: Path) -> None:
    declare_entry_point(Path(sys.path[0]), "tp_trustpkg.nets:make_net")
    assert resolve_bundle_factory("tp_trustpkg.nets:make_net")().out_features == 2
    with pytest.raises(ModelLoadError, match="'tp_trustpkg.nets:Net' is not trusted"):
        resolve_bundle_factory("tp_trustpkg.nets:Net")


def test_an_entry_point_naming_a_package_trusts_its_modules(package: Path) -> None:
    declare_entry_point(Path(sys.path[0]), "tp_trustpkg")
    assert resolve_bundle_factory("tp_trustpkg.nets:Net")().in_features == 4


def test_trust_does_not_lift_the_shape_rules(package: Path) -> None:
    with pytest.raises(ModelLoadError, match="'os' is a standard-library module"):
        resolve_bundle_factory("os:system", ["os"])
    with pytest.raises(ModelLoadError, match="'os.system' is not a single name"):
        resolve_bundle_factory("torch.serialization:os.system", ["torch"])
    with pytest.raises(ModelLoadError, match="'load' is defined in module 'torch.serialization', not in 'torch'"):
        resolve_bundle_factory("torch:load", ["torch"])
    with pytest.raises(ModelLoadError, match="'run' is defined in module 'subprocess'"):
        resolve_bundle_factory("tp_trustpkg.nets:run", ["tp_trustpkg"])


def test_a_bundle_factory_never_names_a_file(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text(SCRIPT)
    for ref in (f"{tmp_path / 'train.py'}:make_net", "train.py:make_net", "./train.py:make_net"):
        with pytest.raises(ModelLoadError, match=re.escape(f"bundle's factory {ref!r} names a file; loading a "
                                                           "bundle never runs a file from a path")):
            resolve_bundle_factory(ref, [str(tmp_path), "train"])


@pytest.mark.parametrize("entry", ["", "a b", "mypkg:", "mypkg:a.b", 3])
def test_malformed_trust_entries_are_refused(entry: object) -> None:
    with pytest.raises(ModelLoadError, match=re.escape(f"trust_factory entry {entry!r} must name a module")):
        resolve_bundle_factory("models_for_tests:make_mlp", [entry])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cfg": {"width": 2}}, "factory_kwargs 'cfg' is a JSON object; a bundle's factory arguments may only be "
                                "JSON numbers, strings, booleans, null and lists of them"),
        ({"sizes": [1, [2, {"x": 1}]]}, "factory_kwargs 'sizes' is a list nested too deep or holding JSON objects"),
        ({"sizes": [[[[[[[[[[1]]]]]]]]]]}, "factory_kwargs 'sizes' is a list nested too deep"),
        ([1, 2], "factory_kwargs must be a JSON object, got list"),
        ("hidden=3", "factory_kwargs must be a JSON object, got str"),
    ],
)
def test_a_bundle_factory_takes_only_plain_json_arguments(kwargs: object, message: str) -> None:
    with pytest.raises(ModelLoadError, match=re.escape(f"factory 'models_for_tests:make_mlp': {message}")):
        build_model("models_for_tests:make_mlp", kwargs, from_bundle=True,  # type: ignore[arg-type]
                    trust_factory=["models_for_tests"])


def test_a_trusted_bundle_factory_builds_with_plain_arguments() -> None:
    model = build_model("models_for_tests:make_mlp", {"hidden": 5, "out_features": 2, "in_features": 4},
                        from_bundle=True, trust_factory=["models_for_tests"])
    assert model.out.out_features == 2
    assert trust_hint("mypkg.nets:make_net") == "pass trust_factory=['mypkg'] (CLI --trust-factory mypkg)"
