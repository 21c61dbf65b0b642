"""Sequence models end to end: a Transformer that sorts digit strings and a digit tagger, trained here, saved as
bundles and predicted through load(...).predict and the CLI, as users run them."""

from __future__ import annotations

import copy
import csv
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from seq2seq_model import MAX_DIGITS, digit_strings, fit, one_thread
from seq2seq_model import Seq2Seq as Transformer
from torchpredict.bundle import load, save
from torchpredict.bundle.manifest import read_manifest, sha256
from torchpredict.errors import BundleError, ModelLoadError, PreprocessingError
from torchpredict.heads.classification import MulticlassClassification
from torchpredict.heads.registry import head_from_dict
from torchpredict.heads.sequences import IGNORE_INDEX, Seq2Seq, TokenClassification
from torchpredict.inference.batch import ModelBatch
from torchpredict.inference.calls import Call
from torchpredict.predictor import Predictor, RunStats
from torchpredict.preprocessing import Preprocessor, TextEncode
from torchpredict.preprocessing.text import EOS_ID, PAD_ID, UNK_ID, TruncationWarning, UnknownTokenWarning

TRUST = ["seq2seq_model"]  # the beam bundle's factory is the tests' own seq2seq_model:Seq2Seq
LENGTH = MAX_DIGITS + 1  # up to 8 digits and eos, for the source ids and for the decoded answer


def sorted_text(s: str) -> str:
    return "".join(sorted(s))


def exact_match(predicted: pa.Table, texts: list[str]) -> float:
    return float(np.mean([p == sorted_text(s) for p, s in zip(predicted["sorted"].to_pylist(), texts, strict=True)]))


