"""The digits demo: scikit-learn's handwritten digits written as PNG files, a small CNN trained on them with its
image steps fitted at training time, one bundle, and a folder of new PNGs predicted from it.

The image steps (decode to grayscale, resize to 16x16, rescale, normalise with the training images' own mean
and std) are saved in the bundle, so that prediction decodes and scales every file as training did.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from torchpredict.bundle.loading import load
from torchpredict.bundle.saving import save
from torchpredict.errors import TorchPredictError
from torchpredict.heads.classification import MulticlassClassification
from torchpredict.io.readers import read_table
from torchpredict.preprocessing import Decode, ImageEncode, Normalize, Preprocessor, Rescale, Resize

__all__ = ["digits_cnn", "run_digits_demo", "train_digits", "write_digits"]

HELD_OUT = 360
SIZE = 16  # the images are resized from 8x8 to this


def write_digits(folder: Path, seed: int = 0) -> tuple[list[str], list[str], list[str], list[str]]:
    """Write scikit-learn's digits as 8x8 grayscale PNGs: folder/train/<label>/<n>.png and folder/new/<n>.png;
    returns (train paths, their labels, new paths, their labels)."""
    try:
        from PIL import Image
        from sklearn.datasets import load_digits
    except ImportError:
        raise TorchPredictError("the digits demo uses scikit-learn's digits and Pillow: pip install "
                                "'torchpredict[sklearn,images]'") from None
    digits = load_digits()
    pixels = np.round(digits.images * (255 / 16)).astype(np.uint8)
    order = np.random.default_rng(seed).permutation(len(pixels))
    paths: dict[str, list[str]] = {"train": [], "new": []}
    labels: dict[str, list[str]] = {"train": [], "new": []}
    for rank, i in enumerate(order):
        part = "new" if rank < HELD_OUT else "train"
        label = str(digits.target[i])
        where = folder / "new" / f"{i:04d}.png" if part == "new" else folder / "train" / label / f"{i:04d}.png"
        where.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels[i], mode="L").save(where)
        paths[part].append(str(where))
        labels[part].append(label)
    new = sorted(range(len(paths["new"])), key=lambda k: paths["new"][k])  # the order a folder is read in
    return (paths["train"], labels["train"], [paths["new"][k] for k in new], [labels["new"][k] for k in new])


def digits_cnn(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(32 * (SIZE // 4) ** 2, 10))


def train_digits(folder: Path, seed: int = 0, epochs: int = 12) -> dict:
    """Write the PNGs, fit the image steps on the training files and train the CNN; returns what the demo and
    the tests need: model, preprocessor, head, train (a table of paths), new_paths, new_labels."""
    train_paths, train_labels, new_paths, new_labels = write_digits(folder, seed)
    steps = ImageEncode(["image"], [Decode(mode="L"), Resize([SIZE, SIZE]), Rescale(), Normalize()])
    train = pa.table({"image": train_paths})
    preprocessor = Preprocessor([steps]).fit(train)
    head = MulticlassClassification(target="digit", labels=[str(d) for d in range(10)])
    x = torch.from_numpy(preprocessor.transform(train)["x"])
    y = torch.from_numpy(head.encode_target(np.array(train_labels)))
    model = digits_cnn(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for batch in torch.randperm(len(x), generator=generator).split(128):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
    model.eval()
    return {"model": model, "preprocessor": preprocessor, "head": head, "train": train, "new_paths": new_paths,
            "new_labels": new_labels}


def run_digits_demo(folder: Path) -> Path:
    """Train, save, reload and predict the folder of new PNGs; print what happened and where the files are."""
    folder.mkdir(parents=True, exist_ok=True)
    trained = train_digits(folder)
    bundle = save(folder / "digits.tpk", trained["model"], preprocessor=trained["preprocessor"],
                  heads=trained["head"], examples=trained["train"], overwrite=True)
    output = folder / "predictions.csv"
    stats = load(bundle, device="auto").predict_file(folder / "new", output)
    predictions = read_table(output)
    got = predictions.column("digit").cast(pa.string()).to_pylist()
    truth = dict(zip(trained["new_paths"], trained["new_labels"], strict=True))
    right = sum(truth[path] == digit for path, digit in zip(predictions.column("path").to_pylist(), got, strict=True))
    out = sys.stdout
    print(f"wrote scikit-learn's digits as PNG files under '{folder}', trained a CNN on "
          f"{trained['train'].num_rows} of them and saved the bundle '{bundle}' (its image steps: grayscale, "
          f"resize to {SIZE}x{SIZE}, rescale, normalise with the training mean and std)", file=out)
    print(f"predicted the {stats.rows_predicted} PNG files of '{folder / 'new'}' (accuracy "
          f"{right / len(got):.1%}) -> '{output}'", file=out)
    for row in predictions.slice(0, 3).to_pylist():
        print(f"  {Path(row['path']).name}: {row['digit']} probability {row['digit_probability']:.3f}", file=out)
    print(f"same from the shell: torchpredict predict {bundle} {folder / 'new'} -o {output}", file=out)
    return output
