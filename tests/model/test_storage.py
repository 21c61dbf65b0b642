from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import torch
from torch.utils import _pytree as pytree

from models_for_tests import (
    MLP,
    CallCounting,
    DataDependent,
    DictOutput,
    NormDropNet,
    Tied,
    TupleOutput,
    TwoInputs,
)
from torchpredict.errors import BundleError, ModelLoadError, SchemaError
from torchpredict.model.entry import ModelEntry
from torchpredict.model.storage import EXPORT_FILE, WEIGHTS_FILE, load_model, store_model

CPU = torch.device("cpu")
TRUST = ["models_for_tests"]  # the weights entries' factories come from the tests' own module


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def eager(model: torch.nn.Module, *inputs: torch.Tensor):
    model.eval()
    with torch.no_grad():
        return model(*inputs)


def assert_same(expected, got) -> None:
    expected_leaves, expected_spec = pytree.tree_flatten(expected)
    got_leaves, got_spec = pytree.tree_flatten(got)
    assert got_spec == expected_spec
    for want, have in zip(expected_leaves, got_leaves, strict=True):
        torch.testing.assert_close(have, want, rtol=1e-5, atol=1e-6)


def trained_norm_drop_net() -> NormDropNet:
    model = NormDropNet()
    for _ in range(3):  # move BatchNorm's running statistics away from their defaults
        model(torch.randn(16, 4) * 3 + 1)
    return model


# --- export ----------------------------------------------------------------------------------------------


def test_export_round_trip_has_dynamic_batch_and_eval_semantics(tmp_path: Path) -> None:
    model = trained_norm_drop_net()
    entry = store_model(model, {"x": torch.randn(8, 4)}, tmp_path)

    assert entry == {
        "format": "export",
        "file": EXPORT_FILE,
        "inputs": [{"name": "x", "dtype": "float32", "shape": [4]}],
    }
    assert json.loads(json.dumps(entry)) == entry
    assert model.training, "store_model must restore the caller's train/eval mode"
    assert not (tmp_path / WEIGHTS_FILE).exists()
    loaded = load_model(tmp_path, entry, CPU)
    assert not loaded.training
    assert not any(parameter.requires_grad for parameter in loaded.parameters())
    for batch in (1, 3, 257):
        x = torch.randn(batch, 4)
        assert_same(eager(model, x), loaded(x))


def test_single_row_example_still_exports_a_dynamic_batch(tmp_path: Path) -> None:
    model = MLP()
    entry = store_model(model, {"x": torch.randn(1, 4)}, tmp_path)

    assert entry["format"] == "export"
    x = torch.randn(5, 4)
    assert_same(eager(model, x), load_model(tmp_path, entry, "cpu")(x))


def test_two_input_model_exports_with_a_shared_dynamic_batch(tmp_path: Path) -> None:
    model = TwoInputs()
    entry = store_model(model, {"a": torch.randn(4, 3), "b": torch.randn(4, 5)}, tmp_path)

    assert entry["format"] == "export"
    assert entry["inputs"] == [
        {"name": "a", "dtype": "float32", "shape": [3]},
        {"name": "b", "dtype": "float32", "shape": [5]},
    ]
    loaded = load_model(tmp_path, entry, CPU)
    for batch in (1, 7):
        a, b = torch.randn(batch, 3), torch.randn(batch, 5)
        assert_same(eager(model, a, b), loaded(a, b))


@pytest.mark.parametrize("model_class", [TupleOutput, DictOutput])
def test_tuple_and_dict_outputs_survive_export(tmp_path: Path, model_class: type) -> None:
    model = model_class()
    entry = store_model(model, {"x": torch.randn(4, 4)}, tmp_path)

    assert entry["format"] == "export"
    x = torch.randn(6, 4)
    got = load_model(tmp_path, entry, CPU)(x)
    assert type(got) is type(eager(model, x))
    assert_same(eager(model, x), got)


