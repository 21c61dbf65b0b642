"""A training script's definitions, loaded without running the script.

A tutorial's train.py defines its model class in `__main__` and then, often with no
`if __name__ == "__main__":` guard, reads the data, trains and overwrites model.pth. Unpickling that model
(or building it from `train.py:make_net`) needs only the definitions, so only these top-level statements
run, in the script's order:

- imports (`import x`, `from x import y`), except `import __main__`, `from __main__ import ...` and imports
  of the script itself; an imported module runs as any import does;
- `class` and `def` statements, with their decorators, bases and default values (a class body runs, as
  defining the class needs);
- constants assigned to plain names (`HIDDEN = 64`, `SIZES = (64, 32)`, `SCALE: float = 1 / 255`,
  `ACT = nn.ReLU`): a value made only of literals, names set by a statement that runs (or builtins),
  tuples, lists, sets, dicts, arithmetic, comparisons, `and`/`or`, `x if c else y`, attribute and item
  access; no calls, no comprehensions, no lambdas, and not `sys.argv` or `os.environ` (they would be pack's);
- `try:` blocks whose body only imports, whose `except` clauses only import, assign constants or pass;
- the docstring and `pass`.

Every other top-level statement is skipped: expressions (`train()`, `torch.save(model, ...)`), `if` (so
`if __name__ == "__main__":` too), `for`, `while`, `with`, assignments whose value calls something
(`model = Net()`, `df = pd.read_csv(...)`), assignments to attributes or items, `del`, `assert`, ...
A name that a skipped statement sets is never defined, even where a constant set it first. A definition
that needs such a name when it is defined fails, naming the name and the code that sets it; so does taking a
class or function (a pickled class, a factory) whose methods would read one when called, or a definition
that skipped code replaces (`make_net = functools.partial(make_net, ...)`).
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import hashlib
import importlib.util
import re
import symtable
import sys
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from torchpredict.errors import ModelLoadError
from torchpredict.messages import first_line

__all__ = ["Source", "load_source", "search_first"]

_DEFINITIONS = (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef, *filter(None, [getattr(ast, "TypeAlias", None)]))
_IMPORTS = (ast.Import, ast.ImportFrom)
_CONSTANT_PARTS = (ast.Constant, ast.Name, ast.Attribute, ast.Subscript, ast.Slice, ast.Tuple, ast.List, ast.Set,
                   ast.Dict, ast.Starred, ast.UnaryOp, ast.BinOp, ast.BoolOp, ast.Compare, ast.IfExp,
                   ast.expr_context, ast.operator, ast.unaryop, ast.boolop, ast.cmpop)
_PROCESS_STATE = frozenset({"argv", "orig_argv", "environ", "environb"})  # sys.argv, os.environ
_NEW_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda, ast.ListComp, ast.SetComp,
               ast.DictComp, ast.GeneratorExp)
_SELF_IMPORTS = frozenset({"__main__"})
_FIX = ("give it a literal value or set it inside the definition; only the script's imports, class and function "
        "definitions and constant assignments run")
_COPY = "copy the definitions the model needs, without that code, into a file and pass that instead"
_TEXT_LIMIT = 60
_T = TypeVar("_T")


@dataclass(frozen=True)
class _Statement:
    line: int
    text: str  # its first line, cut, for messages
    reads: frozenset[str] = frozenset()  # module-level names it reads, when defined or when called
    own: bool = True  # skipped for what it does, not only because skipped code sets its name too


@dataclass(frozen=True)
class Source:
    """A script's module built from its definitions only, and what it skipped, to explain a missing name."""

    path: str  # as the caller gave it
    module: types.ModuleType
    kept: Mapping[str, tuple[_Statement, ...]]  # name -> the statements that ran and set it
    skipped: Mapping[str, tuple[_Statement, ...]]  # name -> the statements that did not run and set it

    def definition(self, name: str) -> Any:
        """The object the script defines as `name` (None if none). Refused when it, or a definition it uses,
        reads a name that skipped code sets: calling it would fail with NameError or differ from the script."""
        if name not in vars(self.module):
            return None
        if name in self.skipped and name in self.kept:
            first = self.kept[name][0]
            raise ModelLoadError(f"source '{self.path}' line {first.line}: {first.text} is set again by code "
                                 f"torchpredict does not run ({self.where_set(name)}), so the script's {name!r} is "
                                 f"not this one: {_COPY}")
        problem = next(self._skipped_reads(name), None)
        if problem is not None:
            reader, read = problem
            raise ModelLoadError(f"source '{self.path}' line {reader.line}: {reader.text} uses {read!r}, which is "
                                 f"set by code torchpredict does not run ({self.where_set(read)}); {_FIX}")
        return vars(self.module)[name]

    def why_missing(self, name: str) -> str:
        """Why `name` is not defined: "defines no 'Net'", or the skipped statement that sets it."""
        if name in self.skipped:
            return f"sets {name!r} only in code torchpredict does not run ({self.where_set(name)}): {_FIX}"
        return f"defines no {name!r}"

    def _skipped_reads(self, name: str) -> Iterator[tuple[_Statement, str]]:
        """(statement, name) for each skipped name read by `name`'s definition or those it reads in turn."""
        seen, todo = {name}, [name]
        while todo:
            for statement in self.kept.get(todo.pop(), ()):
                for read in sorted(statement.reads):
                    if read in self.skipped:
                        yield statement, read
                    elif read in self.kept and read not in seen:
                        seen.add(read)
                        todo.append(read)

    def where_set(self, name: str, before: int | None = None) -> str:
        """"line 5: HIDDEN = int(...)": the skipped statement that sets `name`, the last before line `before`."""
        statements = [s for s in self.skipped[name] if s.own] or self.skipped[name]
        earlier = [s for s in statements if before is not None and s.line < before]
        statement = earlier[-1] if earlier else statements[0]
        return f"line {statement.line}: {statement.text}"


