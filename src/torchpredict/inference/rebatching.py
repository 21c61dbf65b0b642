"""One re-batcher: rows from many sources cut into model batches of exactly batch_size, outputs handed back.

The file pipeline feeds it the chunks of its files; the server's dynamic batcher will feed it concurrent
requests. A model batch is cut the same way whatever the sources' sizes, and each source gets exactly its own
rows' outputs in order, so batched equals one-at-a-time by construction (a matrix kernel may round
differently for another batch size, so the cut matters for bit-identical outputs). No threads and no I/O:
the caller decides when a short batch may run (`flush`: at the end, or where batches must not span; `breaks`:
within a source, see batch_breaks).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np
import pyarrow as pa

__all__ = ["Rebatcher", "batch_breaks"]

K = TypeVar("K")
Inputs = Mapping[str, np.ndarray]  # model inputs, one row per entry of the first axis
Outputs = dict[str, Any]  # per name, one value per row: a numpy or an Arrow array
Run = Callable[[dict[str, np.ndarray]], Mapping[str, Any]]  # one model batch -> its outputs


@dataclass
class _Source(Generic[K]):
    key: K
    rows: int
    ready: int = 0  # rows whose outputs arrived
    pieces: dict[str, list] = field(default_factory=dict)


class Rebatcher(Generic[K]):
    """Cuts the rows of sources, in the order they are added, into batches of exactly batch_size for run.

    add() and flush() return the sources whose outputs are all computed, in the order they were added, as
    (key, outputs); a source without rows gets {} once the sources before it are done.

    >>> rebatcher = Rebatcher(2, lambda batch: {"y": batch["x"] * 10})
    >>> rebatcher.add("a", {"x": np.array([1, 2, 3])})   # a batch of 1, 2 ran; 3 waits for a second row
    []
    >>> rebatcher.flush()
    [('a', {'y': array([10, 20, 30])})]
    """

    def __init__(self, batch_size: int, run: Run) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size, self.run = batch_size, run
        self._sources: deque[_Source[K]] = deque()  # not handed back yet, in order
        self._inputs: deque[dict[str, np.ndarray]] = deque()  # rows not run yet, in order
        self.queued = 0  # rows in self._inputs

    def add(self, key: K, inputs: Inputs, breaks: Sequence[int] = ()) -> list[tuple[K, Outputs]]:
        """Queue a source's rows and run every full batch.

        breaks: ascending positions among the source's rows before which the batch being filled ends, short
        (0: before its first row), so that no batch holds rows from both sides of one.
        """
        rows = _rows(inputs)
        self._sources.append(_Source(key, rows))
        start = 0
        for stop in (*breaks, rows):
            if stop > start:
                whole = start == 0 and stop == rows
                self._inputs.append(dict(inputs) if whole else {name: a[start:stop] for name, a in inputs.items()})
                self.queued += stop - start
                while self.queued >= self.batch_size:
                    self._run(self.batch_size)
            if stop < rows and self.queued:
                self._run(self.queued)
            start = stop
        return self._done()

    def flush(self) -> list[tuple[K, Outputs]]:
        """Run the queued rows, the last batch short, so that every source added so far is handed back."""
        if self.queued:
            self._run(self.queued)
        return self._done()

    def _run(self, rows: int) -> None:
        outputs = self.run(self._take(rows))
        for name, values in outputs.items():
            if len(values) != rows:
                raise ValueError(f"run returned {len(values)} rows of {name!r} for a batch of {rows}")
        start = 0
        for source in self._sources:
            if start == rows:
                break
            n = min(source.rows - source.ready, rows - start)
            if n:
                for name, values in outputs.items():
                    source.pieces.setdefault(name, []).append(values[start:start + n])
                source.ready += n
                start += n

    def _take(self, rows: int) -> dict[str, np.ndarray]:
        """The first `rows` queued rows (joined only where a batch spans sources); the rest stays queued."""
        taken: list[dict[str, np.ndarray]] = []
        need = rows
        while need:
            first = self._inputs[0]
            n = _rows(first)
            if n <= need:
                taken.append(self._inputs.popleft())
                need -= n
            else:
                taken.append({name: a[:need] for name, a in first.items()})
                self._inputs[0] = {name: a[need:] for name, a in first.items()}
                need = 0
        self.queued -= rows
        if len(taken) == 1:
            return taken[0]
        return {name: np.concatenate([t[name] for t in taken]) for name in taken[0]}

    def _done(self) -> list[tuple[K, Outputs]]:
        done = []
        while self._sources and self._sources[0].ready == self._sources[0].rows:
            source = self._sources.popleft()
            done.append((source.key, {name: _join(pieces) for name, pieces in source.pieces.items()}))
        return done


def batch_breaks(rows: np.ndarray, batch_size: int, before: int | None = None) -> list[int]:
    """Where model batches must break among rows numbered `rows` (ascending input row numbers, the rejected ones
    missing) so that each batch holds only rows of one block [k * batch_size, (k + 1) * batch_size): a row's
    batch then depends on the input rows alone, not on how they were cut into chunks, pieces or engines, nor on
    rows rejected outside its block. before: the row number of the row queued just before these (None: none).

    >>> batch_breaks(np.array([0, 1, 3, 4, 5, 9]), 4)
    [3, 5]
    """
    if not len(rows):
        return []
    blocks = rows // batch_size
    breaks = (np.flatnonzero(blocks[1:] != blocks[:-1]) + 1).tolist()
    if before is not None and before // batch_size != blocks[0]:
        breaks.insert(0, 0)
    return breaks


def _rows(inputs: Inputs) -> int:
    return len(next(iter(inputs.values()))) if inputs else 0


def _join(pieces: list) -> Any:
    if len(pieces) == 1:
        return pieces[0]
    if isinstance(pieces[0], pa.Array):
        return pa.concat_arrays(pieces)
    return np.concatenate(pieces)
