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
from torchpredict.model import export_reader, torch_loader
from torchpredict.model.export_reader import ExportedModule, Unsupported, read_archive
from torchpredict.model.storage import EXPORT_FILE, load_model, store_model
from torchpredict.model.torch_loader import load_checked

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


@pytest.mark.parametrize("name", ["mlp", "two-inputs", "tuple-output", "dict-output"])
def test_tensors_passed_positionally_skip_the_pytree_walk_and_give_what_it_gives(archives: dict[str, Path],
                                                                                 name: str) -> None:
    module = read_archive(archives[name])
    assert module._tensors_in and module._tensor_out == (name in ("mlp", "two-inputs"))
    inputs = CASES[name][1](3)
    with torch.inference_mode():
        fast = module(*inputs)
        module._tensors_in = False  # the general walk: flatten, check the spec, unflatten
        walked = module(*inputs)
    fast_leaves, fast_spec = pytree.tree_flatten(fast)
    walked_leaves, walked_spec = pytree.tree_flatten(walked)
    assert fast_spec == walked_spec and type(fast) is type(walked)
    assert all(torch.equal(a, b) for a, b in zip(fast_leaves, walked_leaves, strict=True))


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
    code = ("import sys; from torchpredict.model.export_reader import read_archive; import torch; "
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


def test_torch_loader_builds_what_the_reader_does_not_only_when_trusted(tmp_path: Path) -> None:
    export_to(tmp_path / EXPORT_FILE, WithCond, lambda n: (torch.randn(n, 4),), {"x": {0: BATCH}})
    entry = {"format": "export", "file": EXPORT_FILE, "inputs": [{"name": "x", "dtype": "float32", "shape": [4]}]}
    with pytest.raises(ModelLoadError) as caught:
        load_model(tmp_path, entry, CPU)
    assert str(caught.value) == (
        "model file 'model.pt2' holds what torchpredict's reader does not build (operator "
        "'torch.ops.higher_order.cond'); torch.export.load would build it but can run code from a crafted archive, "
        "so it is refused: pass trust_torch_loader=True (CLI --trust-torch-loader) only if you trust the bundle"
    )
    loaded = load_model(tmp_path, entry, CPU, trust_torch_loader=True)
    assert not isinstance(loaded, ExportedModule)
    x = torch.randn(3, 4)
    with torch.no_grad():
        assert torch.equal(loaded(x), torch.export.load(tmp_path / EXPORT_FILE).module()(x))


def test_saving_keeps_only_archives_the_reader_builds(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"torch.export could not store the model: torchpredict's reader cannot "
                       r"build the exported program \(operator 'torch.ops.higher_order.cond'\)"):
        store_model(WithCond(), {"x": torch.randn(4, 4)}, tmp_path, method="export")
    with pytest.warns(UserWarning, match=r"torch.export failed \(torchpredict's reader cannot build"):
        entry = store_model(WithCond(), {"x": torch.randn(4, 4)}, tmp_path, factory="test_export_reader:WithCond")
    assert entry["format"] == "weights"
    assert load_model(tmp_path, entry, CPU, trust_factory=["test_export_reader"])(torch.randn(2, 4)).shape == (2, 3)


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
    with pytest.raises(ModelLoadError, match="model file 'model.pt2' holds what torchpredict's reader does not "
                       r"build \(weights '.*' is stored as a pickle or custom object\)"):
        load_model(bundle, entry, CPU)
    with pytest.raises(ModelLoadError, match="model file 'model.pt2' could not be loaded: .*does not unpickle"):
        load_model(bundle, entry, CPU, trust_torch_loader=True)


def test_corrupt_weights_are_a_model_load_error(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    entry = store_model(MLP(), {"x": torch.randn(4, 4)}, bundle)
    rewrite(bundle / EXPORT_FILE, lambda name, data: data[:-1] if name.endswith("weights/weight_0") else data)
    with pytest.raises(ModelLoadError, match="model file 'model.pt2' could not be loaded"):
        load_model(bundle, entry, CPU)


# --- any device ---------------------------------------------------------------------------------------------


class MakesTensors(nn.Module):
    """Creates tensors in forward: the graph carries device arguments (cpu) besides its weights."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) + torch.ones(3, device=x.device) + torch.arange(3, device="cpu")


def graph_devices(module: ExportedModule) -> list[torch.device]:
    nodes = module.graph_module.graph.nodes
    return [leaf for node in nodes for leaf in pytree.tree_leaves((node.args, node.kwargs))
            if isinstance(leaf, torch.device)]


def test_the_graph_is_built_on_the_target_device(tmp_path: Path) -> None:
    archive = export_to(tmp_path / "tensors.pt2", MakesTensors, lambda n: (torch.randn(n, 4),), {"x": {0: BATCH}})
    assert set(graph_devices(read_archive(archive))) == {CPU}, "the archive records its device arguments"

    module = read_archive(archive, "meta")  # a device that is not the CPU, on any machine
    assert graph_devices(module) == [torch.device("meta")] * 2
    assert {tensor.device.type for tensor in [*module.parameters(), *module.buffers()]} == {"meta"}
    out = module(torch.randn(5, 4, device="meta"))
    assert out.device.type == "meta" and out.shape == (5, 3)
    constants = read_archive(archives_case(tmp_path, "shape-arithmetic"), "meta")
    assert {tensor.device.type for tensor in constants.buffers()} == {"meta"}


def test_load_model_uses_the_reader_on_every_device(tmp_path: Path) -> None:
    entry = store_model(MakesTensors(), {"x": torch.randn(4, 4)}, tmp_path)
    loaded = load_model(tmp_path, entry, torch.device("meta"))
    assert isinstance(loaded, ExportedModule)
    assert graph_devices(loaded) == [torch.device("meta")] * 2


def archives_case(folder: Path, name: str) -> Path:
    return export_to(folder / f"{name}.pt2", *CASES[name])


# --- sizes checked before anything is read ------------------------------------------------------------------


def edit_config(archive: Path, change: Callable[[dict], None]) -> None:
    def edit(name: str, data: bytes) -> bytes:
        if not name.endswith("model_weights_config.json"):
            return data
        config = json.loads(data)
        change(config["config"][next(iter(config["config"]))]["tensor_meta"])
        return json.dumps(config).encode()

    rewrite(archive, edit)


@pytest.fixture
def mlp_archive(tmp_path: Path, archives: dict[str, Path]) -> Path:
    archive = tmp_path / "model.pt2"
    archive.write_bytes(archives["mlp"].read_bytes())
    return archive


@pytest.fixture
def members_read(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the zip members read (decompressed) while the test runs."""
    names: list[str] = []
    read = zipfile.ZipFile.read

    def recording(self: zipfile.ZipFile, name: str | zipfile.ZipInfo, pwd: bytes | None = None) -> bytes:
        names.append(name.filename if isinstance(name, zipfile.ZipInfo) else name)
        return read(self, name, pwd)

    monkeypatch.setattr(zipfile.ZipFile, "read", recording)
    return names


def test_a_tensor_larger_than_its_member_is_refused(mlp_archive: Path, members_read: list[str]) -> None:
    edit_config(mlp_archive, lambda meta: meta.update(sizes=[{"as_int": 1000}, {"as_int": 1000}]))
    members_read.clear()
    with pytest.raises(ModelLoadError, match=r"member 'mlp/data/weights/weight_0' holds 128 bytes, but its tensors "
                       r"need 19,984"):  # (999 * 4 + 999 * 1 + 1) float32s
        read_archive(mlp_archive)
    assert "mlp/data/weights/weight_0" not in members_read


def test_a_member_far_larger_than_its_tensors_is_refused(mlp_archive: Path, members_read: list[str]) -> None:
    rewrite(mlp_archive, lambda name, data: data + bytes(2 << 20) if name.endswith("weights/weight_0") else data)
    members_read.clear()
    with pytest.raises(ModelLoadError, match=r"member 'mlp/data/weights/weight_0' declares 2,097,280 bytes, but its "
                       r"tensors need only 128"):
        read_archive(mlp_archive)
    assert "mlp/data/weights/weight_0" not in members_read


def test_a_bomb_like_member_is_refused(mlp_archive: Path, members_read: list[str]) -> None:
    count = (32 << 20) // 4
    edit_config(mlp_archive, lambda meta: meta.update(sizes=[{"as_int": count}], strides=[{"as_int": 1}]))
    with zipfile.ZipFile(mlp_archive) as original:
        members = [(info, original.read(info)) for info in original.infolist()]
    with zipfile.ZipFile(mlp_archive, "w") as tampered:
        for info, data in members:
            bomb = info.filename.endswith("weights/weight_0")
            tampered.writestr(info.filename, bytes(count * 4) if bomb else data,
                              compress_type=zipfile.ZIP_DEFLATED if bomb else info.compress_type)
    members_read.clear()
    with pytest.raises(ModelLoadError, match=r"member 'mlp/data/weights/weight_0' inflates to 32\.0 MiB from "
                       r"[\d.]+ KiB \(ratio [\d,]+:1; the limit is 200:1\)"):
        read_archive(mlp_archive)
    assert "mlp/data/weights/weight_0" not in members_read


def test_model_json_is_size_capped(mlp_archive: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export_reader, "MAX_JSON_BYTES", 1000)
    with pytest.raises(ModelLoadError, match=r"member 'mlp/models/model.json' declares [\d.]+ KiB, more than the "
                       r"1000 B allowed"):
        read_archive(mlp_archive)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda meta: meta.update(strides=[{"as_int": -1}, {"as_int": 1}]), "do not describe a tensor"),
        (lambda meta: meta.update(strides=[{"as_int": 1}]), "do not describe a tensor"),
        (lambda meta: meta.update(storage_offset={"as_int": -4}), "do not describe a tensor"),
        (lambda meta: meta.update(sizes=[{"as_int": "8"}, {"as_int": 4}]), "a stored tensor's sizes are not integers"),
    ],
    ids=["negative-stride", "rank-mismatch", "negative-offset", "string-size"],
)
def test_malformed_tensor_layouts_are_refused(mlp_archive: Path, change: Callable, message: str) -> None:
    edit_config(mlp_archive, change)
    with pytest.raises(ModelLoadError, match=message):
        read_archive(mlp_archive)


