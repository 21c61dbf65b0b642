"""Request columns held in blocks: a one-row request of many numeric columns, as one 2-D array per dtype.

The OIP codec reads a request's JSON tensors a datatype at a time, so the values of all its FP64 inputs (say) are
already one array; `BlockColumns` keeps them so (a Mapping of name -> 1-D values like any request's columns), and
the batcher joins like requests a block at a time (`join`) instead of a column at a time: for a request of 34
columns that is 2 array joins instead of 34.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np

__all__ = ["BlockColumns", "Layout", "join", "layout"]


@dataclass(frozen=True, eq=False)  # one object per layout (see layout()): compared and hashed by identity
class Layout:
    """Where each column of a request lives: names, in request order, and groups, the group of each (its
    datatype, as the codec reads it); blocks, per block the positions (into names) of its columns, one per row of
    its 2-D array; others, the positions of the columns held as lists."""

    names: tuple[str, ...]
    groups: tuple[str, ...]
    blocks: tuple[tuple[int, ...], ...]
    others: tuple[int, ...]

    @functools.cached_property
    def where(self) -> dict[str, tuple[int, int]]:
        """name -> (block, row), or (-1, index into others)."""
        found = {self.names[i]: (-1, j) for j, i in enumerate(self.others)}
        found.update({self.names[i]: (b, r) for b, rows in enumerate(self.blocks) for r, i in enumerate(rows)})
        return found


@functools.lru_cache(maxsize=1024)
def layout(names: tuple[str, ...], groups: tuple[str, ...], blocked: frozenset[str]) -> Layout:
    """The layout of a request whose column i belongs to group groups[i] (a datatype, say), the groups in blocked
    held as blocks (in order of first appearance), the others as lists; shared by every request read alike."""
    order = list(dict.fromkeys(g for g in groups if g in blocked))
    blocks = tuple(tuple(i for i, g in enumerate(groups) if g == group) for group in order)
    others = tuple(i for i, g in enumerate(groups) if g not in blocked)
    return Layout(names, groups, blocks, others)


class BlockColumns(Mapping[str, Any]):
    """A request's columns in a layout: blocks[b][r] is the column names[layout.blocks[b][r]] (a row view),
    others[j] the column names[layout.others[j]]."""

    __slots__ = ("blocks", "layout", "others")

    def __init__(self, layout: Layout, blocks: list[np.ndarray], others: list[Any]) -> None:
        self.layout, self.blocks, self.others = layout, blocks, others

    def __getitem__(self, name: str) -> Any:
        block, row = self.layout.where[name]
        return self.others[row] if block < 0 else self.blocks[block][row]

    def __iter__(self) -> Iterator[str]:
        return iter(self.layout.names)

    def __len__(self) -> int:
        return len(self.layout.names)


def join(parts: list[BlockColumns], rows: list[int]) -> dict[str, Any] | None:
    """The columns of requests of one layout, one after another (rows: each one's), as 1-D arrays and lists; None
    unless each block has its request's rows and the lists hold only strings, each its rows long (values Arrow
    reads alike however they are joined: a list of None alone would read as nulls of no type)."""
    first = parts[0].layout
    if any(part.layout is not first for part in parts):
        return None
    blocks = []
    for b in range(len(first.blocks)):
        arrays = [part.blocks[b] for part in parts]
        if [a.shape[1] for a in arrays] != rows or len({a.dtype for a in arrays}) != 1 or arrays[0].dtype == object:
            return None
        blocks.append(np.concatenate(arrays, axis=1))
    others = []
    for j in range(len(first.others)):
        lists = [part.others[j] for part in parts]
        if set(map(type, lists)) != {list} or list(map(len, lists)) != rows:
            return None
        values = list(chain.from_iterable(lists))
        if set(map(type, values)) != {str}:
            return None
        others.append(values)
    columns: dict[str, Any] = {}
    for name in first.names:
        block, row = first.where[name]
        columns[name] = others[row] if block < 0 else blocks[block][row]
    return columns
