"""Images: images/s predicting a folder of image files through torchpredict vs two baselines, in the same run.

Two models, their bundles built here (torch.manual_seed fixed; accuracy is not the point):
  digits    the digits demo's CNN (torchpredict.cli.digits_demo: two conv + max-pool blocks, a Linear) trained a
            few epochs on scikit-learn's digits written as 8x8 grayscale PNGs, on a folder of those PNGs;
            eval transform Resize((16, 16)) -> ToTensor -> Normalize(the training images' mean and std)
  resnet18  torchvision's resnet18(weights=None, num_classes=10), random weights (its batch-norm statistics set
            from 8 training images, so that its labels vary with the image), on a folder of 256x320 JPEGs
            of gradients and noise; eval transform Resize(256) -> CenterCrop(224) -> ToTensor ->
            Normalize(ImageNet mean and std)
Each bundle's image steps are the eval transform converted by from_torchvision (the same arithmetic).

Three ways, each timed on the same files (the median of --reps runs, alternating): the digits on 5,000 PNGs, resnet18
on 200 JPEGs (--quick: 2,000 and 64):
  tutorial     a loop over the files: PIL Image.open(path).convert(mode), the torchvision transform, one forward
               per image (model(x.unsqueeze(0))) under torch.inference_mode()
  DataLoader   a Dataset opening and transforming each file, DataLoader(batch_size=64, num_workers=2) (its
               workers started in the timing), one forward per batch under torch.inference_mode()
  torchpredict load(bundle).predict_file(folder, out.parquet), the front door: listing, decoding, the model and
               writing the Parquet file (the load, once, is reported apart)
All three run the model on the same torch threads (--threads, default torchpredict's own: the CPU cores less one).
torchpredict's labels must equal the tutorial's argmax on every file: the script exits 1 if any differs.

Flat memory: `torchpredict predict BUNDLE FOLDER -o out.parquet` in a fresh process on a folder of N files and on
one of 10 x N (N: digits 500, resnet18 200; --quick 200 and 64), its peak RSS (ru_maxrss, read by a small watching
process) for each; a process whose VmHWM passes --max-rss-mib (default 8 GiB) is killed, so that a job whose memory
grows with its input does not take the machine's, and reported as at least that.

Targets (speed is measured, not asserted: a missed one is printed "no", the exit status stays 0):
  torchpredict >= 3x the tutorial's images/s, and >= 1.2x the DataLoader's
  10x the images cost < 1.3x the peak RSS
Run: `.venv/bin/python bench/images.py [--quick] [--threads N] [--reps N] [--md FILE]`; --md also writes the tables
in markdown (scripts/bench collects it into bench/README.md).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch
from PIL import Image

from torchpredict.bundle import load, save
from torchpredict.device import cpu_cores
from torchpredict.heads.classification import MulticlassClassification
from torchpredict.preprocessing import Preprocessor, from_torchvision

TUTORIAL_TARGET, LOADER_TARGET, MEMORY_TARGET = 3.0, 1.2, 1.3
BATCH, WORKERS = 64, 2  # the DataLoader's
# A small process that runs the command given after its two arguments (the cap in MiB, the timeout in s), kills it
# when its VmHWM passes the cap or time runs out (so that a job whose memory grows with its input cannot take the
# machine's), and prints its peak RSS (KiB), why it was stopped ("-": it was not) and its exit status. Its
# children's ru_maxrss is the command's own: this process's RSS at the fork counts too, but it is a few MiB (this
# benchmark's, forked directly, would count in full: Linux keeps the high-water mark across exec).
WATCH = """
import re, resource, subprocess, sys, time
from pathlib import Path
cap_kib, timeout = float(sys.argv[1]) * 1024, float(sys.argv[2])
process = subprocess.Popen(sys.argv[3:], stdout=sys.stderr)
started, why = time.monotonic(), "-"
while process.poll() is None:
    try:
        hwm = int(re.search(r"VmHWM:\\s+(\\d+) kB", Path(f"/proc/{process.pid}/status").read_text()).group(1))
    except (OSError, AttributeError):
        hwm = 0
    if why == "-" and (hwm > cap_kib or time.monotonic() - started > timeout):
        why = "cap" if hwm > cap_kib else "timeout"
        process.kill()
    time.sleep(0.02)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, why, process.returncode)
