"""How a model lives inside a bundle: a torch.export program, or safetensors weights plus a factory.

`model.pt2` needs no Python class to load, so it is the default. Models torch.export cannot capture fall
back to `weights.safetensors` and an importable "package.module:callable" that rebuilds the architecture.
Both are checked against the eager model at save time. Besides the batch, inputs may have dynamic
dimensions (a decoder prefix's length); the entry records them as null. The entry's "call" says how the
infer stage calls the model (see inference.calls.Call). Loading never unpickles, and never runs the guard code an
exported archive carries (`.module()` would exec it; see DESIGN §3), so `check_inputs` checks shapes instead.
Loading runs no code from the bundle unless the user says so: export_reader builds the archive's graph on
any device, and torch.export.load (behind torch_loader's checks) is used only with trust_torch_loader=True;
a weights bundle's factory is imported only when trust_factory or an installed entry point covers it (see
factories). Saving with method "auto" keeps model.pt2 only if the reader builds it, so such bundles always
load without trust.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils import _pytree as pytree

from torchpredict.errors import BundleError, ModelLoadError
from torchpredict.messages import first_line
from torchpredict.model.checkpoints import load_state
from torchpredict.model.entry import check_same_batch, dtype_name, shape_text
from torchpredict.model.export_reader import Unsupported, read_archive
from torchpredict.model.factories import build_model, is_file_ref
from torchpredict.model.torch_loader import load_checked

__all__ = ["EXPORT_FILE", "WEIGHTS_FILE", "load_model", "store_model"]

EXPORT_FILE = "model.pt2"
WEIGHTS_FILE = "weights.safetensors"
_FILES = {"export": EXPORT_FILE, "weights": WEIGHTS_FILE}
_METHODS = ("auto", "export", "weights")
_RTOL, _ATOL = 1e-4, 1e-5  # float32 noise between decomposed (exported) and eager kernels
Dynamic = Mapping[str, Mapping[int, int]]  # input name -> {dimension: largest size} besides the batch


class _Mismatch(Exception):
    """A stored model does not reproduce the eager outputs."""


# --- store ------------------------------------------------------------------------------------------------


def store_model(
    model: nn.Module,
    example_inputs: Mapping[str, torch.Tensor],
    directory: str | Path,
    *,
    factory: str | None = None,
    factory_kwargs: Mapping[str, Any] | None = None,
    method: str = "auto",
    dynamic: Dynamic | None = None,
    call: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the model into `directory` and return the manifest's JSON-safe "model" entry.

    method "auto" exports with a dynamic batch dimension and falls back to weights + `factory` (with a
    warning) when export fails or the exported program does not reproduce eager outputs; "export" and
    "weights" force one format. `example_inputs` are a few real rows, named in the order `forward` takes.
    dynamic: more dimensions that vary, {input: {dim: largest size}} (sizes 1..largest; the example must
    have 2 or more there, as torch.export fixes a dimension of size 1); their shape entries are null.
    call: how the infer stage calls the model, stored as the entry's "call" (None: one forward pass).

    >>> entry = store_model(nn.Linear(3, 2), {"x": torch.randn(4, 3)}, tmp_dir)  # doctest: +SKIP
    >>> entry["format"], entry["inputs"]  # doctest: +SKIP
    ('export', [{'name': 'x', 'dtype': 'float32', 'shape': [3]}])
    """
    if method not in _METHODS:
        raise BundleError(f"method must be one of {', '.join(map(repr, _METHODS))}, got {method!r}")
    inputs = _example_tensors(example_inputs)
    dynamic = _check_dynamic(dynamic or {}, inputs)
    kwargs = _json_kwargs(factory_kwargs)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model = _on_cpu(model)
    with _eval_mode(model):
        expected = _eager_outputs(model, inputs, dynamic)
        entry: dict[str, Any] = {"format": "export", "file": EXPORT_FILE, "inputs": _input_specs(inputs, dynamic)}
        entry.update({"call": json.loads(json.dumps(dict(call)))} if call else {})
        reason = _try_export(model, inputs, dynamic, expected, directory, entry) if method != "weights" else None
        if method != "weights" and reason is None:
            return entry
        _refuse_without_factory(method, reason, factory)
        if reason is not None:
            warnings.warn(
                f"torch.export failed ({reason}); storing {WEIGHTS_FILE} + factory {factory!r}", stacklevel=2
            )
        entry.update(format="weights", file=WEIGHTS_FILE, factory=factory, factory_kwargs=kwargs)
        entry.update({"fallback_reason": reason} if reason is not None else {})
        _store_weights(model, inputs, expected, directory, entry)
    return entry


