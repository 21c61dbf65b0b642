"""The server's dynamic batcher, without HTTP: concurrent requests share model batches, and each gets exactly what
Predictor.predict gives it alone (its answer, its rejected rows, or its exception)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from torchpredict.bundle import load, save
from torchpredict.errors import InputError, PredictionError, SchemaError
from torchpredict.predictor import Predictor
from torchpredict.server.batcher import Answer, Batcher, NoObserver, Overloaded, Request
from torchpredict.server.columns import BlockColumns, layout
from torchpredict.stats import RunStats

WAIT = 30  # seconds: the most any step here may take before the test fails instead of hanging


class Rowwise(torch.nn.Module):
    """Logits from elementwise operations only, so that a row's output cannot depend on the rows batched with it.

    A matrix product may round a row differently in a small batch than in a large one (the wine MLP does on
    CPUs: see test_with_a_matrix_product_answers_are_predict_of_the_batch_as_it_ran), which no batching can
    change; with this model any coalescing must give predict's answers bit for bit. Untrained: what it predicts
    does not matter, only that it is predicted the same.
    """

    def __init__(self, classes: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.classes = classes
        self.scale = torch.nn.Parameter(torch.randn(classes, generator=generator))
        self.shift = torch.nn.Parameter(torch.randn(classes, generator=generator))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, : self.classes] * self.scale + self.shift


@pytest.fixture(scope="module")
def rowwise_bundle(wine: dict, tmp_path_factory: pytest.TempPathFactory):
    model = Rowwise(len(wine["head"].labels)).eval()
    return save(tmp_path_factory.mktemp("rowwise") / "rowwise.tpk", model, preprocessor=wine["preprocessor"],
                heads=wine["head"], examples=wine["train"])


@pytest.fixture
def predictor(rowwise_bundle) -> Predictor:
    """A predictor of its own, for the batcher (tests hold its model thread through `Gate`)."""
    return load(rowwise_bundle, device="cpu")


@pytest.fixture(scope="module")
def reference(rowwise_bundle) -> Predictor:
    """Another predictor of the same bundle: what predict gives, untouched by the batcher's tests."""
    return load(rowwise_bundle, device="cpu")


@pytest.fixture
def rows(wine: dict) -> pa.Table:
    """Training rows: no drift, so the answers are compared without warnings in the way."""
    return wine["train"]


class Gate:
    """A slow model: holds the model thread in the infer stage until opened, and records each model batch's rows
    and how often the validate stage ran."""

    def __init__(self, predictor: Predictor, *, opened: bool = False,
                 fails: Callable[[int], bool] = lambda rows: False) -> None:
        self.entered, self.opened = threading.Event(), threading.Event()
        if opened:
            self.opened.set()
        self.batches: list[int] = []
        self.validations = 0
        infer, validate = predictor.infer, predictor.validate

        def held_infer(inputs: Any, *, batch_size: int | None = None) -> Any:
            self.entered.set()
            assert self.opened.wait(WAIT)
            rows = len(next(iter(inputs.values()))) if inputs else 0
            self.batches.append(rows)
            if fails(rows):
                raise RuntimeError(f"out of memory for a batch of {rows} rows")
            return infer(inputs, batch_size=batch_size)

        def counted_validate(*args: Any, **kwargs: Any) -> Any:
            self.validations += 1
            return validate(*args, **kwargs)

        predictor.infer = held_infer  # type: ignore[method-assign]
        predictor.validate = counted_validate  # type: ignore[method-assign]


class Recorder(NoObserver):
    def __init__(self) -> None:
        self.batches: list[dict] = []
        self.counted: list[RunStats] = []

    def batch(self, *, requests: int, rows: int, queued_s: float, run_s: float) -> None:
        self.batches.append({"requests": requests, "rows": rows, "queued_s": queued_s, "run_s": run_s})

    def stats(self, stats: RunStats) -> None:
        self.counted.append(stats)


