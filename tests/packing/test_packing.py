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

from cli_runs import run_cli
from torchpredict.bundle import load
from torchpredict.errors import ModelLoadError, PackError, PreprocessingError
from torchpredict.io.readers import read_table
from torchpredict.io.writers import write_table
from torchpredict.packing.packer import UNCHECKED, pack

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


# --- pack checks its own work on the training rows --------------------------------------------------------------

NETS = "import torch\n\ndef linear(n_in=4, n_out=3):\n    return torch.nn.Linear(n_in, n_out)\n"


def _trained_linear(tmp_path: Path, x: np.ndarray, y: np.ndarray, *, n_out: int, loss) -> tuple[Path, str]:
    """A Linear model trained on x (raw, not standardised) saved as a state_dict, and its factory reference."""
    (tmp_path / "nets.py").write_text(NETS)
    torch.manual_seed(0)
    model = torch.nn.Linear(x.shape[1], n_out)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    xt, yt = torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y)
    for _ in range(300):
        optimizer.zero_grad()
        loss(model(xt).squeeze(-1) if n_out == 1 else model(xt), yt).backward()
        optimizer.step()
    torch.save(model.state_dict(), tmp_path / "linear.pt")
    return tmp_path / "linear.pt", f"{tmp_path / 'nets.py'}:linear"


@pytest.fixture
def iris_ints(tmp_path: Path) -> tuple[Path, str, Path]:
    """iris.csv with an int64 target 'species' 0/1/2 and a Linear model trained on it: (checkpoint, factory, csv)."""
    from sklearn.datasets import load_iris

    data = load_iris()
    write_table(pa.table({**{f"x{i}": data.data[:, i] for i in range(4)}, "species": data.target}),
                tmp_path / "iris.csv")
    checkpoint, factory = _trained_linear(tmp_path, data.data, data.target.astype(np.int64), n_out=3,
                                          loss=torch.nn.functional.cross_entropy)
    return checkpoint, factory, tmp_path / "iris.csv"


def test_pack_reports_the_fit_it_measured_on_the_training_rows(trained_by_hand, tmp_path):
    folder = trained_by_hand
    packed = pack(folder / "checkpoint.pt", tmp_path / "sd.tpk", train=folder / "train.csv", target="target",
                  factory=f"{folder / 'train.py'}:make_net", standardize=["*"], scale_target=True)
    train = read_table(folder / "train.csv")
    predicted = load(packed, device="cpu").predict(train.drop_columns(["target"])).column("target").to_numpy()
    truth = train.column("target").to_numpy()
    r2 = 1 - ((truth - predicted) ** 2).sum() / ((truth - truth.mean()) ** 2).sum()
    assert packed.path == tmp_path / "sd.tpk" and packed.task == "regression"
    assert (packed.fit.rows, packed.fit.of_rows) == (400, 400)
    assert packed.fit.r2[0] == pytest.approx(r2, abs=1e-5)
    assert packed.fit.mae[0] == pytest.approx(np.abs(truth - predicted).mean(), rel=1e-5)
    assert packed.describe()[-1] == f"fit on 400 training rows: R² {r2:.3f}, MAE {packed.fit.mae[0]:.4g}"


def test_pack_check_predicts_a_seeded_sample_of_a_big_training_file(trained_by_hand, tmp_path, monkeypatch):
    from torchpredict.packing import check as pack_check

    monkeypatch.setattr(pack_check, "CHECK_ROWS", 100)
    folder = trained_by_hand
    options = {"train": folder / "train.csv", "target": "target", "factory": f"{folder / 'train.py'}:make_net",
               "standardize": ["*"], "scale_target": True}
    first = pack(folder / "checkpoint.pt", tmp_path / "a.tpk", **options)
    again = pack(folder / "checkpoint.pt", tmp_path / "b.tpk", **options)
    assert (first.fit.rows, first.fit.of_rows) == (100, 400) and first.fit == again.fit
    assert first.describe()[-1].startswith("fit on 100 sampled of 400 training rows: R² ")