class PrefixScorer(torch.nn.Module):
    """Called as a decoder is, forward(src [n, S], prefix [n, T]) -> [n, T, 5]; T varies from call to call."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(7, 5)

    def forward(self, src: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
        return self.embed(prefix) + self.embed(src).mean(dim=1, keepdim=True)


def test_extra_dynamic_dimensions_are_exported_and_recorded_as_null(tmp_path: Path) -> None:
    model = PrefixScorer()
    src, prefix = torch.randint(0, 7, (4, 6)), torch.randint(0, 7, (4, 3))
    call = {"kind": "seq2seq", "source": "src", "prefix": "tgt"}
    entry = store_model(model, {"src": src, "tgt": prefix}, tmp_path, dynamic={"tgt": {1: 9}}, call=call)

    assert entry["format"] == "export" and entry["call"] == call
    assert entry["inputs"] == [{"name": "src", "dtype": "int64", "shape": [6]},
                               {"name": "tgt", "dtype": "int64", "shape": [None]}]
    loaded = load_model(tmp_path, entry, CPU)
    for rows, length in ((1, 1), (3, 9), (5, 2)):
        src, prefix = torch.randint(0, 7, (rows, 6)), torch.randint(0, 7, (rows, length))
        assert_same(eager(model, src, prefix), loaded(src, prefix))
    # the prefix is the decoder's to make
    ModelEntry.from_dict(entry).check_inputs({"src": torch.zeros(2, 6, dtype=torch.int64)})
    with pytest.raises(SchemaError, match=r"model input 'src': expected shape \[\*, 6\], got \[2, 5\]"):
        ModelEntry.from_dict(entry).check_inputs({"src": torch.zeros(2, 5, dtype=torch.int64)})


def test_check_inputs_takes_any_size_where_the_shape_is_null() -> None:
    entry = {"format": "export", "inputs": [{"name": "ids", "dtype": "int64", "shape": [None, 3]}]}
    for length in (1, 40):
        ModelEntry.from_dict(entry).check_inputs({"ids": torch.zeros(2, length, 3, dtype=torch.int64)})
    with pytest.raises(SchemaError, match=r"expected shape \[\*, \*, 3\], got \[2, 4, 2\]"):
        ModelEntry.from_dict(entry).check_inputs({"ids": torch.zeros(2, 4, 2, dtype=torch.int64)})


@pytest.mark.parametrize(("dynamic", "message"), [
    ({"y": {1: 4}}, r"dynamic names input 'y', which is not one of the example inputs \['x'\]"),
    ({"x": {0: 4}}, r"dynamic input 'x': dimension 0 must be one of 1..1"),
    ({"x": {1: 3}}, r"example size in 2..largest, got largest 3 for example shape \[4, 4\]"),
])
def test_dynamic_dimension_errors(tmp_path: Path, dynamic: dict, message: str) -> None:
    with pytest.raises(BundleError, match=message):
        store_model(MLP(), {"x": torch.randn(4, 4)}, tmp_path, dynamic=dynamic)


def tamper_guards_code(archive: Path, code: str) -> None:
    """Rewrite the archive with `code` as its guards_code, as an attacker editing model.json would."""
    with zipfile.ZipFile(archive) as original:
        members = [(info, original.read(info)) for info in original.infolist()]
    with zipfile.ZipFile(archive, "w") as tampered:
        for info, data in members:
            if info.filename.endswith("models/model.json"):
                program = json.loads(data)
                program["guards_code"] = [code]
                data = json.dumps(program).encode()
            tampered.writestr(info, data)


def test_guards_code_in_a_tampered_archive_never_runs(tmp_path: Path) -> None:
    bundle, marker = tmp_path / "bundle", tmp_path / "pwned"
    entry = store_model(MLP(), {"x": torch.randn(4, 4)}, bundle)
    tamper_guards_code(bundle / EXPORT_FILE, f"__import__('pathlib').Path({str(marker)!r}).touch() is None")

    load_model(bundle, entry, CPU)(torch.randn(2, 4))
    assert not marker.exists()

    # Control: the default .module() does run it, so the check above tests something real.
    torch.export.load(bundle / EXPORT_FILE).module()(torch.randn(2, 4))
    assert marker.exists()


def test_loading_reads_pickles_only_through_the_weights_only_unpickler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = store_model(MLP(), {"x": torch.randn(4, 4)}, tmp_path)
    calls, real_load = [], torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    load_model(tmp_path, entry, CPU)
    assert all(weights_only is True for weights_only in calls)


def test_export_that_does_not_reproduce_eager_is_a_failure(tmp_path: Path) -> None:
    with pytest.raises(
        ModelLoadError, match=r"torch.export could not store the model: exported program differs"
    ):
        store_model(CallCounting(), {"x": torch.randn(4, 4)}, tmp_path, method="export")
    assert not (tmp_path / EXPORT_FILE).exists()


def test_forced_export_of_an_uncapturable_model_is_a_model_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"torch.export could not store the model: .*data-dependent"):
        store_model(DataDependent(), {"x": torch.randn(4, 4)}, tmp_path, method="export")


# --- weights fallback -------------------------------------------------------------------------------------


def test_uncapturable_model_falls_back_to_weights_and_says_why(tmp_path: Path) -> None:
    model = DataDependent()
    with pytest.warns(
        UserWarning, match=r"torch.export failed \(.*data-dependent.*\); storing weights.safetensors"
    ):
        entry = store_model(
            model, {"x": torch.randn(4, 4)}, tmp_path, factory="models_for_tests:DataDependent"
        )

    assert entry["format"] == "weights"
    assert entry["file"] == WEIGHTS_FILE
    assert entry["factory"] == "models_for_tests:DataDependent"
    assert entry["factory_kwargs"] == {}
    assert "data-dependent" in entry["fallback_reason"]
    assert json.loads(json.dumps(entry)) == entry
    assert not (tmp_path / EXPORT_FILE).exists()
    loaded = load_model(tmp_path, entry, CPU, trust_factory=TRUST)
    assert not loaded.training
    for x in (torch.randn(3, 4), -torch.randn(3, 4) * 10, torch.randn(3, 4) * 10):
        assert_same(eager(model, x), loaded(x))


def test_uncapturable_model_without_factory_explains_what_is_needed(tmp_path: Path) -> None:
    with pytest.raises(
        ModelLoadError, match=r"torch.export failed \(.*data-dependent.*factory='package.module:"
    ):
        store_model(DataDependent(), {"x": torch.randn(4, 4)}, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_weights_method_with_factory_kwargs_and_tied_weights(tmp_path: Path) -> None:
    model = MLP(in_features=5, hidden=7, out_features=2)
    kwargs = {"in_features": 5, "hidden": 7, "out_features": 2}
    entry = store_model(
        model,
        {"x": torch.randn(4, 5)},
        tmp_path,
        factory="models_for_tests:make_mlp",
        factory_kwargs=kwargs,
        method="weights",
    )
    assert entry == {
        "format": "weights",
        "file": WEIGHTS_FILE,
        "inputs": [{"name": "x", "dtype": "float32", "shape": [5]}],
        "factory": "models_for_tests:make_mlp",
        "factory_kwargs": kwargs,
    }
    x = torch.randn(9, 5)
    assert_same(eager(model, x), load_model(tmp_path, entry, CPU, trust_factory=TRUST)(x))

    tied = Tied()
    tied_dir = tmp_path / "tied"
    entry = store_model(
        tied, {"x": torch.randn(4, 4)}, tied_dir, factory="models_for_tests:Tied", method="weights"
    )
    loaded = load_model(tied_dir, entry, CPU, trust_factory=TRUST)
    assert loaded.decode.weight is loaded.encode.weight
    assert_same(eager(tied, x[:, :4]), loaded(x[:, :4]))


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (None, "method='weights' stores only the weights; pass factory='package.module:make_model'"),
        ("train.py:MLP", "factory 'train.py:MLP' names a file, which does not travel with the bundle"),
        (
            "models_for_tests:TanhMLP",
            "the model rebuilt by factory 'models_for_tests:TanhMLP' differs from the eager",
        ),
        ("models_for_tests:make_nothing", "returned str, expected an nn.Module"),
    ],
)
def test_weights_method_refuses_factories_that_cannot_rebuild_the_model(
    tmp_path: Path, factory: str | None, message: str
) -> None:
    with pytest.raises(ModelLoadError, match=message.replace("(", r"\(")):
        store_model(MLP(), {"x": torch.randn(4, 4)}, tmp_path, factory=factory, method="weights")
    assert not (tmp_path / WEIGHTS_FILE).exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "onnx"}, "method must be one of 'auto', 'export', 'weights', got 'onnx'"),
        ({"factory_kwargs": {"size": torch.ones(1)}}, "factory_kwargs must be JSON-serialisable"),
        ({"example_inputs": {"x": torch.randn(4, 4), "y": torch.randn(3, 4)}}, "share one batch size"),
        ({"example_inputs": {"x": torch.randn(0, 4)}}, r"example input 'x': expected shape \[batch >= 1"),
        ({"example_inputs": {}}, "example_inputs must be a non-empty dict"),
    ],
)
def test_store_model_argument_errors(tmp_path: Path, kwargs: dict, message: str) -> None:
    arguments = {"example_inputs": {"x": torch.randn(4, 4)}, **kwargs}
    with pytest.raises(BundleError, match=message):
        store_model(MLP(), directory=tmp_path, **arguments)


def test_a_model_that_fails_on_its_examples_is_reported(tmp_path: Path) -> None:
    with pytest.raises(
        ModelLoadError, match="the model fails on the example inputs: RuntimeError: mat1 and mat2"
    ):
        store_model(MLP(), {"x": torch.randn(4, 6)}, tmp_path)


# --- load errors ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stored_mlp(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    directory = tmp_path_factory.mktemp("mlp")
    return directory, store_model(MLP(), {"x": torch.randn(4, 4)}, directory)


def test_load_model_errors(tmp_path: Path, stored_mlp: tuple[Path, dict]) -> None:
    directory, entry = stored_mlp
    with pytest.raises(ModelLoadError, match="model format 'onnx' is not one this torchpredict reads"):
        load_model(directory, {**entry, "format": "onnx"}, CPU)
    with pytest.raises(
        ModelLoadError, match=r"model file must be a plain file name inside the bundle, got '../x'"
    ):
        load_model(directory, {**entry, "file": "../x"}, CPU)
    with pytest.raises(ModelLoadError, match=r"model file 'model.pt2' is missing from"):
        load_model(tmp_path, entry, CPU)
    (tmp_path / EXPORT_FILE).write_bytes(b"not a zip archive")
    with pytest.raises(ModelLoadError, match=r"model file 'model.pt2' could not be loaded: "):
        load_model(tmp_path, entry, CPU)
    (tmp_path / WEIGHTS_FILE).write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken")
    weights = {**entry, "format": "weights", "file": WEIGHTS_FILE, "factory": "models_for_tests:MLP"}
    with pytest.raises(ModelLoadError, match=r"weights file 'weights.safetensors' could not be read: "):
        load_model(tmp_path, weights, CPU, trust_factory=TRUST)
    with pytest.raises(
        ModelLoadError, match=r"model entry for 'weights.safetensors' has no factory reference"
    ):
        load_model(tmp_path, {**weights, "factory": None}, CPU, trust_factory=TRUST)


def test_a_weights_entry_builds_only_from_a_trusted_factory(tmp_path: Path) -> None:
    entry = store_model(MLP(), {"x": torch.randn(4, 4)}, tmp_path, factory="models_for_tests:MLP", method="weights")
    with pytest.raises(ModelLoadError, match=r"bundle's factory 'models_for_tests:MLP' is not trusted: .* pass "
                       r"trust_factory=\['models_for_tests'\] \(CLI --trust-factory models_for_tests\)"):
        load_model(tmp_path, entry, CPU)
    assert isinstance(load_model(tmp_path, entry, CPU, trust_factory=TRUST), MLP)


@pytest.mark.parametrize(
    ("factory", "kwargs", "message"),
    [
        ("torch.nn:Linear", {"in_features": 4, "out_features": 3},
         "'Linear' is defined in module 'torch.nn.modules.linear', not in 'torch.nn'"),
        ("models_for_tests:make_mlp", {"hidden": {"size": 8}},
         "factory_kwargs 'hidden' is a JSON object; a bundle's factory arguments may only be"),
    ],
)
def test_saving_refuses_factories_a_bundle_could_not_load(tmp_path: Path, factory: str, kwargs: dict,
                                                          message: str) -> None:
    with pytest.raises(ModelLoadError, match=message):
        store_model(MLP(), {"x": torch.randn(4, 4)}, tmp_path, factory=factory, factory_kwargs=kwargs,
                    method="weights")
    assert not (tmp_path / WEIGHTS_FILE).exists()


def test_weights_that_do_not_fit_the_factory_are_reported(tmp_path: Path) -> None:
    entry = store_model(
        MLP(), {"x": torch.randn(4, 4)}, tmp_path, factory="models_for_tests:MLP", method="weights"
    )
    entry["factory_kwargs"] = {"hidden": 9}
    with pytest.raises(
        ModelLoadError, match=r"'hidden.weight' has shape \[8, 4\] in the checkpoint, \[9, 4\]"
    ):
        load_model(tmp_path, entry, CPU, trust_factory=TRUST)


# --- ModelEntry.check_inputs -----------------------------------------------------------------------------------------

ENTRY = {
    "format": "export",
    "inputs": [
        {"name": "a", "dtype": "float32", "shape": [3]},
        {"name": "b", "dtype": "int64", "shape": [2, 5]},
    ]
}


def test_check_inputs_accepts_matching_inputs() -> None:
    ModelEntry.from_dict(ENTRY).check_inputs({"a": torch.zeros(7, 3), "b": torch.zeros(7, 2, 5, dtype=torch.int64)})


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (
            {"a": torch.zeros(5, 4), "b": torch.zeros(5, 2, 5, dtype=torch.int64)},
            r"model input 'a': expected shape \[\*, 3\], got \[5, 4\]",
        ),
        (
            {"a": torch.zeros(5), "b": torch.zeros(5, 2, 5, dtype=torch.int64)},
            r"model input 'a': expected shape \[\*, 3\], got \[5\]",
        ),
        ({"a": torch.zeros(5, 3), "b": torch.zeros(5, 2, 5)}, "model input 'b': expected int64, got float32"),
        ({"a": torch.zeros(5, 3)}, r"model inputs: missing 'b' \(the model takes 'a', 'b'\)"),
        (
            {"a": torch.zeros(5, 3), "b": torch.zeros(5, 2, 5, dtype=torch.int64), "c": torch.zeros(5)},
            "model inputs: unexpected 'c'",
        ),
        (
            {"b": torch.zeros(5, 2, 5, dtype=torch.int64), "a": torch.zeros(5, 3)},
            "model inputs must come in the order 'a', 'b', got 'b', 'a'",
        ),
        (
            {"a": torch.zeros(5, 3), "b": torch.zeros(4, 2, 5, dtype=torch.int64)},
            "model inputs must share one batch size, got 'a': 5, 'b': 4",
        ),
    ],
)
def test_check_inputs_errors(inputs: dict, message: str) -> None:
    with pytest.raises(SchemaError, match=message):
        ModelEntry.from_dict(ENTRY).check_inputs(inputs)


def test_check_inputs_doctest_message_matches_the_contract() -> None:
    entry = {"format": "export", "inputs": [{"name": "x", "dtype": "float32", "shape": [13]}]}
    with pytest.raises(SchemaError) as caught:
        ModelEntry.from_dict(entry).check_inputs({"x": torch.zeros(5, 12)})
    assert str(caught.value) == "model input 'x': expected shape [*, 13], got [5, 12]"
