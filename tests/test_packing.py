"""Retrofitting: a model trained without torchpredict, with preprocessing done by hand, becomes a bundle."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from test_cli import run_cli
from torchpredict.bundle import load
from torchpredict.errors import ModelLoadError, PreprocessingError
from torchpredict.packing import pack
from torchpredict.readers import read_table
from torchpredict.writers import write_table

TRAINING_SCRIPT = textwrap.dedent("""
    import numpy as np
    import pyarrow.csv as pacsv
    import torch
    from torch import nn


    class Net(nn.Module):
        def __init__(self, n_in=10, hidden=16):
            super().__init__()
            self.layers = nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, 1))

        def forward(self, x):
            return self.layers(x)


    def make_net(n_in=10, hidden=16):
        return Net(n_in, hidden)


    if __name__ == "__main__":
        open("training-ran.txt", "a").write("ran\\n")
        train = pacsv.read_csv("train.csv").to_pandas()
        test = pacsv.read_csv("test.csv").to_pandas()
        x = train.drop(columns="target").to_numpy(np.float64)
        mean, std = x.mean(axis=0), x.std(axis=0)              # by hand, the way tutorials do it
        y = train["target"].to_numpy(np.float64)
        y_mean, y_std = y.mean(), y.std()
        xt = torch.from_numpy(((x - mean) / std).astype(np.float32))
        yt = torch.from_numpy(((y - y_mean) / y_std).astype(np.float32)).reshape(-1, 1)
        torch.manual_seed(0)
        model = Net()
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
        for _ in range(150):
            opt.zero_grad()
            nn.functional.mse_loss(model(xt), yt).backward()
            opt.step()
        model.eval()
        torch.save(model, "model.pt")
        torch.save({"model": model.state_dict(), "epoch": 150}, "checkpoint.pt")
        x_new = ((test.to_numpy(np.float64) - mean) / std).astype(np.float32)
        with torch.no_grad():
            scaled = model(torch.from_numpy(x_new)).numpy().reshape(-1).astype(np.float64)
        np.save("expected.npy", (scaled * y_std + y_mean).astype(np.float32))
""")


@pytest.fixture(scope="module")
def trained_by_hand(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with train.py, train.csv, test.csv, model.pt (full pickle from __main__), checkpoint.pt."""
    from sklearn.datasets import load_diabetes

    folder = tmp_path_factory.mktemp("byhand")
    frame = load_diabetes(as_frame=True).frame
    write_table(pa.Table.from_pandas(frame.iloc[:400], preserve_index=False), folder / "train.csv")
    write_table(
        pa.Table.from_pandas(frame.iloc[400:].drop(columns="target"), preserve_index=False),
        folder / "test.csv",
    )
    (folder / "train.py").write_text(TRAINING_SCRIPT)
    subprocess.run([sys.executable, "train.py"], cwd=folder, check=True, timeout=120)
    return folder


def _predict(bundle: Path, folder: Path) -> np.ndarray:
    return load(bundle, device="cpu").predict(read_table(folder / "test.csv")).column("target").to_numpy()


def test_full_pickle_from_main_packs_with_its_source_file(trained_by_hand, tmp_path):
    folder = trained_by_hand
    result = run_cli(
        "pack",
        folder / "model.pt",
        "-o",
        tmp_path / "m.tpk",
        "--train",
        folder / "train.csv",
        "--target",
        "target",
        "--task",
        "regression",
        "--standardize",
        "*",
        "--scale-target",
        "--trust-pickle",
        "--source",
        folder / "train.py",
    )
    assert result.returncode == 0, result.stderr
    expected = np.load(folder / "expected.npy")
    np.testing.assert_allclose(_predict(tmp_path / "m.tpk", folder), expected, rtol=1e-5, atol=1e-4)
    assert (folder / "training-ran.txt").read_text() == "ran\n"  # the script's training did not run again