def test_a_refused_pack_writes_nothing_and_keeps_the_bundle_it_would_replace(trained_by_hand, tmp_path):
    folder = trained_by_hand
    options = {"train": folder / "train.csv", "target": "target", "factory": f"{folder / 'train.py'}:make_net",
               "standardize": ["*"]}
    pack(folder / "checkpoint.pt", tmp_path / "m.tpk", scale_target=True, **options)
    before = {p: p.read_bytes() for p in (tmp_path / "m.tpk").rglob("*") if p.is_file()}
    with pytest.raises(PackError, match=r"far better with the target scaled .* pass --scale-target"):
        pack(folder / "checkpoint.pt", tmp_path / "m.tpk", overwrite=True, **options)
    assert {p: p.read_bytes() for p in (tmp_path / "m.tpk").rglob("*") if p.is_file()} == before
    with pytest.raises(PackError):
        pack(folder / "checkpoint.pt", tmp_path / "new.tpk", **options)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tpk"]  # no bundle, no staging folder


def test_check_false_packs_without_checking_and_says_so(trained_by_hand, tmp_path):
    folder = trained_by_hand
    packed = pack(folder / "checkpoint.pt", tmp_path / "m.tpk", train=folder / "train.csv", target="target",
                  factory=f"{folder / 'train.py'}:make_net", standardize=["*"], check=False)
    assert packed.fit is None and packed.describe()[-1] == UNCHECKED
    assert load(packed, device="cpu").verify().passed


def test_default_task_on_a_three_wide_output_is_multiclass_and_says_so(iris_ints, tmp_path):
    checkpoint, factory, csv = iris_ints
    packed = pack(checkpoint, tmp_path / "iris.tpk", train=csv, target="species", factory=factory)
    assert packed.task == "multiclass" and packed.fit.accuracy > 0.9
    assert packed.notes == ("task: multiclass, inferred from target 'species' (int64, 3 distinct values) and the "
                            "model's 3 outputs per row (--task to choose)",)
    assert [sum(row) for row in packed.fit.counts] == [50, 50, 50] and packed.fit.labels == (0, 1, 2)


def test_regression_on_a_three_wide_output_suggests_multiclass(iris_ints, tmp_path):
    checkpoint, factory, csv = iris_ints
    with pytest.raises(PackError, match=r"^task 'regression' reads 1 output per row, but the model gives 3 \(target "
                       r"'species' \(int64, 3 distinct values\) .*: pass --task multiclass \(task='multiclass'\)$"):
        pack(checkpoint, tmp_path / "iris.tpk", train=csv, target="species", task="regression", factory=factory)
    assert not (tmp_path / "iris.tpk").exists()


def test_int_labels_given_as_text_in_the_wrong_order_are_refused_with_the_right_one(iris_ints, tmp_path):
    checkpoint, factory, csv = iris_ints
    with pytest.raises(PackError, match=r"order 0,1,2 \(accuracy 9\d\.\d%\) far better than 2,0,1 .* pass --labels "
                       r"0,1,2 \(labels=\[0, 1, 2\]\)"):
        pack(checkpoint, tmp_path / "iris.tpk", train=csv, target="species", factory=factory, labels=["2", "0", "1"])
    packed = pack(checkpoint, tmp_path / "iris.tpk", train=csv, target="species", factory=factory,
                  labels=["0", "1", "2"])
    rows = read_table(csv).drop_columns(["species"]).slice(0, 3)
    assert load(packed, device="cpu").predict(rows).column("species").to_pylist() == [0, 0, 0]


