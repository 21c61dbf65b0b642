"""The manifest's "model" entry, parsed once at load into a frozen ModelEntry: the model's file and format,
its inputs (names in forward's order, dtypes, per-row shapes; a null size takes any), how the infer stage
calls it, and its factory; and the check of model inputs against it, which the infer stage runs on every call
because an exported program's own guards are off. It takes tensors or numpy arrays alike, and needs no torch."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torchpredict.errors import SchemaError

__all__ = ["InputSpec", "ModelEntry", "check_same_batch", "dtype_name", "shape_text"]


@dataclass(frozen=True)
class InputSpec:
    """One model input as recorded: its name, dtype ("float32", "int64") and per-row shape (None: any size)."""

    name: str
    dtype: str
    shape: tuple[int | None, ...]


@dataclass(frozen=True)
class ModelEntry:
    """What the manifest records about the model; `to_dict()` gives back the entry as it was written.

    >>> entry = ModelEntry.from_dict({"format": "export", "file": "model.pt2",
    ...                               "inputs": [{"name": "x", "dtype": "float32", "shape": [13]}]})
    >>> import numpy as np
    >>> entry.check_inputs({"x": np.zeros((5, 12), np.float32)})
    Traceback (most recent call last):
    torchpredict.errors.SchemaError: model input 'x': expected shape [*, 13], got [5, 12]
    """

    format: str
    file: str
    inputs: tuple[InputSpec, ...]
    call: Mapping[str, Any] | None = None
    factory: str | None = None
    factory_kwargs: Mapping[str, Any] = field(default_factory=dict)
    written: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any]) -> ModelEntry:
        """The entry of a manifest that passed its checks (bundle.manifest), or one store_model returned."""
        inputs = tuple(InputSpec(spec["name"], spec["dtype"], tuple(spec["shape"])) for spec in entry["inputs"])
        return cls(format=entry["format"], file=entry.get("file", ""), inputs=inputs, call=entry.get("call"),
                   factory=entry.get("factory"), factory_kwargs=dict(entry.get("factory_kwargs") or {}),
                   written=dict(entry))

    def to_dict(self) -> dict[str, Any]:
        return dict(self.written)

    @property
    def generated(self) -> str | None:
        """The input a decoding loop makes itself (a seq2seq call's "prefix"), which callers do not pass."""
        return (self.call or {}).get("prefix")

    def check_inputs(self, inputs: Mapping[str, Any]) -> None:
        """Check names, order, dtypes and per-row shapes of model inputs (the generated one aside)."""
        specs = {spec.name: spec for spec in self.inputs if spec.name != self.generated}
        _check_names(list(specs), list(inputs))
        for name, tensor in inputs.items():
            _check_input(name, tensor, specs[name])
        check_same_batch(dict(inputs), SchemaError)


def _check_names(wanted: list[str], given: list[str]) -> None:
    missing = [name for name in wanted if name not in given]
    unexpected = [name for name in given if name not in wanted]
    if missing or unexpected:
        parts = [f"missing {_quoted(missing)}"] if missing else []
        parts += [f"unexpected {_quoted(unexpected)}"] if unexpected else []
        raise SchemaError(f"model inputs: {'; '.join(parts)} (the model takes {_quoted(wanted)})")
    if given != wanted:
        raise SchemaError(f"model inputs must come in the order {_quoted(wanted)}, got {_quoted(given)}")


def _check_input(name: str, tensor: Any, spec: InputSpec) -> None:
    if dtype_name(tensor.dtype) != spec.dtype:
        raise SchemaError(f"model input '{name}': expected {spec.dtype}, got {dtype_name(tensor.dtype)}")
    row_shape, got = list(spec.shape), list(tensor.shape[1:])
    if len(got) != len(row_shape) or any(want not in (None, size) for size, want in zip(got, row_shape, strict=True)):
        raise SchemaError(
            f"model input '{name}': expected shape {shape_text(['*', *row_shape])}, "
            f"got {shape_text(list(tensor.shape))}"
        )


def check_same_batch(inputs: Mapping[str, Any], error: type[Exception]) -> None:
    sizes = {name: tensor.shape[0] for name, tensor in inputs.items()}
    if len(set(sizes.values())) > 1:
        listed = ", ".join(f"'{name}': {size}" for name, size in sizes.items())
        raise error(f"model inputs must share one batch size, got {listed}")


def shape_text(shape: list[Any]) -> str:
    return "[" + ", ".join("*" if size is None else str(size) for size in shape) + "]"


def _quoted(names: list[str]) -> str:
    return ", ".join(f"'{name}'" for name in names)


def dtype_name(dtype: Any) -> str:
    """'float32', 'int64', ... for a torch or a numpy dtype (they share these names)."""
    return str(dtype).removeprefix("torch.")
