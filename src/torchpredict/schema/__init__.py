"""The validate stage: the input schema (schema.py), its columns and types (columns.py), reading any table-like
input as Arrow (tables.py), the per-row checks and rejects (validation.py) and drift from training (drift.py)."""

from torchpredict.lazy import exports

__all__ = ["Schema", "Validated"]
__getattr__ = exports(__name__, {"Schema": "torchpredict.schema.schema", "Validated": "torchpredict.schema.schema"})
