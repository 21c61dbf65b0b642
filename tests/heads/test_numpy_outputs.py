"""The heads read numpy outputs (ONNX Runtime's) as they read tensors, and never need torch to do it.

A tensor reads to the bits torch computed when the heads were written in torch (torch's sigmoid and softmax
kernels, torch.sort's stable descending order, the first maximum). A numpy array holding the same values reads to
the same labels and refusals, and to probabilities within a float32 step (numpy's exp, not torch's): the same bits
whether or not torch is loaded.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from torchpredict.heads.base import Head, ModelBatch
from torchpredict.heads.classification import BinaryClassification, MulticlassClassification, MultilabelClassification
from torchpredict.heads.regression import RawOutput, Regression
from torchpredict.heads.sequences import TokenClassification

PROPERTIES = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
VOCABULARY = ("<pad>", "<bos>", "<eos>", "<unk>", "a", "b", "c")
SCALED = np.stack([np.linspace(1.0, 9.0, 50), np.linspace(-3.0, 2.0, 50) ** 2], axis=1)

# Each head, and the shape of one row of the output it reads.
HEADS: dict[str, tuple[Head, tuple[int, ...]]] = {
    "binary": (BinaryClassification("churn", labels=["stay", "leave"]), ()),
    "binary [n, 1], threshold": (BinaryClassification("churn", threshold=0.3), (1,)),
    "binary probabilities": (BinaryClassification("churn", from_logits=False, threshold=0.7), ()),
    "multiclass top_k": (MulticlassClassification("kind", labels=["a", "b", "c", "d"], top_k=4), (4,)),
    "multiclass probabilities": (MulticlassClassification("kind", labels=[3, 1, 2], top_k=2, probabilities=False,
                                                          from_logits=False), (3,)),
    "multilabel": (MultilabelClassification("tags", labels=["x", "y", "z"], threshold=[0.3, 0.5, 0.7]), (3,)),
    "multilabel probabilities": (MultilabelClassification("tags", labels=[0, 1], from_logits=False), (2,)),
    "regression scaled": (Regression("price", scale=True).fit(SCALED[:, 0]), ()),
    "regression two targets": (Regression(["a", "b"], scale=True).fit(SCALED), (2,)),
    "raw [n], fitted": (RawOutput("score").fit(np.zeros(3)), ()),
    "raw [n, k]": (RawOutput("embedding", shape=(5,)), (5,)),
    "token classification": (TokenClassification("tag", labels=["x", "y", "z"], vocabulary=VOCABULARY), (6, 3)),
    "token probabilities": (TokenClassification("tag", labels=[7, 8], from_logits=False), (6, 2)),
}
DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
SPECIAL = (0.0, -0.0, 1.0, -1.0, 0.5, 30.0, -30.0, 1e4, -1e4, math.nan, math.inf, -math.inf)


@st.composite
def outputs(draw: st.DrawFn, row_shape: tuple[int, ...]) -> torch.Tensor:
    """A model output of 0..12 rows: logits with ties, large ones, NaN and infinities, in any float dtype, laid
    out contiguously, every other row of a larger tensor, or transposed."""
    n, size = draw(st.integers(0, 12)), math.prod(row_shape)
    value = st.one_of(st.sampled_from(SPECIAL), st.floats(-60, 60))
    values = draw(st.lists(value, min_size=n * size, max_size=n * size))
    tensor = torch.tensor(values, dtype=torch.float64).reshape(n, *row_shape).to(draw(st.sampled_from(DTYPES)))
    layout = draw(st.sampled_from(["contiguous", "strided", "transposed"]))
    if layout == "strided":
        return torch.stack([tensor, torch.zeros_like(tensor)], dim=1)[:, 0]
    return tensor.T.contiguous().T if layout == "transposed" and tensor.ndim == 2 else tensor


def _ids(rows: int, length: int, seed: int = 0) -> torch.Tensor:
    """Source ids for token classification: pad, bos, eos and tokens of VOCABULARY in every mix."""
    return torch.from_numpy(np.random.default_rng(seed).integers(0, len(VOCABULARY), size=(rows, length)))


def read(head: Head, output: Any, ids: Any) -> dict[str, pa.Array]:
    return head.interpret(output, ids=ids) if isinstance(head, TokenClassification) else head.interpret(output)


# --- what the heads computed with torch ------------------------------------------------------------------


def _labels(labels: tuple, indices: torch.Tensor, finite: list[bool]) -> list:
    return [labels[i] if ok else None for i, ok in zip(indices.tolist(), finite, strict=True)]


def torch_columns(head: Head, t: torch.Tensor, ids: torch.Tensor) -> dict[str, Any]:
    """The columns as the heads computed them in torch: a tensor per float column, a list per other one."""
    finite = torch.isfinite(t.reshape(len(t), math.prod(t.shape[1:]))).all(dim=1).tolist()
    if isinstance(head, BinaryClassification):
        t = t[:, 0] if t.ndim == 2 else t
        p = torch.sigmoid(t.float()) if head.from_logits else t.float()
        return {head.target: _labels(head.classes, (p > head.threshold).long(), finite),
                f"{head.target}_probability": p}
    if isinstance(head, MulticlassClassification):
        p = torch.softmax(t.float(), dim=1) if head.from_logits else t.float()
        best = torch.argmax(t.double(), dim=1)
        columns = {head.target: _labels(head.classes, best, finite),
                   f"{head.target}_probability": p.gather(1, best[:, None])[:, 0]}
        if head.probabilities:
            columns |= {f"{head.target}_probability_{label}": p[:, j] for j, label in enumerate(head.classes)}
        order = torch.sort(t.double(), dim=1, descending=True, stable=True).indices
        for i in range(head.top_k):
            columns[f"{head.target}_top{i + 1}"] = _labels(head.classes, order[:, i], finite)
            columns[f"{head.target}_top{i + 1}_probability"] = p.gather(1, order[:, i:i + 1])[:, 0]
        return columns
    if isinstance(head, MultilabelClassification):
        p = torch.sigmoid(t.float()) if head.from_logits else t.float()
        on = p > torch.tensor(head.threshold, dtype=torch.float32)
        columns = {f"{head.target}_{label}": [v if ok else None for v, ok in zip(flags, finite, strict=True)]
                   for label, flags in zip(head.labels, on.T.tolist(), strict=True)}
        return columns | {f"{head.target}_probability_{label}": p[:, j] for j, label in enumerate(head.labels)}
    if isinstance(head, Regression):
        values = t.double()[:, None] if t.ndim == 1 else t.double()
        if head.scale:
            values = values * torch.tensor(head.std_, dtype=values.dtype) + torch.tensor(head.mean_, dtype=values.dtype)
        return {name: values.float()[:, j] for j, name in enumerate(head.targets)}
    if isinstance(head, RawOutput):
        return {head.target: t.float()} if t.ndim == 1 else {f"{head.target}_{j}": t.float()[:, j]
                                                             for j in range(t.shape[1])}
    assert isinstance(head, TokenClassification)
    p = torch.softmax(t.float(), dim=-1) if head.from_logits else t.float()
    chosen, best = p.max(dim=-1)
    mask = ids >= 3
    columns = {head.target: [[head.labels[i] for i in best[r][mask[r]].tolist()] for r in range(len(t))],
               f"{head.target}_probability": chosen[mask]}
    if head.vocabulary is not None:
        columns[f"{head.target}_tokens"] = [[VOCABULARY[i] for i in ids[r][mask[r]].tolist()] for r in range(len(t))]
    return columns


def torch_refusals(head: Head, t: torch.Tensor) -> list | None:
    """Why each row is refused, as the heads worded it from a tensor: the first non-finite value of the row."""
    rows = t.reshape(len(t), math.prod(t.shape[1:])).float()
    finite = torch.isfinite(rows)
    if not head.finite_scores or finite.all():
        return None
    return [None if finite[r].all() else f"model output for head {head.name!r} is not finite "
            f"({rows[r][~finite[r]][0].item()}) for this row" for r in range(len(t))]


def bits(values: np.ndarray) -> np.ndarray:
    """float32 values as their bits, every NaN as one (numpy's float16 -> float32 cast drops a NaN's payload,
    torch's keeps it: no format the predictions are written in shows it)."""
    return np.where(np.isnan(values), np.uint32(0x7FC00000), values.view(np.uint32))


def float_values(column: pa.Array) -> np.ndarray:
    """A float32 column's values (a list column's flattened) as their bits."""
    values = column.flatten() if pa.types.is_list(column.type) else column
    assert values.type == pa.float32()
    return bits(values.to_numpy(zero_copy_only=False))


@pytest.mark.parametrize("name", list(HEADS))
@PROPERTIES
@given(data=st.data())
def test_a_tensor_reads_to_the_bits_torch_computed(name: str, data: st.DataObject):
    head, row_shape = HEADS[name]
    tensor = data.draw(outputs(row_shape))
    ids = _ids(len(tensor), row_shape[0]) if isinstance(head, TokenClassification) else None
    got, expected = read(head, tensor, ids), torch_columns(head, tensor, ids)
    assert list(got) == list(expected) == head.column_names()
    for key, want in expected.items():
        if isinstance(want, torch.Tensor):
            np.testing.assert_array_equal(float_values(got[key]), bits(want.numpy()), err_msg=key)
        else:
            assert got[key].to_pylist() == want, key
    assert _reasons(head, tensor) == torch_refusals(head, tensor)


# --- numpy outputs ---------------------------------------------------------------------------------------


def _floats(column: pa.Array) -> bool:
    return column.type == pa.float32() or (pa.types.is_list(column.type) and column.type.value_type == pa.float32())


def _values(column: pa.Array) -> np.ndarray:
    return (column.flatten() if pa.types.is_list(column.type) else column).to_numpy(zero_copy_only=False)


def _same_rows(a: pa.Array, b: pa.Array) -> np.ndarray:
    """Per row, whether two float32 columns (or list columns of them) hold the same bits."""
    if not pa.types.is_list(a.type):
        return float_values(a) == float_values(b)
    held = [[bits(np.array(row, np.float32)).tolist() for row in column.to_pylist()] for column in (a, b)]
    return np.array([x == y for x, y in zip(*held, strict=True)], bool)


def assert_same(got: pa.Array, want: pa.Array, key: str) -> None:
    """Same type and values, floats to the bit."""
    assert got.type == want.type, key
    if not _floats(want):
        assert got.to_pylist() == want.to_pylist(), key
        return
    np.testing.assert_array_equal(float_values(got), float_values(want), err_msg=key)
    if pa.types.is_list(want.type):
        assert got.value_lengths().equals(want.value_lengths()), key


def _from_probabilities(head: Head, key: str) -> bool:
    """Whether a column is worked out from sigmoid or softmax (numpy's exp, for a numpy output)."""
    if not getattr(head, "from_logits", False) or key.endswith("_tokens"):
        return False
    return "probability" in key or head.type in ("binary", "multilabel", "token_classification")


def _reasons(head: Head, output: Any) -> list | None:
    refused = head.refused(ModelBatch(output, {}))
    return None if refused is None else refused.to_pylist()


@pytest.mark.parametrize("name", list(HEADS))
@PROPERTIES
@given(data=st.data())
def test_a_numpy_output_reads_as_the_same_tensor(name: str, data: st.DataObject):
    """The same labels, refusals and scores to the bit; probabilities within a float32 step, and what a
    threshold or an argmax makes of them the same in every row where the probabilities are."""
    head, row_shape = HEADS[name]
    tensor = data.draw(outputs(row_shape))
    array = tensor.float().numpy() if tensor.dtype == torch.bfloat16 else tensor.numpy()  # numpy has no bfloat16
    ids = _ids(len(tensor), row_shape[0]) if isinstance(head, TokenClassification) else None
    from_tensor, from_array = read(head, tensor, ids), read(head, array, None if ids is None else ids.numpy())
    assert list(from_array) == list(from_tensor)
    probabilities = [key for key, column in from_tensor.items() if _from_probabilities(head, key) and _floats(column)]
    same = np.ones(len(tensor), bool)
    for key in probabilities:
        same &= _same_rows(from_array[key], from_tensor[key])
        np.testing.assert_allclose(_values(from_array[key]), _values(from_tensor[key]), rtol=3e-7, atol=1e-7,
                                   err_msg=key)
    for key, column in from_tensor.items():
        if not _from_probabilities(head, key):
            assert_same(from_array[key], column, key)
        elif key not in probabilities:
            assert_same(from_array[key].filter(pa.array(same)), column.filter(pa.array(same)), key)
    assert _reasons(head, array) == _reasons(head, tensor)


@pytest.mark.parametrize("scores", [torch.tensor, np.array])
def test_top_k_orders_nan_first_and_ties_in_label_order_as_torch_sort(scores):
    """A NaN outranks every number (so top1 is the argmax, the first NaN), equal scores keep label order."""
    head = MulticlassClassification("y", labels=["a", "b", "c", "d"], top_k=4, from_logits=False)
    values = [[0.2, math.nan, 0.5, math.nan], [math.inf, math.nan, -math.inf, 1.0], [1.0, 1.0, math.inf, math.inf],
              [-0.0, 0.0, -0.0, 0.0]]
    columns = head.interpret(scores(values))
    assert [columns[f"y_top{i}_probability"].to_pylist()[2:] for i in range(1, 5)] == \
        [[math.inf, -0.0], [math.inf, 0.0], [1.0, -0.0], [1.0, 0.0]]
    top = [[columns[f"y_top{i}_probability"][row].as_py() for i in range(1, 5)] for row in (0, 1)]
    assert [[repr(v) for v in row] for row in top] == [["nan", "nan", "0.5", "0.20000000298023224"],
                                                       ["nan", "inf", "1.0", "-inf"]]
    assert [columns[f"y_top{i}"].to_pylist() for i in range(1, 5)] == [[None, None, None, label] for label in "abcd"]
    assert columns["y_probability"].to_pylist()[2:] == [math.inf, -0.0]


# --- without torch ---------------------------------------------------------------------------------------

# Block torch's import, read each head's output (a list of values, its dtype, the source ids), record golden examples
# from numpy outputs and read them back; print the columns as JSON.
WITHOUT_TORCH = """
import json, sys, tempfile
from pathlib import Path
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError("No module named 'torch'")
sys.meta_path.insert(0, NoTorch())
import numpy as np
import pyarrow as pa
import torchpredict.heads.classification, torchpredict.heads.regression, torchpredict.heads.sequences
from torchpredict.golden import GoldenExamples
from torchpredict.heads.base import ModelBatch
from torchpredict.heads.registry import head_from_dict
cases = json.loads(sys.stdin.read())
out = {}
for name, (head, values, dtype, ids) in cases.items():
    head, output = head_from_dict(head), np.array(values, dtype=dtype)
    columns = head.interpret(output, ids=np.array(ids)) if ids is not None else head.interpret(output)
    refused = head.refused(ModelBatch(output, {}))
    out[name] = {key: column.to_pylist() for key, column in columns.items()}
    out[name]["refused"] = None if refused is None else refused.to_pylist()
raw = ({"logits": np.array(cases["multiclass top_k"][1], np.float32)}, np.arange(9))
with tempfile.TemporaryDirectory() as directory:
    recorded = GoldenExamples.record(pa.table({"x": np.arange(9.0)}), raw, {"y": pa.array(range(9))})
    entry = recorded.write(Path(directory))
    golden = GoldenExamples.read(Path(directory), entry)
assert golden.compare(raw).passed and not golden.compare(({"logits": raw[0]["logits"] + 1}, raw[1])).passed
assert "torch" not in sys.modules
print(json.dumps(out))
"""


def test_without_torch_a_numpy_output_reads_to_the_same_bits():
    cases, expected = {}, {}
    for name, (head, row_shape) in HEADS.items():
        values = np.random.default_rng(0).normal(size=(9, *row_shape)).astype(np.float32) * 4  # JSON holds float32s
        values.reshape(9, -1)[3, 0] = np.nan
        ids = _ids(9, row_shape[0]).numpy() if isinstance(head, TokenClassification) else None
        cases[name] = (head.to_dict(), values.tolist(), "float32", None if ids is None else ids.tolist())
        columns = read(head, values, ids)  # here, with torch loaded
        expected[name] = {key: column.to_pylist() for key, column in columns.items()} | {
            "refused": _reasons(head, values)}
    result = subprocess.run([sys.executable, "-c", WITHOUT_TORCH], input=json.dumps(cases), capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == json.dumps(expected)  # as text: NaN reads back as a NaN that equals no other
