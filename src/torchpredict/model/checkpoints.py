"""Import models saved the usual ways, so `pack` can turn them into bundles.

Training scripts save state dicts (bare, wrapped in {"model": ...}, prefixed by DDP's `module.` or
torch.compile's `_orig_mod.`), TorchScript archives and full-model pickles whose classes may live in the
script's `__main__`, often with storages tagged for a GPU. Each becomes a CPU nn.Module in eval mode here.
Unpickling runs code from the file, so it only happens when the caller says they trust the file.
"""

from __future__ import annotations

import pickle
import re
import types
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchpredict.errors import ModelLoadError
from torchpredict.messages import first_line
from torchpredict.model.factories import build_model
from torchpredict.model.sources import Source, load_source

__all__ = ["load_checkpoint", "load_state"]

_STATE_DICT_KEYS = ("model", "state_dict", "model_state_dict")
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_MAIN_FIX = (
    "pass source='train.py' (CLI --source train.py) pointing at the file that defines it, "
    "or save model.state_dict() instead"
)


# --- state dicts ----------------------------------------------------------------------------------------


def load_state(model: nn.Module, state: Mapping[str, Any], *, what: str) -> None:
    """Strictly load `state` into `model`, after stripping DDP/compile prefixes and re-tying tied weights.

    `what` names the source in messages, e.g. "checkpoint 'model.pt'".
    """
    expected = model.state_dict()
    state = _fill_tied(_strip_wrapper_prefixes(dict(state), expected), expected)
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    if missing or unexpected:
        parts = [f"missing keys {_few(missing)}"] if missing else []
        parts += [f"unexpected keys {_few(unexpected)}"] if unexpected else []
        raise ModelLoadError(f"{what} does not match the model: {'; '.join(parts)}")
    _check_shapes(expected, state, what)
    model.load_state_dict(state, strict=True)


def _strip_wrapper_prefixes(state: dict[str, Any], expected: Mapping[str, Any]) -> dict[str, Any]:
    stripped = True
    while stripped and state:
        stripped = False
        for prefix in _WRAPPER_PREFIXES:
            if _all_start_with(state, prefix) and not _all_start_with(expected, prefix):
                state = {key[len(prefix) :]: value for key, value in state.items()}
                stripped = True
    return state


def _all_start_with(keys: Iterable[str], prefix: str) -> bool:
    return all(key.startswith(prefix) for key in keys)


def _fill_tied(state: dict[str, Any], expected: Mapping[str, Any]) -> dict[str, Any]:
    """Formats that store a tied tensor once (safetensors.save_model) omit its other names; restore them."""
    groups: dict[tuple, list[str]] = {}
    for key, tensor in expected.items():
        if isinstance(tensor, torch.Tensor) and tensor.numel() > 0:
            identity = (
                tensor.untyped_storage().data_ptr(),
                tensor.storage_offset(),
                tensor.shape,
                tensor.stride(),
            )
            groups.setdefault(identity, []).append(key)
    for names in groups.values():
        present = [name for name in names if name in state]
        for name in names:
            if present and name not in state:
                state[name] = state[present[0]]
    return state


def _check_shapes(expected: Mapping[str, Any], state: Mapping[str, Any], what: str) -> None:
    for key, tensor in expected.items():
        got = state[key]
        if isinstance(tensor, torch.Tensor) and isinstance(got, torch.Tensor) and got.shape != tensor.shape:
            raise ModelLoadError(
                f"{what} does not match the model: '{key}' has shape {list(got.shape)} in the checkpoint, "
                f"{list(tensor.shape)} in the model"
            )


def _few(keys: list[str], shown: int = 5) -> str:
    listed = ", ".join(f"'{key}'" for key in keys[:shown])
    return listed if len(keys) <= shown else f"{listed} and {len(keys) - shown} more"


# --- checkpoints ----------------------------------------------------------------------------------------