class FakeClock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- helpers ---------------------------------------------------------------------------------------


def columns(table: pa.Table, *, lists: bool = False, changes: dict[int, tuple[str, Any]] | None = None) -> dict:
    """The table as a dict of columns (numpy arrays, or lists), with some values changed."""
    found = {name: table.column(name).to_pylist() if lists else table.column(name).to_numpy().copy()
             for name in table.column_names}
    for row, (name, value) in (changes or {}).items():
        found[name][row] = value
    return found


def request(table: pa.Table, *, lists: bool = False, changes: dict[int, tuple[str, Any]] | None = None,
            **options: Any) -> Request:
    return Request(columns(table, lists=lists, changes=changes), table.num_rows, **options)


def joined(rejected: list[pa.Table]) -> pa.Table | None:
    """What the rejects callback got, as one table in row order (as Answer.rejected holds it)."""
    if len(rejected) <= 1:
        return rejected[0] if rejected else None
    return pa.concat_tables(rejected).sort_by(rejected[0].column_names[0])


def alone(predictor: Predictor, req: Request) -> Answer | Exception:
    """What Predictor.predict gives the request by itself."""
    rejected: list[pa.Table] = []
    try:
        table = predictor.predict(req.columns, keep=req.keep, rejects=rejected.append if req.rejects else None)
    except Exception as exc:
        return exc
    return Answer(table, joined(rejected))


def assert_same(got: Answer | BaseException, expected: Answer | Exception) -> None:
    if isinstance(expected, Exception):
        assert isinstance(got, BaseException), f"expected {expected!r}, got an answer"
        assert (type(got), str(got)) == (type(expected), str(expected))
        return
    assert isinstance(got, Answer), f"expected an answer, got {got!r}"
    assert got.table.equals(expected.table)
    if expected.rejected is None:
        assert got.rejected is None
    else:
        assert got.rejected is not None and got.rejected.equals(expected.rejected)


def send(batcher: Batcher, requests: Sequence[Request], *, before: Callable[[], None] = lambda: None) -> list:
    """The answers (or exceptions) to requests sent together from an event loop; before() runs once they are
    all queued."""

    async def main() -> list:
        tasks = [asyncio.ensure_future(batcher.predict(r)) for r in requests]
        await asyncio.sleep(0)  # every task has run up to its await: all are queued
        before()
        return await asyncio.gather(*tasks, return_exceptions=True)

    return asyncio.run(main())


def behind_a_plug(batcher: Batcher, gate: Gate, plug: Request, requests: Sequence[Request]) -> list:
    """Answers to requests sent while the model thread is busy with plug: they queue, then run as one batch."""
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(batcher.predict_now, plug)
        assert gate.entered.wait(WAIT)
        queued = sum(r.rows for r in requests)

        def release() -> None:
            assert batcher.queued_rows == queued
            gate.opened.set()

        answers = send(batcher, requests, before=release)
        first.result(WAIT)
    return answers


