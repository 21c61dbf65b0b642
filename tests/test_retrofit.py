"""The retrofit path end to end, as docs/cli.md tells a new user: files a tutorial leaves, packed with the CLI.

Each scenario is rebuilt from scratch: a training script's own preprocessing done by hand (inputs and target
standardised with numpy, labels encoded low=0, mid=1, high=2), a checkpoint dict saved on a GPU, the training
CSV. Packed right, the bundle predicts what the training script predicts; packed wrong, pack refuses with the
flag that fixes it and writes nothing; --no-check lets a wrong pack through, saying so.
"""

from __future__ import annotations

import contextlib
import io
import runpy
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from models_for_tests import cuda_tagged
from torchpredict.cli.commands import main
from torchpredict.io.readers import read_table
from torchpredict.io.writers import write_table

NETS = textwrap.dedent("""
    from torch import nn


    class HouseNet(nn.Module):
        def __init__(self, n_in=4, hidden=32):
            super().__init__()
            self.layers = nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, 1))

        def forward(self, x):
            return self.layers(x)


    def make_house_net(n_in=4, hidden=32):
        return HouseNet(n_in, hidden)


    def make_classifier(n_in=4, hidden=16, classes=3):
        return nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, classes))
""")
BANDS = ["low", "mid", "high"]  # how the training script encoded them: low=0, mid=1, high=2


def cli(*args: object) -> tuple[int, str, str]:
    """`torchpredict ARGS` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def _train(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, loss, epochs: int) -> torch.nn.Module:
    torch.manual_seed(0)
    xt, yt = torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(epochs):
        optimizer.zero_grad()
        loss(model(xt), yt).backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def houses(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train.csv (prices ~250 k$), new.csv, nets.py, and gpu.pt: a checkpoint dict saved on a GPU by a script
    that standardised inputs and target by hand; expected.npy: that script's own predictions for new.csv."""
    folder = tmp_path_factory.mktemp("houses")
    (folder / "nets.py").write_text(NETS)
    rng = np.random.default_rng(0)
    n = 700
    x = np.column_stack([rng.normal(1800, 500, n), rng.integers(1, 6, n), rng.uniform(0, 60, n),
                         rng.uniform(1, 30, n)])
    price = 110_000 + 95 * x[:, 0] + 12_000 * x[:, 1] - 900 * x[:, 2] - 2_500 * x[:, 3] + rng.normal(0, 15_000, n)
    columns = {"sqft": x[:, 0], "bedrooms": x[:, 1].astype(np.int64), "age": x[:, 2], "distance_km": x[:, 3]}
    write_table(pa.table({**{k: v[:600] for k, v in columns.items()}, "price": price[:600]}), folder / "train.csv")
    write_table(pa.table({k: v[600:] for k, v in columns.items()}), folder / "new.csv")
    mean, std = x[:600].mean(axis=0), x[:600].std(axis=0)  # by hand, the way tutorials do it
    y_mean, y_std = price[:600].mean(), price[:600].std()
    net = runpy.run_path(str(folder / "nets.py"))["make_house_net"]()
    target = ((price[:600] - y_mean) / y_std).astype(np.float32).reshape(-1, 1)
    _train(net, (x[:600] - mean) / std, target, torch.nn.functional.mse_loss, 300)
    with cuda_tagged():
        torch.save({"model_state_dict": net.state_dict(), "epoch": 300}, folder / "gpu.pt")
    with torch.no_grad():
        scaled = net(torch.from_numpy(((x[600:] - mean) / std).astype(np.float32))).numpy()[:, 0]
    np.save(folder / "expected.npy", scaled.astype(np.float64) * y_std + y_mean)
    return folder


@pytest.fixture(scope="module")
def bands(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train.csv with a string target 'band' (low/mid/high), new.csv, nets.py, classifier.pt (a state_dict of a
    model trained with low=0, mid=1, high=2); expected.npy: the script's own labels for new.csv."""
    folder = tmp_path_factory.mktemp("bands")
    (folder / "nets.py").write_text(NETS)
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (700, 4))
    score = x[:, 0] + 0.5 * x[:, 1] - 0.3 * x[:, 2] + rng.normal(0, 0.2, 700)
    code = np.digitize(score, [-0.5, 0.5])  # 0 = low, 1 = mid, 2 = high
    columns = {f"f{i}": x[:, i] for i in range(4)}
    band = np.array(BANDS)[code]
    write_table(pa.table({**{k: v[:600] for k, v in columns.items()}, "band": band[:600]}), folder / "train.csv")
    write_table(pa.table({k: v[600:] for k, v in columns.items()}), folder / "new.csv")
    net = runpy.run_path(str(folder / "nets.py"))["make_classifier"]()
    _train(net, x[:600], code[:600].astype(np.int64), torch.nn.functional.cross_entropy, 300)
    torch.save(net.state_dict(), folder / "classifier.pt")
    with torch.no_grad():
        logits = net(torch.from_numpy(x[600:].astype(np.float32)))
    np.save(folder / "expected.npy", np.array(BANDS)[logits.argmax(dim=1).numpy()])
    return folder


