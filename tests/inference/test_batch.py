"""One model batch: which rows of an output are finite, told by numpy where it can view the tensor and by torch
otherwise, the same either way."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from torchpredict.inference.batch import ModelBatch, finite_rows


def by_torch(output: torch.Tensor) -> np.ndarray:
    values = output.flatten(start_dim=1) if output.ndim > 1 else output.reshape(-1, 1)
    return torch.isfinite(values).all(dim=1).numpy()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64])
@pytest.mark.parametrize("shape", [(5,), (5, 3), (5, 2, 2), (0, 3), (0,), ()])
def test_finite_rows_agree_with_torch_for_every_dtype_and_shape(dtype: torch.dtype, shape: tuple[int, ...]):
    values = torch.arange(int(np.prod(shape)), dtype=torch.float64).reshape(shape)
    if values.numel() >= 4 and dtype.is_floating_point:
        flat = values.view(-1)
        flat[1], flat[-1], flat[2] = float("nan"), float("inf"), float("-inf")
    output = values.to(dtype)
    found = finite_rows(output)
    assert found.dtype == np.bool_ and found.tolist() == by_torch(output).tolist()


def test_a_batch_works_out_the_finite_rows_of_an_output_once():
    scores = torch.tensor([[0.5, float("nan")], [1.0, 2.0]])
    batch = ModelBatch(scores, {})
    first = batch.finite_rows(scores)
    assert first.tolist() == [False, True] and batch.finite_rows(scores) is first
