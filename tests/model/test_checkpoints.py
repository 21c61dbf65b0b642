from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch

from models_for_tests import MLP, cuda_tagged
from torchpredict.bundle import load
from torchpredict.errors import ModelLoadError
from torchpredict.io.readers import read_table
from torchpredict.model.checkpoints import load_checkpoint
from torchpredict.packing.packer import pack

FACTORY = "models_for_tests:make_mlp"

TRAIN_SCRIPT = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(4, 2)

    def forward(self, x):
        return self.layer(x)


def make_net():
    return Net()


if __name__ == "__main__":
    from lostmod import Lost

    with open("runs.txt", "a") as log:
        log.write("trained\\n")
    torch.manual_seed(0)
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(32, 4), torch.randn(32, 2)
    for _ in range(5):
        optimizer.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
    torch.save(model, "model.pt")
    torch.save(model.state_dict(), "state.pt")
    torch.save(Lost(), "lost.pt")
"""

# A tutorial's script: classes in __main__ and, with no `if __name__ == "__main__":` guard, code that writes
# train.csv (fresh random rows each run), trains, logs and saves model.pth. Running it again at pack time would
# change both files and pack a different model.
TUTORIAL = """
import numpy as np
import torch
from torch import nn

FEATURES = ("a", "b", "c")
HIDDEN = 16
SCALE = 1 / 2

rng = np.random.default_rng()
x = rng.normal(size=(200, len(FEATURES)))
y = x @ np.array([1.0, -2.0, 0.5]) + 0.1 * rng.normal(size=200)
with open("train.csv", "w") as f:
    f.write(",".join(FEATURES) + ",y\\n")
    for row, target in zip(x, y):
        f.write(",".join(f"{v:.6f}" for v in row) + f",{target:.6f}\\n")


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(len(FEATURES), HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 1))

    def forward(self, x):
        return self.layers(x) / SCALE


model = Net()
opt = torch.optim.Adam(model.parameters(), lr=0.01)
xt, yt = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32).reshape(-1, 1)
for _ in range(300):
    opt.zero_grad()
    nn.functional.mse_loss(model(xt), yt).backward()
    opt.step()
with open("trained.txt", "a") as log:
    log.write("trained\\n")
torch.save(model, "model.pth")
"""

# Run the tutorial once as __main__ (runpy, as `python train.py` would), then have the trained model
# predict its own training rows: the predictions a correct bundle must reproduce.
RUN_TUTORIAL = """
import runpy
import numpy as np
import torch

namespace = runpy.run_path("train.py", run_name="__main__")
x = np.loadtxt("train.csv", delimiter=",", skiprows=1, usecols=(0, 1, 2), dtype=np.float32)
with torch.no_grad():
    np.save("expected.npy", namespace["model"].eval()(torch.from_numpy(x)).numpy().reshape(-1))
"""

LOST_MODULE = """
from torch import nn


