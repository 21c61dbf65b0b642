"""Sequence models: text out of a decoding loop (Seq2Seq), one label per input token (TokenClassification).

A Seq2Seq model is not run once per batch: it is called as `forward(source_ids, prefix) -> logits [n, T, V]`
again and again by greedy or beam search (decoding.py), so the bundle records that call and the infer stage
runs the head's decoding loop around the loaded model. Both heads read token ids made by TextEncode, whose
ids 0..3 are pad, bos, eos and unk.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from torchpredict.errors import ModelLoadError, PreprocessingError
from torchpredict.heads.base import (
    Head,
    ModelBatch,
    check_bool,
    check_output,
    check_target,
    is_table,
    register_head,
    shape_error,
    target_column,
)
from torchpredict.heads.classification import softmax
from torchpredict.heads.labels import Labels, check_labels, encode_labels, take_labels
from torchpredict.heads.outputs import Output, as_array, is_tensor, select_output
from torchpredict.preprocessing.steps import strings
from torchpredict.preprocessing.text import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    SPECIALS,
    TextEncode,
    TruncationWarning,
    Vocabulary,
    token_mask,
)

if TYPE_CHECKING:
    import torch

__all__ = ["IGNORE_INDEX", "Seq2Seq", "TeacherForcing", "TokenClassification"]

STRATEGIES = ("greedy", "beam")
IGNORE_INDEX = -100  # CrossEntropyLoss's default ignore_index: target positions that hold no token


class TeacherForcing(NamedTuple):
    """Seq2Seq training arrays: the model sees decoder_input and learns to predict target at each position."""

    decoder_input: np.ndarray  # int64 [n, max_length]: bos, the target's tokens, then pad
    target: np.ndarray  # int64 [n, max_length]: the target's tokens, eos, then pad (pad: ignore in the loss)


@register_head
class Seq2Seq(Head):
    """Text generated token by token: columns {target} (string) and {target}_score (float32).

    The model is called as `forward(source_ids, prefix) -> logits [n, T, V]` over the target vocabulary,
    which `fit(y)` learns from the training targets with the tokenizer settings (as TextEncode does).
    Decoding stops at eos or after max_length tokens (eos included). The score is the sum of the tokens'
    log-probabilities (greedy) or that sum over length ** length_penalty (beam). A source without tokens
    (an empty string) gives an empty string with score 0 without running the model.

    >>> head = Seq2Seq("sorted", max_length=6).fit(["abc", "ab"])
    >>> head.encode_target(["ba"]).decoder_input.tolist(), head.encode_target(["ba"]).target.tolist()
    ([[1, 5, 4, 0, 0, 0]], [[5, 4, 2, 0, 0, 0]])
    """

    type = "seq2seq"
    decodes = True

    def __init__(self, target: str = "prediction", *, tokenizer: str = "char", pattern: str | None = None,
                 lowercase: bool = False, max_length: int = 128, min_frequency: int = 1, max_size: int | None = None,
                 strategy: str = "greedy", beam_width: int = 4, length_penalty: float = 1.0,
                 output: Output = None) -> None:
        self.target = check_target(target)
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
            raise PreprocessingError(f"max_length must be >= 2 (a token and eos), got {max_length!r}")
        if strategy not in STRATEGIES:
            raise PreprocessingError(f"strategy must be one of {', '.join(map(repr, STRATEGIES))}, got {strategy!r}")
        if isinstance(beam_width, bool) or not isinstance(beam_width, int) or beam_width < 1:
            raise PreprocessingError(f"beam_width must be >= 1, got {beam_width!r}")
        if isinstance(length_penalty, bool) or not isinstance(length_penalty, int | float):
            raise PreprocessingError(f"length_penalty must be a number, got {length_penalty!r}")
        self.tokenizer, self.pattern, self.lowercase = tokenizer, pattern, check_bool(lowercase, "lowercase")
        self.max_length, self.min_frequency, self.max_size = max_length, min_frequency, max_size
        self.strategy, self.beam_width, self.length_penalty = strategy, beam_width, float(length_penalty)
        self.output = check_output(output)
        self._encoder()  # checks the tokenizer and vocabulary settings
        self.vocabulary_: tuple[str, ...] | None = None

    @property
    def vocabulary(self) -> Vocabulary:
        """The target vocabulary fit(y) learned."""
        if self.vocabulary_ is None:
            raise PreprocessingError(f"{self.describe()} is not fitted; call fit(y) on the training targets first")
        return Vocabulary(self.vocabulary_)

    def fit(self, y: Any) -> Seq2Seq:
        """Learn the target vocabulary from the training target texts."""
        texts = self._texts(y)
        if not len(texts):
            raise PreprocessingError(f"{self.describe()}: cannot learn a vocabulary from 0 rows")
        self.vocabulary_ = self._encoder().fit(pa.table({self.target: texts})).vocabularies_[0]
        return self

    def encode_target(self, y: Any) -> TeacherForcing:
        """Teacher-forcing arrays for target texts; longer targets are cut to max_length - 1 tokens (+ eos), with
        a TruncationWarning. Train with CrossEntropyLoss(ignore_index=PAD_ID) on model(src, decoder_input) vs target."""
        encoder = self._encoder()
        encoder.vocabularies_ = (self.vocabulary.tokens,)
        encoded = encoder.encode(pa.table({self.target: self._texts(y)}))
        column = encoded.table.column(self.target).combine_chunks()
        ids = np.asarray(column.flatten(), dtype=np.int64).reshape(len(column), self.max_length + 1)
        if encoded.truncated[self.target]:
            warnings.warn(f"{self.describe()}: {encoded.truncated[self.target]} of {len(column)} target(s) had more "
                          f"than {self.max_length - 1} tokens and were truncated", TruncationWarning, stacklevel=2)
        decoder_input = np.where(ids[:, :-1] == EOS_ID, PAD_ID, ids[:, :-1])
        return TeacherForcing(np.ascontiguousarray(decoder_input), np.ascontiguousarray(ids[:, 1:]))

    def column_names(self) -> list[str]:
        return [self.target, f"{self.target}_score"]

    def generate(self, model: Any, source: torch.Tensor) -> dict[str, torch.Tensor]:
        """Decode a batch of source ids [n, S] with model(source, prefix) -> logits, on source's device.

        Returns {"ids": int64 [n, max_length] (generated tokens, eos, then pad), "scores": float32 [n]} on the CPU.
        """
        import torch

        from torchpredict.inference.decoding import beam_search, greedy

        size = len(self.vocabulary)
        n = source.shape[0]
        ids = torch.full((n, self.max_length), PAD_ID, dtype=torch.long)
        ids[:, 0] = EOS_ID
        scores = torch.zeros(n, dtype=torch.float32)
        rows = token_mask(source).any(dim=1).nonzero().squeeze(1)
        if len(rows):
            decode = greedy if self.strategy == "greedy" else partial(
                beam_search, beam_width=self.beam_width, length_penalty=self.length_penalty)
            found, found_scores = decode(partial(self._logits, model, size), source[rows], bos_id=BOS_ID,
                                         eos_id=EOS_ID, max_length=self.max_length, pad_id=PAD_ID)
            ids[rows.cpu()], scores[rows.cpu()] = found.cpu(), found_scores.float().cpu()
        return {"ids": ids, "scores": scores}

    def _logits(self, model: Any, size: int, source: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
        logits = select_output(model(source, prefix), self.output, head=self.name)
        if logits.ndim != 3 or logits.shape[1] != prefix.shape[1] or logits.shape[2] != size:
            raise shape_error(self, f"[n, {prefix.shape[1]}, {size}] (logits over the target vocabulary for each "
                             "prefix position)", logits)
        return logits

    def interpret(self, raw: Any) -> dict[str, pa.Array]:
        """Columns from what `generate` returned."""
        if not isinstance(raw, Mapping) or set(raw) != {"ids", "scores"}:
            raise ModelLoadError(f"head {self.name!r} (Seq2Seq) reads the output of its decoding loop, a dict of "
                                 f"'ids' and 'scores'; got {type(raw).__name__}")
        ids, scores = as_array(raw["ids"]), as_array(raw["scores"])
        if ids.ndim != 2 or scores.shape != ids.shape[:1]:
            raise shape_error(self, "ids [n, length] and scores [n]", ids)
        return {self.target: self.vocabulary.decode_array(ids, self._tokenizer_separator()),
                f"{self.target}_score": pa.array(scores.astype(np.float32))}

    def read(self, batch: ModelBatch) -> dict[str, pa.Array]:
        return self.interpret(batch.raw)

    def example_prefix(self, rows: int) -> torch.Tensor:
        """A decoder prefix to export the model with: [rows, T], bos then target tokens, 2 <= T <= max_length."""
        import torch

        length = min(self.max_length, 4)
        size = len(self.vocabulary)
        tokens = torch.arange(length - 1) % max(size - len(SPECIALS), 1) + len(SPECIALS)
        tokens = tokens.clamp(max=size - 1)
        return torch.cat([torch.full((1,), BOS_ID), tokens]).repeat(rows, 1)

    def _encoder(self) -> TextEncode:
        return TextEncode([self.target], tokenizer=self.tokenizer, pattern=self.pattern, lowercase=self.lowercase,
                          max_length=self.max_length + 1, min_frequency=self.min_frequency, max_size=self.max_size,
                          add_bos=True, add_eos=True)

    def _tokenizer_separator(self) -> str:
        return self._encoder().tokenizer.separator

    def _texts(self, y: Any) -> pa.ChunkedArray:
        return _texts(self, target_column(self, y, self.target) if is_table(y) else y)

    def _params(self) -> dict[str, Any]:
        return {"target": self.target, "tokenizer": self.tokenizer, "pattern": self.pattern,
                "lowercase": self.lowercase, "max_length": self.max_length, "min_frequency": self.min_frequency,
                "max_size": self.max_size, "strategy": self.strategy, "beam_width": self.beam_width,
                "length_penalty": self.length_penalty, "output": self.output}

    def _state(self) -> dict[str, Any]:
        return {} if self.vocabulary_ is None else {"vocabulary_": list(self.vocabulary_)}

    def _load_state(self, state: Mapping[str, Any]) -> None:
        if "vocabulary_" in state:
            self.vocabulary_ = Vocabulary(strings(state["vocabulary_"])).tokens


@register_head
class TokenClassification(Head):
    """One label per input token: list columns {target} (labels), {target}_probability (float32) and, when the
    source vocabulary is given, {target}_tokens (the tokens as the model saw them, unknown ones as <unk>).

    The model output is [n, L, C] scores over the labels, one row per position of the source ids [n, L] (the
    model input `source`, default the only one); positions holding pad, bos or eos get no label. The head reads
    the source ids next to the output in each batch of the infer stage (ModelBatch.inputs).

    >>> head = TokenClassification("parity", labels=["even", "odd"])
    >>> ids = np.array([[4, 5, 2, 0]])                       # two tokens, eos, pad
    >>> head.interpret(np.array([[[0., 1.], [2., 0.], [0., 3.], [0., 0.]]]), ids=ids)["parity"].to_pylist()
    [['odd', 'even']]
    """

    type = "token_classification"

    def __init__(self, target: str = "prediction", *, labels: Sequence[int | str], source: str | None = None,
                 vocabulary: Vocabulary | Sequence[str] | None = None, from_logits: bool = True,
                 output: Output = None) -> None:
        self.target = check_target(target)
        self.labels: Labels = check_labels(labels)
        if source is not None and (not isinstance(source, str) or not source):
            raise PreprocessingError(f"source must be None or a model input name, got {source!r}")
        self.source = source
        tokens = vocabulary.tokens if isinstance(vocabulary, Vocabulary) else vocabulary
        self.vocabulary = None if tokens is None else Vocabulary(tuple(tokens))
        self.from_logits = check_bool(from_logits, "from_logits")
        self.output = check_output(output)

    def fit(self, y: Any) -> TokenClassification:
        """Check that every training label is one of `labels` (labels are given, never learned)."""
        self._flat_codes(y)
        return self

    def encode_target(self, y: Any, ids: Any = None) -> np.ndarray:
        """int64 [n, L] label indices at the token positions of the source ids [n, L] and IGNORE_INDEX elsewhere,
        for CrossEntropyLoss; y holds one sequence of labels per row, one per token. Labels of tokens that
        truncation cut off are dropped; a row with fewer labels than tokens is an error."""
        if ids is None:
            raise PreprocessingError(f"{self.describe()}: encode_target(y, ids) needs the source ids [n, L] the "
                                     "labels belong to (Preprocessor.transform(...)[source])")
        ids = np.asarray(ids)
        codes, counts = self._flat_codes(y)
        if ids.ndim != 2 or len(counts) != len(ids):
            raise PreprocessingError(f"{self.describe()}: y has {len(counts)} row(s) but ids has shape "
                                     f"{list(ids.shape)}; expected ids [{len(counts)}, L]")
        mask = np.asarray(token_mask(ids))
        tokens = mask.sum(axis=1)
        short = counts < tokens
        if short.any():
            row = int(np.argmax(short))
            raise PreprocessingError(f"{self.describe()}: row {row} has {int(counts[row])} label(s) for "
                                     f"{int(tokens[row])} token(s)")
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        first_token = np.concatenate([[0], np.cumsum(tokens)[:-1]])
        index = np.repeat(starts - first_token, tokens) + np.arange(int(tokens.sum()))
        out = np.full(ids.shape, IGNORE_INDEX, dtype=np.int64)
        out[mask] = codes[index]
        return out

    def _flat_codes(self, y: Any) -> tuple[np.ndarray, np.ndarray]:
        """The label indices of every row's labels, concatenated, and how many each row has."""
        lists = y if isinstance(y, pa.ListArray | pa.ChunkedArray) else pa.array(list(y))
        if isinstance(lists, pa.ChunkedArray):
            lists = lists.combine_chunks()
        if not pa.types.is_list(lists.type) and not pa.types.is_large_list(lists.type):
            raise PreprocessingError(f"{self.describe()}: y must hold one list of labels per row, got {lists.type}")
        codes = encode_labels(self.describe(), self.labels, lists.flatten())
        return codes, np.asarray(pc.fill_null(lists.value_lengths(), 0), dtype=np.int64)

    def column_names(self) -> list[str]:
        names = [self.target, f"{self.target}_probability"]
        return names + ([f"{self.target}_tokens"] if self.vocabulary is not None else [])

    def interpret(self, raw: Any, *, ids: Any) -> dict[str, pa.Array]:  # type: ignore[override]
        """ids: the source ids [n, L] the output's positions belong to (a tensor or a numpy array)."""
        scores, ids = as_array(raw), as_array(ids).astype(np.int64, copy=False)
        if scores.ndim != 3 or scores.shape[:2] != ids.shape or scores.shape[2] != len(self.labels):
            expected = f"[n, {ids.shape[1] if ids.ndim == 2 else 'L'}, {len(self.labels)}] (one score per label for " \
                       "each source position)"
            raise shape_error(self, expected, scores)
        probabilities = softmax(scores, by_torch=is_tensor(raw)) if self.from_logits else scores.astype(np.float32)
        best = probabilities.argmax(axis=-1)  # the first on a tie, a NaN above every number: as torch.max
        chosen = np.take_along_axis(probabilities, best[..., None], axis=-1)[..., 0]
        mask = token_mask(ids)
        offsets = pa.array(np.concatenate([[0], np.cumsum(mask.sum(axis=1))]).astype(np.int32))
        columns = {
            self.target: pa.ListArray.from_arrays(offsets, take_labels(self.labels, best[mask])),
            f"{self.target}_probability": pa.ListArray.from_arrays(offsets, pa.array(chosen[mask])),
        }
        if self.vocabulary is not None:
            if ids.size and int(ids.max()) >= len(self.vocabulary):
                raise ModelLoadError(f"head {self.name!r}: source ids go beyond the vocabulary it was given "
                                     f"({len(self.vocabulary)} tokens); is it the source column's vocabulary?")
            tokens = pa.array(self.vocabulary.tokens).take(pa.array(ids[mask]))
            columns[f"{self.target}_tokens"] = pa.ListArray.from_arrays(offsets, tokens)
        return columns

    def read(self, batch: ModelBatch) -> dict[str, pa.Array]:
        return self.interpret(self.select(batch.raw), ids=self._source_ids(batch.inputs))

    def _source_ids(self, inputs: Mapping[str, Any]) -> Any:
        if self.source is None and len(inputs) != 1:
            raise ModelLoadError(f"head {self.name!r} (TokenClassification) reads the source ids next to the output, "
                                 f"but the model has {len(inputs)} inputs ({', '.join(map(repr, inputs))}); pass "
                                 "source='<input name>'")
        name = self.source or next(iter(inputs))
        if name not in inputs:
            raise ModelLoadError(f"head {self.name!r} reads source ids from model input {name!r}, which is not one "
                                 f"of {list(inputs)}")
        return inputs[name]

    def _params(self) -> dict[str, Any]:
        return {"target": self.target, "labels": list(self.labels), "source": self.source,
                "vocabulary": None if self.vocabulary is None else list(self.vocabulary.tokens),
                "from_logits": self.from_logits, "output": self.output}


def _texts(head: Head, y: Any) -> pa.ChunkedArray:
    """Targets as a chunked string array; anything else, or a missing target, is an error naming the row."""
    try:
        if isinstance(y, pa.ChunkedArray):
            texts = y
        elif isinstance(y, pa.Array):
            texts = pa.chunked_array([y])
        else:
            texts = pa.chunked_array([pa.array(y if hasattr(y, "__array__") else list(y), pa.string())])
        if pa.types.is_dictionary(texts.type):
            texts = texts.cast(texts.type.value_type)
        texts = texts.cast(pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError) as exc:
        raise PreprocessingError(f"{head.describe()}: y must hold strings ({exc})") from None
    if texts.null_count:
        row = int(np.flatnonzero(np.asarray(pc.is_null(texts)))[0])
        raise PreprocessingError(f"{head.describe()}: y has {texts.null_count} missing target(s), first at row {row}")
    return texts
