"""A strict grammar for the symbolic size expressions a torch.export archive carries.

torch.export.load hands every `expr_str` to `sympy.sympify`, which evaluates it as Python: a crafted archive
runs code there. Before an archive may reach torch's loader, each expression must parse here: symbol names
(s0, s77, u0), integers, + - * // %, comparisons, unary minus, parentheses, and calls of the sympy and
torch functions that `sympy.srepr` writes for shapes, e.g. `Mul(Integer(2), Symbol('s77', positive=True,
integer=True))`. Nothing else: no attributes, no other names, no powers or left shifts (whose values
explode), and bounded length and nesting.

>>> check_expression("Mul(Integer(2), Symbol('s77', positive=True, integer=True))")
>>> check_expression("__import__('os').system('id') + Symbol('s0')")
Traceback (most recent call last):
torchpredict.errors.ModelLoadError: symbolic expression "__import__('os').system('id') + Symbol('s0')" is not one torch.export writes: unexpected ".system('id'" at character 16
"""  # noqa: E501 - a doctest's expected line cannot wrap

from __future__ import annotations

import re

from torchpredict.errors import ModelLoadError

__all__ = ["SYMBOL", "check_expression"]

SYMBOL = re.compile(r"[a-z]{1,8}[0-9]{1,9}", re.ASCII)  # the names torch gives size symbols: s0, u3, zuf0
MAX_LENGTH, MAX_DEPTH = 10_000, 48
_SHOWN = 60
_FUNCTIONS = frozenset({
    # sympy, as srepr writes it
    "Symbol", "Integer", "Rational", "Float", "Add", "Mul", "Min", "Max", "Abs", "Equality", "Unequality",
    "StrictLessThan", "LessThan", "StrictGreaterThan", "GreaterThan", "Eq", "Ne", "Lt", "Le", "Gt", "Ge",
    "And", "Or", "Not",
    # torch.utils._sympy.functions, as torch's deserializer provides them (powers and LShift left out)
    "FloorDiv", "ModularIndexing", "Where", "PythonMod", "Mod", "CleanDiv", "CeilToInt", "FloorToInt", "CeilDiv",
    "RShift", "FloatTrueDiv", "IntTrueDiv", "IsNonOverlappingAndDenseIndicator", "TruncToFloat", "TruncToInt",
    "RoundToInt", "RoundDecimal", "ToFloat", "Identity",
})
_CONSTANTS = frozenset({"oo", "int_oo", "true", "false"})
_ASSUMPTIONS = frozenset({
    "positive", "negative", "nonnegative", "nonpositive", "integer", "real", "finite", "zero", "nonzero", "even",
    "odd", "rational", "commutative", "precision",
})
_TOKEN = re.compile(
    r"\s*(?:(?P<number>[0-9]{1,20}(?![0-9A-Za-z_]))|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<string>'[A-Za-z0-9_.+-]{1,40}')|(?P<op>//|==|!=|<=|>=|[-+*%<>(),=]))",
    re.ASCII,
)
_DECIMAL = re.compile(r"-?[0-9]{1,20}(\.[0-9]{1,20})?(e[+-]?[0-9]{1,3})?")
_COMPARISONS = frozenset({"==", "!=", "<", "<=", ">", ">="})


def check_expression(text: object) -> None:
    """Raise ModelLoadError unless `text` is a size expression in this module's grammar."""
    if not isinstance(text, str):
        raise ModelLoadError(f"symbolic expression {str(text)[:_SHOWN]!r} is not a string")
    if len(text) > MAX_LENGTH:
        raise _refused(text, f"longer than {MAX_LENGTH:,} characters")
    _Parser(text).parse()


def _shown(text: str) -> str:
    short = text if len(text) <= _SHOWN else text[:_SHOWN] + "…"
    suffix = "" if len(text) <= _SHOWN else f" ({len(text):,} chars)"
    return f'"{short}"{suffix}' if "'" in short and '"' not in short else f"{short!r}{suffix}"


def _refused(text: str, why: str) -> ModelLoadError:
    return ModelLoadError(f"symbolic expression {_shown(text)} is not one torch.export writes: {why}")


class _Parser:
    """Recursive descent over the tokens; it only recognises, it never builds or evaluates anything."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = self._tokenize()
        self.position = 0
        self.depth = 0

    def _tokenize(self) -> list[tuple[str, str, int]]:
        tokens, index, text = [], 0, self.text.rstrip()
        while index < len(text):
            match = _TOKEN.match(text, index)
            if match is None:
                start = index + len(text[index:]) - len(text[index:].lstrip())
                raise _refused(self.text, f"unexpected {text[start:start + 12]!r} at character {start}")
            kind = match.lastgroup or ""
            tokens.append((kind, match.group(kind), match.start(kind)))
            index = match.end()
        return tokens

    def parse(self) -> None:
        self._expression()
        if self.position != len(self.tokens):
            self._unexpected()

    def _peek(self) -> tuple[str, str, int]:
        return self.tokens[self.position] if self.position < len(self.tokens) else ("end", "", len(self.text))

    def _take(self, value: str) -> bool:
        if self._peek()[1] == value and self._peek()[0] in ("op", "name"):
            self.position += 1
            return True
        return False

    def _expect(self, value: str) -> None:
        if not self._take(value):
            self._unexpected()

    def _unexpected(self) -> None:
        kind, value, at = self._peek()
        raise _refused(self.text, "it ends too soon" if kind == "end" else f"unexpected {value!r} at character {at}")

    def _nested(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _refused(self.text, f"nested more than {MAX_DEPTH} deep")

    def _expression(self) -> None:
        self._nested()
        self._sum()
        if self._peek()[1] in _COMPARISONS and self._peek()[0] == "op":
            self.position += 1
            self._sum()
        self.depth -= 1

    def _sum(self) -> None:
        self._product()
        while self._take("+") or self._take("-"):
            self._product()

    def _product(self) -> None:
        self._unary()
        while self._take("*") or self._take("//") or self._take("%"):
            self._unary()

    def _unary(self) -> None:
        minuses = 0
        while self._take("-"):
            minuses += 1
            if minuses > MAX_DEPTH:
                raise _refused(self.text, f"more than {MAX_DEPTH} minus signs in a row")
        self._atom()

    def _atom(self) -> None:
        kind, value, _ = self._peek()
        if kind == "number":
            self.position += 1
        elif self._take("("):
            self._expression()
            self._expect(")")
        elif kind == "name" and value in _FUNCTIONS and self._following("("):
            self.position += 2
            self._arguments()
        elif kind == "name" and (SYMBOL.fullmatch(value) or value in _CONSTANTS):
            self.position += 1
        else:
            self._unexpected()

    def _following(self, value: str) -> bool:
        return self.position + 1 < len(self.tokens) and self.tokens[self.position + 1][1] == value

    def _arguments(self) -> None:
        self._nested()
        if not self._take(")"):
            self._argument()
            while self._take(","):
                self._argument()
            self._expect(")")
        self.depth -= 1

    def _argument(self) -> None:
        kind, value, _ = self._peek()
        if kind == "name" and value in _ASSUMPTIONS and self._following("="):
            self.position += 2
            if self._peek()[0] == "number":
                self.position += 1
            elif not (self._take("True") or self._take("False")):
                self._unexpected()
        elif kind == "string":
            if not (SYMBOL.fullmatch(value[1:-1]) or _DECIMAL.fullmatch(value[1:-1])):
                self._unexpected()
            self.position += 1
        else:
            self._expression()
