"""The fast paths of validation and preprocessing (schema.plans, preprocessing.plans, the small-batch lookups of
the encoders, the small path of a few records without a table) give what the general column-by-column path gives:
the same tables, drift, rejected rows and model inputs to the bit, and the same errors (class and message), on
generated inputs good and bad."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import numpy as np
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from torchpredict.errors import OutOfRangeWarning, TorchPredictError
from torchpredict.preprocessing import OneHot, Preprocessor, Standardize, categorical
from torchpredict.preprocessing import plans as transform_plans
from torchpredict.schema import plans as validation_plans

WORDS = ("a", "b", "c", "d")
ODD_FLOATS = ("x", 1, True, None, math.nan, math.inf, -math.inf, 1e9, -0.0, 2**70)
ODD_STRINGS = ("zz", None, 3, 1.5, True, "")


@contextmanager
def general_path() -> Iterator[None]:
    """Every fast path off: the column-by-column validation, step-by-step transform, pyarrow lookups."""
    before = validation_plans.ENABLED, transform_plans.ENABLED, categorical.SMALL
    validation_plans.ENABLED = transform_plans.ENABLED = False
    categorical.SMALL = -1
    try:
        yield
    finally:
        validation_plans.ENABLED, transform_plans.ENABLED, categorical.SMALL = before


@st.composite
def fitted(draw: st.DrawFn) -> tuple[Preprocessor, pa.Table]:
    """A Preprocessor of Standardize (some float columns) and OneHot (the string ones) and its training rows."""
    n_rows = draw(st.integers(2, 10))
    n_floats, n_strings = draw(st.integers(0, 3)), draw(st.integers(0, 2))
    if not n_floats + n_strings:
        n_floats = 1
    number = st.floats(-1e3, 1e3, allow_nan=False, allow_subnormal=False)
    columns: dict[str, Any] = {}
    for i in range(n_floats):
        columns[f"f{i}"] = pa.array(draw(st.lists(number, min_size=n_rows, max_size=n_rows)), pa.float64())
    for i in range(n_strings):
        columns[f"s{i}"] = pa.array(draw(st.lists(st.sampled_from(WORDS[:3]), min_size=n_rows, max_size=n_rows)))
    passthrough = ["id"] if draw(st.booleans()) else []
    if passthrough:
        columns["id"] = pa.array(range(n_rows), pa.int64())
    table = pa.table(columns)
    floats = [n for n in columns if n.startswith("f")]
    strings = [n for n in columns if n.startswith("s")]
    steps: list[Any] = []
    standardized = [n for n in floats if draw(st.booleans())]
    if standardized:
        steps.append(Standardize(standardized))
    if strings:
        steps.append(OneHot(strings, handle_unknown=draw(st.sampled_from(["error", "ignore"]))))
    if draw(st.booleans()):
        steps.reverse()
    preprocessor = Preprocessor(steps, features=floats + strings, passthrough=passthrough).fit(table)
    return preprocessor, table


@st.composite
def inputs(draw: st.DrawFn, table: pa.Table) -> Any:
    """Some training rows, perhaps spoilt (odd values, a column missing or added), as records, one record or Arrow."""
    rows = table.to_pylist()
    chosen = draw(st.lists(st.sampled_from(rows), min_size=1, max_size=5))
    records = [dict(r) for r in chosen]
    for record in records:
        for name in list(record):
            if draw(st.integers(0, 5)) == 0:
                odd = ODD_STRINGS if name.startswith("s") else ODD_FLOATS
                record[name] = draw(st.sampled_from(odd))
    mutation = draw(st.sampled_from(["none", "none", "drop", "add"]))
    if mutation == "drop":
        dropped = draw(st.sampled_from(list(records[0])))
        records = [{k: v for k, v in r.items() if k != dropped} for r in records]
    elif mutation == "add":
        records = [{**r, "extra": 1.0} for r in records]
    form = draw(st.sampled_from(["records", "record", "arrow", "columns"]))
    if form == "record":
        return records[0]
    if form == "columns":  # lists of values, or numpy arrays where numpy reads them as one type
        columns = {name: [r[name] for r in records] for name in records[0]}
        for name, values in columns.items():
            if draw(st.booleans()):
                with suppress(ValueError, OverflowError):
                    columns[name] = np.array(values)
        return columns
    if form == "arrow":
        try:
            return pa.Table.from_pylist(records)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            return records
    return records


def outcome(preprocessor: Preprocessor, data: Any, on_error: str, keep: tuple[str, ...] = ()) -> tuple:
    """What validate and transform give, as the Predictor calls them."""
    schema = preprocessor.schema_
    try:
        validated = schema.validate(data, keep=keep, on_error=on_error,  # type: ignore[arg-type]
                                    row_check=preprocessor.check_rows, accepts=preprocessor.accepts_strings)
        x = preprocessor.transform(validated) if validated.num_rows else {}
    except TorchPredictError as exc:
        return ("error", type(exc), str(exc))
    return ("ok", validated, x)


def same_table(a: pa.Table, b: pa.Table) -> None:
    """Same schema (metadata included), chunks and values; repr tells NaN from null and -0.0 from 0.0."""
    assert a.schema == b.schema and a.schema.metadata == b.schema.metadata
    for x, y in zip(a.columns, b.columns, strict=True):
        assert [len(c) for c in x.chunks] == [len(c) for c in y.chunks]
        assert repr(x.to_pylist()) == repr(y.to_pylist())


def assert_same(fast: tuple, general: tuple) -> None:
    assert fast[0] == general[0], (fast, general)
    if fast[0] == "error":
        assert fast[1:] == general[1:]
        return
    a, b = fast[1], general[1]
    assert a.column_names == b.table.column_names and a.num_rows == b.table.num_rows
    for name in a.column_names:  # as assemble reads the kept ones: without building a table where there is none
        x, y = a.column(name), b.table.column(name).combine_chunks()
        assert x.type == y.type and repr(x.to_pylist()) == repr(y.to_pylist())
    same_table(a.table, b.table)
    assert a.drift.to_dict() == b.drift.to_dict()
    assert (a.rejected is None) == (b.rejected is None)
    if a.rejected is not None:
        same_table(a.rejected, b.rejected)
    assert list(fast[2]) == list(general[2])
    for name in fast[2]:
        x, y = fast[2][name], general[2][name]
        assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fast_and_general_paths_give_the_same_outputs_and_errors(data: st.DataObject) -> None:
    preprocessor, table = data.draw(fitted())
    given = data.draw(inputs(table))
    on_error = data.draw(st.sampled_from(["raise", "reject"]))
    keep = data.draw(st.sampled_from([(), (), ("extra",)]))
    fast = outcome(preprocessor, given, on_error, keep)
    with general_path():
        general = outcome(preprocessor, given, on_error, keep)
    assert_same(fast, general)


def test_the_fast_paths_are_taken_for_plain_inputs() -> None:
    """The property above is not vacuous: plain records and tables of the training types take both fast paths."""
    table = pa.table({"f0": [1.0, 2.0, 3.0], "s0": ["a", "b", "a"]})
    preprocessor = Preprocessor([Standardize(["f0"]), OneHot(["s0"])]).fit(table)
    assert preprocessor.plan is not None and preprocessor.plan.run(table) is not None
    schema = preprocessor.schema_
    assert schema.plan.read({"f0": 1.5, "s0": "b"}, validation_plans.RowProblems(collect=False)) is not None
    assert schema.plan.validate(table, (), False, 0, preprocessor.check_rows) is not None
    spoilt = pa.table({"f0": [1.0, math.nan, 3.0], "s0": ["a", "b", "a"]})
    assert schema.plan.validate(spoilt, (), False, 0, None) is None  # a NaN where none is allowed: the general path
    x = preprocessor.transform(table)["x"]
    with general_path():
        assert np.array_equal(preprocessor.transform(table)["x"], x)


def test_preprocessing_reuses_the_float_block_validation_read_and_only_a_fitting_one():
    table = pa.table({"f0": [1.0, 2.0, 3.0], "f1": [0.5, -1.0, 4.0], "s0": ["a", "b", "a"]})
    preprocessor = Preprocessor([Standardize(["f0", "f1"]), OneHot(["s0"])]).fit(table)
    validated = preprocessor.schema_.validate(table, row_check=preprocessor.check_rows)
    block = validated.floats[("f0", "f1")]
    assert block.shape == (3, 2) and block.tolist() == [[1.0, 0.5], [2.0, -1.0], [3.0, 4.0]]
    expected = preprocessor.transform(table)["x"]
    assert np.array_equal(preprocessor.transform(table, floats=validated.floats)["x"], expected)
    doubled = {("f0", "f1"): block * 2}  # the block is what the plan standardizes: it is used
    assert not np.array_equal(preprocessor.transform(table, floats=doubled)["x"], expected)
    short = {("f0", "f1"): block[:2]}  # not the table's rows: read from the table instead
    assert np.array_equal(preprocessor.transform(table, floats=short)["x"], expected)


def test_a_few_plain_records_take_the_small_path_without_a_table() -> None:
    table = pa.table({"f0": [1.0, 2.0, 3.0], "s0": ["a", "b", "a"], "id": [7, 8, 9]})
    preprocessor = Preprocessor([Standardize(["f0"]), OneHot(["s0"])], passthrough=["id"]).fit(table)
    schema = preprocessor.schema_
    records = [{"f0": 2.5, "s0": "b", "id": 10}, {"f0": -1.0, "s0": "a", "id": 11}]
    validated = schema.validate(records, row_check=preprocessor.check_rows, accepts=preprocessor.accepts_strings)
    assert validated.small is not None and validated.num_rows == 2 and validated.column("id").to_pylist() == [10, 11]
    assert validated.drift.columns["f0"].out_of_range == 1  # -1.0 is below the training range
    x = preprocessor.transform(validated)["x"]
    with general_path():
        general = schema.validate(records, row_check=preprocessor.check_rows, accepts=preprocessor.accepts_strings)
        assert general.small is None
        same_table(validated.table, general.table)  # built when first read: the table the general path makes
        assert np.array_equal(preprocessor.transform(general)["x"], x)
    records[0]["f0"] = 99.0  # the records changing afterwards changes nothing validated
    assert validated.table.column("f0").to_pylist() == [2.5, -1.0]


def test_the_small_path_leaves_to_the_others_what_it_does_not_take() -> None:
    table = pa.table({"f0": [1.0, 2.0, 3.0], "s0": ["a", "b", "a"]})
    preprocessor = Preprocessor([Standardize(["f0"]), OneHot(["s0"])]).fit(table)
    schema = preprocessor.schema_

    def small(data: Any, accepts: Any = preprocessor.accepts_strings) -> bool:
        """Whether data was validated without a table."""
        validated = schema.validate(data, on_error="reject", row_check=preprocessor.check_rows, accepts=accepts)
        return validated.small is not None and validated._table is None

    assert small({"f0": 1.0, "s0": "a"})
    assert not small({"f0": 1, "s0": "a"})  # an int in a float column: cast by the general path
    assert not small({"f0": 1.0, "s0": "zz"})  # an unseen category: counted (and refused) by the others
    assert not small({"f0": math.nan, "s0": "a"})  # a NaN where none is allowed: rejected with its reason
    assert not small({"f0": 1.0, "s0": "a"}, accepts=lambda strings: False)  # row_check may refuse a row
    assert not small([{"f0": 1.0, "s0": "a"}] * (validation_plans.SMALL + 1))  # many rows: Arrow reads faster
    assert not preprocessor.accepts_strings({"s0": ["a", "zz"]}) and preprocessor.accepts_strings({"s0": ["b"]})


def test_a_small_table_is_preprocessed_as_a_few_rows_and_row_check_asked_only_when_needed() -> None:
    table = pa.table({"f0": [1.0, 2.0, 3.0], "s0": ["a", "b", "a"]})
    preprocessor = Preprocessor([Standardize(["f0"]), OneHot(["s0"])]).fit(table)
    asked = []

    def row_check(rows: pa.Table, report: Any) -> None:
        asked.append(rows.num_rows)
        preprocessor.check_rows(rows, report)

    new = pa.table({"f0": [0.5, 2.5], "s0": ["b", "a"]})
    validated = preprocessor.schema_.validate(new, row_check=row_check, accepts=preprocessor.accepts_strings)
    assert validated.small is not None and validated.small.strings == {"s0": ["b", "a"]} and not asked
    x = preprocessor.transform(validated)["x"]
    with general_path():
        assert np.array_equal(preprocessor.transform(new)["x"], x)
    preprocessor.schema_.validate(new, row_check=row_check, accepts=lambda strings: False)
    assert asked == [2]  # accepts could not tell: row_check was asked


def test_a_dict_of_a_few_rows_columns_takes_the_small_path_as_arrays_or_lists() -> None:
    table = pa.table({"f0": [1.0, 2.0, 3.0], "f1": [0.5, 1.5, 2.5], "s0": ["a", "b", "a"], "id": [7, 8, 9]})
    preprocessor = Preprocessor([Standardize(["f0", "f1"]), OneHot(["s0"])], passthrough=["id"]).fit(table)
    schema = preprocessor.schema_
    for columns in ({"f0": np.array([2.5, 1.0]), "f1": np.array([1.0, 9.0]), "s0": ["b", "a"], "id": np.array([1, 2])},
                    {"f0": [2.5, 1.0], "f1": [1.0, 9.0], "s0": ["b", "a"], "id": [1, 2]}):
        validated = schema.validate(columns, row_check=preprocessor.check_rows, accepts=preprocessor.accepts_strings)
        assert validated.small is not None and validated._table is None  # no table built
        assert validated.drift.columns["f1"].out_of_range == 1 and validated.column("id").to_pylist() == [1, 2]
        x = preprocessor.transform(validated)["x"]
        with general_path():
            general = schema.validate(columns, row_check=preprocessor.check_rows, accepts=preprocessor.accepts_strings)
            same_table(validated.table, general.table)
            assert np.array_equal(preprocessor.transform(general)["x"], x)
    mixed = {"f0": np.array([2.5]), "f1": [1.0], "s0": ["b"], "id": [1]}  # a block of an array and a list: read
    assert schema.validate(mixed, row_check=preprocessor.check_rows, accepts=preprocessor.accepts_strings)._table \
        is not None


def test_predict_gives_the_same_on_the_small_paths_as_on_the_general_one(tmp_path: Any) -> None:
    """Through the Predictor's front door: a few rows as records, one record, columns (arrays or lists) and a table,
    kept columns, drift, and rejected rows, each predicted alike with every fast path on and off."""
    import torch

    from torchpredict.bundle import load, save
    from torchpredict.heads.classification import MulticlassClassification

    rng = np.random.default_rng(0)
    train = pa.table({"f0": rng.normal(size=200), "f1": rng.normal(3, 2, size=200),
                      "s0": rng.choice(["a", "b", "c"], size=200), "id": np.arange(200)})
    preprocessor = Preprocessor([Standardize(["f0", "f1"]), OneHot(["s0"])], passthrough=["id"]).fit(train)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).eval()
    head = MulticlassClassification(target="label", labels=["x", "y", "z"], top_k=2)
    predictor = load(save(tmp_path / "small.tpk", model, preprocessor=preprocessor, heads=head,
                          examples=train.slice(0, 8)), device="cpu")
    rows = [{"f0": 0.5, "f1": 2.0, "s0": "b", "id": 7, "note": "p"}, {"f0": 9.0, "f1": 1.0, "s0": "a", "id": 8,
                                                                       "note": "q"}]
    columns = {name: [r[name] for r in rows] for name in rows[0]}
    arrays = {name: np.array(values) for name, values in columns.items()}
    bad = [*rows, {"f0": 1.0, "f1": 2.0, "s0": "zz", "id": 9, "note": "r"}]  # an unknown category: rejected
    cases = [(rows, {}), (rows[0], {}), (columns, {}), (arrays, {}), (pa.Table.from_pylist(rows), {})]
    outcomes = []
    for data, _ in cases:
        for options in ({"keep": ["note"]}, {"keep": ["note"], "rejects": []}):
            outcomes.append((data, options))
    outcomes.append((bad, {"keep": ["note"], "rejects": []}))

    def run(data: Any, options: dict) -> tuple:
        rejected: list[pa.Table] = []
        kwargs = {"keep": options["keep"]} | ({"rejects": rejected.append} if "rejects" in options else {})
        with warnings.catch_warnings(record=True) as said:  # 9.0 is beyond f0's training range: drift, said alike
            warnings.simplefilter("always")
            table = predictor.predict(data, **kwargs)
        return table, [r.to_pylist() for r in rejected], [(w.category, str(w.message)) for w in said]

    for data, options in outcomes:
        fast = run(data, options)
        with general_path():
            general = run(data, options)
        same_table(fast[0], general[0])
        assert fast[1:] == general[1:]
    for data in (rows, rows[0], columns):  # these took the small path (no table), so the comparison is not vacuous
        assert predictor.validate(data, keep=["note"])._table is None
    _, rejected, said = run(bad, {"keep": ["note"], "rejects": []})
    assert len(rejected[0]) == 1 and "unknown category 'zz'" in rejected[0][0]["reason"]
    assert [category for category, _ in said] == [OutOfRangeWarning]