def load_source(path: str | Path) -> Source:
    """Run a script's imports, definitions and constants (see the module docstring) as a module not __main__.

    The script's directory is first on sys.path while they run, as under `python train.py`.

    >>> Net = load_source("train.py").definition("Net")  # doctest: +SKIP
    """
    resolved = Path(path).resolve()
    if not resolved.is_file():
        raise ModelLoadError(f"source '{path}' does not exist")
    text = _read(path, resolved)
    kept, skipped, own = _plan(_parse(path, resolved, text), resolved.stem)
    module = _new_module(path, resolved)
    tables = _checked(path, lambda: _tables(text, resolved))
    source = Source(str(path), module, _index(text, kept, tables=tables), _index(text, skipped, own=own))
    code = _compile(path, resolved, kept)
    sys.modules[module.__name__] = module  # dataclasses and pickle look classes up here
    try:
        with search_first(resolved.parent):
            exec(code, vars(module))  # the script's definitions only (see the module docstring)
    except (Exception, SystemExit) as exc:
        sys.modules.pop(module.__name__, None)
        raise ModelLoadError(_failure(source, kept, text, exc)) from exc
    return source


@contextlib.contextmanager
def search_first(directory: Path) -> Iterator[None]:
    """`directory` first on the module search path for the duration, as `python -m` or `python file.py` do."""
    entry = str(directory)
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):  # the code imported may have edited sys.path itself
            sys.path.remove(entry)


def _read(path: str | Path, resolved: Path) -> str:
    """The script's text, decoded as Python does (UTF-8 unless a coding line says otherwise)."""
    try:
        return importlib.util.decode_source(resolved.read_bytes())
    except (OSError, SyntaxError, UnicodeDecodeError, LookupError) as exc:
        raise ModelLoadError(f"source '{path}' cannot be read as a Python file: {exc}") from exc


def _parse(path: str | Path, resolved: Path, text: str) -> ast.Module:
    return _checked(path, lambda: ast.parse(text, filename=str(resolved)))


def _compile(path: str | Path, resolved: Path, kept: list[ast.stmt]) -> types.CodeType:
    tree = ast.Module(body=kept, type_ignores=[])
    return _checked(path, lambda: compile(tree, str(resolved), "exec", dont_inherit=True))


def _checked(path: str | Path, step: Callable[[], _T]) -> _T:
    """step(), a syntax error in the script becoming one line naming it."""
    try:
        return step()
    except (SyntaxError, ValueError) as exc:
        lineno = getattr(exc, "lineno", None)  # SyntaxError has it; a ValueError (NUL bytes) does not
        line = f" line {lineno}" if lineno else ""
        raise ModelLoadError(f"source '{path}'{line} is not valid Python: {getattr(exc, 'msg', exc)}") from exc


def _new_module(path: str | Path, resolved: Path) -> types.ModuleType:
    digest = hashlib.sha256(str(resolved).encode()).hexdigest()[:12]
    stem = re.sub(r"\W", "_", resolved.stem)
    name = f"torchpredict_source_{stem}_{digest}"
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None:
        raise ModelLoadError(f"source '{path}' is not a Python file")
    return importlib.util.module_from_spec(spec)


# --- which statements run ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Rules:
    stem: str  # the script's own module name, which it must not import
    future: bool  # `from __future__ import annotations`: annotations are not evaluated
    unsafe: frozenset[str]  # names some skipped statement sets: never constants