def _example_tensors(example_inputs: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    if not isinstance(example_inputs, Mapping) or not example_inputs:
        raise BundleError("example_inputs must be a non-empty dict of input name -> tensor [batch, ...]")
    inputs = {str(name): torch.as_tensor(value).cpu() for name, value in example_inputs.items()}
    for name, tensor in inputs.items():
        if tensor.ndim == 0 or tensor.shape[0] == 0:
            raise BundleError(
                f"example input '{name}': expected shape [batch >= 1, ...], got {list(tensor.shape)}"
            )
    check_same_batch(inputs, BundleError)
    return inputs


def _check_dynamic(dynamic: Dynamic, inputs: dict[str, torch.Tensor]) -> dict[str, dict[int, int]]:
    checked: dict[str, dict[int, int]] = {}
    for name, dims in dynamic.items():
        if name not in inputs:
            raise BundleError(f"dynamic names input {name!r}, which is not one of the example inputs {list(inputs)}")
        tensor = inputs[name]
        for dim, largest in dims.items():
            if not 1 <= dim < tensor.ndim or largest < 2 or not 2 <= tensor.shape[dim] <= largest:
                raise BundleError(
                    f"dynamic input {name!r}: dimension {dim} must be one of 1..{tensor.ndim - 1} with a largest size "
                    f">= 2 and an example size in 2..largest, got largest {largest} for example shape "
                    f"{list(tensor.shape)}"
                )
        checked[name] = dict(dims)
    return checked


def _json_kwargs(factory_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    kwargs = dict(factory_kwargs or {})
    try:
        return json.loads(json.dumps(kwargs))
    except (TypeError, ValueError) as exc:
        raise BundleError(
            f"factory_kwargs must be JSON-serialisable (str, int, float, bool, None, list, dict): {exc}"
        ) from exc


def _on_cpu(model: nn.Module) -> nn.Module:
    """Bundles are stored from CPU tensors so they load anywhere; a GPU model is copied, not moved."""
    tensors = [*model.parameters(), *model.buffers()]
    if all(tensor.device.type == "cpu" for tensor in tensors):
        return model
    return copy.deepcopy(model).cpu()


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def _eager_outputs(model: nn.Module, inputs: dict[str, torch.Tensor], dynamic: Dynamic) -> dict[str, Any]:
    """Outputs for the example batch, its first row and (with dynamic dimensions) its shortest form, taken
    before any tracing touches the model."""
    try:
        with torch.no_grad():
            outputs = {"batch": model(*inputs.values()), "row": model(*_first_row(inputs).values())}
            if dynamic:
                outputs["shortest"] = model(*_shortest(inputs, dynamic).values())
            return outputs
    except Exception as exc:
        raise ModelLoadError(f"the model fails on the example inputs: {_reason(exc)}") from exc


def _first_row(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: tensor[:1] for name, tensor in inputs.items()}


def _shortest(inputs: dict[str, torch.Tensor], dynamic: Dynamic) -> dict[str, torch.Tensor]:
    """The example inputs cut to size 1 along every dynamic dimension."""
    short = dict(inputs)
    for name, dims in dynamic.items():
        for dim in dims:
            short[name] = short[name].narrow(dim, 0, 1)
    return short


def _input_specs(inputs: dict[str, torch.Tensor], dynamic: Dynamic) -> list[dict[str, Any]]:
    return [
        {"name": name, "dtype": dtype_name(tensor.dtype),
         "shape": [None if d in dynamic.get(name, {}) else size for d, size in enumerate(tensor.shape) if d]}
        for name, tensor in inputs.items()
    ]


def _try_export(
    model: nn.Module, inputs: dict[str, torch.Tensor], dynamic: Dynamic, expected: dict[str, Any], directory: Path,
    entry: dict,
) -> str | None:
    """Export, save and reload the program with the torch-free reader (so the bundle loads without trust);
    return why it failed, or None when it reproduces eager."""
    path = directory / EXPORT_FILE
    try:
        torch.export.save(_export(model, inputs, dynamic), path)
        stored = _read_own_export(path)
        _verify(stored, inputs, dynamic, expected, "exported program")
    except Exception as exc:
        path.unlink(missing_ok=True)
        return _reason(exc)
    return None


def _read_own_export(path: Path) -> nn.Module:
    try:
        return read_archive(path)
    except Unsupported as exc:
        raise ModelLoadError(f"torchpredict's reader cannot build the exported program ({exc}), and loading it "
                             "with torch.export.load would need trust_torch_loader") from exc


def _export(model: nn.Module, inputs: dict[str, torch.Tensor], dynamic: Dynamic) -> torch.export.ExportedProgram:
    # torch.export specialises a dimension of size 1, so trace with at least two rows.
    args = tuple(
        tensor if tensor.shape[0] >= 2 else torch.cat([tensor, tensor]) for tensor in inputs.values()
    )
    batch = torch.export.Dim("batch", min=1)
    shapes = tuple(
        {0: batch, **{dim: torch.export.Dim(f"input{i}_dim{dim}", min=1, max=largest)
                      for dim, largest in dynamic.get(name, {}).items()}}
        for i, name in enumerate(inputs)
    )
    # On failure torch prints the partial graph to stderr; the caller gets the reason in one line instead.
    with contextlib.redirect_stderr(io.StringIO()):
        return torch.export.export(model, args, dynamic_shapes=shapes)


def _verify(stored: nn.Module, inputs: dict[str, torch.Tensor], dynamic: Dynamic, expected: dict[str, Any],
            what: str) -> None:
    with torch.no_grad():
        _compare(what, "the example batch", expected["batch"], stored(*inputs.values()))
        _compare(what, "batch size 1", expected["row"], stored(*_first_row(inputs).values()))
        if dynamic:
            _compare(what, "size 1 along the dynamic dimensions", expected["shortest"],
                     stored(*_shortest(inputs, dynamic).values()))


def _compare(what: str, where: str, expected: Any, got: Any) -> None:
    expected_leaves, expected_spec = pytree.tree_flatten(expected)
    got_leaves, got_spec = pytree.tree_flatten(got)
    if expected_spec != got_spec:
        raise _Mismatch(f"{what} returns {got_spec} but the model returns {expected_spec}")
    for want, have in zip(expected_leaves, got_leaves, strict=True):
        if not _close(want, have):
            raise _Mismatch(f"{what} differs from the eager model at {where} ({_difference(want, have)})")


def _close(want: Any, have: Any) -> bool:
    if not isinstance(want, torch.Tensor) or not isinstance(have, torch.Tensor):
        return want == have
    if want.shape != have.shape or want.dtype != have.dtype:
        return False
    return bool(torch.allclose(want, have.to(want.device), rtol=_RTOL, atol=_ATOL, equal_nan=True))


def _difference(want: Any, have: Any) -> str:
    if not isinstance(want, torch.Tensor) or not isinstance(have, torch.Tensor):
        return f"expected {want!r}, got {have!r}"
    if want.shape != have.shape or want.dtype != have.dtype:
        return f"expected {_tensor_text(want)}, got {_tensor_text(have)}"
    return f"max abs diff {(want.double() - have.double().to(want.device)).abs().max().item():.3g}"


def _tensor_text(tensor: torch.Tensor) -> str:
    return f"{dtype_name(tensor.dtype)}{shape_text(list(tensor.shape))}"


def _refuse_without_factory(method: str, reason: str | None, factory: str | None) -> None:
    if method == "export":
        raise ModelLoadError(f"torch.export could not store the model: {reason}")
    fix = "pass factory='package.module:make_model' (and factory_kwargs), an importable callable building it"
    if factory is None and reason is not None:
        raise ModelLoadError(f"torch.export failed ({reason}); to store the weights instead, {fix}")
    if factory is None:
        raise ModelLoadError(f"method='weights' stores only the weights; {fix}")
    if is_file_ref(factory):
        raise ModelLoadError(
            f"factory {factory!r} names a file, which does not travel with the bundle; move the model code "
            "into an importable package and use 'package.module:callable'"
        )


def _store_weights(
    model: nn.Module, inputs: dict[str, torch.Tensor], expected: dict[str, Any], directory: Path, entry: dict
) -> None:
    import safetensors.torch

    path = directory / WEIGHTS_FILE
    safetensors.torch.save_model(model, str(path))  # save_model, not save_file: it handles tied weights
    try:  # the factory is the caller's own, so the self-check trusts exactly it
        rebuilt = load_model(directory, entry, torch.device("cpu"), trust_factory=[entry["factory"]])
        with torch.no_grad():
            got = rebuilt(*inputs.values())
        what = f"the model rebuilt by factory {entry['factory']!r}"
        _compare(what, "the example batch", expected["batch"], got)
    except _Mismatch as exc:
        path.unlink(missing_ok=True)
        raise ModelLoadError(f"{exc}; the factory must rebuild the same architecture") from exc
    except ModelLoadError:
        path.unlink(missing_ok=True)
        raise


# --- load -------------------------------------------------------------------------------------------------


def load_model(directory: str | Path, entry: Mapping[str, Any], device: torch.device | str, *,
               trust_factory: Sequence[str] = (), trust_torch_loader: bool = False) -> nn.Module:
    """Build the stored model on `device`, in eval mode with gradients off, without unpickling anything.

    trust_factory: modules (or exact "module:callable" references) a weights entry's factory may come from,
    besides those installed packages declare (see factories). trust_torch_loader: let torch.export.load build
    an archive the torch-free reader does not. An exported model is an fx.GraphModule: it is already in eval
    mode, and calling `.eval()` or `.train()` on it raises NotImplementedError.
    """
    device = torch.device(device)
    kind = entry.get("format")
    if kind not in _FILES:
        raise ModelLoadError(
            f"model format {kind!r} is not one this torchpredict reads ({', '.join(map(repr, _FILES))})"
        )
    path = _model_file(directory, entry, kind)
    if kind == "export":
        model = _load_export(path, device, trust_torch_loader=trust_torch_loader)
    else:
        model = _load_weights(path, entry, device, trust_factory=trust_factory)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def _model_file(directory: str | Path, entry: Mapping[str, Any], kind: str) -> Path:
    name = entry.get("file", _FILES[kind])
    if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
        raise ModelLoadError(f"model file must be a plain file name inside the bundle, got {name!r}")
    path = Path(directory) / name
    if not path.is_file():
        raise ModelLoadError(f"model file '{name}' is missing from '{directory}'")
    return path


def _load_export(path: Path, device: torch.device, *, trust_torch_loader: bool) -> nn.Module:
    try:
        module: nn.Module = read_archive(path, device)
    except Unsupported as exc:
        if not trust_torch_loader:
            raise ModelLoadError(
                f"model file '{path.name}' holds what torchpredict's reader does not build ({exc}); torch.export.load "
                "would build it but can run code from a crafted archive, so it is refused: pass "
                "trust_torch_loader=True (CLI --trust-torch-loader) only if you trust the bundle"
            ) from None
        module = _load_with_torch(path, device)
    except Exception as exc:
        raise ModelLoadError(f"model file '{path.name}' could not be loaded: {_reason(exc)}") from exc
    for submodule in module.modules():
        submodule.training = False  # exported in eval mode; GraphModule refuses .eval()
    return module


def _load_with_torch(path: Path, device: torch.device) -> nn.Module:
    try:
        program = load_checked(path)
        if device.type != "cpu":
            from torch.export.passes import move_to_device_pass

            program = move_to_device_pass(program, device)
        # check_guards=False: the default exec()s `guards_code` strings from the archive at forward time.
        return program.module(check_guards=False)
    except Exception as exc:
        raise ModelLoadError(f"model file '{path.name}' could not be loaded: {_reason(exc)}") from exc


def _load_weights(path: Path, entry: Mapping[str, Any], device: torch.device, *,
                  trust_factory: Sequence[str]) -> nn.Module:
    import safetensors.torch

    factory = entry.get("factory")
    if not isinstance(factory, str):
        raise ModelLoadError(
            f"model entry for '{path.name}' has no factory reference ('package.module:callable')"
        )
    model = build_model(factory, entry.get("factory_kwargs"), from_bundle=True, trust_factory=trust_factory)
    model = model.to(device)
    try:
        state = safetensors.torch.load_file(path, device=str(device))
    except Exception as exc:
        raise ModelLoadError(f"weights file '{path.name}' could not be read: {_reason(exc)}") from exc
    load_state(model, state, what=f"weights file '{path.name}'")
    return model.eval()


def _reason(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, (_Mismatch, ModelLoadError)) else first_line(exc, with_type=True)
