"""Resolve a device request to a torch.device, and count the CPU cores: the only place that probes hardware."""

from __future__ import annotations

import os
import re

import torch

from torchpredict.errors import DeviceError

__all__ = ["cpu_cores", "resolve_device"]

_DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """Turn "auto" | "cpu" | "cuda" | "cuda:N" | "mps" into an available torch.device.

    "auto" picks cuda, then mps, then cpu. Asking for hardware that is not there is a DeviceError,
    never a silent fall-back to another device.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    if not isinstance(spec, str) or not _DEVICE_PATTERN.match(spec):
        raise DeviceError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {spec!r}")
    if spec == "auto":
        return _auto_device()
    if spec.startswith("cuda"):
        return _cuda_device(spec)
    if spec == "mps" and not _mps_available():
        raise DeviceError("device 'mps' requested but MPS is not available on this machine; use device='cpu'")
    return torch.device(spec)


def _auto_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def _cuda_device(spec: str) -> torch.device:
    if not torch.cuda.is_available():
        raise DeviceError(f"device {spec!r} requested but CUDA is not available on this machine; use device='cpu'")
    device = torch.device(spec)
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise DeviceError(f"device {spec!r} requested but this machine has {count} CUDA device(s) "
                          f"(cuda:0..cuda:{count - 1})")
    return device


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def cpu_cores() -> int:
    """The CPU cores this process may run on (taskset and cgroup cpusets narrow them)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
