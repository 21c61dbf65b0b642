"""Pieces of whole model batches, read by the local engine's reader: tested on the read task itself, no Ray runtime."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from torchpredict.bundle import load
from torchpredict.io.writers import write_table
from torchpredict.jobs.plan import Plan
from torchpredict.ray.reading import PieceSource, chunks_of, piece_rows_for

WINE = Path(__file__).parents[1] / "data" / "wine-v1"


@pytest.fixture(scope="module")
def predictor():
    return load(WINE / "wine.tpk", device="cpu", batch_size=8)


def _pieces(predictor, sources: list[str], rows: int, **plan) -> list[dict]:
    plan = Plan.make(predictor, sources, None, ["id"], None, plan.get("rejects"), 1 << 62, 64,
                     plan.get("block_bytes", 1 << 20))
    tasks = PieceSource(plan, rows).get_read_tasks(parallelism=8)
    assert len(tasks) == len(sources)  # one read task per file
    return [row for task in tasks for block in task() for row in block.to_pylist()]


def test_pieces_hold_whole_batches_counted_from_each_files_first_row(predictor, tmp_path):
    assert piece_rows_for(8, 20) == 24 and piece_rows_for(8, None) == 65_536 and piece_rows_for(1000, 1) == 1000
    table = pa.concat_tables([pacsv.read_csv(WINE / "new_wines.csv")] * 3)  # 120 rows
    write_table(table.slice(0, 100), tmp_path / "a.csv")
    write_table(table.slice(0, 0), tmp_path / "empty.csv")
    pieces = _pieces(predictor, [str(tmp_path / "a.csv"), str(tmp_path / "empty.csv")], 24, block_bytes=700)
    assert [(p["file"], p["first_row"], p["rows"]) for p in pieces] == [
        (0, 0, 24), (0, 24, 24), (0, 48, 24), (0, 72, 24), (0, 96, 4), (1, 0, 0)]
    chunks = [chunks_of(p["chunks"]) for p in pieces]
    assert len(chunks[0]) > 1  # small CSV blocks: a piece is several of the reader's chunks, in order
    rows = [r for piece in chunks[:5] for c in piece for r in c.data.to_pylist()]
    assert rows == table.slice(0, 100).to_pylist()
    assert chunks[1][0].first_row == 24 and chunks[5][0].rows == 0  # the empty file: its columns


def test_a_chunk_arrow_cannot_type_travels_as_the_readers_python_values(predictor, tmp_path):
    lines = (WINE / "new_wines.csv").read_text().splitlines()
    cells = lines[3].split(",")
    cells[1] = "strong"
    lines[3] = ",".join(cells)
    (tmp_path / "bad.csv").write_text("\n".join(lines) + "\n")
    [piece] = _pieces(predictor, [str(tmp_path / "bad.csv")], 64, rejects="r.csv")
    [chunk] = chunks_of(piece["chunks"])
    assert not isinstance(chunk.data, pa.Table) and chunk.rows == 40 and piece["rows"] == 40
    validated = predictor.validate(chunk.data, keep=["id"], first_row=chunk.first_row, on_error="reject")
    assert validated.rejected.column("row").to_pylist() == [2] and validated.num_rows == 39
