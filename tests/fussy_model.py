"""A model whose own code raises on some inputs (rows far outside what it was validated on), as real models do
(an assert in forward, a lookup past a table's end): the server must fail only the requests holding such rows.
Stored as weights + this factory, so loading it needs --trust-factory fussy_model."""

from __future__ import annotations

import torch
from torch import nn

LIMIT = 50.0  # standardized units: a raw value this many standard deviations out is refused by the model


class Fussy(nn.Module):
    def __init__(self, features: int = 13, classes: int = 3) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(features, 32), nn.ReLU(), nn.Linear(32, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x.abs() > LIMIT).any()):
            raise ValueError(f"an input is more than {LIMIT:g} standard deviations out; this model refuses it")
        return self.net(x)


def fussy_from(model: nn.Sequential) -> Fussy:
    """The wine MLP's trained weights inside the fussy wrapper."""
    fussy = Fussy(model[0].in_features, model[2].out_features)
    fussy.net.load_state_dict(model.state_dict())
    return fussy.eval()