def test_full_pickle_from_main_without_source_says_what_to_do(trained_by_hand, tmp_path):
    folder = trained_by_hand
    result = run_cli(
        "pack",
        folder / "model.pt",
        "-o",
        tmp_path / "m.tpk",
        "--train",
        folder / "train.csv",
        "--target",
        "target",
        "--trust-pickle",
    )
    assert result.returncode == 2
    assert "__main__.Net" in result.stderr and "--source" in result.stderr


def test_full_pickle_is_refused_without_trust(trained_by_hand, tmp_path):
    folder = trained_by_hand
    with pytest.raises(ModelLoadError, match="Net"):
        pack(
            folder / "model.pt",
            tmp_path / "m.tpk",
            train=folder / "train.csv",
            target="target",
            source=folder / "train.py",
        )


def test_state_dict_checkpoint_with_a_factory_in_the_training_script(trained_by_hand, tmp_path):
    folder = trained_by_hand
    path = pack(
        folder / "checkpoint.pt",
        tmp_path / "sd.tpk",
        train=folder / "train.csv",
        target="target",
        factory=f"{folder / 'train.py'}:make_net",
        standardize=["*"],
        scale_target=True,
    )
    np.testing.assert_allclose(_predict(path, folder), np.load(folder / "expected.npy"), rtol=1e-5, atol=1e-4)


def test_checkpoint_saved_on_a_gpu_packs_on_a_cpu_machine(trained_by_hand, tmp_path, monkeypatch):
    import torch.serialization as serialization

    folder = trained_by_hand
    state = torch.load(folder / "checkpoint.pt", weights_only=True)["model"]
    monkeypatch.setattr(serialization, "location_tag", lambda storage: "cuda:0")
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "gpu.pt")
    monkeypatch.undo()
    assert b"cuda:0" in (tmp_path / "gpu.pt").read_bytes()
    path = pack(
        tmp_path / "gpu.pt",
        tmp_path / "gpu.tpk",
        train=folder / "train.csv",
        target="target",
        factory=f"{folder / 'train.py'}:make_net",
        standardize=["*"],
        scale_target=True,
    )
    np.testing.assert_allclose(_predict(path, folder), np.load(folder / "expected.npy"), rtol=1e-5, atol=1e-4)


def test_classification_labels_are_learned_from_the_target(tmp_path):
    from sklearn.datasets import load_iris

    frame = load_iris(as_frame=True).frame
    frame["species"] = np.array(["setosa", "versicolor", "virginica"])[frame.pop("target")]
    write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp_path / "iris.csv")
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    torch.save(model.state_dict(), tmp_path / "linear.pt")
    (tmp_path / "nets.py").write_text("import torch\n\ndef linear():\n    return torch.nn.Linear(4, 3)\n")
    path = pack(
        tmp_path / "linear.pt",
        tmp_path / "iris.tpk",
        train=tmp_path / "iris.csv",
        target="species",
        task="multiclass",
        factory=f"{tmp_path / 'nets.py'}:linear",
        standardize=["*"],
    )
    predictions = load(path, device="cpu").predict(frame.drop(columns="species").head(5))
    assert set(predictions.column("species").to_pylist()) <= {"setosa", "versicolor", "virginica"}


def test_pack_option_errors_name_the_problem(trained_by_hand, tmp_path):
    folder = trained_by_hand
    common = {"train": folder / "train.csv", "factory": f"{folder / 'train.py'}:make_net"}
    with pytest.raises(PreprocessingError, match="task must be one of regression"):
        pack(folder / "checkpoint.pt", tmp_path / "a.tpk", target="target", task="ranking", **common)
    with pytest.raises(
        PreprocessingError, match=r"standardize: column\(s\) 'nope' are not in the training data"
    ):
        pack(folder / "checkpoint.pt", tmp_path / "b.tpk", target="target", standardize=["nope"], **common)
    with pytest.raises(PreprocessingError, match=r"target column\(s\) 'price' are not in the training data"):
        pack(folder / "checkpoint.pt", tmp_path / "c.tpk", target="price", **common)
