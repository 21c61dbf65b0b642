"""The re-batcher: model batches of exactly batch_size cut across sources, each source's outputs handed back."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from torchpredict.bundle import load
from torchpredict.inference.rebatching import Rebatcher, batch_breaks


class FakeModel:
    """Doubles x, remembers the size of every batch it ran, and gives an Arrow column too."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict:
        self.batches.append(len(inputs["x"]))
        return {"y": inputs["x"] * 2, "label": pa.array([f"r{int(v)}" for v in inputs["x"][:, 0]])}


def rows(start: int, stop: int) -> dict[str, np.ndarray]:
    return {"x": np.arange(start, stop, dtype=np.float32).reshape(-1, 1)}


def test_batches_are_exactly_batch_size_across_sources_and_each_source_gets_its_rows_back():
    model = FakeModel()
    rebatcher = Rebatcher(4, model)
    assert rebatcher.add("a", rows(0, 3)) == []  # not a full batch yet
    done = rebatcher.add("b", rows(3, 10))  # runs rows 0-3 and 4-7: a is complete, b waits for 8-9
    assert [key for key, _ in done] == ["a"]
    assert done[0][1]["y"].ravel().tolist() == [0, 2, 4]
    assert done[0][1]["label"].to_pylist() == ["r0", "r1", "r2"]
    [(key, outputs)] = rebatcher.flush()
    assert key == "b" and outputs["y"].ravel().tolist() == [2 * v for v in range(3, 10)]
    assert model.batches == [4, 4, 2]  # short only on flush
    assert rebatcher.queued == 0 and rebatcher.flush() == []


def test_a_source_without_rows_comes_back_in_its_place():
    rebatcher = Rebatcher(2, FakeModel())
    assert rebatcher.add("a", rows(0, 1)) == []
    assert rebatcher.add("empty", {}) == []  # waits behind a
    done = rebatcher.add("c", rows(1, 2))  # one full batch: a's row and c's
    assert [(key, out["y"].ravel().tolist() if out else out) for key, out in done] == [
        ("a", [0.0]), ("empty", {}), ("c", [2.0])]
    first = Rebatcher(2, FakeModel())
    assert first.add("empty", {}) == [("empty", {})]


def test_flush_in_the_middle_cuts_a_short_batch_and_the_next_ones_start_afresh():
    model = FakeModel()
    rebatcher = Rebatcher(3, model)
    rebatcher.add("a", rows(0, 4))
    assert [key for key, _ in rebatcher.flush()] == ["a"]
    rebatcher.add("b", rows(4, 9))
    rebatcher.flush()
    assert model.batches == [3, 1, 3, 2]


def test_a_run_that_returns_the_wrong_number_of_rows_is_refused():
    rebatcher = Rebatcher(2, lambda batch: {"y": batch["x"][:1]})
    with pytest.raises(ValueError, match="1 rows of 'y' for a batch of 2"):
        rebatcher.add("a", rows(0, 2))
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        Rebatcher(0, FakeModel())


def test_a_real_bundle_rebatched_from_uneven_sources_predicts_what_predict_gives(wine, wine_bundle):
    predictor = load(wine_bundle, device="cpu", batch_size=8)
    table = wine["new"]
    sizes = [3, 0, 11, 1, 9, table.num_rows - 24]

    def run(inputs: dict[str, np.ndarray]) -> dict[str, pa.Array]:
        [batch] = predictor.infer(inputs)
        return predictor.interpret(batch)

    rebatcher: Rebatcher[int] = Rebatcher(predictor.batch_size, run)
    done, start = [], 0
    for i, size in enumerate(sizes):
        inputs = predictor.preprocess(predictor.validate(table.slice(start, size))) if size else {}
        done += rebatcher.add(i, inputs)
        start += size
    done += rebatcher.flush()
    assert [key for key, _ in done] == list(range(len(sizes)))
    expected = predictor.predict(table)
    start = 0
    for (_, outputs), size in zip(done, sizes, strict=True):
        for name, column in outputs.items():
            assert column.equals(expected.column(name).combine_chunks().slice(start, size)), name
        start += size


def test_breaks_end_a_batch_short_so_no_batch_holds_rows_of_two_blocks():
    sizes = []
    rebatcher = Rebatcher(4, lambda batch: (sizes.append(len(batch["x"])), {"y": batch["x"] * 10})[1])
    rows = np.array([0, 1, 2, 3, 4, 6, 7, 8, 9])  # row 5 rejected: rows 4, 6, 7 are block 1's
    assert batch_breaks(rows, 4) == [4, 7]
    done = rebatcher.add("a", {"x": rows}, batch_breaks(rows, 4))
    done += rebatcher.add("b", {"x": np.array([12, 13])}, batch_breaks(np.array([12, 13]), 4, before=9))
    done += rebatcher.flush()
    assert sizes == [4, 3, 2, 2]  # not [4, 4, 3]: the rejected row changes no batch but its own
    assert [key for key, _ in done] == ["a", "b"] and done[0][1]["y"].tolist() == (rows * 10).tolist()
    assert batch_breaks(np.array([8, 9]), 4, before=7) == [0] and batch_breaks(np.array([]), 4) == []
