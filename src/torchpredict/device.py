"""Resolve a device request to a torch.device, count the CPU cores and tune the process's memory allocator: the only
place that probes hardware. torch is imported only to resolve a device, so that a torch-free predictor (ONNX
Runtime on the CPU) can count cores and tune the allocator without it."""

from __future__ import annotations

import ctypes
import os
import re
from typing import TYPE_CHECKING

from torchpredict.errors import DeviceError

if TYPE_CHECKING:
    import torch

__all__ = ["HOST_CPU", "check_device", "cpu_cores", "resolve_device", "reuse_freed_memory", "torch_installed"]

_DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


class _HostCPU:
    """The CPU, for a predictor whose model runs without torch (ONNX Runtime): says of itself what
    torch.device("cpu") says, so that the code reading a predictor's device need not import torch."""

    type = "cpu"
    index = None

    def __str__(self) -> str:
        return "cpu"

    def __repr__(self) -> str:
        return "device(type='cpu')"

    def __eq__(self, other: object) -> bool:
        return str(other) == "cpu"

    def __hash__(self) -> int:
        return hash("cpu")


HOST_CPU = _HostCPU()


def torch_installed() -> bool:
    """Whether torch can be imported here (without importing it)."""
    import importlib.util

    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):  # a finder refuses it, or it is in sys.modules as None: blocked
        return False


def check_device(spec: str) -> None:
    """A device request's syntax, and its hardware unless it is the CPU (which needs no torch to check)."""
    if not isinstance(spec, str) or not _DEVICE_PATTERN.match(spec):
        raise DeviceError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {spec!r}")
    if spec != "cpu":
        resolve_device(spec)


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """Turn "auto" | "cpu" | "cuda" | "cuda:N" | "mps" into an available torch.device.

    "auto" picks cuda, then mps, then cpu. Asking for hardware that is not there is a DeviceError,
    never a silent fall-back to another device.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    import torch

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
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def _cuda_device(spec: str) -> torch.device:
    import torch

    if not torch.cuda.is_available():
        raise DeviceError(f"device {spec!r} requested but CUDA is not available on this machine; use device='cpu'")
    device = torch.device(spec)
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise DeviceError(f"device {spec!r} requested but this machine has {count} CUDA device(s) "
                          f"(cuda:0..cuda:{count - 1})")
    return device


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def cpu_cores() -> int:
    """The CPU cores this process may run on (taskset and cgroup cpusets narrow them)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# glibc mallopt parameters, and what reuse_freed_memory sets them to
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_MB = 1 << 20
_ALLOCATOR = ((_M_MMAP_THRESHOLD, 32 * _MB), (_M_TRIM_THRESHOLD, 512 * _MB), (_M_TOP_PAD, 64 * _MB))


def reuse_freed_memory() -> bool:
    """Have glibc's malloc keep freed memory for the next batch instead of handing it back to the system.

    By default a block over a threshold that adapts (128 KiB at first) is mapped for each allocation and unmapped
    when freed, so a large batch's tensors (a 4,096-row MLP batch makes ~10 MB of them) fault their pages in anew
    on every call: measured here, ~1,000 page faults per call and the forward of 4,096 rows 9.4 ms, against
    ~0 faults and 7.8 ms with blocks of up to 32 MiB taken from the heap and up to 512 MiB of it kept. The
    process then stays near its high-water mark of memory. For processes torchpredict owns (serve, the predict
    command); not where the allocator is not glibc's, nor where a MALLOC_* variable says how the user wants it.
    Returns whether it changed anything.
    """
    if any(name.startswith("MALLOC_") for name in os.environ):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS, Windows)
        return False
    answers = [mallopt(parameter, value) for parameter, value in _ALLOCATOR]  # each set, whatever the others say
    return all(answer == 1 for answer in answers)
