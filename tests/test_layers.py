"""The import layers hold: no cycle among modules and no private name shared across them, read from the source.

Every import counts, wherever it sits: at module level, inside a function (lazy) or under TYPE_CHECKING,
because a lazy import only hides a cycle, it does not remove it. The source is parsed with `ast`, so
nothing is imported and the test is fast.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "src"
PACKAGE = "torchpredict"

# Cycles known and being removed: a cycle found passes when all its modules are in one entry here.
# Only the file pipeline's cycle (pipeline -> predictor -> pipeline, sinks -> pipeline and predictor, and
# collisions -> sinks -> pipeline -> collisions) is here: issue 12 cuts it, and then this list is emptied.
ALLOWED_CYCLES: list[frozenset[str]] = []

# Private attributes of other libraries' objects that we read on purpose, each with why.
ALLOWED_PRIVATE = {
    # scikit-learn's PowerTransformer keeps its fitted StandardScaler only as `_scaler` (no public attribute);
    # from_sklearn needs its mean and scale to reproduce standardize=True exactly.
    ("torchpredict.preprocessing.sklearn_import", "_scaler"),
    # torch exposes the exported graph's operator type only as torch._ops.OpOverload, and an operator's
    # argument list only as its `_schema`; the export reader checks calls against both.
    ("torchpredict.model.export_reader", "_ops"),
    ("torchpredict.model.export_reader", "_schema"),
}


# The rooms of the package from the top down: a module imports only from its own room or a room below it.
# Front doors (cli, packing, bundle) -> predictor -> jobs -> the stages (heads, inference, model,
# preprocessing, schema) -> io -> the bottom. Unrelated rooms are ordered anyway, so that a new edge between them
# is a decision made here. The file pipeline (jobs) sits below the predictor: it is handed the Predictor's stage
# methods and imports nothing from it, so `Predictor.predict_file` is a call downward.
LAYERS: list[tuple[str, ...]] = [
    ("torchpredict", "torchpredict.__main__", "torchpredict.sequences"),  # the faces: names re-exported, no code
    ("torchpredict.cli",),
    ("torchpredict.ray",),  # the Ray engine: a front door for file jobs, over the bundle loader and the jobs
    ("torchpredict.server",),
    ("torchpredict.packing",),
    ("torchpredict.bundle",),
    ("torchpredict.predictor",),
    ("torchpredict.jobs",),
    ("torchpredict.golden", "torchpredict.stats"),
    ("torchpredict.heads",),
    ("torchpredict.inference",),
    ("torchpredict.model",),
    ("torchpredict.preprocessing",),
    ("torchpredict.io",),
    ("torchpredict.schema",),
    ("torchpredict.device",),
    ("torchpredict.errors", "torchpredict.lazy", "torchpredict.messages", "torchpredict.version"),
]
BOTTOM = frozenset(LAYERS[-1])  # import nothing of ours


def room(module: str) -> str:
    """The room a module lives in: the longest LAYERS entry that is the module or a package above it."""
    rooms = [name for layer in LAYERS for name in layer if module == name or module.startswith(name + ".")]
    return max(rooms, key=len) if rooms else ""


def level(module: str) -> int:
    """How deep the module's room lies in LAYERS (0: the top)."""
    return next(i for i, layer in enumerate(LAYERS) if room(module) in layer)


@dataclass(frozen=True)
class Use:
    """One import or private-name use, with where it is, for the failure message."""

    source: str
    target: str
    line: int
    name: str = ""

    def __str__(self) -> str:
        what = f"{self.target}.{self.name}" if self.name else self.target
        return f"{self.source}:{self.line} uses {what}"


def module_files() -> dict[str, Path]:
    """Every module of the package by dotted name; a package is named by its __init__."""
    found = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = module_files()
TREES = {name: ast.parse(path.read_text(encoding="utf-8"), filename=str(path)) for name, path in MODULES.items()}


def is_package(module: str) -> bool:
    """Whether the module is a package (its file is an __init__.py)."""
    return MODULES[module].name == "__init__.py"


