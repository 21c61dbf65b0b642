"""A small CNN trained on scikit-learn's digits (8x8 images), saved as a bundle: the convolutional model the
backend tests and bench/backends.py run next to the wine MLP."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from torchpredict.bundle import save
from torchpredict.heads.classification import MulticlassClassification
from torchpredict.preprocessing import MinMax, Preprocessor

PIXELS = [f"pixel_{i}" for i in range(64)]


class DigitsCNN(nn.Module):
    """Two conv + pool blocks over the 8x8 image (the 64 pixel columns, in row-major order), then a Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classify = nn.Linear(32 * 2 * 2, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(x.reshape(-1, 1, 8, 8)).flatten(1))


def digits_tables() -> tuple[pa.Table, np.ndarray, pa.Table, np.ndarray]:
    """(train, train labels, test, test labels): the first 1,500 digits to train on, the rest to predict."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    table = pa.table({name: digits.data[:, i].astype(np.float32) for i, name in enumerate(PIXELS)})
    return table.slice(0, 1500), digits.target[:1500], table.slice(1500), digits.target[1500:]


def train_digits_cnn(steps: int = 100, seed: int = 0) -> dict:
    train, labels, test, test_labels = digits_tables()
    preprocessor = Preprocessor([MinMax(PIXELS)]).fit(train)
    x = torch.from_numpy(preprocessor.transform(train)["x"])
    y = torch.from_numpy(labels).long()
    torch.manual_seed(seed)
    model = DigitsCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    model.eval()
    head = MulticlassClassification(target="digit", labels=[str(d) for d in range(10)])
    return {"model": model, "preprocessor": preprocessor, "head": head, "train": train, "test": test,
            "test_labels": test_labels}


def save_digits_cnn(path: Path, trained: dict | None = None) -> Path:
    trained = trained or train_digits_cnn()
    return save(path, trained["model"], preprocessor=trained["preprocessor"], heads=trained["head"],
                examples=trained["train"])
