from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.export import Dim
from torch.utils import _pytree as pytree

from models_for_tests import MLP, DictOutput, NormDropNet, Tied, TupleOutput, TwoInputs
from seq2seq_model import Seq2Seq
from torchpredict.errors import ModelLoadError
from torchpredict.export_reader import ExportedModule, Unsupported, load_checked, read_archive
from torchpredict.storage import EXPORT_FILE, load_model, store_model

CPU = torch.device("cpu")


class Convolutional(nn.Module):
    """Conv, pooling, BatchNorm in eval mode, flatten: layouts, int lists and buffers in the graph."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(x), 1))


class ShapeArithmetic(nn.Module):
    """Uses the batch size in a reshape and a constant tensor: symbolic ints and lifted constants."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(6, 6)
        self.register_buffer("offset", torch.arange(6.0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x) + self.offset
        return y.reshape(x.shape[0] * 2, 3).softmax(-1).reshape(x.shape[0], -1)


class TopK(MLP):
    """An operator with two outputs (values, indices) and a float scalar argument."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        values, indices = torch.topk(super().forward(x) * 0.5, k=2, dim=1)
        return values.clamp(min=-float("inf"), max=1e3), indices


class WithCond(MLP):
    """torch.cond is a higher-order operator with subgraphs: beyond the reader, so torch loads it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = super().forward(x)
        return torch.cond(logits.sum() > 0, lambda t: t + 1, lambda t: t - 1, (logits,))


def seq2seq() -> Seq2Seq:
    return Seq2Seq(src_vocab=14, tgt_vocab=14, d_model=16, nhead=2, layers=1, ff=32)


BATCH = Dim("batch", min=1, max=1024)
SOURCE, TARGET = Dim("source", min=1, max=16), Dim("target", min=1, max=16)
CASES: dict[str, tuple[Callable[[], nn.Module], Callable[[int], tuple], dict]] = {
    "mlp": (MLP, lambda n: (torch.randn(n, 4),), {"x": {0: BATCH}}),
    "batchnorm-dropout": (NormDropNet, lambda n: (torch.randn(n, 4),), {"x": {0: BATCH}}),
    "two-inputs": (TwoInputs, lambda n: (torch.randn(n, 3), torch.randn(n, 5)), {"a": {0: BATCH}, "b": {0: BATCH}}),
    "tuple-output": (TupleOutput, lambda n: (torch.randn(n, 4),), {"x": {0: BATCH}}),
    "dict-output": (DictOutput, lambda n: (torch.randn(n, 4),), {"x": {0: BATCH}}),
    "tied": (Tied, lambda n: (torch.randn(n, 4),), {"x": {0: BATCH}}),
    "conv": (Convolutional, lambda n: (torch.randn(n, 1, 8, 8),), {"x": {0: BATCH}}),
    "shape-arithmetic": (ShapeArithmetic, lambda n: (torch.randn(n, 6),), {"x": {0: BATCH}}),
    "topk": (TopK, lambda n: (torch.randn(n, 4),), {"x": {0: BATCH}}),
    "transformer": (
        seq2seq,
        lambda n: (torch.randint(4, 14, (n, 7)), torch.randint(4, 14, (n, 5))),
        {"src": {0: BATCH, 1: SOURCE}, "tgt": {0: BATCH, 1: TARGET}},
    ),
}


def export_to(path: Path, factory: Callable[[], nn.Module], inputs: Callable[[int], tuple], dynamic: dict) -> Path:
    torch.manual_seed(0)
    model = factory().eval()
    torch.export.save(torch.export.export(model, inputs(3), dynamic_shapes=dynamic), path)
    return path


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("archives")
    return {name: export_to(folder / f"{name}.pt2", *case) for name, case in CASES.items()}


def rewrite(archive: Path, edit: Callable[[str, bytes], bytes]) -> None:
    """Rewrite members of a .pt2 as an attacker editing the zip would: edit(name, data) -> new data."""
    with zipfile.ZipFile(archive) as original:
        members = [(info, original.read(info)) for info in original.infolist()]
    with zipfile.ZipFile(archive, "w") as tampered:
        for info, data in members:
            tampered.writestr(info, edit(info.filename, data))


def edit_program(archive: Path, change: Callable[[dict], None]) -> None:
    def edit(name: str, data: bytes) -> bytes:
        if not name.endswith("models/model.json"):
            return data
        program = json.loads(data)
        change(program)
        return json.dumps(program).encode()

    rewrite(archive, edit)


# --- the same model as torch.export.load ------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CASES))
def test_reader_reproduces_torch_export_load_exactly(archives: dict[str, Path], name: str) -> None:
    reference = torch.export.load(archives[name]).module()
    module = read_archive(archives[name])
    assert isinstance(module, ExportedModule)
    assert not module.training
    for batch in (1, 5, 64):
        inputs = CASES[name][1](batch)
        with torch.inference_mode():
            want, got = reference(*inputs), module(*inputs)
        want_leaves, want_spec = pytree.tree_flatten(want)
        got_leaves, got_spec = pytree.tree_flatten(got)
        assert got_spec == want_spec
        for expected, actual in zip(want_leaves, got_leaves, strict=True):
            assert actual.dtype == expected.dtype
            assert torch.equal(actual, expected)


def test_parameters_buffers_and_tied_weights_are_the_models(archives: dict[str, Path]) -> None:
    module = read_archive(archives["batchnorm-dropout"])
    names = {name.removeprefix("graph_module.") for name, _ in module.named_parameters()}
    assert names == {"body.0.weight", "body.0.bias", "body.1.weight", "body.1.bias", "body.3.weight", "body.3.bias"}
    assert {"body.1.running_mean", "body.1.running_var"} <= {n.removeprefix("graph_module.")
                                                             for n, _ in module.named_buffers()}
    assert not any(parameter.requires_grad for parameter in module.parameters())
    tied = read_archive(archives["tied"]).graph_module
    weights = [p for n, p in tied.named_parameters(remove_duplicate=False) if n.endswith("weight")]
    assert len({weight.data_ptr() for weight in weights}) == 1


def test_inputs_may_be_given_by_name(archives: dict[str, Path]) -> None:
    module = read_archive(archives["two-inputs"])
    a, b = torch.randn(2, 3), torch.randn(2, 5)
    assert torch.equal(module(a=a, b=b), module(a, b))
    assert torch.equal(module(a, b=b), module(a, b))
    with pytest.raises(TypeError, match="takes inputs shaped like"):
        module(a)


def test_loading_imports_neither_dynamo_nor_the_torch_deserializer(archives: dict[str, Path]) -> None:
    code = ("import sys; from torchpredict.export_reader import read_archive; import torch; "
            f"read_archive({str(archives['transformer'])!r})(torch.ones(1, 3, dtype=torch.long), "
            "torch.ones(1, 2, dtype=torch.long)); "
            "print(sorted(m for m in ('torch._dynamo', 'torch._export.serde.serialize') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"}, check=True)
    assert result.stdout.strip() == "[]"