def load_checkpoint(
    path: str | Path,
    *,
    factory: str | None = None,
    factory_kwargs: Mapping[str, Any] | None = None,
    trust_pickle: bool = False,
    source: str | Path | None = None,
) -> nn.Module:
    """Build a CPU nn.Module in eval mode from a checkpoint file, whatever device it was saved on.

    Args:
        factory: "package.module:callable" or "file.py:callable" building the architecture, needed for
            state dicts (.safetensors, .pt/.pth/.bin holding tensors).
        trust_pickle: allow unpickling a full model saved with `torch.save(model)`; this runs code from
            the file, so only for files you trust.
        source: the training script that defined pickled `__main__` classes; only its imports, class and
            function definitions and constants run, nothing else (see torchpredict.model.sources).

    >>> model = load_checkpoint("model.pt", factory="mypkg.models:make_net")  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"checkpoint '{path}' does not exist or is not a file")
    loaded = _read(path, trust_pickle=trust_pickle, source=source)
    if not isinstance(loaded, nn.Module):
        loaded = _from_state(path, loaded, factory, factory_kwargs)
    return loaded.cpu().eval()


def _read(path: Path, *, trust_pickle: bool, source: str | Path | None) -> Any:
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    if _is_torchscript(path):
        return _read_torchscript(path)
    return _read_torch_save(path, trust_pickle=trust_pickle, source=source)


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    import safetensors.torch

    try:
        return safetensors.torch.load_file(path, device="cpu")
    except Exception as exc:
        raise ModelLoadError(
            f"checkpoint '{path}' is not a readable safetensors file: {first_line(exc, with_type=True)}"
        ) from exc


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile:
        return False
    return any(name.endswith("/constants.pkl") or "/code/" in name for name in names)


def _read_torchscript(path: Path) -> nn.Module:
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise ModelLoadError(
            f"checkpoint '{path}' is not a readable TorchScript archive: {first_line(exc, with_type=True)}"
        ) from exc


def _read_torch_save(path: Path, *, trust_pickle: bool, source: str | Path | None) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        classes = _pickled_classes(path, exc)
        if not classes:
            raise _unreadable(path, exc) from exc
        if not trust_pickle:
            raise ModelLoadError(_refusal(path, classes)) from None
    except Exception as exc:
        raise _unreadable(path, exc) from exc
    return _read_trusted(path, source)


def _unreadable(path: Path, exc: BaseException) -> ModelLoadError:
    return ModelLoadError(
        f"checkpoint '{path}' is not a readable PyTorch checkpoint (corrupt?): {first_line(exc, with_type=True)}"
    )


def _pickled_classes(path: Path, exc: pickle.UnpicklingError) -> list[str]:
    """The globals that stopped the weights-only unpickler: empty when the file is simply corrupt."""
    if "Unsupported global" not in str(exc):
        return []
    try:
        classes = list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # a legacy (non-zip) file: read the names from torch's message instead
        classes = re.findall(r"Unsupported global: GLOBAL (\S+)", str(exc))
    return sorted(set(classes), key=lambda name: (name.startswith("torch."), name))  # the user's own first


def _refusal(path: Path, classes: list[str]) -> str:
    main = [name for name in classes if name.startswith("__main__.")]
    hint = "; its __main__ classes also need source='train.py' (CLI --source train.py)" if main else ""
    return (
        f"checkpoint '{path}' pickles Python objects ({_few(classes, 4)}); unpickling runs code from the "
        "file, so it is refused: pass trust_pickle=True (CLI --trust-pickle) only if you trust the file, "
        f"or save model.state_dict() and load it with factory='package.module:make_model'{hint}"
    )


def _read_trusted(path: Path, source: str | Path | None) -> Any:
    script = load_source(source) if source is not None else None
    shim = _main_redirecting_pickle(path, script)
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=shim)
    except ModelLoadError:
        raise
    except ModuleNotFoundError as exc:
        raise ModelLoadError(
            f"checkpoint '{path}' pickles classes from module '{exc.name}', which is not importable here; "
            "install it or put its directory on PYTHONPATH, or save model.state_dict() instead"
        ) from exc
    except Exception as exc:
        raise ModelLoadError(f"checkpoint '{path}' could not be unpickled: {first_line(exc, with_type=True)}") from exc


def _main_redirecting_pickle(path: Path, script: Source | None) -> types.ModuleType:
    """A pickle module whose Unpickler resolves `__main__.X` in the training script, never in our __main__."""

    def main_class(name: str) -> Any:
        if script is None:
            raise ModelLoadError(
                f"checkpoint '{path}' pickles class __main__.{name} from the training script; {_MAIN_FIX}"
            )
        found = script.definition(name)
        if found is None:
            raise ModelLoadError(
                f"checkpoint '{path}' pickles class __main__.{name}, but '{script.path}' {script.why_missing(name)}"
            )
        return found

    class Unpickler(pickle.Unpickler):
        def find_class(self, module_name: str, name: str) -> Any:
            if module_name == "__main__":
                return main_class(name)
            return super().find_class(module_name, name)

    shim = types.ModuleType("torchpredict_pickle")
    shim.__dict__.update({key: value for key, value in vars(pickle).items() if not key.startswith("__")})
    shim.Unpickler = Unpickler  # type: ignore[attr-defined]
    return shim


def _from_state(
    path: Path, loaded: Any, factory: str | None, factory_kwargs: Mapping[str, Any] | None
) -> nn.Module:
    state = _unwrap_state(path, loaded)
    if isinstance(state, nn.Module):
        return state
    if factory is None:
        raise ModelLoadError(
            f"checkpoint '{path}' holds a state dict ({len(state)} tensors) but no architecture; pass "
            "factory='package.module:make_model' (CLI --factory) naming a callable that builds the model"
        )
    model = build_model(factory, factory_kwargs)
    load_state(model, state, what=f"checkpoint '{path}'")
    return model


def _unwrap_state(path: Path, loaded: Any) -> Mapping[str, Any] | nn.Module:
    if isinstance(loaded, Mapping):
        for key in _STATE_DICT_KEYS:
            inner = loaded.get(key)
            if isinstance(inner, nn.Module) or (isinstance(inner, Mapping) and _is_state(inner)):
                return inner
        if _is_state(loaded):
            return loaded
    raise ModelLoadError(
        f"checkpoint '{path}' holds {_describe(loaded)}, not a model or a state dict; expected tensors by "
        f"parameter name, or a dict with a {', '.join(map(repr, _STATE_DICT_KEYS))} entry holding them"
    )


def _is_state(candidate: Mapping[str, Any]) -> bool:
    return bool(candidate) and all(isinstance(value, torch.Tensor) for value in candidate.values())


def _describe(loaded: Any) -> str:
    if isinstance(loaded, Mapping):
        return f"a dict with keys {_few([str(key) for key in loaded])}"
    return f"a {type(loaded).__name__}"
