"""The demo: train a small classifier on scikit-learn's wine data, save it as a bundle, predict a file.

It is the whole product in one run, on data that ships with scikit-learn (nothing is downloaded):
fit preprocessing at training time, save one bundle, load it elsewhere and predict new rows exactly
as in training.
"""

from __future__ import annotations

import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from torchpredict.bundle.loading import load
from torchpredict.bundle.saving import save
from torchpredict.errors import OutOfRangeWarning, TorchPredictError
from torchpredict.heads.classification import MulticlassClassification
from torchpredict.io.readers import read_table
from torchpredict.io.writers import write_table
from torchpredict.preprocessing import Preprocessor, Standardize

__all__ = ["run_demo", "train_wine"]

HELD_OUT = 40


def _wine() -> tuple[pa.Table, np.ndarray, list[str]]:
    try:
        from sklearn.datasets import load_wine
    except ImportError:
        raise TorchPredictError("the demo uses scikit-learn's wine data: pip install 'torchpredict[sklearn]'") from None
    data = load_wine(as_frame=True)
    table = pa.Table.from_pandas(data.frame.drop(columns="target"), preserve_index=False)
    labels = [str(name) for name in data.target_names]
    return table, np.asarray(data.target), labels


def train_wine(seed: int = 0, *, ids: bool = False) -> dict:
    """Fit preprocessing and train an MLP on wine; returns everything the demo and the tests need.

    ids: the tables start with an `id` column (the row in scikit-learn's wine data), which the bundle declares
    passthrough, so that predictions carry it without keep=[...].
    """
    table, target, labels = _wine()
    features = table.column_names
    passthrough = ["id"] if ids else []
    if ids:
        table = table.add_column(0, "id", pa.array(np.arange(table.num_rows), pa.int64()))
    order = np.random.default_rng(seed).permutation(table.num_rows)
    train_rows, new_rows = order[HELD_OUT:], order[:HELD_OUT]
    train = table.take(pa.array(train_rows))
    preprocessor = Preprocessor([Standardize(features)], passthrough=passthrough).fit(train)
    head = MulticlassClassification(target="cultivar", labels=labels)
    x = torch.from_numpy(preprocessor.transform(train)["x"])
    y = torch.from_numpy(head.encode_target(np.array(labels)[target[train_rows]]))
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 32), torch.nn.ReLU(), torch.nn.Linear(32, len(labels)))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(150):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    model.eval()
    new = table.take(pa.array(new_rows))
    return {"model": model, "preprocessor": preprocessor, "head": head, "train": train, "new": new,
            "new_ids": new_rows, "new_labels": [labels[i] for i in target[new_rows]]}


def run_demo(folder: Path) -> Path:
    """Train, save, reload and predict; print what happened and where the files are."""
    folder.mkdir(parents=True, exist_ok=True)
    trained = train_wine(ids=True)
    bundle = save(folder / "wine.tpk", trained["model"], preprocessor=trained["preprocessor"],
                  heads=trained["head"], examples=trained["train"], overwrite=True)
    inputs = folder / "new_wines.csv"
    write_table(trained["new"], inputs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", OutOfRangeWarning)
        predictions = load(bundle, device="auto").predict(read_table(inputs))  # id is passthrough: copied
    output = folder / "predictions.csv"
    write_table(predictions, output)
    _report(bundle, inputs, output, predictions, trained["new_labels"])
    for warning in caught:
        print(f"note: {warning.message}")
    return output


def _report(bundle: Path, inputs: Path, output: Path, predictions: pa.Table, truth: list[str]) -> None:
    got = predictions.column("cultivar").to_pylist()
    accuracy = sum(a == b for a, b in zip(got, truth, strict=True)) / len(truth)
    out = sys.stdout
    print(f"trained an MLP on scikit-learn's wine data and saved the bundle '{bundle}'", file=out)
    print(f"predicted {predictions.num_rows} new rows from '{inputs}' (accuracy {accuracy:.1%}):", file=out)
    shown = predictions.select(["id", "cultivar", "cultivar_probability"]).slice(0, 5).to_pylist()
    for row in shown:
        print(f"  id {row['id']:>3}: {row['cultivar']:<8} probability {row['cultivar_probability']:.3f}", file=out)
    print(f"  ... all {predictions.num_rows} rows written to '{output}'", file=out)
    print(f"same from the shell ('id' is passthrough: copied to the predictions): {_command()} predict {bundle} "
          f"{inputs} -o {output}", file=out)


def _command() -> str:
    """How this shell runs torchpredict: its name when PATH finds this one, else its path (.venv/bin/torchpredict)."""
    beside = Path(sys.executable).parent / "torchpredict"
    found = shutil.which("torchpredict")
    if not beside.exists() or (found is not None and Path(found).absolute() == beside.absolute()):
        return "torchpredict"
    try:
        return str(beside.absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(beside)