def _plan(tree: ast.Module, stem: str) -> tuple[list[ast.stmt], list[ast.stmt], list[ast.stmt]]:
    """(statements that run, statements skipped, those skipped for what they do).

    A name that a skipped statement sets is no constant, even where a literal set it first (`WIDTH = 4`, then
    `WIDTH = int(sys.argv[1])`); that can skip more, so repeat until nothing changes.
    """
    future = any(isinstance(s, ast.ImportFrom) and s.module == "__future__" and
                 any(a.name == "annotations" for a in s.names) for s in tree.body)
    unsafe: frozenset[str] = frozenset()
    own: list[ast.stmt] | None = None
    while True:
        kept, skipped = _split(tree.body, _Rules(stem, future, unsafe))
        own = skipped if own is None else own
        now = unsafe.union(*map(_bound_names, skipped))
        if now == unsafe:
            return kept, skipped, own
        unsafe = now


def _split(statements: list[ast.stmt], rules: _Rules) -> tuple[list[ast.stmt], list[ast.stmt]]:
    """Decided in order: a constant may use the names set before it."""
    defined = set(dir(builtins))
    kept: list[ast.stmt] = []
    skipped: list[ast.stmt] = []
    for statement in statements:
        runs = _runs(statement, defined, rules)
        (kept if runs else skipped).append(statement)
        names = _bound_names(statement)
        defined = defined | names if runs else defined - names
    return kept, skipped


def _runs(statement: ast.stmt, defined: set[str], rules: _Rules) -> bool:
    if isinstance(statement, _DEFINITIONS):
        return True
    if isinstance(statement, ast.Try):
        return _import_guard(statement, defined, rules)
    return _simple(statement, defined, rules)


def _simple(statement: ast.stmt, defined: set[str], rules: _Rules) -> bool:
    """An import, a constant assignment, a docstring or `pass`."""
    if isinstance(statement, _IMPORTS):
        return not _imports_itself(statement, rules.stem)
    if isinstance(statement, (ast.Assign, ast.AnnAssign)):
        return _constant_assignment(statement, defined, rules)
    if isinstance(statement, ast.Expr):
        return isinstance(statement.value, ast.Constant)
    return isinstance(statement, ast.Pass)


def _constant_assignment(statement: ast.Assign | ast.AnnAssign, defined: set[str], rules: _Rules) -> bool:
    if _bound_names(statement) & rules.unsafe or statement.value is None:
        return False
    if isinstance(statement, ast.AnnAssign):
        annotation = rules.future or _constant(statement.annotation, defined)
        return isinstance(statement.target, ast.Name) and annotation and _constant(statement.value, defined)
    return all(map(_plain_target, statement.targets)) and _constant(statement.value, defined)


def _import_guard(statement: ast.Try, defined: set[str], rules: _Rules) -> bool:
    """`try: import x` / `except ImportError: x = None`: imports, with constant fallbacks."""
    body = list(statement.body) + list(statement.orelse)
    if statement.finalbody or not all(isinstance(s, _IMPORTS) and not _imports_itself(s, rules.stem) for s in body):
        return False
    inner = defined | set().union(*map(_bound_names, body))
    return all((handler.type is None or _constant(handler.type, inner))
               and all(_simple(s, inner, rules) for s in handler.body) for handler in statement.handlers)


def _imports_itself(statement: ast.Import | ast.ImportFrom, stem: str) -> bool:
    """`import __main__`, `from __main__ import Net`, `import train` in train.py: a script running itself."""
    own = _SELF_IMPORTS | {stem}
    if isinstance(statement, ast.ImportFrom):
        return statement.level == 0 and (statement.module or "").split(".")[0] in own
    return any(alias.name.split(".")[0] in own for alias in statement.names)


def _plain_target(target: ast.expr) -> bool:
    if isinstance(target, (ast.Tuple, ast.List)):
        return all(map(_plain_target, target.elts))
    if isinstance(target, ast.Starred):
        return _plain_target(target.value)
    return isinstance(target, ast.Name)


def _constant(value: ast.expr, defined: set[str]) -> bool:
    """Whether `value` is built from literals and names already defined, with no call anywhere, and reads
    no command line or environment (pack's own, not the training run's)."""
    nodes = list(ast.walk(value))
    return all(isinstance(node, _CONSTANT_PARTS) for node in nodes) and all(
        node.id in defined for node in nodes if isinstance(node, ast.Name)
    ) and not any(isinstance(node, ast.Attribute) and node.attr in _PROCESS_STATE for node in nodes)