def sizes_to_requests(table: pa.Table, sizes: Sequence[int], **options: Any) -> list[Request]:
    starts = np.cumsum([0, *sizes])
    return [request(table.slice(int(start), size), lists=i % 2 == 1, **options)
            for i, (start, size) in enumerate(zip(starts, sizes, strict=False))]


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The rows of every table the batcher reads (as_table), as they come."""
    import torchpredict.server.batcher as batcher_module

    found: list[int] = []
    real = batcher_module.as_table

    def counted(data: Any, **options: Any) -> pa.Table:
        table = real(data, **options)
        found.append(table.num_rows)
        return table

    monkeypatch.setattr(batcher_module, "as_table", counted)
    return found


# -- coalescing ------------------------------------------------------------------------------------


def test_concurrent_requests_share_one_model_batch_and_each_gets_predict_of_it_alone(predictor, reference, rows):
    gate, observer = Gate(predictor), Recorder()
    batcher = Batcher(predictor, observer=observer)
    requests = sizes_to_requests(rows.slice(1), [3, 1, 5, 2, 4, 1, 6, 2, 3, 1, 1, 2])
    answers = behind_a_plug(batcher, gate, request(rows.slice(0, 1)), requests)
    batcher.close(WAIT)
    assert [b["requests"] for b in observer.batches] == [1, len(requests)]
    assert gate.batches == [1, sum(r.rows for r in requests)]
    assert gate.validations == 2  # once for the plug, once for the twelve together
    for req, answer in zip(requests, answers, strict=True):
        assert_same(answer, alone(reference, req))


def test_like_requests_are_read_as_one_table_and_unlike_ones_alone(predictor, reference, rows, reads):
    gate = Gate(predictor)
    batcher = Batcher(predictor)
    like = [request(rows.slice(1 + i, 1), lists=True) for i in range(8)]  # as the records endpoint sends rows
    first = next(iter(like[0].columns))
    unlike = request(rows.slice(9, 1), lists=True, changes={0: (first, 1)})  # an int where the others hold floats
    answers = behind_a_plug(batcher, gate, request(rows.slice(0, 1)), [*like, unlike])
    batcher.close(WAIT)
    assert sorted(reads) == [1, 1, 8]  # the plug, the unlike request alone, the eight like ones together
    for req, answer in zip([*like, unlike], answers, strict=True):
        assert_same(answer, alone(reference, req))


def test_numpy_requests_are_read_together_by_dtype_and_others_alone(predictor, reference, rows, reads):
    gate = Gate(predictor)
    batcher = Batcher(predictor)
    like = [request(rows.slice(1 + i, 2)) for i in range(0, 6, 2)]
    first = next(iter(like[0].columns))

    def changed(start: int, dtype: Any, count: int = 2) -> Request:
        found = columns(rows.slice(start, 2))
        return Request(found | {first: found[first].astype(dtype)}, count)

    requests = [like[0], changed(7, np.float32), like[1], changed(9, object), like[2],
                changed(11, np.float64, count=3)]  # says 3 rows, holds 2
    answers = behind_a_plug(batcher, gate, request(rows.slice(0, 1)), requests)
    batcher.close(WAIT)
    assert sorted(reads) == [1, 2, 2, 2, 6]  # the plug; float32, object and the miscounted alone; the like together
    for req, answer in list(zip(requests, answers, strict=True))[:-1]:
        assert_same(answer, alone(reference, req))
    assert isinstance(answers[-1], InputError) and "says it has 3 rows" in str(answers[-1])


def blocked(table: pa.Table, dtype: Any = np.float64, count: int | None = None) -> Request:
    """The table's rows as the OIP codec reads a JSON request of them: BlockColumns, its columns one block."""
    names = tuple(table.column_names)
    block = np.stack([table.column(name).to_numpy() for name in names]).astype(dtype)
    where = layout(names, ("FP",) * len(names), frozenset({"FP"}))
    return Request(BlockColumns(where, [block], []), table.num_rows if count is None else count)


def test_codec_requests_are_joined_a_block_at_a_time_and_others_read_as_before(predictor, reference, rows, reads,
                                                                              monkeypatch):
    validations: list[tuple[int, bool]] = []  # per validate call: its rows, and whether it built no table
    validate = predictor.validate

    def counted(data: Any, **options: Any) -> Any:
        validated = validate(data, **options)
        if isinstance(data, dict):
            validations.append((validated.num_rows, validated._table is None))
        return validated

    monkeypatch.setattr(predictor, "validate", counted)
    gate = Gate(predictor)
    batcher = Batcher(predictor)
    like = [blocked(rows.slice(1 + i, 1)) for i in range(5)]
    requests = [*like, blocked(rows.slice(6, 2), np.float32), request(rows.slice(8, 2)), blocked(rows.slice(10, 2),
                                                                                              count=3)]
    answers = behind_a_plug(batcher, gate, request(rows.slice(0, 1)), requests)
    batcher.close(WAIT)
    # the five like ones joined into one group's columns, validated as they are (no table: a few float64 rows); the
    # float32 one joined alone (validation reads it as a table: not the features' float64)
    assert sorted(validations) == [(2, False), (5, True)]
    # read by the batcher as tables: the plug, the plain dict by _groups' keys, and the one that says 3 rows but
    # holds 2, alone (refused)
    assert sorted(reads) == [1, 2, 2]
    for req, answer in list(zip(requests, answers, strict=True))[:-1]:
        assert_same(answer, alone(reference, req))
    assert isinstance(answers[-1], InputError) and "says it has 3 rows" in str(answers[-1])