# --- the checked torch loader: no string from the archive is evaluated ------------------------------------


def check_every_json(archive: Path) -> None:
    with zipfile.ZipFile(archive) as opened:
        for name in opened.namelist():
            if name.endswith(".json"):
                torch_loader._check_strings(name, json.loads(opened.read(name)))


@pytest.mark.parametrize("name", list(CASES))
def test_what_torch_export_writes_passes_the_checks(archives: dict[str, Path], name: str) -> None:
    check_every_json(archives[name])  # raises if the grammar refused something torch really writes


def test_the_checked_loader_loads_symbolic_shapes(archives: dict[str, Path]) -> None:
    program = load_checked(archives["transformer"])
    inputs = CASES["transformer"][1](2)
    with torch.inference_mode():
        torch.testing.assert_close(program.module()(*inputs), read_archive(archives["transformer"])(*inputs))


EVIL = "__import__('os').system('touch {marker}') + Symbol('s77', positive=True, integer=True)"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda program, marker: program["graph_module"]["graph"]["tensor_values"]["x"]["sizes"][0].update(
            as_expr={"expr_str": EVIL.format(marker=marker), "hint": {"as_int": 3}}),
         r"symbolic expression \"__import__\('os'\).system\('touch .*…\" \(\d+ chars\) is not one torch.export "
         r"writes: unexpected \".system\('tou\" at character 16"),
        (lambda program, marker: program["range_constraints"].update({"__import__('os')": {"min_val": 1}}),
         r"'mlp/models/model.json': range constraint \"__import__\('os'\)\" is not a size symbol like 's0'"),
        (lambda program, marker: program["graph_module"]["graph"]["nodes"][0].update(
            target="torch.serialization.os.system"),
         "'mlp/models/model.json': node target 'torch.serialization.os.system' is not an operator overload"),
    ],
    ids=["expression", "range-symbol", "node-target"],
)
def test_the_checked_loader_refuses_strings_torch_would_evaluate(mlp_archive: Path, tmp_path: Path,
                                                                 change: Callable, message: str) -> None:
    marker = tmp_path / "pwned"
    edit_program(mlp_archive, lambda program: change(program, marker))
    with pytest.raises(ModelLoadError, match=message):
        load_checked(mlp_archive)
    assert not marker.exists()