@pytest.fixture(scope="module")
def sorter(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Sort digit strings: TextEncode for the source, a Seq2Seq head for the answer, 200 steps on one thread.

    Two bundles of the same model: greedy decoding in model.pt2 (the default), beam search in weights + factory.
    nulls="empty" reads a missing text (an empty CSV cell) as an empty string.
    """
    rng = np.random.default_rng(0)
    train = digit_strings(4000, rng)
    test = digit_strings(200, rng, exclude=frozenset(train))
    table = pa.table({"digits": train})
    answers = [sorted_text(s) for s in train]
    encoder = TextEncode(["digits"], max_length=LENGTH, nulls="empty")
    preprocessor = Preprocessor([encoder], inputs={"src": ["digits"]}).fit(table)
    head = Seq2Seq("sorted", max_length=LENGTH).fit(answers)
    teacher = head.encode_target(answers)
    src_vocab, tgt_vocab = len(preprocessor.steps[0].vocabulary()), len(head.vocabulary)
    with one_thread():
        torch.manual_seed(0)
        model = fit(Transformer(src_vocab, tgt_vocab), preprocessor.transform(table)["src"], teacher.decoder_input,
                    teacher.target, rng=rng)
        folder = tmp_path_factory.mktemp("sort")
        path = save(folder / "sort.tpk", model, preprocessor=preprocessor, heads=head, examples=table)
        beam = Seq2Seq("sorted", max_length=LENGTH, strategy="beam", beam_width=4).fit(answers)
        with pytest.warns(UserWarning, match=r"must pass trust_factory=\['seq2seq_model'\]"):
            beam_path = save(folder / "sort-beam.tpk", model, preprocessor=preprocessor, heads=beam, examples=table,
                             storage="weights", factory="seq2seq_model:Seq2Seq",
                             factory_kwargs={"src_vocab": src_vocab, "tgt_vocab": tgt_vocab})
    return {"model": model, "preprocessor": preprocessor, "head": head, "path": path, "beam_path": beam_path,
            "test": test}


@pytest.fixture(scope="module")
def predictor(sorter: dict) -> Predictor:
    return load(sorter["path"], device="cpu")


@pytest.fixture(scope="module")
def greedy_predictions(sorter: dict, predictor: Predictor) -> pa.Table:
    with one_thread():
        return predictor.predict({"digits": sorter["test"]})


def test_greedy_decoding_through_load_predict_sorts_held_out_strings(sorter: dict, greedy_predictions: pa.Table):
    assert greedy_predictions.column_names == ["sorted", "sorted_score"]
    assert greedy_predictions.schema.field("sorted").type == pa.string()
    assert greedy_predictions.schema.field("sorted_score").type == pa.float32()
    assert exact_match(greedy_predictions, sorter["test"]) >= 0.95
    assert (greedy_predictions["sorted_score"].to_numpy() <= 0).all()  # sums of log-probabilities


def test_beam_search_is_at_least_as_accurate_as_greedy(sorter: dict, greedy_predictions: pa.Table):
    with one_thread():
        beam = load(sorter["beam_path"], device="cpu", trust_factory=TRUST).predict({"digits": sorter["test"]})
    assert exact_match(beam, sorter["test"]) >= exact_match(greedy_predictions, sorter["test"])


def test_batched_decoding_equals_decoding_each_input_alone(sorter: dict, predictor: Predictor):
    rows = {"digits": sorter["test"][:64]}
    one_at_a_time = copy.copy(predictor)  # the same loaded bundle, without paying for a second load
    predictor.batch_size, one_at_a_time.batch_size = 64, 1
    with one_thread():
        batched, alone = predictor.predict(rows), one_at_a_time.predict(rows)
    assert batched["sorted"].to_pylist() == alone["sorted"].to_pylist()
    np.testing.assert_allclose(batched["sorted_score"].to_numpy(), alone["sorted_score"].to_numpy(), atol=1e-4)


def test_the_bundle_records_how_the_model_is_called(sorter: dict):
    manifest = read_manifest(sorter["path"])
    assert manifest.model["call"] == {"kind": "seq2seq", "source": "src", "prefix": "tgt"}
    assert manifest.model["inputs"] == [{"name": "src", "dtype": "int64", "shape": [LENGTH]},
                                        {"name": "tgt", "dtype": "int64", "shape": [None]}]
    assert head_from_dict(manifest.heads[0]) == sorter["head"]
    golden = load_file(str(sorter["path"] / "examples/outputs.safetensors"))
    assert golden["output.ids"].shape == (8, LENGTH) and golden["output.scores"].shape == (8,)


def test_verify_re_decodes_the_golden_examples(sorter: dict, predictor: Predictor, tmp_path: Path):
    assert predictor.verify().passed
    bundle = shutil.copytree(sorter["beam_path"], tmp_path / "tampered.tpk")  # weights: quicker to load
    outputs_file = bundle / "examples/outputs.safetensors"
    outputs = load_file(str(outputs_file))
    outputs["output.ids"][0, 0] = (outputs["output.ids"][0, 0] + 1) % len(sorter["head"].vocabulary)
    save_file(outputs, str(outputs_file))
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"]["examples/outputs.safetensors"] = sha256(outputs_file)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="golden examples do not reproduce on cpu: FAILED"):
        load(bundle, device="cpu", verify=True, trust_factory=TRUST)
    assert load(sorter["beam_path"], device="cpu", trust_factory=TRUST, verify=True).verify().passed  # one id changed


def test_unknown_empty_and_over_long_inputs_are_defined(predictor: Predictor):
    rows = {"digits": ["", "31x2", "9876543210987", "321"]}
    with pytest.warns(UnknownTokenWarning, match=r"column 'digits': 1 unknown token\(s\) encoded as <unk>"), \
            pytest.warns(TruncationWarning, match=r"column 'digits': 1 text\(s\) truncated"):
        out = predictor.predict(rows)
    assert out["sorted"][0].as_py() == "" and out["sorted_score"][0].as_py() == 0.0  # the model is not run
    assert isinstance(out["sorted"][1].as_py(), str)
    assert out["sorted"][3].as_py() == "123"
    stats = RunStats()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # with stats, counts go to the stats, not to warnings
        batches = list(predictor.predict_batches([rows, rows], stats=stats))
    assert pa.Table.from_batches(batches)["sorted"].to_pylist() == out["sorted"].to_pylist() * 2
    assert (stats.text.truncated, stats.text.unknown) == ({"digits": 2}, {"digits": 2})
    assert "column 'digits': 2 text(s) truncated to max_length, 2 unknown token(s)" in " ".join(stats.describe())


def run_cli(*args: object) -> subprocess.CompletedProcess:
    """The CLI as users run it; the tests folder is on the path for the weights bundle's factory."""
    path = os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}  # two threads thrash a shared 2-core box
    return subprocess.run([sys.executable, "-m", "torchpredict", *map(str, args)], capture_output=True, text=True,
                          timeout=120, env=env)


