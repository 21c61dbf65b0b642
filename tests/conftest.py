"""Shared fixtures: small real models trained once per test session on scikit-learn data."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from torchpredict.bundle import save
from torchpredict.cli.demo import train_wine
from torchpredict.cli.digits_demo import train_digits
from torchpredict.heads.regression import Regression
from torchpredict.preprocessing import Preprocessor, Standardize


@pytest.fixture(scope="session")
def wine() -> dict:
    """A multiclass MLP on wine, with standardization fitted on the training rows."""
    return train_wine(seed=0)


@pytest.fixture(scope="session")
def wine_bundle(wine: dict, tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("wine") / "wine.tpk"
    return save(
        path, wine["model"], preprocessor=wine["preprocessor"], heads=wine["head"], examples=wine["train"]
    )


@pytest.fixture(scope="session")
def digits(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A CNN on scikit-learn's digits written as PNG files (folder: train/<label>/*.png and new/*.png), with
    its image steps fitted on the training files."""
    folder = tmp_path_factory.mktemp("digits")
    return {**train_digits(folder, epochs=4), "folder": folder}


@pytest.fixture(scope="session")
def digits_bundle(digits: dict, tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("digits-bundle") / "digits.tpk"
    return save(path, digits["model"], preprocessor=digits["preprocessor"], heads=digits["head"],
                examples=digits["train"])


@pytest.fixture(scope="session")
def diabetes() -> dict:
    """A regression MLP on diabetes with a standardized target, un-scaled at prediction time."""
    from sklearn.datasets import load_diabetes

    data = load_diabetes(as_frame=True)
    table = pa.Table.from_pandas(data.frame.drop(columns="target"), preserve_index=False)
    target = np.asarray(data.target, dtype=np.float64)
    train, test = table.slice(0, 400), table.slice(400)
    preprocessor = Preprocessor([Standardize(table.column_names)]).fit(train)
    head = Regression(target="progression", scale=True).fit(target[:400])
    x = torch.from_numpy(preprocessor.transform(train)["x"])
    y = torch.from_numpy(head.encode_target(target[:400])).reshape(-1, 1)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(200):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
    model.eval()
    return {
        "model": model,
        "preprocessor": preprocessor,
        "head": head,
        "train": train,
        "test": test,
        "test_target": target[400:],
    }


@pytest.fixture(scope="session")
def diabetes_bundle(diabetes: dict, tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("diabetes") / "diabetes.tpk"
    return save(
        path,
        diabetes["model"],
        preprocessor=diabetes["preprocessor"],
        heads=diabetes["head"],
        examples=diabetes["train"],
    )


def training_time_predictions(trained: dict, table: pa.Table) -> dict[str, pa.Array]:
    """What the training script itself would predict: its own preprocessing, model and head."""
    x = torch.from_numpy(trained["preprocessor"].transform(table)["x"])
    with torch.no_grad():
        raw = trained["model"](x)
    return trained["head"].interpret(raw)
