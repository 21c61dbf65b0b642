"""Factory references: the "package.module:callable" that rebuilds a weights bundle's architecture.

A reference you pass yourself (to `pack` or `save`) is your own code, so it runs. A reference read from a
bundle is the sender's: building the model imports its module and calls it, so the loading side must have
trusted that module first, by `trust_factory=["mypkg"]` (CLI `--trust-factory mypkg`, covering mypkg and
its submodules) or by installing a package that declares it under the `torchpredict.factories` entry point.
Trust is checked on the reference's text, before anything is imported. Either way the callable is a function
or class defined in the module named (no attribute walks into other modules), never from the standard
library; a bundle's reference never names a file, and its keyword arguments are plain JSON values.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import inspect
import re
import sys
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from torchpredict.errors import ModelLoadError
from torchpredict.messages import first_line
from torchpredict.model.sources import load_source, search_first

__all__ = [
    "ENTRY_POINT_GROUP",
    "build_model",
    "is_file_ref",
    "load_source",
    "resolve_bundle_factory",
    "resolve_factory",
    "trust_hint",
    "trusted_package",
]

ENTRY_POINT_GROUP = "torchpredict.factories"
_MODULE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", re.ASCII)
_NAME = re.compile(r"[A-Za-z_]\w*", re.ASCII)
_REF_FORMS = "'package.module:callable' or 'path/to/file.py:callable'"
_REFUSED_MODULES = frozenset({"__main__", *sys.stdlib_module_names})
_PLAIN_KWARGS = "a bundle's factory arguments may only be JSON numbers, strings, booleans, null and lists of them"
_MAX_KWARG_DEPTH = 8


def resolve_factory(ref: str) -> Callable[..., Any]:
    """Find the callable your own factory reference names, without running a training script's training.

    `ref` is "package.module:callable", imported the way `python -m` would (the current folder first on the
    module search path, for this import only), or "path/to/file.py:callable", of which only the imports,
    definitions and constants run (see torchpredict.model.sources), so a training script does not train again.

    >>> resolve_factory("torch.nn.modules.linear:Linear")(3, 2)
    Linear(in_features=3, out_features=2, bias=True)
    """
    target, attribute = _split(ref)
    if is_file_ref(ref):
        return _from_file(ref, target, attribute)
    return _defined_in(ref, _import_own(ref, target), attribute)


def resolve_bundle_factory(ref: str, trust_factory: Sequence[str] = ()) -> Callable[..., Any]:
    """Find the callable a bundle's factory reference names, only if the loading side trusts its module."""
    target, attribute = _split(ref)
    if is_file_ref(ref):
        raise ModelLoadError(
            f"bundle's factory {ref!r} names a file; loading a bundle never runs a file from a path: install "
            "the code that defines the model as a package and pass trust_factory=['package'] "
            "(CLI --trust-factory package)"
        )
    if not _trusted(ref, target, _trust_entries(trust_factory)):
        raise ModelLoadError(
            f"bundle's factory {ref!r} is not trusted: loading it imports and runs module '{target}'; if you "
            f"trust it {trust_hint(ref)} or install a package that declares it under the "
            f"'{ENTRY_POINT_GROUP}' entry point"
        )
    return _defined_in(ref, _import(ref, target), attribute)


def trust_hint(ref: str) -> str:
    """What the loading side passes to trust a factory, for messages: "pass trust_factory=['mypkg'] (...)"."""
    package = trusted_package(ref)
    return f"pass trust_factory=[{package!r}] (CLI --trust-factory {package})"


def trusted_package(ref: str) -> str:
    """The top-level package a factory reference comes from: what a user vouches for, e.g. 'mypkg'."""
    return ref.rpartition(":")[0].split(".")[0]


def is_file_ref(ref: str) -> bool:
    """Whether a factory reference names a source file rather than an importable module."""
    target = ref.rpartition(":")[0]
    return target.endswith(".py") or "/" in target or "\\" in target


def build_model(factory: str, factory_kwargs: Mapping[str, Any] | None = None, *, from_bundle: bool = False,
                trust_factory: Sequence[str] = ()) -> nn.Module:
    """Call the factory with `factory_kwargs` and check that it built an nn.Module.

    from_bundle: the reference and kwargs were read from a bundle, so `trust_factory` must cover the
    factory's module and the kwargs must be plain JSON values (see the module docstring).
    """
    if from_bundle:
        _check_kwargs(factory, factory_kwargs)
        build = resolve_bundle_factory(factory, trust_factory)
    else:
        build = resolve_factory(factory)
    try:
        model = build(**dict(factory_kwargs or {}))
    except Exception as exc:
        raise ModelLoadError(f"factory {factory!r} failed: {first_line(exc, with_type=True)}") from exc
    if not isinstance(model, nn.Module):
        raise ModelLoadError(f"factory {factory!r} returned {type(model).__name__}, expected an nn.Module")
    return model


