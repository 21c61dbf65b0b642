"""docs/images.md's Python blocks run as pasted, in order, in one namespace (torchvision imported the suite's way
first: see tests/vision.py)."""

from __future__ import annotations

import re
from pathlib import Path

from vision import import_torchvision

DOC = Path(__file__).parents[1] / "docs" / "images.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", flags=re.S | re.M)


def test_the_images_doc_blocks_run_in_order(tmp_path, monkeypatch, capsys):
    import_torchvision()
    monkeypatch.chdir(tmp_path)
    blocks = BLOCK.findall(DOC.read_text())
    assert len(blocks) >= 2
    namespace: dict = {}
    for code in blocks:
        exec(compile(code, str(DOC), "exec"), namespace)
    printed = capsys.readouterr().out
    assert "(8, 3, 28, 28)" in printed and "Resize(size=32" in printed