def test_the_cli_predicts_jsonl_and_csv_text_columns_like_the_python_api(sorter: dict, tmp_path: Path):
    """On the weights bundle: loading a .pt2 costs a fresh process 6 s before it predicts anything."""
    texts = [*sorter["test"][:20], "", "0012"]
    beam = load(sorter["beam_path"], device="cpu", trust_factory=TRUST)
    expected = beam.predict({"digits": texts})["sorted"].to_pylist()
    assert expected[-2:] == ["", "0012"]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"digits": s}) + "\n" for s in texts))
    with open(tmp_path / "in.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["digits"], *([s] for s in texts)])
    for name in ("in.jsonl", "in.csv"):
        out = tmp_path / name.replace("in", "out")
        result = run_cli("predict", sorter["beam_path"], tmp_path / name, "-o", out, "--quiet", "--device", "cpu",
                         "--trust-factory", "seq2seq_model")
        assert result.returncode == 0, result.stderr
        if name.endswith(".jsonl"):
            got = [json.loads(line)["sorted"] for line in out.read_text().splitlines()]
        else:
            with open(out, newline="") as handle:
                got = [row["sorted"] for row in csv.DictReader(handle)]
        assert got == expected, name


# --- Seq2Seq: its contract without a trained model ---------------------------------------------------------


def test_seq2seq_teacher_forcing_arrays_and_truncation():
    head = Seq2Seq("y", max_length=4).fit(["ab", "b"])  # b=4, a=5
    teacher = head.encode_target(["ba", ""])
    assert teacher.decoder_input.tolist() == [[1, 4, 5, PAD_ID], [1, PAD_ID, PAD_ID, PAD_ID]]
    assert teacher.target.tolist() == [[4, 5, EOS_ID, PAD_ID], [EOS_ID, PAD_ID, PAD_ID, PAD_ID]]
    with pytest.warns(TruncationWarning, match="1 of 1 target\\(s\\) had more than 3 tokens"):
        assert head.encode_target(["abab"]).target.tolist() == [[5, 4, 5, EOS_ID]]
    assert head.encode_target(pa.table({"y": ["z"]})).target.tolist() == [[UNK_ID, EOS_ID, PAD_ID, PAD_ID]]


def test_seq2seq_interprets_decoded_ids_with_its_tokenizer_separator():
    head = Seq2Seq("y", tokenizer="whitespace").fit(["hello world"])
    ids = torch.tensor([[4, 5, EOS_ID, 4], [EOS_ID, PAD_ID, PAD_ID, PAD_ID]])
    out = head.interpret({"ids": ids, "scores": torch.tensor([-0.5, 0.0], dtype=torch.float64)})
    assert out["y"].to_pylist() == ["hello world", ""]
    assert out["y_score"].type == pa.float32()


@pytest.mark.parametrize("head", [
    Seq2Seq("y"),
    Seq2Seq("y", tokenizer="regex", pattern=r"\d+", lowercase=True, max_length=7, min_frequency=2, max_size=9,
            strategy="beam", beam_width=3, length_penalty=0.5, output="logits").fit(["1 22", "22 1 1"]),
    TokenClassification("t", labels=["a", "b"]),
    TokenClassification("t", labels=[0, 1, 2], source="src", vocabulary=("<pad>", "<bos>", "<eos>", "<unk>", "x"),
                        from_logits=False, output=1),
])
def test_sequence_heads_round_trip_through_json(head):
    again = head_from_dict(json.loads(json.dumps(head.to_dict())))
    assert again == head and type(again) is type(head)
    assert again.to_dict() == head.to_dict()


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"max_length": 1}, PreprocessingError, "max_length must be >= 2 \\(a token and eos\\), got 1"),
    ({"strategy": "sample"}, PreprocessingError, "strategy must be one of 'greedy', 'beam', got 'sample'"),
    ({"beam_width": 0}, PreprocessingError, "beam_width must be >= 1, got 0"),
    ({"length_penalty": "long"}, PreprocessingError, "length_penalty must be a number"),
    ({"tokenizer": "bpe"}, PreprocessingError, "tokenizer must be one of"),
    ({"min_frequency": 0}, PreprocessingError, "min_frequency must be >= 1"),
])
def test_seq2seq_refuses_bad_settings(kwargs, error, match):
    with pytest.raises(error, match=match):
        Seq2Seq("y", **kwargs)


def test_seq2seq_data_errors():
    with pytest.raises(PreprocessingError, match="is not fitted; call fit\\(y\\)"):
        Seq2Seq("y").encode_target(["a"])
    with pytest.raises(PreprocessingError, match="y has 1 missing target\\(s\\), first at row 1"):
        Seq2Seq("y").fit(["a", None])
    with pytest.raises(PreprocessingError, match="y must hold strings"):
        Seq2Seq("y").fit([1, 2])
    with pytest.raises(PreprocessingError, match="cannot learn a vocabulary from 0 rows"):
        Seq2Seq("y").fit([])
    with pytest.raises(ModelLoadError, match="a dict of 'ids' and 'scores'; got Tensor"):
        Seq2Seq("y").fit(["a"]).interpret(torch.zeros(2, 3))


