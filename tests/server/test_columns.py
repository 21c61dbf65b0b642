"""Request columns in blocks: a Mapping like any request's columns, joined a block at a time only where joining
cannot change what Arrow reads."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from torchpredict.server import oip
from torchpredict.server.columns import BlockColumns, join, layout

NAMES = ("a", "city", "b", "n")
GROUPS = ("FP64", "BYTES", "FP64", "INT64")
BLOCKED = frozenset({"FP64", "INT64"})


def columns(a: list[float], city: list[str | None], b: list[float], n: list[int]) -> BlockColumns:
    where = layout(NAMES, GROUPS, BLOCKED)
    return BlockColumns(where, [np.array([a, b], dtype=np.float64), np.array([n], dtype=np.int64)], [city])


def test_a_layout_is_shared_by_requests_read_alike_and_places_every_column():
    where = layout(NAMES, GROUPS, BLOCKED)
    assert layout(NAMES, GROUPS, BLOCKED) is where  # one object: requests of it join by identity
    assert where.blocks == ((0, 2), (3,)) and where.others == (1,)
    assert where.where == {"a": (0, 0), "b": (0, 1), "n": (1, 0), "city": (-1, 0)}


def test_block_columns_are_a_mapping_of_one_dimensional_columns_in_request_order():
    found = columns([1.5, 2.0], ["oslo", "rome"], [3.0, 4.0], [7, 8])
    assert list(found) == list(NAMES) and len(found) == 4
    assert found["b"].tolist() == [3.0, 4.0] and found["b"].ndim == 1
    assert found["n"].dtype == np.int64 and found["city"] == ["oslo", "rome"]
    assert pa.table(dict(found)).column("a").to_pylist() == [1.5, 2.0]


def test_join_gives_each_column_its_requests_values_one_after_another():
    parts = [columns([1.0], ["oslo"], [2.0], [3]), columns([4.0, 5.0], ["rome", "bonn"], [6.0, 7.0], [8, 9])]
    joined = join(parts, [1, 2])
    assert joined is not None and list(joined) == list(NAMES)
    assert joined["a"].tolist() == [1.0, 4.0, 5.0] and joined["b"].tolist() == [2.0, 6.0, 7.0]
    assert joined["n"].tolist() == [3, 8, 9] and joined["city"] == ["oslo", "rome", "bonn"]


def test_join_refuses_what_could_read_otherwise_joined_than_alone():
    good = columns([1.0], ["oslo"], [2.0], [3])
    assert join([good, columns([1.0], [None], [2.0], [3])], [1, 1]) is None  # [None] alone reads as untyped nulls
    assert join([good, good], [1, 2]) is None  # a block that does not hold its request's rows
    other = BlockColumns(layout(NAMES, GROUPS, frozenset({"FP64"})), [np.array([[1.0], [2.0]])], ["x", [3]])
    assert join([good, other], [1, 1]) is None  # another layout
    floats = BlockColumns(good.layout, [np.array([[1.0], [2.0]]), np.array([[3.0]])], [["oslo"]])
    assert join([good, floats], [1, 1]) is None  # a block of another dtype
    assert join([good, BlockColumns(good.layout, good.blocks, ["oslo"])], [1, 1]) is None  # not a list


def test_the_codec_reads_json_tensors_into_blocks_by_datatype():
    document = {"inputs": [{"name": "price", "datatype": "FP64", "shape": [2], "data": [1.5, 2]},
                           {"name": "city", "datatype": "BYTES", "shape": [2, 1], "data": ["oslo", None]},
                           {"name": "rooms", "datatype": "INT32", "shape": [2], "data": [3, 4]},
                           {"name": "area", "datatype": "FP64", "shape": [2], "data": [50, 60.5]}]}
    request = oip.parse_request(json.dumps(document).encode())
    found = request.inputs.columns
    assert isinstance(found, BlockColumns)
    assert [block.dtype for block in found.blocks] == [np.float64, np.int32]
    assert found.layout.blocks == ((0, 3), (2,)) and found["area"].tolist() == [50.0, 60.5]
    assert [t.name for t in request.inputs] == ["price", "city", "rooms", "area"]
    assert request.inputs[1].values == ["oslo", None]
