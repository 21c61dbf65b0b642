"""Small importable models and factories for the storage and checkpoint tests ("models_for_tests:...")."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

NOT_A_FACTORY = 42


class MLP(nn.Module):
    def __init__(self, in_features: int = 4, hidden: int = 8, out_features: int = 3) -> None:
        super().__init__()
        self.hidden = nn.Linear(in_features, hidden)
        self.out = nn.Linear(hidden, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hidden(x)))


class TanhMLP(MLP):
    """Same parameter names and shapes as MLP, different function: a factory that builds the wrong model."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.hidden(x)))


def make_mlp(in_features: int = 4, hidden: int = 8, out_features: int = 3) -> MLP:
    return MLP(in_features, hidden, out_features)


def make_nothing() -> str:
    return "not a model"


class NormDropNet(nn.Module):
    """BatchNorm and Dropout behave differently in train and eval mode."""

    def __init__(self, in_features: int = 4) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(in_features, 6), nn.BatchNorm1d(6), nn.Dropout(0.5), nn.Linear(6, 2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class TwoInputs(nn.Module):
    def __init__(self, a_features: int = 3, b_features: int = 5) -> None:
        super().__init__()
        self.a = nn.Linear(a_features, 2)
        self.b = nn.Linear(b_features, 2)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.a(a) * self.b(b)


class TupleOutput(MLP):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = super().forward(x)
        return logits, logits.sum(dim=1)


class DictOutput(MLP):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = super().forward(x)
        return {"logits": logits, "score": logits.sum(dim=1)}


class DataDependent(MLP):
    """Python control flow on tensor values: torch.export cannot capture it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = super().forward(x)
        if logits.sum() > 0:
            return logits
        return -logits


class CallCounting(MLP):
    """Output depends on a Python counter, so the exported program cannot reproduce eager outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return super().forward(x) * self.calls


class Tied(nn.Module):
    """Decoder weight shared with the encoder (safetensors' save_file refuses shared tensors)."""

    def __init__(self, features: int = 4) -> None:
        super().__init__()
        self.encode = nn.Linear(features, features, bias=False)
        self.decode = nn.Linear(features, features, bias=False)
        self.decode.weight = self.encode.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(torch.relu(self.encode(x)))


@contextlib.contextmanager
def cuda_tagged() -> Iterator[None]:
    """Make torch.save tag storages as cuda:0, as on a GPU machine (platform-facts §7)."""
    original = torch.serialization.location_tag
    torch.serialization.location_tag = lambda storage: "cuda:0"
    try:
        yield
    finally:
        torch.serialization.location_tag = original