class Constant(nn.Module):
    """Logits that always say `token`, over a vocabulary of `size`, whatever the source."""

    def __init__(self, size: int, token: int) -> None:
        super().__init__()
        self.size, self.token = size, token

    def forward(self, src: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(torch.full(prefix.shape, self.token), self.size).float() * 10


def test_generate_skips_empty_sources_and_checks_the_logits_shape():
    head = Seq2Seq("y", max_length=3).fit(["a"])  # vocabulary: specials + a
    src = torch.tensor([[4, EOS_ID], [EOS_ID, PAD_ID], [UNK_ID, EOS_ID]])
    out = head.generate(Constant(5, 4), src)
    assert out["ids"].tolist() == [[4, 4, 4], [EOS_ID, PAD_ID, PAD_ID], [4, 4, 4]]
    assert out["scores"][1].item() == 0.0
    with pytest.raises(ModelLoadError, match=r"expects output shape \[n, 1, 5\] \(logits over the target vocabulary"):
        head.generate(Constant(7, 4), src)


def test_save_refuses_calls_it_cannot_make(sorter: dict, tmp_path: Path):
    table = pa.table({"digits": sorter["test"][:4]})
    two_heads = [sorter["head"], MulticlassClassification("c", labels=["a", "b"])]
    with pytest.raises(BundleError, match="must be the only head, got 2 heads"):
        save(tmp_path / "a.tpk", sorter["model"], preprocessor=sorter["preprocessor"], heads=two_heads,
             examples=table)
    two_inputs = Preprocessor([TextEncode(["a", "b"], max_length=4)], inputs={"a": ["a"], "b": ["b"]}).fit(
        {"a": ["1"], "b": ["2"]})
    with pytest.raises(BundleError, match="preprocessing must give one model input \\(the source ids\\), got 'a', 'b'"):
        save(tmp_path / "b.tpk", Constant(5, 4), preprocessor=two_inputs, heads=Seq2Seq("y").fit(["1"]),
             examples={"a": ["1"], "b": ["2"]})


@pytest.mark.parametrize(("entry", "match"), [
    ({"call": {"kind": "encode-decode"}}, "model call kind 'encode-decode' is not one this torchpredict runs"),
    ({"call": {"kind": "seq2seq", "source": "src"}}, "must name its 'source' and 'prefix' inputs"),
])
def test_unknown_or_incomplete_calls_are_bundle_errors(entry, match):
    with pytest.raises(BundleError, match=match):
        Call.from_entry(entry)


def test_calls_and_heads_must_agree():
    with pytest.raises(BundleError, match="needs exactly one head, a Seq2Seq; got \\['TokenClassification'\\]"):
        Call("seq2seq", "src", "tgt").check([TokenClassification("t", labels=["a"])])
    with pytest.raises(BundleError, match="a Seq2Seq head needs the model entry's call to be seq2seq"):
        Call().check([Seq2Seq("y")])
    assert Call.from_entry({}) == Call() and Call().to_dict() is None


# --- token classification ----------------------------------------------------------------------------------


class Tagger(nn.Module):
    """Per-token scores from each token's embedding alone: enough to tell odd digits from even ones."""

    def __init__(self, vocab: int, labels: int) -> None:
        super().__init__()
        self.embed, self.out = nn.Embedding(vocab, 16), nn.Linear(16, labels)

    def forward(self, src: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.embed(src)))


def parity(s: str) -> list[str]:
    return ["odd" if int(c) % 2 else "even" for c in s]


@pytest.fixture(scope="module")
def tagger(tmp_path_factory: pytest.TempPathFactory) -> dict:
    rng = np.random.default_rng(1)
    train = digit_strings(500, rng)
    table = pa.table({"digits": train})
    encoder = TextEncode(["digits"], max_length=LENGTH)
    preprocessor = Preprocessor([encoder], inputs={"src": ["digits"]}).fit(table)
    head = TokenClassification("parity", labels=["even", "odd"], vocabulary=encoder.vocabulary()).fit(
        [parity(s) for s in train])
    src = preprocessor.transform(table)["src"]
    target = torch.from_numpy(head.encode_target([parity(s) for s in train], src))
    with one_thread():
        torch.manual_seed(0)
        model = Tagger(len(encoder.vocabulary()), 2)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
        for _ in range(60):
            loss = nn.functional.cross_entropy(model(torch.from_numpy(src)).reshape(-1, 2), target.reshape(-1),
                                               ignore_index=IGNORE_INDEX)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        path = save(tmp_path_factory.mktemp("tag") / "tag.tpk", model.eval(), preprocessor=preprocessor,
                    heads=head, examples=table)
    return {"path": path, "test": digit_strings(50, rng, exclude=frozenset(train)), "head": head}