def _split(ref: Any) -> tuple[str, str]:
    """(module or file, callable name), with the shape checks that need no import."""
    target, _, attribute = ref.rpartition(":") if isinstance(ref, str) else ("", "", "")
    if not target or not attribute:
        raise ModelLoadError(f"factory {ref!r} must look like {_REF_FORMS}")
    if not _NAME.fullmatch(attribute):
        raise ModelLoadError(
            f"factory {ref!r}: {attribute!r} is not a single name; a factory is a function or class defined in "
            "the module named, not an attribute reached through it"
        )
    if is_file_ref(ref):
        return target, attribute
    if not _MODULE.fullmatch(target):
        raise ModelLoadError(f"factory {ref!r}: {target!r} is not a module name like 'package.module'")
    if target.split(".")[0] in _REFUSED_MODULES:
        raise ModelLoadError(
            f"factory {ref!r}: '{target}' is a standard-library module; a factory must be a class or "
            "function of your own code that builds the nn.Module"
        )
    return target, attribute


def _trust_entries(trust_factory: Sequence[str]) -> list[str]:
    entries = [trust_factory] if isinstance(trust_factory, str) else list(trust_factory)
    for entry in entries:
        module, colon, name = entry.partition(":") if isinstance(entry, str) else ("", "", "")
        if not _MODULE.fullmatch(module) or (colon and not _NAME.fullmatch(name)):
            raise ModelLoadError(
                f"trust_factory entry {entry!r} must name a module ('mypkg', 'mypkg.nets') or one factory "
                "('mypkg.nets:make_net')"
            )
    return entries


def _trusted(ref: str, target: str, entries: Iterable[str]) -> bool:
    """Whether an entry (given, or declared by an installed package) covers the reference: checked first,
    so nothing is imported for an untrusted one."""
    if any(_covers(entry, ref, target) for entry in entries):
        return True
    return any(_covers(entry, ref, target) for entry in _entry_point_trust())


def _covers(entry: str, ref: str, target: str) -> bool:
    if ":" in entry:
        return entry == ref
    return target == entry or target.startswith(entry + ".")


def _entry_point_trust() -> list[str]:
    """The factories and modules installed distributions declare under the entry point group."""
    entries = []
    for point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        with contextlib.suppress(AttributeError, ValueError):  # a malformed value trusts nothing
            entries.append(f"{point.module}:{point.attr}" if point.attr else point.module)
    return entries


def _check_kwargs(ref: str, kwargs: Any) -> None:
    if kwargs is None:
        return
    if not isinstance(kwargs, Mapping):
        raise ModelLoadError(f"factory {ref!r}: factory_kwargs must be a JSON object, got {type(kwargs).__name__}")
    for key, value in kwargs.items():
        if not _plain(value, _MAX_KWARG_DEPTH):
            raise ModelLoadError(f"factory {ref!r}: factory_kwargs '{key}' is a {_kind(value)}; {_PLAIN_KWARGS}")


def _plain(value: Any, depth: int) -> bool:
    if value is None or type(value) in (str, int, float, bool):
        return True
    return type(value) is list and depth > 0 and all(_plain(item, depth - 1) for item in value)


def _kind(value: Any) -> str:
    kinds: dict[type, str] = {dict: "JSON object", list: "list nested too deep or holding JSON objects"}
    return kinds.get(
        type(value), type(value).__name__
    )


def _import(ref: str, target: str) -> types.ModuleType:
    try:
        return importlib.import_module(target)
    except Exception as exc:
        why = first_line(exc, with_type=True)
        raise ModelLoadError(f"factory {ref!r}: cannot import module '{target}': {why}") from exc


def _import_own(ref: str, target: str) -> types.ModuleType:
    """Import your own factory's module with the current folder searched first, as `python -m` does."""
    folder = Path.cwd()
    try:
        with search_first(folder):
            return importlib.import_module(target)
    except Exception as exc:
        name = exc.name if isinstance(exc, ModuleNotFoundError) else None
        why = first_line(exc, with_type=True)
        if name and (target + ".").startswith(name + "."):  # the module itself, not one it imports
            why = (f"No module named '{name}' (searched the current folder {folder} and sys.path; pass "
                   f"'path/to/{target.replace('.', '/')}.py:{ref.rpartition(':')[2]}' or install the package)")
        raise ModelLoadError(f"factory {ref!r}: cannot import module '{target}': {why}") from exc


def _from_file(ref: str, target: str, attribute: str) -> Callable[..., Any]:
    path = Path(target)
    if not path.is_file():
        raise ModelLoadError(f"factory {ref!r}: file '{target}' does not exist")
    source = load_source(path)
    if source.definition(attribute) is None:
        raise ModelLoadError(f"factory {ref!r}: '{target}' {source.why_missing(attribute)}")
    return _defined_in(ref, source.module, attribute)


def _defined_in(ref: str, module: types.ModuleType, attribute: str) -> Callable[..., Any]:
    """The function or class `attribute` of the module's own namespace, defined by that module itself."""
    found = vars(module).get(attribute)
    if found is None:
        raise ModelLoadError(f"factory {ref!r}: module '{module.__name__}' has no attribute '{attribute}'")
    if not (inspect.isfunction(found) or inspect.isclass(found)):
        raise ModelLoadError(f"factory {ref!r} names a {type(found).__name__}, which is not a function or class")
    if found.__module__ != module.__name__:
        raise ModelLoadError(
            f"factory {ref!r}: '{attribute}' is defined in module '{found.__module__}', not in "
            f"'{module.__name__}'; name the module that defines it ('{found.__module__}:{attribute}')"
        )
    return found