# --- beyond the reader: torch.export.load, checked --------------------------------------------------------


def test_higher_order_operators_go_to_the_checked_torch_loader(tmp_path: Path) -> None:
    archive = export_to(tmp_path / "cond.pt2", WithCond, lambda n: (torch.randn(n, 4),), {"x": {0: BATCH}})
    with pytest.raises(Unsupported, match="operator 'torch.ops.higher_order.cond'"):
        read_archive(archive)
    x = torch.randn(3, 4)
    assert torch.equal(load_checked(archive).module()(x), torch.export.load(archive).module()(x))


def test_load_model_falls_back_to_torch_for_what_the_reader_does_not_build(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = WithCond().eval()
    entry = store_model(model, {"x": torch.randn(4, 4)}, tmp_path, method="export")
    x = torch.randn(3, 4)
    loaded = load_model(tmp_path, entry, CPU)
    assert not isinstance(loaded, ExportedModule)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p.update(schema_version={"major": 99, "minor": 0}), "schema major 99"),
        (lambda p: p["graph_module"]["graph"]["nodes"][0].update(target="os.system"), "operator 'os.system'"),
        (lambda p: p["graph_module"]["graph"]["nodes"][0].update(target="torch.ops.nowhere.op.default"),
         "not registered"),
        (lambda p: p["graph_module"]["signature"]["input_specs"][0]["parameter"].update(
            parameter_name='hidden.weight"); import os; ("'), "state name"),
    ],
    ids=["schema-version", "not-an-operator", "unknown-namespace", "state-name-injection"],
)
def test_reader_refuses_what_it_does_not_know(tmp_path: Path, archives: dict[str, Path], change: Callable,
                                              message: str) -> None:
    archive = tmp_path / "model.pt2"
    archive.write_bytes(archives["mlp"].read_bytes())
    edit_program(archive, change)
    with pytest.raises(Unsupported, match=message):
        read_archive(archive)


class Payload:
    """Unpickling this touches a marker file: the stand-in for an attacker's code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_pickle_planted_in_sample_inputs_never_runs(tmp_path: Path) -> None:
    bundle, marker = tmp_path / "bundle", tmp_path / "pwned"
    entry = store_model(MLP(), {"x": torch.randn(4, 4)}, bundle)
    archive = bundle / EXPORT_FILE
    planted = pickle.dumps(Payload(marker))
    rewrite(archive, lambda name, data: planted if name.endswith("sample_inputs/model.pt") else data)

    load_model(bundle, entry, CPU)(torch.randn(2, 4))  # the reader never opens sample inputs
    with pytest.raises(Unsupported, match=r"sample_inputs/model.pt' holds more than plain tensors"):
        load_checked(archive)  # the path to torch.export.load refuses it first
    assert not marker.exists()

    # Control: torch.export.load retries with weights_only=False and runs it, so the attack is real.
    with pytest.raises(Exception):  # noqa: B017 - whatever torch raises after the payload ran
        torch.export.load(archive)
    assert marker.exists()


def test_pickled_payloads_are_refused_by_both_paths(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    entry = store_model(MLP(), {"x": torch.randn(4, 4)}, bundle)
    archive = bundle / EXPORT_FILE

    def mark_pickled(name: str, data: bytes) -> bytes:
        if not name.endswith("model_weights_config.json"):
            return data
        config = json.loads(data)
        next(iter(config["config"].values()))["use_pickle"] = True
        return json.dumps(config).encode()

    rewrite(archive, mark_pickled)
    with pytest.raises(Unsupported, match="stored as a pickle or custom object"):
        read_archive(archive)
    with pytest.raises(ModelLoadError, match="model file 'model.pt2' could not be loaded: .*does not unpickle"):
        load_model(bundle, entry, CPU)


def test_corrupt_weights_are_a_model_load_error(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    entry = store_model(MLP(), {"x": torch.randn(4, 4)}, bundle)
    rewrite(bundle / EXPORT_FILE, lambda name, data: data[:-1] if name.endswith("weights/weight_0") else data)
    with pytest.raises(ModelLoadError, match="model file 'model.pt2' could not be loaded"):
        load_model(bundle, entry, CPU)
