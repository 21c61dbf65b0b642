"""Every head type by its `type` key: the one module that imports all head families, so that a bundle's
heads can be rebuilt from the manifest; the head families register themselves (base.register_head)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torchpredict.errors import BundleError
from torchpredict.heads import classification, regression, sequences  # noqa: F401  # each registers its heads on import
from torchpredict.heads.base import HEAD_TYPES, Head
from torchpredict.heads.regression import Regression  # noqa: F401  # the doctest's example

__all__ = ["head_from_dict"]


def head_from_dict(d: Mapping[str, Any]) -> Head:
    """Rebuild any head from its `to_dict()`, resolving the type through an explicit registry.

    >>> head_from_dict(Regression("y").to_dict()) == Regression("y")
    True
    """
    kind = d.get("type") if isinstance(d, Mapping) else None
    if kind not in HEAD_TYPES:
        raise BundleError(f"unknown output head type {kind!r}; known types: {sorted(HEAD_TYPES)}")
    return HEAD_TYPES[kind].from_dict(d)