def _pack_houses(folder: Path, output: Path, *options: str) -> tuple[int, str, str]:
    return cli("pack", folder / "gpu.pt", "-o", output, "--train", folder / "train.csv", "--target", "price",
               "--factory", f"{folder / 'nets.py'}:make_house_net", *options)


def _pack_bands(folder: Path, output: Path, *options: str) -> tuple[int, str, str]:
    return cli("pack", folder / "classifier.pt", "-o", output, "--train", folder / "train.csv", "--target", "band",
               "--factory", f"{folder / 'nets.py'}:make_classifier", *options)


def _predict(bundle: Path, folder: Path, column: str) -> np.ndarray:
    out = bundle.with_suffix(".csv")
    code, _, err = cli("predict", bundle, folder / "new.csv", "-o", out, "--quiet")
    assert code == 0, err
    return read_table(out).column(column).to_numpy(zero_copy_only=False)


def _nothing_written(output: Path) -> bool:
    """No bundle, and no staging folder left beside where it would have been."""
    return not output.exists() and not list(output.parent.glob(".tp-pack-*"))


# --- (a) a house-price regressor: standardised inputs and target, checkpoint dict saved on a GPU ---------------


def test_house_prices_packed_right_predict_what_the_training_script_predicts(houses, tmp_path):
    code, out, err = _pack_houses(houses, tmp_path / "house.tpk", "--standardize", "*", "--scale-target")
    assert code == 0, err
    assert "task: regression, inferred from target 'price' (double, 600 distinct values) and the model's 1" in out
    r2 = float(out.split("R² ")[1].split(",")[0])
    assert r2 > 0.9 and "fit on 600 training rows" in out
    predicted = _predict(tmp_path / "house.tpk", houses, "price")
    np.testing.assert_allclose(predicted, np.load(houses / "expected.npy"), rtol=1e-5)


def test_house_prices_without_scale_target_are_refused_naming_the_flag(houses, tmp_path):
    code, _, err = _pack_houses(houses, tmp_path / "house.tpk", "--standardize", "*")
    assert code == 2
    assert "far better with the target scaled" in err and "pass --scale-target" in err
    assert _nothing_written(tmp_path / "house.tpk")


def test_house_prices_without_standardize_are_refused_naming_the_flag(houses, tmp_path):
    code, _, err = _pack_houses(houses, tmp_path / "house.tpk", "--scale-target")
    assert code == 2
    assert "far better with the inputs standardised" in err and "pass --standardize '*'" in err
    assert _nothing_written(tmp_path / "house.tpk")


def test_house_prices_without_either_flag_are_refused_naming_both(houses, tmp_path):
    code, _, err = _pack_houses(houses, tmp_path / "house.tpk")
    assert code == 2
    assert "pass --standardize '*' (standardize=['*']) and --scale-target" in err
    assert _nothing_written(tmp_path / "house.tpk")


# --- (b) a 3-class classifier whose training encoded low=0, mid=1, high=2 ---------------------------------------


def test_bands_without_labels_are_refused_naming_the_right_order(bands, tmp_path):
    code, _, err = _pack_bands(bands, tmp_path / "bands.tpk")
    assert code == 2
    assert "fit the labels in the order low,mid,high" in err and "far better than high,low,mid" in err
    assert "pass --labels low,mid,high" in err
    assert _nothing_written(tmp_path / "bands.tpk")


def test_bands_with_the_right_labels_predict_what_the_training_script_predicts(bands, tmp_path):
    code, out, err = _pack_bands(bands, tmp_path / "bands.tpk", "--labels", "low,mid,high")
    assert code == 0, err
    assert "task: multiclass, inferred from target 'band' (string, 3 distinct values) and the model's 3 outputs" in out
    assert "per class, right of rows: low " in out
    accuracy = float(out.split("accuracy ")[1].split("%")[0])
    assert accuracy > 85
    np.testing.assert_array_equal(_predict(tmp_path / "bands.tpk", bands, "band"), np.load(bands / "expected.npy"))


def test_bands_with_a_typo_in_labels_are_refused_naming_it(bands, tmp_path):
    code, _, err = _pack_bands(bands, tmp_path / "bands.tpk", "--labels", "low,mid,hihg")
    assert code == 2
    assert "labels: 'hihg' is not a value of target 'band' and 'high' is missing" in err
    assert _nothing_written(tmp_path / "bands.tpk")


# --- (c) --no-check lets a wrong pack through, and says so -------------------------------------------------------


def test_no_check_lets_a_wrong_pack_through_with_a_note(houses, bands, tmp_path):
    code, out, err = _pack_houses(houses, tmp_path / "house.tpk", "--standardize", "*", "--no-check")
    assert code == 0, err
    assert "not checked on the training rows (--no-check" in out
    off = np.abs(_predict(tmp_path / "house.tpk", houses, "price") - np.load(houses / "expected.npy"))
    assert off.min() > 100_000  # the prices come out in standard deviations: the check was what caught it
    code, out, err = _pack_bands(bands, tmp_path / "bands.tpk", "--no-check")
    assert code == 0, err
    assert "not checked on the training rows (--no-check" in out
    wrong = _predict(tmp_path / "bands.tpk", bands, "band") != np.load(bands / "expected.npy")
    assert wrong.mean() > 0.5