def test_token_classification_labels_each_input_token(tagger: dict):
    predictor = load(tagger["path"], device="cpu", verify=True)
    with pytest.warns(UnknownTokenWarning, match="1 unknown token"):
        out = predictor.predict({"digits": [*tagger["test"], "", "1a2"]})
    assert out.column_names == ["parity", "parity_probability", "parity_tokens"]
    assert out.schema.field("parity").type == pa.list_(pa.string())
    assert out["parity"].to_pylist()[:50] == [parity(s) for s in tagger["test"]]
    assert out["parity_tokens"].to_pylist()[:50] == [list(s) for s in tagger["test"]]
    assert out["parity"][50].as_py() == [] and out["parity_probability"][50].as_py() == []
    assert out["parity_tokens"][51].as_py() == ["1", "<unk>", "2"]
    assert len(out["parity"][51].as_py()) == 3
    probabilities = np.concatenate(out["parity_probability"].to_pylist())
    assert ((probabilities >= 0.5) & (probabilities <= 1)).all()
    assert "call" not in read_manifest(tagger["path"]).model  # a plain forward pass


def test_token_classification_batches_agree(tagger: dict):
    rows = {"digits": tagger["test"]}
    one = load(tagger["path"], device="cpu", batch_size=1).predict(rows)
    assert one.equals(load(tagger["path"], device="cpu", batch_size=16).predict(rows))


def test_token_classification_targets_follow_the_source_tokens():
    head = TokenClassification("t", labels=["x", "y"])
    ids = np.array([[1, 4, 5, EOS_ID, PAD_ID], [1, 4, EOS_ID, PAD_ID, PAD_ID]])  # bos, tokens, eos, pad
    target = head.encode_target([["y", "x"], ["x", "y"]], ids)  # row 1: a label for a token truncation cut off
    assert target.tolist() == [[IGNORE_INDEX, 1, 0, IGNORE_INDEX, IGNORE_INDEX],
                               [IGNORE_INDEX, 0, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]]
    with pytest.raises(PreprocessingError, match="row 1 has 0 label\\(s\\) for 1 token\\(s\\)"):
        head.encode_target([["y", "x"], []], ids)
    with pytest.raises(PreprocessingError, match="unknown label 'z' at row 1"):
        head.encode_target([["y", "z"], ["x"]], ids)
    with pytest.raises(PreprocessingError, match="needs the source ids"):
        head.encode_target([["x"]])
    with pytest.raises(PreprocessingError, match="y must hold one list of labels per row"):
        head.fit(["x", "y"])


def test_token_classification_errors_say_what_the_head_reads():
    head = TokenClassification("t", labels=["x", "y"])
    ids = torch.tensor([[4, EOS_ID]])
    with pytest.raises(ModelLoadError, match=r"expects output shape \[n, 2, 2\] .* got \[1, 2, 3\]"):
        head.interpret(torch.zeros(1, 2, 3), ids=ids)
    two = {"a": ids, "b": ids}
    with pytest.raises(ModelLoadError, match="the model has 2 inputs \\('a', 'b'\\); pass source="):
        head.read(ModelBatch(torch.zeros(1, 2, 2), two))
    with pytest.raises(ModelLoadError, match="model input 'c', which is not one of \\['a', 'b'\\]"):
        TokenClassification("t", labels=["x", "y"], source="c").read(ModelBatch(torch.zeros(1, 2, 2), two))
    small = TokenClassification("t", labels=["x", "y"], vocabulary=("<pad>", "<bos>", "<eos>", "<unk>"))
    with pytest.raises(ModelLoadError, match="source ids go beyond the vocabulary it was given \\(4 tokens\\)"):
        small.interpret(torch.zeros(1, 2, 2), ids=ids)
    with pytest.raises(PreprocessingError, match="source must be None or a model input name"):
        TokenClassification("t", labels=["x"], source="")
