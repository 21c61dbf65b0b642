"""The per-piece work every engine shares: batches counted from each file's first row, whatever its neighbours."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from torchpredict.bundle import load
from torchpredict.io.readers import read_table
from torchpredict.io.writers import write_table

WINE = Path(__file__).parents[1] / "data" / "wine-v1"


def test_no_model_batch_spans_two_files_so_each_file_predicts_as_it_does_alone(tmp_path):
    predictor = load(WINE / "wine.tpk", device="cpu", batch_size=4)
    table = read_table(WINE / "new_wines.csv")
    names = []
    for i, (start, rows) in enumerate(((0, 5), (5, 6))):
        names.append(tmp_path / f"in{i}.csv")
        write_table(table.slice(start, rows), names[-1])
    sizes = []
    infer = predictor.infer
    predictor.infer = lambda inputs, **kw: (sizes.append(len(next(iter(inputs.values())))), infer(inputs, **kw))[1]
    predictor.predict_file([str(n) for n in names], tmp_path / "out.parquet", keep=["id"])
    assert sizes == [4, 1, 4, 2]  # not [4, 4, 3]: the second file's batches start at its own first row
    predictor.infer = infer
    alone = pa.concat_tables([predictor.predict(read_table(n), keep=["id"]) for n in names])
    assert read_table(tmp_path / "out.parquet").to_pylist() == alone.to_pylist()