class Lost(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(2, 2)
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run a training script as __main__, the way people do, so its classes pickle as __main__.Net."""
    directory = tmp_path_factory.mktemp("training")
    (directory / "train.py").write_text(TRAIN_SCRIPT)
    (directory / "lostmod.py").write_text(LOST_MODULE)
    subprocess.run([sys.executable, "train.py"], cwd=directory, check=True, capture_output=True, timeout=120)
    return directory


@pytest.fixture(scope="module")
def tutorial_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tutorial run once: train.py, train.csv, model.pth (pickling __main__.Net), expected.npy, trained.txt."""
    directory = tmp_path_factory.mktemp("tutorial")
    (directory / "train.py").write_text(TUTORIAL)
    subprocess.run([sys.executable, "-c", RUN_TUTORIAL], cwd=directory, check=True, capture_output=True, timeout=120)
    return directory


@pytest.fixture
def tutorial(tutorial_run: Path, tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A folder holding what the tutorial left, as a user has it, and its model's predictions on train.csv."""
    for name in ("train.py", "train.csv", "model.pth"):
        shutil.copyfile(tutorial_run / name, tmp_path / name)
    return tmp_path, np.load(tutorial_run / "expected.npy")


def digests(folder: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in folder.iterdir() if path.is_file()}


@pytest.fixture
def model() -> MLP:
    torch.manual_seed(0)
    return MLP().eval()


def same_outputs(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    x = torch.randn(5, 4)
    with torch.no_grad():
        return torch.equal(a(x), b(x))


# --- state dicts -------------------------------------------------------------------------------------------


def save_variant(model: MLP, path: Path, variant: str) -> None:
    state = model.state_dict()
    wrapped = {
        "plain": state,
        "model": {"model": state, "epoch": 3},
        "state_dict": {"state_dict": state, "optimizer": {"lr": 0.1}},
        "model_state_dict": {"model_state_dict": state, "epoch": 3},
        "ddp": {f"module.{key}": value for key, value in state.items()},
        "compiled": {f"_orig_mod.{key}": value for key, value in state.items()},
        "compiled_ddp": {f"_orig_mod.module.{key}": value for key, value in state.items()},
    }
    if variant == "safetensors":
        safetensors.torch.save_file(state, path)
    elif variant == "legacy":
        torch.save(state, path, _use_new_zipfile_serialization=False)
    else:
        torch.save(wrapped[variant], path)


@pytest.mark.parametrize(
    "variant",
    [
        "plain",
        "model",
        "state_dict",
        "model_state_dict",
        "ddp",
        "compiled",
        "compiled_ddp",
        "safetensors",
        "legacy",
    ],
)
def test_state_dict_checkpoints_load_with_a_factory(tmp_path: Path, model: MLP, variant: str) -> None:
    path = tmp_path / ("model.safetensors" if variant == "safetensors" else "model.pt")
    save_variant(model, path, variant)

    loaded = load_checkpoint(path, factory=FACTORY)

    assert not loaded.training
    assert same_outputs(model, loaded)


def test_factory_kwargs_are_passed(tmp_path: Path) -> None:
    model = MLP(in_features=4, hidden=5, out_features=2)
    torch.save(model.state_dict(), tmp_path / "model.pth")

    loaded = load_checkpoint(
        tmp_path / "model.pth", factory=FACTORY, factory_kwargs={"hidden": 5, "out_features": 2}
    )

    assert same_outputs(model, loaded)


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="a real GPU would load cuda-tagged storages as they are"
)
@pytest.mark.parametrize("variant", ["plain", "model", "full"])
def test_checkpoints_saved_on_a_gpu_load_on_the_cpu(tmp_path: Path, model: MLP, variant: str) -> None:
    path = tmp_path / "model.pt"
    with cuda_tagged():
        torch.save(
            {"plain": model.state_dict(), "model": {"model": model.state_dict(), "epoch": 3}, "full": model}[
                variant
            ],
            path,
        )
    with pytest.raises(RuntimeError, match="Attempting to deserialize object on a CUDA device"):
        torch.load(path, weights_only=False)  # the tag took: plain torch.load fails on this machine

    loaded = load_checkpoint(path, factory=FACTORY, trust_pickle=variant == "full")

    assert all(tensor.device.type == "cpu" for tensor in loaded.state_dict().values())
    assert same_outputs(model, loaded)


def test_state_dict_without_a_factory_asks_for_one(tmp_path: Path, model: MLP) -> None:
    torch.save(model.state_dict(), tmp_path / "model.pt")
    with pytest.raises(
        ModelLoadError,
        match=r"checkpoint '.*model.pt' holds a state dict \(4 tensors\) but no "
        r"architecture; pass factory='package.module:make_model' \(CLI --factory\)",
    ):
        load_checkpoint(tmp_path / "model.pt")


def test_missing_and_unexpected_keys_are_listed(tmp_path: Path, model: MLP) -> None:
    state = model.state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["out.bias"]
    torch.save(state, tmp_path / "model.pt")
    with pytest.raises(
        ModelLoadError,
        match=r"checkpoint '.*model.pt' does not match the model: missing keys "
        r"'out.bias'; unexpected keys 'extra.weight'",
    ):
        load_checkpoint(tmp_path / "model.pt", factory=FACTORY)


def test_many_missing_keys_are_summarised(tmp_path: Path) -> None:
    torch.save({"other.weight": torch.zeros(1)}, tmp_path / "model.pt")
    with pytest.raises(
        ModelLoadError, match=r"missing keys 'hidden.weight', 'hidden.bias', 'out.weight', 'out.bias';"
    ):
        load_checkpoint(tmp_path / "model.pt", factory=FACTORY)
    torch.save({f"w{i}": torch.zeros(1) for i in range(8)}, tmp_path / "many.pt")
    with pytest.raises(ModelLoadError, match="unexpected keys 'w0', 'w1', 'w2', 'w3', 'w4' and 3 more"):
        load_checkpoint(tmp_path / "many.pt", factory=FACTORY)


def test_shape_mismatch_is_reported(tmp_path: Path) -> None:
    torch.save(MLP(hidden=6).state_dict(), tmp_path / "model.pt")
    with pytest.raises(
        ModelLoadError, match=r"'hidden.weight' has shape \[6, 4\] in the checkpoint, \[8, 4\] in"
    ):
        load_checkpoint(tmp_path / "model.pt", factory=FACTORY)


def test_a_dict_without_a_state_dict_is_reported(tmp_path: Path) -> None:
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "model.pt")
    with pytest.raises(
        ModelLoadError, match=r"holds a dict with keys 'epoch', 'lr', not a model or a state dict"
    ):
        load_checkpoint(tmp_path / "model.pt", factory=FACTORY)


# --- TorchScript and full pickles ---------------------------------------------------------------------


def test_torchscript_archive_loads_without_a_factory(tmp_path: Path, model: MLP) -> None:
    torch.jit.save(torch.jit.script(model), tmp_path / "scripted.pt")

    loaded = load_checkpoint(tmp_path / "scripted.pt")

    assert isinstance(loaded, torch.jit.ScriptModule)
    assert same_outputs(model, loaded)


def test_full_model_pickle_is_refused_without_trust_naming_its_classes(tmp_path: Path, model: MLP) -> None:
    torch.save(model, tmp_path / "model.pt")
    with pytest.raises(ModelLoadError, match=r"pickles Python objects \('models_for_tests.MLP'") as caught:
        load_checkpoint(tmp_path / "model.pt")
    message = str(caught.value)
    assert "torch.nn.modules.linear.Linear" in message
    assert "pass trust_pickle=True (CLI --trust-pickle)" in message
    assert "save model.state_dict() and load it with factory=" in message


def test_full_model_pickle_loads_with_trust(tmp_path: Path, model: MLP) -> None:
    torch.save(model.train(), tmp_path / "model.pt")
    torch.save({"model": model, "epoch": 3}, tmp_path / "wrapped.pt")

    for name in ("model.pt", "wrapped.pt"):
        loaded = load_checkpoint(tmp_path / name, trust_pickle=True)
        assert isinstance(loaded, MLP)
        assert not loaded.training
        assert same_outputs(model.eval(), loaded)


def test_main_classes_need_the_training_script(trained: Path) -> None:
    with pytest.raises(
        ModelLoadError,
        match=re.escape(
            f"checkpoint '{trained / 'model.pt'}' pickles class __main__.Net from the training script; pass "
            "source='train.py' (CLI --source train.py) pointing at the file that defines it, or save "
            "model.state_dict() instead"
        ),
    ):
        load_checkpoint(trained / "model.pt", trust_pickle=True)
    with pytest.raises(
        ModelLoadError, match=r"pickles Python objects \('__main__.Net'.*also need source='train.py'"
    ):
        load_checkpoint(trained / "model.pt", source=trained / "train.py")


def test_main_classes_load_from_the_training_script_without_rerunning_it(trained: Path) -> None:
    loaded = load_checkpoint(trained / "model.pt", trust_pickle=True, source=trained / "train.py")

    assert type(loaded).__name__ == "Net"
    assert not loaded.training
    saved = torch.load(trained / "state.pt", weights_only=True)
    assert loaded.state_dict().keys() == saved.keys()
    assert all(torch.equal(loaded.state_dict()[key], saved[key]) for key in saved)
    assert (trained / "runs.txt").read_text() == "trained\n", "the training script's __main__ block ran again"
    rebuilt = load_checkpoint(trained / "state.pt", factory=f"{trained / 'train.py'}:Net")
    assert same_outputs(loaded, rebuilt)


def test_cli_pack_of_a_tutorial_pickle_runs_none_of_the_tutorial(tutorial: tuple[Path, np.ndarray]) -> None:
    """`torchpredict pack` as docs/cli.md tells a user, in the folder the tutorial ran in."""
    folder, expected = tutorial
    before = digests(folder)
    assert sorted(before) == ["model.pth", "train.csv", "train.py"]
    command = [str(Path(sys.executable).with_name("torchpredict")), "pack", "model.pth", "-o", "m.tpk",
               "--train", "train.csv", "--target", "y", "--trust-pickle", "--source", "train.py"]

    result = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, result.stderr
    assert digests(folder) == before, "a file the tutorial writes was written again"
    assert sorted(path.name for path in folder.iterdir()) == ["m.tpk", "model.pth", "train.csv", "train.py"]
    predicted = load(folder / "m.tpk", device="cpu").predict(read_table(folder / "train.csv").drop_columns(["y"]))
    np.testing.assert_allclose(predicted.column("y").to_numpy(), expected, rtol=1e-5, atol=1e-5)


def test_python_pack_of_a_tutorial_pickle_runs_none_of_the_tutorial(
    tutorial: tuple[Path, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, expected = tutorial
    monkeypatch.chdir(folder)  # where the tutorial's relative writes would land
    before = digests(folder)

    loaded = load_checkpoint("model.pth", trust_pickle=True, source="train.py")
    bundle = pack("model.pth", folder / "m.tpk", train="train.csv", target="y", trust_pickle=True, source="train.py")

    assert digests(folder) == before
    assert sorted(path.name for path in folder.iterdir()) == ["m.tpk", "model.pth", "train.csv", "train.py"]
    x = torch.from_numpy(np.loadtxt("train.csv", delimiter=",", skiprows=1, usecols=(0, 1, 2), dtype=np.float32))
    with torch.no_grad():
        np.testing.assert_allclose(loaded(x).numpy().reshape(-1), expected, rtol=1e-6, atol=1e-6)
    predicted = load(bundle, device="cpu").predict(read_table("train.csv").drop_columns(["y"])).column("y").to_numpy()
    np.testing.assert_allclose(predicted, expected, rtol=1e-5, atol=1e-5)


def test_a_pickled_class_the_script_defines_only_in_skipped_code_is_reported(trained: Path, tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("from torch import nn\n\nif True:\n    class Net(nn.Module):\n        pass\n")
    with pytest.raises(ModelLoadError) as caught:
        load_checkpoint(trained / "model.pt", trust_pickle=True, source=tmp_path / "train.py")
    assert str(caught.value).startswith(
        f"checkpoint '{trained / 'model.pt'}' pickles class __main__.Net, but '{tmp_path / 'train.py'}' sets 'Net' "
        "only in code torchpredict does not run (line 3: if True:): give it a literal value or"
    )


def test_source_without_the_pickled_class_is_reported(trained: Path, tmp_path: Path) -> None:
    (tmp_path / "other.py").write_text("X = 1\n")
    with pytest.raises(
        ModelLoadError, match=r"pickles class __main__.Net, but '.*other.py' defines no 'Net'"
    ):
        load_checkpoint(trained / "model.pt", trust_pickle=True, source=tmp_path / "other.py")


def test_missing_source_file_is_reported(trained: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"source '.*missing.py' does not exist"):
        load_checkpoint(trained / "model.pt", trust_pickle=True, source=tmp_path / "missing.py")


def test_pickled_classes_from_an_unimportable_module_are_reported(trained: Path) -> None:
    with pytest.raises(
        ModelLoadError, match="pickles classes from module 'lostmod', which is not importable here"
    ):
        load_checkpoint(trained / "lost.pt", trust_pickle=True)


# --- unreadable files --------------------------------------------------------------------------------------


def test_unreadable_checkpoints_are_model_load_errors(tmp_path: Path, model: MLP) -> None:
    with pytest.raises(ModelLoadError, match=r"checkpoint '.*nothing.pt' does not exist or is not a file"):
        load_checkpoint(tmp_path / "nothing.pt", factory=FACTORY)
    with pytest.raises(ModelLoadError, match="does not exist or is not a file"):
        load_checkpoint(tmp_path, factory=FACTORY)

    (tmp_path / "junk.pt").write_bytes(b"this is not a checkpoint")
    with pytest.raises(ModelLoadError, match=r"checkpoint '.*junk.pt' is not a readable PyTorch checkpoint"):
        load_checkpoint(tmp_path / "junk.pt", factory=FACTORY, trust_pickle=True)

    torch.save(model.state_dict(), tmp_path / "full.pt")
    data = (tmp_path / "full.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(
        ModelLoadError, match=r"'.*truncated.pt' is not a readable PyTorch checkpoint \(corrupt\?\)"
    ):
        load_checkpoint(tmp_path / "truncated.pt", factory=FACTORY)

    (tmp_path / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ModelLoadError, match=r"'.*broken.safetensors' is not a readable safetensors file"):
        load_checkpoint(tmp_path / "broken.safetensors", factory=FACTORY)

    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(ModelLoadError, match="holds a list, not a model or a state dict"):
        load_checkpoint(tmp_path / "list.pt", factory=FACTORY)
