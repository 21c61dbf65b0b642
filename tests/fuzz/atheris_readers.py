"""Coverage-guided fuzzing of the file readers with atheris (libFuzzer): the bytes reach pyarrow's C++ CSV and
JSON parsers, numpy's .npy reader and Parquet's footer through a whole file job, and torchpredict's own code is
instrumented so that libFuzzer keeps the inputs that take a new branch in it.

Each input's first byte picks the format (and gzip); the rest is the file. An input passes when the job predicts
or rejects every row, or refuses the file with a torchpredict error of one short line (`fuzzing.predicted_or_refused`);
anything else (another exception, a crash, a hang past -timeout) is a finding, written by libFuzzer as
`crash-*` / `timeout-*` under -artifact_prefix.

    python tests/fuzz/atheris_readers.py --seeds SEEDS_DIR       # writes the seed inputs, then exits
    python tests/fuzz/atheris_readers.py -runs=300 SEEDS_DIR     # libFuzzer's own options and corpus folders
"""

from __future__ import annotations

import gzip
import sys
import tempfile
from pathlib import Path

import atheris

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

with atheris.instrument_imports(include=["torchpredict"]):
    import torchpredict.io.readers
    import torchpredict.jobs.pipeline  # noqa: F401  (imported by the file job when it runs: instrumented now)
    from torchpredict.bundle import load

from fuzzing import CORPUS, corpus, predicted_or_refused  # noqa: E402

FORMATS = ("csv", "tsv", "jsonl", "parquet", "npy")
WINE = HERE.parent / "data" / "wine-v1"


def _format_byte(fmt: str, gzipped: bool = False) -> bytes:
    return bytes([FORMATS.index(fmt) * 2 + gzipped])


def write_seeds(folder: Path) -> int:
    """The readers' kept inputs and a real wine CSV, each behind the byte that picks its format."""
    folder.mkdir(parents=True, exist_ok=True)
    head = b"\n".join((WINE / "new_wines.csv").read_bytes().splitlines()[:6])
    seeds = {"wine.csv": _format_byte("csv") + head, "wine.csv.gz": _format_byte("csv", True) + gzip.compress(head)}
    for path in corpus("readers"):
        seeds[path.name] = _format_byte(path.suffix.lstrip(".")) + path.read_bytes()
    for name, data in seeds.items():
        (folder / name).write_bytes(data)
    return len(seeds)


def main() -> None:
    if sys.argv[1:2] == ["--seeds"]:
        print(f"{write_seeds(Path(sys.argv[2]))} seeds in {sys.argv[2]} (from {CORPUS / 'readers'})")
        return
    predictor = load(WINE / "wine.tpk", device="cpu", batch_size=16)
    scratch = Path(tempfile.mkdtemp(prefix="atheris-readers-"))

    def one_input(data: bytes) -> None:
        if not data:
            return
        fmt = FORMATS[(data[0] // 2) % len(FORMATS)]
        gzipped = bool(data[0] & 1) and fmt in ("csv", "tsv", "jsonl")
        path = scratch / f"in.{fmt}"
        path.write_bytes(gzip.compress(data[1:]) if gzipped else data[1:])
        predicted_or_refused(predictor, path, None)

    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
