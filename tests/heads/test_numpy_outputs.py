"""The heads read numpy outputs (ONNX Runtime's) as they read tensors: the same labels, probabilities within a
float32 step (numpy's exp, not torch's), and the same bits for a numpy output whether or not torch is loaded."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest
import torch

from torchpredict.heads.classification import BinaryClassification, MulticlassClassification, MultilabelClassification
from torchpredict.heads.regression import RawOutput, Regression

HEADS = {
    "binary": (BinaryClassification("churn", labels=["stay", "leave"]), (64,)),
    "multiclass": (MulticlassClassification("kind", labels=["a", "b", "c", "d"], top_k=2), (64, 4)),
    "multilabel": (MultilabelClassification("tags", labels=["x", "y", "z"], threshold=[0.3, 0.5, 0.7]), (64, 3)),
    "regression": (Regression("price", scale=True).fit(np.linspace(1.0, 9.0, 50)), (64,)),
    "raw": (RawOutput("embedding", shape=(5,)), (64, 5)),
}

# Without torch: block its import, interpret the same logits, print the columns as JSON.
WITHOUT_TORCH = """
import json, sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError("No module named 'torch'")
sys.meta_path.insert(0, NoTorch())
import numpy as np
from torchpredict.heads.registry import head_from_dict
from torchpredict.golden import GoldenExamples
cases = json.loads(sys.stdin.read())
out = {}
for name, (head, values, dtype) in cases.items():
    columns = head_from_dict(head).interpret(np.array(values, dtype=dtype))
    out[name] = {key: column.to_pylist() for key, column in columns.items()}
assert "torch" not in sys.modules
print(json.dumps(out))
"""


def _logits(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = (rng.normal(size=shape) * 4).astype(np.float32)
    values.reshape(-1)[::7] = values.reshape(-1)[3]  # ties
    return values


@pytest.mark.parametrize("name", list(HEADS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_a_numpy_output_reads_as_the_same_tensor(name, dtype):
    head, shape = HEADS[name]
    values = _logits(shape).astype(dtype)
    if len(values) > 5:
        values.reshape(len(values), -1)[5, 0] = np.nan  # a non-finite row
    from_tensor = head.interpret(torch.from_numpy(values.copy()))
    from_array = head.interpret(values)
    assert list(from_array) == list(from_tensor)
    for key, column in from_tensor.items():
        assert from_array[key].type == column.type, key
        if column.type in (pa.float32(), pa.float64()):  # NaN where the row's scores were not finite
            np.testing.assert_allclose(from_array[key].to_numpy(), column.to_numpy(), rtol=3e-7, atol=1e-7,
                                       err_msg=key)
        else:
            assert from_array[key].to_pylist() == column.to_pylist(), key


def test_without_torch_a_numpy_output_reads_to_the_same_bits():
    cases = {name: (head.to_dict(), _logits(shape).tolist(), "float32") for name, (head, shape) in HEADS.items()}
    result = subprocess.run([sys.executable, "-c", WITHOUT_TORCH], input=json.dumps(cases), capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    for name, (head, shape) in HEADS.items():
        expected = head.interpret(_logits(shape))  # here, with torch loaded
        assert got[name] == {key: column.to_pylist() for key, column in expected.items()}, name