@pytest.mark.parametrize(("labels", "message"), [
    (["0", "1", "7"], r"labels: 7 is not a value of target 'species' and 2 is missing \(its values: 0, 1, 2\)"),
    (["0", "1"], r"labels: target 'species' also holds 2, which they do not name"),
])
def test_labels_that_are_not_the_targets_values_are_refused(iris_ints, tmp_path, labels, message):
    checkpoint, factory, csv = iris_ints
    with pytest.raises(PackError, match=message + r".*pass --labels \(labels=\[...\]\) with exactly those values"):
        pack(checkpoint, tmp_path / "iris.tpk", train=csv, target="species", factory=factory, labels=labels)


def test_binary_with_flipped_labels_is_refused_and_its_default_task_is_binary(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (300, 2))
    positive = x[:, 0] + x[:, 1] > 0
    write_table(pa.table({"a": x[:, 0], "b": x[:, 1], "churn": np.where(positive, "yes", "no")}), tmp_path / "c.csv")
    checkpoint, factory = _trained_linear(tmp_path, x, positive.astype(np.float32), n_out=1,
                                          loss=torch.nn.functional.binary_cross_entropy_with_logits)
    kwargs = {"n_in": 2, "n_out": 1}
    options = {"train": tmp_path / "c.csv", "target": "churn", "factory": factory, "factory_kwargs": kwargs}
    flipped = r"order no,yes \(accuracy 9\d\.\d%\) far better than yes,no .* --labels no,yes"
    with pytest.raises(PackError, match=flipped):
        pack(checkpoint, tmp_path / "c.tpk", labels=["yes", "no"], **options)
    packed = pack(checkpoint, tmp_path / "c.tpk", **options)
    assert packed.task == "binary" and packed.fit.accuracy > 0.9 and packed.fit.labels == ("no", "yes")


def test_multilabel_targets_get_an_accuracy_per_label(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (300, 4))
    y = np.column_stack([x[:, 0] > 0, x[:, 1] + x[:, 2] > 0]).astype(np.int64)
    write_table(pa.table({**{f"x{i}": x[:, i] for i in range(4)}, "red": y[:, 0], "big": y[:, 1]}), tmp_path / "m.csv")
    checkpoint, factory = _trained_linear(tmp_path, x, y.astype(np.float32), n_out=2,
                                          loss=torch.nn.functional.binary_cross_entropy_with_logits)
    packed = pack(checkpoint, tmp_path / "m.tpk", train=tmp_path / "m.csv", target=["red", "big"], factory=factory,
                  factory_kwargs={"n_in": 4, "n_out": 2})
    assert packed.task == "multilabel" and packed.fit.labels == ("red", "big")
    assert min(packed.fit.per_label) > 0.9
    assert packed.fit.accuracy == pytest.approx(np.mean(packed.fit.per_label))
    assert packed.describe()[-1].startswith("  per label: red 9")


def test_a_weights_bundle_is_checked_trusting_its_factory_and_warned_about_under_its_own_path(iris_ints, tmp_path):
    checkpoint, _, csv = iris_ints
    with pytest.warns(UserWarning, match="stores weights.safetensors") as caught:
        packed = pack(checkpoint, tmp_path / "w.tpk", train=csv, target="species", storage="weights",
                      factory="torch.nn.modules.linear:Linear", factory_kwargs={"in_features": 4, "out_features": 3})
    assert packed.fit.accuracy > 0.9
    texts = [str(w.message) for w in caught]
    assert any(f"bundle '{tmp_path / 'w.tpk'}'" in t for t in texts) and not any(".tp-pack-" in t for t in texts)


@pytest.mark.parametrize("classes", [3, 10])
def test_the_best_label_order_is_found_exactly_or_greedily(classes, monkeypatch):
    from torchpredict.packing import check as pack_check

    order = np.random.default_rng(classes).permutation(classes)
    counts = np.full((classes, classes), 2)
    counts[order, np.arange(classes)] = 40  # output j is class order[j]
    assert pack_check._best_assignment(counts).tolist() == order.tolist()
    assert pack_check._greedy_assignment(counts).tolist() == order.tolist()
