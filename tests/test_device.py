from __future__ import annotations

import pytest
import torch

from torchpredict.device import resolve_device
from torchpredict.errors import DeviceError


def test_cpu_and_auto():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type in (expected, "mps")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_a_gpu_is_a_device_error():
    with pytest.raises(
        DeviceError, match="device 'cuda:1' requested but CUDA is not available.*device='cpu'"
    ):
        resolve_device("cuda:1")


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "", "CPU"])
def test_malformed_device_is_a_device_error(spec):
    with pytest.raises(DeviceError, match="device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"):
        resolve_device(spec)
