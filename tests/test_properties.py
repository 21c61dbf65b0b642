"""Properties of every step type and of Preprocessors, on generated tables with missing values: JSON round
trips, a table transforms bit for bit like its rows one at a time, and save -> load -> transform is identical."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from strategies import BUILDERS, preprocessors, tables, tables_and_steps
from torchpredict.bundle.manifest import PREPROCESSING_FILE, load_json, write_json
from torchpredict.errors import PreprocessingError
from torchpredict.inference.rebatching import Rebatcher
from torchpredict.preprocessing import Preprocessor, Step

PROPERTIES = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def via_json(step: Step) -> Step:
    return Step.from_dict(json.loads(json.dumps(step.to_dict(), allow_nan=False)))


def fitted(step: Step | Preprocessor, table: pa.Table) -> Step | Preprocessor:
    """The step fitted on table; data it rightly refuses (e.g. too few distinct values for k-means) is skipped."""
    try:
        return step.fit(table)
    except PreprocessingError:
        reject()


def assert_same(a: pa.Table, b: pa.Table) -> None:
    """Same names, types, nulls and bytes (NaN payloads and the sign of zero included)."""
    assert a.column_names == b.column_names and a.schema.types == b.schema.types
    for x, y in zip(a.columns, b.columns, strict=True):
        assert x.is_null().to_pylist() == y.is_null().to_pylist()
        if pa.types.is_floating(x.type) or pa.types.is_integer(x.type):
            assert x.to_numpy().tobytes() == y.to_numpy().tobytes()
        else:
            assert x.to_pylist() == y.to_pylist()


def one_at_a_time(step: Step, table: pa.Table) -> pa.Table:
    return pa.concat_tables([step.transform(table.slice(i, 1)) for i in range(table.num_rows)])


STEPS = settings(PROPERTIES, max_examples=15)


@pytest.mark.parametrize("kind", BUILDERS)
@STEPS
@given(st.data())
def test_every_step_round_trips_through_json_unfitted_and_fitted(kind: str, data: st.DataObject) -> None:
    table, step = data.draw(tables_and_steps(kind))
    assert via_json(step) == step and via_json(step).fitted == step.fitted
    fitted(step, table)
    again = via_json(step)
    assert again == step and again.fitted
    assert_same(again.transform(table), step.transform(table))


@pytest.mark.parametrize("kind", BUILDERS)
@STEPS
@given(st.data())
def test_every_step_transforms_a_table_like_its_rows_one_at_a_time(kind: str, data: st.DataObject) -> None:
    table, step = data.draw(tables_and_steps(kind))
    fitted(step, table)
    assert_same(one_at_a_time(step, table), step.transform(table))


@PROPERTIES
@given(st.data())
def test_preprocessors_transform_rows_like_tables_and_come_back_from_a_bundle_file_identical(
    data: st.DataObject,
) -> None:
    table = data.draw(tables())
    pre = data.draw(preprocessors(table))
    with tempfile.TemporaryDirectory() as tmp:
        write_json(Path(tmp) / PREPROCESSING_FILE, pre.to_dict())
        assert Preprocessor.from_dict(load_json(Path(tmp), PREPROCESSING_FILE, tmp)) == pre
        fitted(pre, table)
        write_json(Path(tmp) / PREPROCESSING_FILE, pre.to_dict())
        loaded = Preprocessor.from_dict(load_json(Path(tmp), PREPROCESSING_FILE, tmp))
    assert loaded == pre
    batch = pre.transform(table)
    again = loaded.transform(table)
    rows = [pre.transform(table.slice(i, 1)) for i in range(table.num_rows)]
    assert list(again) == list(batch)
    for name, values in batch.items():
        assert again[name].dtype == values.dtype and again[name].tobytes() == values.tobytes()
        assert np.concatenate([r[name] for r in rows]).tobytes() == values.tobytes()


# -- the re-batcher -------------------------------------------------------------------------------


@PROPERTIES
@given(sizes=st.lists(st.integers(0, 20), max_size=8), batch_size=st.integers(1, 16), data=st.data())
def test_rebatched_sources_get_what_one_at_a_time_gives_in_batches_cut_as_over_all_rows(
    sizes: list[int], batch_size: int, data: st.DataObject
) -> None:
    """Batched equals one-at-a-time: any split of rows into sources, any batch_size, any flush points."""
    flushes = data.draw(st.lists(st.booleans(), min_size=len(sizes), max_size=len(sizes)))
    batches: list[np.ndarray] = []

    def run(inputs: dict[str, np.ndarray]) -> dict[str, object]:
        batches.append(inputs["x"].copy())
        return {"y": inputs["x"] * 3.0 + 1.0, "row": pa.array(inputs["x"].astype(np.int64))}

    rebatcher: Rebatcher[int] = Rebatcher(batch_size, run)
    done, start, segments, segment = [], 0, [], 0
    for key, (size, flush) in enumerate(zip(sizes, flushes, strict=True)):
        done += rebatcher.add(key, {"x": np.arange(start, start + size, dtype=np.float64)} if size else {})
        start, segment = start + size, segment + size
        if flush:
            done += rebatcher.flush()
            segments, segment = [*segments, segment], 0
    done += rebatcher.flush()
    segments.append(segment)
    assert [key for key, _ in done] == list(range(len(sizes)))
    start = 0
    for (_, outputs), size in zip(done, sizes, strict=True):
        own = np.arange(start, start + size, dtype=np.float64)
        assert outputs == {} if not size else (outputs["y"].tolist() == [v * 3.0 + 1.0 for v in own]
                                              and outputs["row"].to_pylist() == own.astype(int).tolist())
        start += size
    expected = [min(batch_size, n - s) for n in segments for s in range(0, n, batch_size)]
    assert [len(b) for b in batches] == expected  # exactly batch_size, short only where a flush cut
    assert np.concatenate(batches or [np.zeros(0)]).tolist() == list(range(sum(sizes)))