def absolute(module: str, node: ast.ImportFrom) -> str:
    """The absolute module an ImportFrom names, resolving `from . import x` against the importing module."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package(module) else module.split(".")[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join([*base, node.module] if node.module else base)


def is_private(name: str) -> bool:
    """A leading underscore, not a dunder (`__version__` and `__all__` are public by convention)."""
    return name.startswith("_") and not name.startswith("__")


def imports(module: str) -> Iterator[Use]:
    """Every torchpredict module this module imports, and every name it takes from one."""
    for node in ast.walk(TREES[module]):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in MODULES:
                    yield Use(module, alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            yield from from_import(module, node)


def from_import(module: str, node: ast.ImportFrom) -> Iterator[Use]:
    """`from a import b`: b is a module (an edge to it) or a name of module a (an edge to a, naming b)."""
    origin = absolute(module, node)
    if origin not in MODULES:
        return
    for alias in node.names:
        submodule = f"{origin}.{alias.name}"
        if submodule in MODULES:
            yield Use(module, submodule, node.lineno)
        else:
            yield Use(module, origin, node.lineno, alias.name)


def graph() -> dict[str, set[str]]:
    """Module -> the torchpredict modules it imports (a module importing itself is not an edge)."""
    edges: dict[str, set[str]] = {name: set() for name in MODULES}
    for module in MODULES:
        edges[module] |= {use.target for use in imports(module) if use.target != module}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(edges[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def one_loop(edges: dict[str, set[str]], component: list[str]) -> list[str]:
    """One concrete loop through a component (a -> b -> ... -> a), to say in the failure which imports to cut."""
    start, members = component[0], set(component)
    path, seen = [start], {start}
    while True:
        nxt = min(n for n in edges[path[-1]] if n in members)  # some member is reachable: it is a cycle
        if nxt in seen:
            return [*path[path.index(nxt) :], nxt]
        path.append(nxt)
        seen.add(nxt)


def private_module_allowed(source: str, target: str) -> bool:
    """A private module (`_brent.py`) may be imported from its own package only."""
    parent = target.rsplit(".", 1)[0]
    return source == parent or source.startswith(parent + ".")


def private_imports() -> Iterator[Use]:
    """`from torchpredict.x import _name` and `import torchpredict._x` from outside where they belong."""
    for module in MODULES:
        for use in imports(module):
            if use.name and is_private(use.name):
                yield use
            leaf = use.target.rsplit(".", 1)[-1]
            if not use.name and is_private(leaf) and not private_module_allowed(module, use.target):
                yield use


def imported_names(module: str) -> dict[str, str]:
    """Local names bound to something from another torchpredict module, mapped to that module."""
    bound = {}
    for node in ast.walk(TREES[module]):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == PACKAGE:
                    bound[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else PACKAGE
        elif isinstance(node, ast.ImportFrom):
            origin = absolute(module, node)
            if origin.split(".")[0] == PACKAGE:
                for alias in node.names:
                    bound[alias.asname or alias.name] = origin
    return bound


def defined_private(module: str) -> set[str]:
    """Private names this module defines: its functions, classes, assignments and `self._x` attributes."""
    names = set()
    for node in ast.walk(TREES[module]):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.add(node.value)  # __slots__ = ("_x",) and getattr(self, "_x")
    return {name for name in names if is_private(name)}


def private_attributes() -> Iterator[Use]:
    """`x._name` where `_name` is not this module's own: reaching into another module's object or module.

    Cheap and a little wider than exact: `_name` counts as this module's own when the module defines or
    assigns that name anywhere, so `other._items` in `__eq__` passes and `step._numbers` from elsewhere fails.
    """
    for module in MODULES:
        own, bound = defined_private(module), imported_names(module)
        for node in ast.walk(TREES[module]):
            if not isinstance(node, ast.Attribute) or not is_private(node.attr):
                continue
            if node.attr in own or (module, node.attr) in ALLOWED_PRIVATE:
                continue
            root = node.value
            if isinstance(root, ast.Name) and root.id in ("self", "cls"):
                continue  # a class's own or inherited attribute: the protected convention
            if isinstance(root, ast.Call) and isinstance(root.func, ast.Name) and root.func.id == "super":
                continue
            target = bound.get(root.id, "") if isinstance(root, ast.Name) else ""
            yield Use(module, target or ast.unparse(root), node.lineno, node.attr)


@contextmanager
def probe(source: str) -> Iterator[str]:
    """A made-up module torchpredict.probe with this source, seen by the checks while the block runs."""
    TREES[PROBE], MODULES[PROBE] = ast.parse(source), ROOT / PACKAGE / "probe.py"
    try:
        yield PROBE
    finally:
        del TREES[PROBE], MODULES[PROBE]


PROBE = "torchpredict.probe"


def test_the_graph_sees_lazy_and_type_checking_imports() -> None:
    assert "torchpredict.errors" in graph()["torchpredict.schema.schema"]
    source = "def f():\n    from torchpredict import errors\nif TYPE_CHECKING:\n    import torchpredict.messages\n"
    with probe(source) as module:
        assert {use.target for use in imports(module)} == {"torchpredict.errors", "torchpredict.messages"}
    with probe("from . import errors\nfrom .messages import shown\n") as module:
        assert {use.target for use in imports(module)} == {"torchpredict.errors", "torchpredict.messages"}


def test_private_names_and_attributes_across_modules_are_found() -> None:
    source = (
        "from torchpredict.schema.tables import _hidden, as_table\n"
        "import torchpredict.preprocessing.steps as steps\n"
        "from torchpredict.preprocessing.steps import Step\n"
        "class Mine:\n"
        "    def __init__(self):\n        self._own = 1\n"
        "    def same(self, other):\n        return other._own, self._inherited()\n"
        "def reach(step):\n    return steps._secret, Step._hook, step._numbers, super()._fine\n"
    )
    with probe(source):
        hidden = "torchpredict.probe:1 uses torchpredict.schema.tables._hidden"
        assert [str(use) for use in private_imports()] == [hidden]
        assert {str(use) for use in private_attributes() if use.source == PROBE} == {
            "torchpredict.probe:10 uses torchpredict.preprocessing.steps._secret",
            "torchpredict.probe:10 uses torchpredict.preprocessing.steps._hook",
            "torchpredict.probe:10 uses step._numbers",
        }


def test_cycles_are_found_and_shown_as_a_loop() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    assert cycles(edges) == [["a", "b", "c"]]
    assert one_loop(edges, ["a", "b", "c"]) == ["a", "b", "c", "a"]
    assert cycles({"a": {"b"}, "b": set()}) == []


def allowed(cycle: list[str]) -> bool:
    """Whether the cycle lies within one allowed entry (a cycle that shrinks while being cut still passes)."""
    return any(set(cycle) <= entry for entry in ALLOWED_CYCLES)


def test_no_import_cycle() -> None:
    edges = graph()
    found = [c for c in cycles(edges) if not allowed(c)]
    loops = "\n".join(" -> ".join(one_loop(edges, c)) for c in found)
    assert not found, f"import cycles (lazy and TYPE_CHECKING imports count):\n{loops}"


def test_every_allowed_cycle_still_exists() -> None:
    current = cycles(graph())
    stale = [sorted(entry) for entry in ALLOWED_CYCLES if not any(set(c) <= entry for c in current)]
    assert not stale, f"these cycles are gone: remove them from ALLOWED_CYCLES: {stale}"


def test_no_private_name_is_imported_across_modules() -> None:
    found = [str(use) for use in private_imports()]
    assert not found, "private names imported across modules (make them public where they live):\n" + "\n".join(found)


def test_no_private_attribute_of_another_module_is_reached_into() -> None:
    found = [str(use) for use in private_attributes()]
    assert not found, "private attributes reached into (add a public method or attribute):\n" + "\n".join(found)


def test_every_module_lives_in_a_room_and_every_room_exists() -> None:
    homeless = sorted(module for module in MODULES if not room(module))
    assert not homeless, f"place these modules in LAYERS: {homeless}"
    empty = sorted(name for layer in LAYERS for name in layer if not any(room(m) == name for m in MODULES))
    assert not empty, f"moved or renamed: update LAYERS: {empty}"


@pytest.mark.parametrize("bottom", sorted(BOTTOM))
def test_the_bottom_imports_nothing_from_the_package(bottom: str) -> None:
    assert not graph()[bottom], f"{bottom} must stay at the bottom: it imports {sorted(graph()[bottom])}"


def upward(edges: dict[str, set[str]]) -> list[str]:
    """The edges from a module to another room at its own level or above it."""
    return [f"{module} ({room(module)}) -> {target} ({room(target)})" for module in sorted(edges)
            for target in sorted(edges[module]) if room(target) != room(module) and level(target) <= level(module)]


def test_no_import_runs_up_the_layers() -> None:
    found = upward(graph())
    assert not found, "imports that run upward or sideways between rooms (see LAYERS):\n" + "\n".join(found)


def test_upward_and_sideways_imports_are_found() -> None:
    down = {"torchpredict.heads.base": {"torchpredict.schema.columns", "torchpredict.heads.outputs"}}
    assert upward(down) == []
    up = {"torchpredict.schema.columns": {"torchpredict.heads.base"}, "torchpredict.golden": {"torchpredict.stats"},
          "torchpredict.heads.base": {"torchpredict.jobs.plan"}}
    assert upward(up) == [
        "torchpredict.golden (torchpredict.golden) -> torchpredict.stats (torchpredict.stats)",  # sideways
        "torchpredict.heads.base (torchpredict.heads) -> torchpredict.jobs.plan (torchpredict.jobs)",
        "torchpredict.schema.columns (torchpredict.schema) -> torchpredict.heads.base (torchpredict.heads)",
    ]