def counted_assembles(predictor: Predictor) -> list[int]:
    """The rows of each call of predictor's assemble stage, as they come."""
    calls: list[int] = []
    assemble = predictor.assemble

    def counted(validated: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(validated.table.num_rows)
        return assemble(validated, *args, **kwargs)

    predictor.assemble = counted  # type: ignore[method-assign]
    return calls


def with_ids(table: pa.Table, start: int, *, lists: bool = False, **options: Any) -> Request:
    """The table's rows with an id column (kept in the answer when options say keep=("id",))."""
    found = columns(table, lists=lists)
    ids = np.arange(start, start + table.num_rows)
    found["id"] = ids.tolist() if lists else ids
    return Request(found, table.num_rows, **options)


def test_a_group_without_rejected_rows_is_assembled_once_and_each_request_gets_its_slice(predictor, reference,
                                                                                         rows):
    gate = Gate(predictor)
    assembles = counted_assembles(predictor)
    batcher = Batcher(predictor)
    plain = sizes_to_requests(rows.slice(1), [3, 1, 2, 4], rejects=True)  # numpy and lists: one schema, one group
    kept = [with_ids(rows.slice(11 + 3 * i, 3), 100 * i, lists=i == 1, keep=("id",)) for i in range(3)]
    tagged = [Request(columns(rows.slice(20, 3), changes={1: ("hue", np.nan)}) | {"id": ["a0", "a1", "a2"]}, 3,
                      keep=("id",), rejects=True),
              Request(columns(rows.slice(23, 2)) | {"id": ["b0", "b1"]}, 2, keep=("id",))]  # string ids: a group
    requests = [*plain, *kept, *tagged]
    answers = behind_a_plug(batcher, gate, request(rows.slice(0, 1)), requests)
    batcher.close(WAIT)
    assert gate.batches == [1, 10 + 9 + 4]
    assert gate.validations == 1 + 3  # the plug, then each group once
    assert assembles == [1, 10, 9, 2, 2]  # the plug; once per group without rejected rows; per request else
    for req, answer in zip(requests, answers, strict=True):
        assert_same(answer, alone(reference, req))
    for req, answer in zip(kept, answers[4:7], strict=True):
        assert answer.table.column_names[0] == "id"
        assert answer.table.column("id").to_pylist() == list(req.columns["id"])
    assert answers[7].rejected.column("row").to_pylist() == [1]
    assert answers[7].table.column("id").to_pylist() == ["a0", "a2"]


def test_when_a_head_refuses_a_row_the_group_is_assembled_per_request(predictor, reference, rows, monkeypatch):
    def refusing(refused: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def refuse(batch: Any) -> pa.Array:  # a head that cannot read rows of a high first score (per row)
            first = batch.raw[:, 0].numpy()
            return pa.array([f"score {v:.3f} too high" if v > threshold else None for v in first], pa.string())
        return refuse

    scores = reference.preprocess(reference.validate(rows.slice(1, 12)))
    raw = next(iter(reference.infer(scores))).raw[:, 0].numpy()
    threshold = min(float(np.median(raw)), float(raw[10:12].max()) - 1e-3)  # a row of the last request refused
    for p in (predictor, reference):
        monkeypatch.setattr(p, "refused", refusing(p.refused))
    gate = Gate(predictor)
    assembles = counted_assembles(predictor)
    batcher = Batcher(predictor)
    requests = [*sizes_to_requests(rows.slice(1), [3, 1, 2, 4], rejects=True),
                request(rows.slice(11, 2))]  # no rejects: predict's PredictionError, if one of its rows is refused
    answers = behind_a_plug(batcher, gate, request(rows.slice(0, 1)), requests)
    batcher.close(WAIT)
    # one group (the numpy requests read together, then the lists), each request assembled on its own; then
    # the last alone, for predict's error
    assert assembles[1:] == [3, 2, 2, 1, 4, 2]
    for req, answer in zip(requests, answers, strict=True):
        assert_same(answer, alone(reference, req))
    assert isinstance(answers[-1], PredictionError) and "too high" in str(answers[-1])
    refused = sum(a.rejected.num_rows for a in answers if isinstance(a, Answer) and a.rejected is not None)
    assert 0 < refused < sum(r.rows for r in requests[:-1])


def test_with_a_matrix_product_answers_are_predict_of_the_batch_as_it_ran(wine, wine_bundle, rows):
    predictor = load(wine_bundle, device="cpu")
    gate = Gate(predictor)
    batcher = Batcher(predictor)
    sizes = [2, 7, 1, 4, 3]
    requests = sizes_to_requests(rows.slice(1), sizes)
    answers = behind_a_plug(batcher, gate, request(rows.slice(0, 1)), requests)
    batcher.close(WAIT)
    assert gate.batches == [1, sum(sizes)]
    together = load(wine_bundle, device="cpu").predict(rows.slice(1, sum(sizes)))  # the same model batch
    for start, size, answer in zip(np.cumsum([0, *sizes]), sizes, answers, strict=False):
        assert answer.rejected is None
        assert answer.table.equals(together.slice(int(start), size))


def test_the_observer_gets_the_counts_and_drift_of_each_batch(predictor, reference, rows):
    gate, observer = Gate(predictor), Recorder()
    batcher = Batcher(predictor, observer=observer)
    drifted = {1: ("alcohol", 1000.0), 4: ("hue", np.nan), 6: ("alcohol", -5.0)}
    requests = [request(rows.slice(1, 5)), request(rows.slice(6, 8), changes=drifted, rejects=True)]
    behind_a_plug(batcher, gate, request(rows.slice(0, 1)), requests)
    batcher.close(WAIT)
    expected = RunStats()
    list(reference.predict_batches([rows.slice(1, 5), columns(rows.slice(6, 8), changes=drifted)], stats=expected,
                                   rejects=lambda _: None))
    stats = observer.counted[1]
    assert (stats.rows_in, stats.rows_predicted, stats.rows_rejected) == (13, 12, 1)
    assert stats.drift == expected.drift and stats.drift.columns["alcohol"].out_of_range == 2
    assert observer.batches[1]["rows"] == 13 and observer.batches[1]["run_s"] >= 0


# -- bad requests fail alone -----------------------------------------------------------------------


def test_a_bad_row_fails_only_its_request_and_rejected_rows_are_numbered_within_it(predictor, reference, rows):
    gate, observer = Gate(predictor), Recorder()
    batcher = Batcher(predictor, observer=observer)
    requests = [
        request(rows.slice(1, 4)),
        request(rows.slice(5, 6), changes={3: ("hue", np.nan)}),  # no rejects: predict's SchemaError
        request(rows.slice(11, 6), changes={1: ("hue", np.nan), 2: ("alcohol", np.inf), 4: ("hue", np.nan)},
                rejects=True),
        request(rows.slice(17, 5), lists=True, changes={0: ("alcohol", "forty")}, rejects=True),  # mixed values
        request(rows.slice(22, 4), lists=True, changes={2: ("alcohol", "forty")}),
        request(rows.slice(26, 3), lists=True),
    ]
    answers = behind_a_plug(batcher, gate, request(rows.slice(0, 1)), requests)
    batcher.close(WAIT)
    assert observer.batches[1]["requests"] == len(requests)
    for req, answer in zip(requests, answers, strict=True):
        assert_same(answer, alone(reference, req))
    assert isinstance(answers[1], SchemaError) and "'hue'" in str(answers[1]) and "row 3" in str(answers[1])
    assert answers[2].rejected.column("row").to_pylist() == [1, 2, 4]
    assert answers[2].table.num_rows == 3
    assert answers[3].rejected.column("row").to_pylist() == [0]
    assert isinstance(answers[4], SchemaError) and "'forty'" in str(answers[4])
    assert isinstance(answers[0], Answer) and isinstance(answers[5], Answer)


def test_requests_that_cannot_be_joined_run_alone_and_fail_only_themselves(predictor, reference, rows):
    gate, observer = Gate(predictor), Recorder()
    batcher = Batcher(predictor, observer=observer)
    table = rows.slice(1, 4)
    with_id = columns(table) | {"id": np.arange(4)}
    without_hue = {name: values for name, values in columns(table).items() if name != "hue"}
    requests = [
        request(table),
        Request(columns(table) | {"alcohol": [str(v) for v in table.column("alcohol").to_pylist()]}, 4),  # strings
        Request(without_hue, 4),
        Request(dict(without_hue), 4),  # the same bad columns: a group whose validation fails
        Request(with_id, 4),  # an unexpected column
        Request(with_id, 4, keep=("id",)),  # the same columns kept: fine, in a group of its own
        Request(columns(table) | {"magnesium": table.column("magnesium").to_numpy().astype(np.int64)}, 4),
        Request({name: values[:2] for name, values in columns(table).items()}, 2),
        Request(columns(table), 3),  # says 3 rows, holds 4
    ]
    answers = behind_a_plug(batcher, gate, request(rows.slice(0, 1)), requests)
    batcher.close(WAIT)
    assert observer.batches[1]["requests"] == len(requests)
    for req, answer in list(zip(requests, answers, strict=True))[:-1]:
        assert_same(answer, alone(reference, req))
    assert [type(a).__name__ for a in answers] == ["Answer", "SchemaError", "SchemaError", "SchemaError",
                                                   "SchemaError", "Answer", "Answer", "Answer", "InputError"]
    assert "says it has 3 rows" in str(answers[-1])


def test_when_the_joined_batch_fails_each_request_runs_alone(predictor, reference, rows):
    gate = Gate(predictor, fails=lambda rows: rows > 8)  # a model that runs out of memory beyond 8 rows
    batcher = Batcher(predictor)
    requests = sizes_to_requests(rows.slice(1), [5, 3, 6])
    answers = behind_a_plug(batcher, gate, request(rows.slice(0, 1)), requests)
    batcher.close(WAIT)
    assert gate.batches == [1, 14, 5, 3, 6]
    for req, answer in zip(requests, answers, strict=True):
        assert_same(answer, alone(reference, req))


def test_an_empty_request_is_answered_as_predict_answers_no_rows(predictor, reference, rows):
    batcher = Batcher(predictor)
    requests = [request(rows.slice(0, 0)), Request({}, 0), request(rows.slice(0, 2))]
    answers = send(batcher, requests)
    batcher.close(WAIT)
    for req, answer in zip(requests, answers, strict=True):
        assert_same(answer, alone(reference, req))
    assert answers[0].table.num_rows == 0 and answers[0].table.column_names == answers[2].table.column_names
    assert isinstance(answers[1], SchemaError)


# -- sizes, the queue, closing ---------------------------------------------------------------------


def test_a_request_larger_than_a_model_batch_is_split_and_put_back_together(predictor, reference, rows):
    gate = Gate(predictor, opened=True)
    batcher = Batcher(predictor, max_batch_size=16)
    big = request(rows.slice(0, 100), changes={20: ("hue", np.nan), 70: ("hue", np.nan)}, rejects=True)
    [answer] = send(batcher, [big])
    batcher.close(WAIT)
    assert gate.batches == [16] * 6 + [2]  # 98 rows passed validation
    assert_same(answer, alone(reference, big))
    assert answer.rejected.column("row").to_pylist() == [20, 70]


def test_a_full_queue_is_overloaded_at_once_and_the_queued_requests_are_still_answered(predictor, reference, rows):
    gate = Gate(predictor)
    batcher = Batcher(predictor, max_queue_rows=10)
    requests = [request(rows.slice(1, 6)), request(rows.slice(7, 4))]

    def full() -> None:
        assert batcher.queued_rows == 10
        with pytest.raises(Overloaded, match="10 rows are queued for the model, at most 10 may wait"):
            batcher.check_room()  # what the app asks before it reads a request's body
        started = time.perf_counter()
        with pytest.raises(Overloaded, match="10 rows are queued for the model, at most 10 may wait"):
            batcher.predict_now(request(rows.slice(11, 1)))
        assert time.perf_counter() - started < 1
        with pytest.raises(InputError, match="11 rows, more than this server queues"):
            batcher.predict_now(request(rows.slice(0, 11)))
        gate.opened.set()

    with ThreadPoolExecutor(1) as pool:
        plug = pool.submit(batcher.predict_now, request(rows.slice(0, 1)))  # running: not counted as queued
        assert gate.entered.wait(WAIT)
        batcher.check_room()  # room while nothing waits
        answers = send(batcher, requests, before=full)
        plug.result(WAIT)
    batcher.close(WAIT)
    for req, answer in zip(requests, answers, strict=True):
        assert_same(answer, alone(reference, req))


def test_close_answers_every_queued_request_then_takes_no_more(predictor, reference, rows):
    gate = Gate(predictor)
    batcher = Batcher(predictor, max_batch_size=4)
    requests = sizes_to_requests(rows.slice(1), [3, 2, 4, 1, 3])
    with ThreadPoolExecutor(len(requests) + 1) as pool:
        plug = pool.submit(batcher.predict_now, request(rows.slice(0, 1)))
        assert gate.entered.wait(WAIT)
        futures: list[Future] = [pool.submit(batcher.predict_now, r) for r in requests]
        deadline = time.monotonic() + WAIT
        while batcher.queued_rows < 13 and time.monotonic() < deadline:
            time.sleep(0.001)
        batcher.close(timeout=0)  # closed: the model thread is still held by the gate
        with pytest.raises(Overloaded, match="shutting down"):
            batcher.predict_now(request(rows.slice(0, 1)))
        with pytest.raises(Overloaded, match="shutting down"):
            batcher.check_room()
        gate.opened.set()
        batcher.close(WAIT)
        plug.result(WAIT)
        for req, future in zip(requests, futures, strict=True):
            assert_same(future.result(WAIT), alone(reference, req))


def test_a_request_cancelled_while_queued_alone_leaves_the_model_serving(predictor, reference, rows):
    gate = Gate(predictor)
    batcher = Batcher(predictor)

    async def cancel_while_queued() -> None:
        task = asyncio.ensure_future(batcher.predict(request(rows.slice(1, 2))))
        while batcher.queued_rows < 2:
            await asyncio.sleep(0.001)
        task.cancel()  # a client that went away (or a server timeout) while the model was busy
        with pytest.raises(asyncio.CancelledError):
            await task

    later = request(rows.slice(3, 2))
    with ThreadPoolExecutor(2) as pool:
        plug = pool.submit(batcher.predict_now, request(rows.slice(0, 1)))
        assert gate.entered.wait(WAIT)
        asyncio.run(cancel_while_queued())
        gate.opened.set()
        plug.result(WAIT)
        assert_same(pool.submit(batcher.predict_now, later).result(WAIT), alone(reference, later))
    batcher.close(WAIT)


# -- waiting ---------------------------------------------------------------------------------------


def test_an_idle_model_runs_a_lone_request_at_once_whatever_max_delay(predictor, rows):
    clock, observer = FakeClock(100.0), Recorder()
    batcher = Batcher(predictor, max_delay_ms=60_000, observer=observer, clock=clock)

    async def main() -> None:
        await asyncio.wait_for(batcher.predict(request(rows.slice(0, 2))), 10)  # far below the 60 s it may wait
        clock.now = 200.0  # after a quiet spell longer than max_delay: nothing to wait for either
        await asyncio.wait_for(batcher.predict(request(rows.slice(2, 2))), 10)

    asyncio.run(main())
    batcher.close(WAIT)
    assert [b["queued_s"] for b in observer.batches] == [0.0, 0.0]


def test_while_requests_come_in_quick_succession_the_batcher_waits_for_the_next(predictor, reference, rows):
    clock, observer, gate = FakeClock(0.0), Recorder(), Gate(predictor)
    batcher = Batcher(predictor, max_delay_ms=10_000, observer=observer, clock=clock)
    requests = [request(rows.slice(i, 2)) for i in (2, 4, 6)]

    async def main() -> list:
        plug = asyncio.ensure_future(batcher.predict(request(rows.slice(0, 2))))
        await asyncio.to_thread(gate.entered.wait, WAIT)
        tasks = []
        for now, req in zip((1.0, 1.001), requests, strict=False):
            clock.now = now
            tasks.append(asyncio.ensure_future(batcher.predict(req)))
            await asyncio.sleep(0)
        gate.opened.set()
        await plug
        await asyncio.sleep(0.2)  # the model is free; it waits, since a request came 1 ms after the one before
        clock.now = 1.002
        tasks.append(asyncio.ensure_future(batcher.predict(requests[2])))
        await asyncio.sleep(0)
        clock.now = 5.0  # two gaps after the last, no other came: it runs, long before the 10 s of max_delay
        return await asyncio.gather(*tasks)

    answers = asyncio.run(main())
    batcher.close(WAIT)
    assert [b["requests"] for b in observer.batches] == [1, 3]
    assert observer.batches[1]["queued_s"] == pytest.approx(4.0)
    for req, answer in zip(requests, answers, strict=True):
        assert_same(answer, alone(reference, req))


# -- the property ----------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), max_batch_size=st.integers(1, 24))
def test_any_split_of_rows_into_requests_answers_what_one_predict_call_gives(rowwise_bundle, reference, rows, data,
                                                                             max_batch_size):
    sizes = data.draw(st.lists(st.integers(0, 9), min_size=1, max_size=8), label="sizes")
    total = sum(sizes)
    bad = data.draw(st.sets(st.integers(0, max(total - 1, 0)), max_size=3), label="bad rows") if total else set()
    table = pa.table(columns(rows.slice(0, total), changes={row: ("hue", np.nan) for row in bad}))
    requests = sizes_to_requests(table, sizes, rejects=True)
    batcher = Batcher(load(rowwise_bundle, device="cpu"), max_batch_size=max_batch_size)
    answers = send(batcher, requests)
    batcher.close(WAIT)
    rejected: list[pa.Table] = []
    expected = reference.predict(table, rejects=rejected.append)
    assert pa.concat_tables([a.table for a in answers]).equals(expected)
    shifted = [a.rejected.set_column(0, "row", pc.add(a.rejected.column("row"), int(start)))
               for a, start in zip(answers, np.cumsum([0, *sizes]), strict=False) if a.rejected is not None]
    assert_same(Answer(expected, pa.concat_tables(shifted) if shifted else None), Answer(expected, joined(rejected)))