"""
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
# (files in the N folder, whether the speed runs use the 10 x N folder): the digits are cheap enough to time on
# the larger one, resnet18 is timed on the N folder
SIZES = {"full": {"digits": (500, True), "resnet18": (200, False)},
         "quick": {"digits": (200, True), "resnet18": (64, False)}}  # 64: one model batch of images


def import_torchvision() -> Any:
    """torchvision, importable beside the CPU torch (a copy of tests/vision.py's: bench/ imports nothing from tests/).

    PyPI's torchvision wheel is a CUDA build whose C++ ops cannot load beside the CPU torch; its transforms and
    models need none of them, but importing it registers fake kernels for two ops (nms, qnms) that must exist.
    They are declared here, without kernels, when torchvision's own library did not load them.
    """
    try:
        torch.ops.torchvision.nms  # noqa: B018  # present when torchvision's C++ ops loaded
    except (AttributeError, RuntimeError):
        for op in ("nms", "qnms"):
            with contextlib.suppress(RuntimeError):  # defined already
                torch.library.define(f"torchvision::{op}", "(Tensor dets, Tensor scores, float iou_threshold) -> "
                                     "Tensor")
    import torchvision

    return torchvision


@dataclass
class Case:
    """One model: its bundle, the eager model and eval transform of the baselines, and its folders of files."""

    name: str
    bundle: Path
    model: torch.nn.Module
    transform: Callable[[Any], torch.Tensor]
    mode: str  # what PIL converts each image to
    labels: list[str]  # the head's labels, by output index
    target: str  # the head's output column
    small: Path  # N files
    large: Path  # 10 x N files
    speed_on_large: bool
    seconds: dict[str, list[float]] = field(default_factory=dict)
    predicted: dict[str, dict[str, str]] = field(default_factory=dict)  # variant -> file name -> label
    probability: dict[str, dict[str, float]] = field(default_factory=dict)
    margin: dict[str, float] = field(default_factory=dict)  # the tutorial's top-1 minus top-2 logit per file
    load_s: float = 0.0
    memory: dict[str, tuple[float, float, int, str]] = field(default_factory=dict)  # "1x"/"10x": (MiB, s, rows, why
    # it was stopped: "" when it ran to its end)

    @property
    def speed_folder(self) -> Path:
        return self.large if self.speed_on_large else self.small

    def files(self, folder: Path) -> list[Path]:
        return sorted(folder.iterdir())


# -- the cases ------------------------------------------------------------------------------------------------


def fill(folder: Path, sources: list[Path], n: int) -> Path:
    """folder with n files: copies of sources in turn, named 00000.<ext>, ..."""
    folder.mkdir(parents=True)
    for i in range(n):
        source = sources[i % len(sources)]
        shutil.copyfile(source, folder / f"{i:05d}{source.suffix}")
    return folder


def digits_case(work: Path, n: int, speed_on_large: bool) -> Case:
    from torchvision import transforms

    from torchpredict.cli.digits_demo import SIZE, train_digits

    trained = train_digits(work / "digits-demo", seed=0, epochs=3)
    fitted = trained["preprocessor"].steps[0]
    transform = transforms.Compose([transforms.Resize((SIZE, SIZE)), transforms.ToTensor(),
                                    transforms.Normalize(list(fitted.mean_), list(fitted.std_))])
    preprocessor = Preprocessor([from_torchvision(transform, mode="L")]).fit(trained["train"])
    bundle = save(work / "digits.tpk", trained["model"], preprocessor=preprocessor, heads=trained["head"],
                  examples=trained["train"])
    pngs = [Path(p) for p in trained["train"].column("image").to_pylist() + trained["new_paths"]]
    return Case("digits", bundle, trained["model"], transform, "L", list(trained["head"].labels), "digit",
                fill(work / "digits-1x", pngs, n), fill(work / "digits-10x", pngs, 10 * n), speed_on_large)


def photo(seed: int, height: int = 256, width: int = 320) -> Image.Image:
    """Gradients in random colours, stripes of a random period and noise: JPEGs that differ from one another."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    colour = rng.uniform(0, 1, (3, 3))
    period = 8 + seed % 24
    pixels = np.stack([x * colour[c, 0] + y * colour[c, 1] + ((x + y) % period) * colour[c, 2] * 8
                       for c in range(3)], axis=-1) + rng.normal(0, 10, (height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def jpegs(folder: Path, n: int, first_seed: int) -> list[Path]:
    folder.mkdir(parents=True)
    paths = [folder / f"{i:05d}.jpg" for i in range(n)]
    for i, path in enumerate(paths):
        photo(first_seed + i).save(path, quality=90)
    return paths


def resnet_case(work: Path, n: int, speed_on_large: bool) -> Case:
    torchvision = import_torchvision()
    from torchvision import transforms

    transform = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
                                    transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    train = [str(p) for p in jpegs(work / "resnet-train", 8, first_seed=1_000_000)]
    preprocessor = Preprocessor([from_torchvision(transform)]).fit({"image": train})
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    # Random weights with batch-norm statistics of 0 and 1 give every image about the same logits (one label for
    # all): set them from the training images (one pass, a plain average), so that the labels differ.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    with torch.no_grad():
        model.train()(torch.stack([transform(Image.open(p).convert("RGB")) for p in train]))
    model.eval()
    labels = [str(i) for i in range(10)]
    bundle = save(work / "resnet18.tpk", model, preprocessor=preprocessor,
                  heads=MulticlassClassification(target="label", labels=labels), examples={"image": train})
    small = jpegs(work / "resnet-1x", n, first_seed=0)
    large = work / "resnet-10x"
    large.mkdir()
    for i in range(10 * n):  # the N files and 9 x N new ones
        target = large / f"{i:05d}.jpg"
        if i < n:
            shutil.copyfile(small[i], target)
        else:
            photo(i).save(target, quality=90)
    return Case("resnet18", bundle, model, transform, "RGB", labels, "label", work / "resnet-1x", large,
                speed_on_large)


# -- the three ways -------------------------------------------------------------------------------------------


class Files(torch.utils.data.Dataset):
    """The DataLoader baseline's dataset: each file opened, converted and transformed."""

    def __init__(self, paths: list[Path], mode: str, transform: Callable[[Any], torch.Tensor]) -> None:
        self.paths, self.mode, self.transform = paths, mode, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        with Image.open(self.paths[i]) as image:
            return self.transform(image.convert(self.mode))


def tutorial(case: Case, paths: list[Path]) -> torch.Tensor:
    logits = []
    with torch.inference_mode():
        for path in paths:
            with Image.open(path) as image:
                x = case.transform(image.convert(case.mode))
            logits.append(case.model(x.unsqueeze(0)))
    return torch.cat(logits)


def dataloader(case: Case, paths: list[Path]) -> torch.Tensor:
    loader = torch.utils.data.DataLoader(Files(paths, case.mode, case.transform), batch_size=BATCH,
                                         num_workers=WORKERS)
    with torch.inference_mode():
        return torch.cat([case.model(batch) for batch in loader])


def run_baseline(case: Case, variant: str, way: Callable[[Case, list[Path]], torch.Tensor]) -> None:
    paths = case.files(case.speed_folder)
    started = time.perf_counter()
    logits = way(case, paths)
    case.seconds.setdefault(variant, []).append(time.perf_counter() - started)
    chosen = logits.argmax(dim=1)
    probability = torch.softmax(logits, dim=1).gather(1, chosen[:, None])[:, 0]
    case.predicted[variant] = {p.name: case.labels[i] for p, i in zip(paths, chosen.tolist(), strict=True)}
    case.probability[variant] = {p.name: v for p, v in zip(paths, probability.tolist(), strict=True)}
    if variant == "tutorial":
        top = logits.topk(2, dim=1).values
        case.margin = {p.name: m for p, m in zip(paths, (top[:, 0] - top[:, 1]).tolist(), strict=True)}


def run_torchpredict(case: Case, predictor: Any, out: Path, threads: int) -> None:
    out.unlink(missing_ok=True)
    started = time.perf_counter()
    stats = predictor.predict_file(case.speed_folder, out, threads=threads)
    case.seconds.setdefault("torchpredict", []).append(time.perf_counter() - started)
    table = pq.read_table(out, columns=["path", case.target, f"{case.target}_probability"])
    names = [Path(p).name for p in table.column("path").to_pylist()]
    if stats.rows_predicted != len(names):
        raise SystemExit(f"{case.name}: predict_file reported {stats.rows_predicted} rows, wrote {len(names)}")
    case.predicted["torchpredict"] = dict(zip(names, map(str, table.column(case.target).to_pylist()), strict=True))
    case.probability["torchpredict"] = dict(zip(names, table.column(f"{case.target}_probability").to_pylist(),
                                                strict=True))


def speed(case: Case, reps: int, threads: int, work: Path) -> None:
    started = time.perf_counter()
    predictor = load(case.bundle, device="cpu")
    case.load_s = time.perf_counter() - started
    warm = case.files(case.small)[:2]
    tutorial(case, warm)  # the first forward's one-off costs (oneDNN's), for each model
    predictor.predict({"image": [str(p) for p in warm]})
    for _ in range(reps):  # alternating, so that drift in the machine's load hits all alike
        run_baseline(case, "tutorial", tutorial)
        run_baseline(case, "DataLoader", dataloader)
        run_torchpredict(case, predictor, work / f"{case.name}-out.parquet", threads)


def memory(case: Case, threads: int, work: Path, timeout: int, cap_mib: float) -> None:
    """The CLI on the N and the 10 x N folders, each in a fresh process: its peak RSS, wall time and rows."""
    for name, folder in (("1x", case.small), ("10x", case.large)):
        out = work / f"{case.name}-{name}.parquet"
        command = [sys.executable, "-m", "torchpredict", "predict", str(case.bundle), str(folder), "-o", str(out),
                   "--quiet", "--device", "cpu", "--threads", str(threads)]
        kib, seconds, stopped = peak_rss(command, work / f"{case.name}-{name}.log", timeout, cap_mib)
        if stopped:
            case.memory[name] = (kib / 1024, seconds, -1, stopped)
            continue
        case.memory[name] = (kib / 1024, seconds, pq.read_metadata(out).num_rows, "")
        out.unlink()


def peak_rss(command: list[str], log: Path, timeout: float, cap_mib: float) -> tuple[int, float, str]:
    """Run command: (its peak RSS in KiB, its wall seconds, why it was stopped or "")."""
    watch = [sys.executable, "-c", WATCH, str(cap_mib), str(timeout), *command]
    started = time.perf_counter()
    with log.open("w") as output:
        done = subprocess.run(watch, stdout=subprocess.PIPE, stderr=output, text=True, timeout=timeout + 120)
    seconds = time.perf_counter() - started
    kib, why, code = done.stdout.split()
    stopped = {"-": "", "cap": f"killed past {cap_mib:,.0f} MiB (--max-rss-mib)",
               "timeout": f"killed after {timeout:g} s (--timeout)"}[why]
    if done.returncode or (int(code) and not stopped):
        raise SystemExit(f"failed ({code}): {' '.join(command)}\n{log.read_text()[-2000:]}")
    return int(kib), seconds, stopped


# -- the report -----------------------------------------------------------------------------------------------


def rate(case: Case, variant: str) -> float:
    return len(case.files(case.speed_folder)) / statistics.median(case.seconds[variant])


def mismatches(case: Case, variant: str) -> list[str]:
    truth = case.predicted["tutorial"]
    got = case.predicted[variant]
    return sorted(name for name in truth if got.get(name) != truth[name]) + sorted(set(got) - set(truth))


def check(case: Case, variant: str) -> str:
    wrong = mismatches(case, variant)
    truth, got = case.probability["tutorial"], case.probability[variant]
    dprob = max((abs(got[n] - truth[n]) for n in truth if n in got), default=float("nan"))
    text = f"{len(wrong)} of {len(truth):,} labels differ, max dprob {dprob:.1e}"
    if wrong:
        text += f" (the smallest top-2 logit margin among them: {min(case.margin.get(n, 0.0) for n in wrong):.1e})"
    return text


def speed_table(cases: list[Case], threads: int, reps: int) -> list[str]:
    lines = [f"images/s, the median of {reps} run(s); torch threads {threads} for all three (torchpredict also "
             f"decodes on its own thread pool, the DataLoader in {WORKERS} worker processes); 'x': torchpredict's "
             "images/s over the row's", "",
             "| model | files | variant | seconds (median) | images/s | x | predictions vs the tutorial's |",
             "|---|---|---|---|---|---|---|"]
    for case in cases:
        files = len(case.files(case.speed_folder))
        mine = rate(case, "torchpredict")
        for variant in ("tutorial", "DataLoader", "torchpredict"):
            seconds = statistics.median(case.seconds[variant])
            ratio = f"{mine / rate(case, variant):.2f}x" if variant != "torchpredict" else ""
            shown = check(case, variant) if variant != "tutorial" else "(the reference)"
            lines.append(f"| {case.name} | {files:,} | {variant} | {seconds:.2f} | {rate(case, variant):,.1f} | "
                         f"{ratio} | {shown} |")
    lines += ["", "torchpredict's load (once, not in its seconds): " +
              ", ".join(f"{c.name} {c.load_s:.2f} s" for c in cases)]
    return lines


def memory_table(cases: list[Case], threads: int) -> list[str]:
    lines = [f"`torchpredict predict BUNDLE FOLDER -o out.parquet --threads {threads}`, each in a fresh process "
             "(its start and the bundle's load included)", "",
             "| model | files | rows written | peak RSS MiB | wall s | images/s (whole process) |",
             "|---|---|---|---|---|---|"]
    for case in cases:
        for name in ("1x", "10x"):
            mib, seconds, rows, stopped = case.memory[name]
            files = len(case.files(case.small if name == "1x" else case.large))
            if stopped:
                lines.append(f"| {case.name} | {files:,} ({name}) | none: {stopped} | >= {mib:,.0f} | "
                             f"{seconds:.2f} | - |")
            else:
                lines.append(f"| {case.name} | {files:,} ({name}) | {rows:,} | {mib:,.0f} | {seconds:.2f} | "
                             f"{files / seconds:,.1f} |")
    return lines


def targets(cases: list[Case]) -> tuple[list[str], bool]:
    """The targets' table, and whether every torchpredict prediction equals the tutorial's (and every row came)."""
    lines = ["| target | measured | met |", "|---|---|---|"]
    correct = True

    def row(target: str, measured: str, met: bool) -> None:
        lines.append(f"| {target} | {measured} | {'yes' if met else 'no'} |")

    for case in cases:
        mine = rate(case, "torchpredict")
        for variant, goal in (("tutorial", TUTORIAL_TARGET), ("DataLoader", LOADER_TARGET)):
            ratio = mine / rate(case, variant)
            row(f"{case.name}: torchpredict >= {goal:g}x the {variant}'s images/s",
                f"{ratio:.2f}x ({mine:,.1f} / {rate(case, variant):,.1f})", ratio >= goal)
        (small, _, small_rows, small_stop), (large, _, large_rows, large_stop) = case.memory["1x"], case.memory["10x"]
        at_least = ">= " if small_stop or large_stop else ""
        row(f"{case.name}: 10x the images < {MEMORY_TARGET:g}x the peak RSS",
            f"{at_least}{large / small:.3f}x ({at_least}{large:,.0f} / {small:,.0f} MiB)"
            + (f"; {large_stop or small_stop}" if at_least else ""), large / small < MEMORY_TARGET and not at_least)
        wrong = len(mismatches(case, "torchpredict"))
        files = (len(case.files(case.small)), len(case.files(case.large)))
        rows_ok = [rows for rows, stop in ((small_rows, small_stop), (large_rows, large_stop)) if not stop] == [
            count for count, stop in zip(files, (small_stop, large_stop), strict=True) if not stop]
        row(f"{case.name}: torchpredict's labels equal the tutorial's on every file",
            f"{wrong} mismatches of {len(case.predicted['tutorial']):,}", wrong == 0)
        if not rows_ok:
            row(f"{case.name}: the CLI wrote a row per file", f"{small_rows} / {files[0]}, {large_rows} / {files[1]}",
                False)
        correct &= wrong == 0 and rows_ok
    return lines, correct


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer files (digits 200, resnet18 40) and two runs each, for a smoke test")
    parser.add_argument("--threads", type=int, default=max(1, cpu_cores() - 1),
                        help="torch threads for all three (default torchpredict's: the CPU cores less one)")
    parser.add_argument("--reps", type=int, help="runs per variant, the median reported (default 3, --quick 2)")
    parser.add_argument("--timeout", type=int, default=600, help="seconds allowed per CLI process (default 600)")
    parser.add_argument("--max-rss-mib", type=float, default=8192,
                        help="a CLI process is killed past this peak RSS, and its run reported as such (default 8192)")
    parser.add_argument("--md", type=Path, help="also write the tables and the targets, in markdown, to this file")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    reps = args.reps or (2 if args.quick else 3)
    sizes = SIZES["quick" if args.quick else "full"]
    torch.set_num_threads(args.threads)
    import_torchvision()
    with tempfile.TemporaryDirectory(prefix="tp-bench-images-") as tmp:
        work = Path(tmp)
        cases = []
        for name, build in (("digits", digits_case), ("resnet18", resnet_case)):
            n, on_large = sizes[name]
            print(f"{name}: building the bundle and {n:,} + {10 * n:,} files", flush=True)
            case = build(work, n, on_large)
            print(f"{name}: timing on {len(case.files(case.speed_folder)):,} files", flush=True)
            speed(case, reps, args.threads, work)
            print(f"{name}: peak RSS of the CLI on {n:,} and {10 * n:,} files", flush=True)
            memory(case, args.threads, work, args.timeout, args.max_rss_mib)
            cases.append(case)
        goals, correct = targets(cases)
        text = "\n".join([*speed_table(cases, args.threads, reps), "", *memory_table(cases, args.threads), "", *goals])
    print()
    print(text)
    if args.md:
        args.md.write_text(text + "\n")
    print(f"\nbench/images.py done in {time.perf_counter() - started:.0f} s (torch threads: {args.threads})")
    if not correct:
        print("torchpredict's predictions differ from the tutorial loop's (see the tables)", file=sys.stderr)
    return 0 if correct else 1


if __name__ == "__main__":
    sys.exit(main())