def _bound_names(node: ast.AST) -> set[str]:
    """The module-level names a top-level statement sets (not those inside its functions or classes)."""
    if isinstance(node, _DEFINITIONS):
        return {node.name.id if isinstance(node.name, ast.Name) else node.name}
    names: set[str] = set()
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(child.name)
        elif isinstance(child, ast.Name) and not isinstance(child.ctx, ast.Load):
            names.add(child.id)
        elif isinstance(child, ast.alias):
            names.add((child.asname or child.name).split(".")[0])
        elif isinstance(child, (ast.ExceptHandler, ast.MatchAs, ast.MatchStar)) and child.name:
            names.add(child.name)
        elif isinstance(child, ast.MatchMapping) and child.rest:
            names.add(child.rest)
        if not isinstance(child, _NEW_SCOPES):
            names |= _bound_names(child)
    return names


# --- what each statement reads, for messages -------------------------------------------------------------


def _index(text: str, statements: Iterable[ast.stmt], *, own: Iterable[ast.stmt] = (),
           tables: Mapping[tuple[str, int], symtable.SymbolTable] | None = None) -> dict[str, tuple[_Statement, ...]]:
    """name -> the statements setting it; with `tables`, what each reads."""
    index: dict[str, tuple[_Statement, ...]] = {}
    own_ids = set(map(id, own))
    for statement in statements:
        reads = _reads(statement, tables) if tables is not None else frozenset()
        entry = _Statement(_first_line(statement), _describe(text, statement), reads, id(statement) in own_ids)
        for name in _bound_names(statement):
            index[name] = (*index.get(name, ()), entry)
    return index


def _tables(text: str, resolved: Path) -> dict[tuple[str, int], symtable.SymbolTable]:
    top = symtable.symtable(text, str(resolved), "exec")
    return {(table.get_name(), table.get_lineno()): table for table in top.get_children()}


def _reads(statement: ast.stmt, tables: Mapping[tuple[str, int], symtable.SymbolTable]) -> frozenset[str]:
    """Module-level names read by the statement: its header (decorators, bases, defaults) and its body."""
    if not isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return frozenset(node.id for node in ast.walk(statement) if isinstance(node, ast.Name)
                         and isinstance(node.ctx, ast.Load))
    header: list[ast.AST] = list(statement.decorator_list)
    if isinstance(statement, ast.ClassDef):
        header += [*statement.bases, *statement.keywords]
    else:
        header += [*statement.args.defaults, *filter(None, statement.args.kw_defaults)]
    names = {node.id for part in header for node in ast.walk(part) if isinstance(node, ast.Name)}
    table = tables.get((statement.name, statement.lineno))
    return frozenset(names | (_global_reads(table) if table is not None else set()))


def _global_reads(table: symtable.SymbolTable) -> set[str]:
    names = {s.get_name() for s in table.get_symbols() if s.is_global() and s.is_referenced()}
    for child in table.get_children():
        names |= _global_reads(child)
    return names


def _first_line(statement: ast.stmt) -> int:
    decorators = getattr(statement, "decorator_list", [])
    return min([statement.lineno, *(d.lineno for d in decorators)])


def _describe(text: str, statement: ast.stmt) -> str:
    if isinstance(statement, ast.ClassDef):
        return f"class {statement.name}"
    if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return f"function {statement.name}"
    line = (ast.get_source_segment(text, statement) or "").strip().splitlines()
    first = line[0] if line else type(statement).__name__
    return first if len(first) <= _TEXT_LIMIT else first[:_TEXT_LIMIT] + "…"


def _failure(source: Source, kept: list[ast.stmt], text: str, exc: BaseException) -> str:
    """The message for a kept statement that failed: the skipped code it needed, or its error."""
    outer, inner = _lines_in_script(exc, source.module.__file__ or "")
    statement = next((s for s in kept if outer is not None and _first_line(s) <= outer <= (s.end_lineno or 0)),
                     None)
    what = _describe(text, statement) if statement is not None else "its definitions"
    where = f" line {inner}" if inner is not None else ""
    name = getattr(exc, "name", None)
    if isinstance(exc, NameError) and isinstance(name, str) and name in source.skipped:
        return (f"source '{source.path}'{where}: {what} uses {name!r}, which is set by code torchpredict does not "
                f"run ({source.where_set(name, before=inner)}); {_FIX}")
    return f"source '{source.path}'{where}: {what} failed: {first_line(exc, with_type=True)}"


def _lines_in_script(exc: BaseException, filename: str) -> tuple[int | None, int | None]:
    """(line of the top-level statement running, innermost line of the script) when `exc` was raised."""
    outer = inner = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            inner = tb.tb_lineno
            if tb.tb_frame.f_code.co_name == "<module>":
                outer = tb.tb_lineno
        tb = tb.tb_next
    return outer, inner
