"""Names a package re-exports from its modules, imported on first use: the faces (`torchpredict`,
`torchpredict.bundle`, `torchpredict.packing`, `torchpredict.schema`) stay free to import, so that
`import torchpredict` and `torchpredict inspect` never import torch."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def exports(package: str, homes: Mapping[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` giving each name in homes from its module (name -> dotted module)."""

    def __getattr__(name: str) -> Any:
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(homes[name]), name)

    return __getattr__
