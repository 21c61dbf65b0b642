"""Text steps: tokenize strings, map tokens to ids with a vocabulary fitted on training text, pad and truncate.

Everything is vectorised over whole Arrow arrays: tokenizing works on the string buffers (numpy on the
UTF-8 bytes, or RE2 through pyarrow.compute), and the vocabulary lookup is one `pc.index_in` over all
tokens at once. Ids 0..3 are always pad, bos, eos and unk.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from torchpredict.errors import PreprocessingError
from torchpredict.preprocessing.steps import Step, per_column, register_step, state_rules, string_values, strings

__all__ = ["BOS_ID", "EOS_ID", "PAD_ID", "SPECIALS", "UNK_ID", "Encoded", "Encoding", "TextCounts", "TextEncode",
           "TextWarning", "Tokenizer", "TruncationWarning", "UnknownTokenWarning", "Vocabulary", "token_mask"]

SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
PAD_ID, BOS_ID, EOS_ID, UNK_ID = range(4)
TOKENIZERS = ("char", "whitespace", "regex")
# Words (letters, digits, underscore) or single punctuation marks. RE2 syntax, as in pyarrow.compute.
DEFAULT_PATTERN = r"[\p{L}\p{N}_]+|[^\p{L}\p{N}_\s\p{Z}]"
_CUT, _MATCH = "\x00", "\x01"  # markers for the regex tokenizer; removed from the text first


class TextWarning(UserWarning):
    """Text was encoded with a loss: truncated, or holding tokens the vocabulary does not know."""


class TruncationWarning(TextWarning):
    """Some texts had more tokens than max_length allows; the tail was cut off."""


class UnknownTokenWarning(TextWarning):
    """Some tokens were not in the vocabulary and were encoded as the unk token."""


def token_mask(ids: Any) -> Any:
    """Where ids hold real tokens (unk included), not pad, bos or eos; works on numpy arrays and tensors."""
    return ids >= UNK_ID


@dataclass(frozen=True)
class Tokenizer:
    """Split strings into tokens: characters (code points), whitespace-separated words, or regex matches.

    `pattern` (regex only) is RE2 syntax and tokens are its non-empty matches, like `re.findall`.

    >>> Tokenizer("regex", lowercase=True).tokenize("Hello, World!")
    ['hello', ',', 'world', '!']
    """

    kind: str = "char"
    pattern: str | None = None
    lowercase: bool = False

    def __post_init__(self) -> None:
        if self.kind not in TOKENIZERS:
            raise PreprocessingError(f"tokenizer must be one of {', '.join(map(repr, TOKENIZERS))}, got {self.kind!r}")
        if self.kind != "regex" and self.pattern is not None:
            raise PreprocessingError(f"pattern is only used with tokenizer='regex', got tokenizer={self.kind!r}")
        if self.kind == "regex":
            object.__setattr__(self, "pattern", self.pattern or DEFAULT_PATTERN)
            try:
                pc.replace_substring_regex(pa.array([""]), pattern=self.pattern, replacement="")
            except pa.ArrowInvalid as e:
                raise PreprocessingError(f"tokenizer pattern {self.pattern!r} is not a valid RE2 regex: {e}") from e

    @property
    def separator(self) -> str:
        """What joins tokens back into text: nothing for characters, a space for words."""
        return "" if self.kind == "char" else " "

    def split(self, texts: pa.Array | pa.ChunkedArray) -> pa.ListArray:
        """One list of tokens per string (null strings give empty lists)."""
        col = texts if isinstance(texts, pa.ChunkedArray) else pa.chunked_array([texts])
        texts = pc.fill_null(_one_chunk(string_values(col)), "")
        if self.lowercase:
            texts = pc.utf8_lower(texts)
        if self.kind == "char":
            return _chars(texts)
        if self.kind == "whitespace":
            return _drop_empty(pc.utf8_split_whitespace(texts))
        return _matches(texts, self.pattern or DEFAULT_PATTERN)  # pattern is set for regex by __post_init__

    def tokenize(self, text: str) -> list[str]:
        return self.split(pa.array([text], pa.string()))[0].as_py()


def _one_chunk(col: pa.ChunkedArray) -> pa.Array:
    return col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)


def _chars(texts: pa.StringArray) -> pa.ListArray:
    """Code points, cut straight from the UTF-8 buffer: a character starts at every non-continuation byte."""
    if not len(texts):
        return pa.array([], pa.list_(pa.string()))
    offsets = np.frombuffer(texts.buffers()[1], np.int32)[texts.offset:texts.offset + len(texts) + 1]
    data = texts.buffers()[2]
    body = np.frombuffer(data, np.uint8)[offsets[0]:offsets[-1]] if data is not None else np.empty(0, np.uint8)
    starts = np.flatnonzero((body & 0xC0) != 0x80).astype(np.int32) + offsets[0]
    token_offsets = np.append(starts, offsets[-1]).astype(np.int32)
    tokens = pa.StringArray.from_buffers(len(starts), pa.py_buffer(token_offsets), data or pa.py_buffer(b""))
    return pa.ListArray.from_arrays(pa.array(np.searchsorted(starts, offsets), pa.int32()), tokens)


def _matches(texts: pa.StringArray, pattern: str) -> pa.ListArray:
    """Regex matches: wrap each match as CUT MATCH text CUT, split at CUT, keep the pieces marked MATCH."""
    clean = pc.replace_substring(pc.replace_substring(texts, _CUT, ""), _MATCH, "")
    marked = pc.replace_substring_regex(clean, pattern=pattern, replacement=f"{_CUT}{_MATCH}\\0{_CUT}")
    pieces = pc.split_pattern(marked, _CUT)
    flat = pieces.flatten()
    keep = pc.starts_with(flat, _MATCH).to_numpy(zero_copy_only=False)
    return _drop_empty(_regroup(pieces, pc.utf8_slice_codeunits(flat, 1), keep))


def _drop_empty(lists: pa.ListArray) -> pa.ListArray:
    flat = lists.flatten()
    return _regroup(lists, flat, pc.greater(pc.binary_length(flat), 0).to_numpy(zero_copy_only=False))


def _regroup(lists: pa.ListArray, flat: pa.Array, keep: np.ndarray) -> pa.ListArray:
    """The lists again, holding only the elements of `flat` (their flattened values) where `keep` is true."""
    parents = np.asarray(pc.list_parent_indices(lists), dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(np.bincount(parents[keep], minlength=len(lists)))])
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), flat.filter(pa.array(keep)))


class Encoding(NamedTuple):
    ids: np.ndarray  # int64, one id per token
    unknown: int  # how many tokens were not in the vocabulary (encoded as UNK_ID)


@dataclass(frozen=True)
class Vocabulary:
    """Token <-> id. `tokens[i]` is the token of id i; the first four are SPECIALS (pad, bos, eos, unk).

    Special-token strings met in text are ordinary text: they are never counted and encode as unk, so
    input cannot inject an eos.

    >>> v = Vocabulary.fit([["b", "a", "b"]])
    >>> v.tokens[4:], v.encode(["a", "z"]).ids.tolist(), v.decode([5, 4, EOS_ID, 4])
    (('b', 'a'), [5, 3], 'ab')
    """

    tokens: tuple[str, ...]
    _lookup: pa.Array = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tokens", tuple(self.tokens))
        if self.tokens[:len(SPECIALS)] != SPECIALS:
            raise PreprocessingError(f"a vocabulary starts with the special tokens {SPECIALS}, got {self.tokens[:4]}")
        if len(set(self.tokens)) != len(self.tokens):
            raise PreprocessingError("vocabulary tokens must be unique")
        object.__setattr__(self, "_lookup", pa.array(self.tokens[len(SPECIALS):], pa.string()))

    @classmethod
    def fit(cls, corpus: pa.ListArray | Iterable[Sequence[str]], *, min_frequency: int = 1,
            max_size: int | None = None) -> Vocabulary:
        """Tokens seen at least min_frequency times, most frequent first (ties by token); max_size counts specials."""
        _check_sizes(min_frequency, max_size)
        lists = corpus if isinstance(corpus, pa.ListArray) else pa.array(list(corpus), pa.list_(pa.string()))
        flat = lists.flatten()
        flat = flat.filter(pc.invert(pc.is_in(flat, value_set=pa.array(SPECIALS))))
        counts = pc.value_counts(flat) if len(flat) else pa.StructArray.from_arrays(
            [pa.array([], pa.string()), pa.array([], pa.int64())], ["values", "counts"])
        table = pa.table({"token": counts.field("values"), "count": counts.field("counts")})
        table = table.filter(pc.greater_equal(table["count"], min_frequency))
        table = table.sort_by([("count", "descending"), ("token", "ascending")])
        keep = table.num_rows if max_size is None else max_size - len(SPECIALS)
        return cls(SPECIALS + tuple(table["token"].slice(0, keep).to_pylist()))

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, tokens: pa.Array | Sequence[str]) -> Encoding:
        """Ids of the tokens, UNK_ID for tokens not in the vocabulary (counted in `unknown`)."""
        tokens = tokens if isinstance(tokens, (pa.Array, pa.ChunkedArray)) else pa.array(list(tokens), pa.string())
        index = pc.index_in(tokens, value_set=self._lookup)
        ids = np.asarray(pc.fill_null(pc.add(index, len(SPECIALS)), UNK_ID), dtype=np.int64)
        return Encoding(ids, int(index.null_count))

    def decode(self, ids: Sequence[int] | np.ndarray, separator: str = "") -> str:
        return self.decode_batch(np.asarray(ids, dtype=np.int64).reshape(1, -1), separator)[0]

    def decode_batch(self, ids: Any, separator: str = "") -> list[str]:
        """Rows of ids [n, L] to strings: stop at eos, skip pad and bos, join tokens with `separator`."""
        return self.decode_array(ids, separator).to_pylist()

    def decode_array(self, ids: Any, separator: str = "") -> pa.StringArray:
        """decode_batch as an Arrow string array, without Python strings in between."""
        ids = np.asarray(ids.cpu() if hasattr(ids, "cpu") else ids, dtype=np.int64)
        if ids.ndim != 2:
            raise PreprocessingError(f"decode_batch expects ids of shape [rows, length], got shape {ids.shape}")
        bad = (ids < 0) | (ids >= len(self))
        if bad.any():
            raise PreprocessingError(
                f"token id {int(ids[bad][0])} is outside the vocabulary (0..{len(self) - 1}); does the model's "
                "output size match the vocabulary it was trained with?"
            )
        keep = (np.cumsum(ids == EOS_ID, axis=1) == 0) & (ids != PAD_ID) & (ids != BOS_ID)
        offsets = np.concatenate([[0], np.cumsum(keep.sum(axis=1))]).astype(np.int32)
        tokens = pa.array(self.tokens, pa.string()).take(pa.array(ids[keep]))
        return pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), tokens), separator)


def _check_sizes(min_frequency: int, max_size: int | None) -> None:
    if min_frequency < 1:
        raise PreprocessingError(f"min_frequency must be >= 1, got {min_frequency}")
    if max_size is not None and max_size <= len(SPECIALS):
        raise PreprocessingError(f"max_size counts the {len(SPECIALS)} special tokens and must be > 4, got {max_size}")


@dataclass(frozen=True)
class Encoded:
    """What TextEncode.encode gives: the encoded table and, per column, how many rows were cut and tokens unknown."""

    table: pa.Table
    truncated: Mapping[str, int]
    unknown: Mapping[str, int]


@dataclass
class TextCounts:
    """What encoding text lost over a run, per column: texts truncated, tokens not in the vocabulary.

    >>> counts = TextCounts()
    >>> counts.add(TextCounts({"s": 2}, {"s": 5}))
    >>> counts.summary()
    "column 's': 2 text(s) truncated to max_length, 5 unknown token(s) encoded as <unk>"
    """

    truncated: dict[str, int] = field(default_factory=dict)
    unknown: dict[str, int] = field(default_factory=dict)

    def add(self, counts: Encoded | TextCounts) -> None:
        for mine, theirs in ((self.truncated, counts.truncated), (self.unknown, counts.unknown)):
            for name, n in theirs.items():
                mine[name] = mine.get(name, 0) + n

    def __bool__(self) -> bool:
        return any(self.truncated.values()) or any(self.unknown.values())

    def summary(self) -> str:
        """One line naming each column that lost something; '' when nothing was lost."""
        parts = []
        for name in dict.fromkeys([*self.truncated, *self.unknown]):
            cut, unknown = self.truncated.get(name, 0), self.unknown.get(name, 0)
            said = ([f"{cut} text(s) truncated to max_length"] if cut else []) + (
                [f"{unknown} unknown token(s) encoded as {SPECIALS[UNK_ID]}"] if unknown else [])
            if said:
                parts.append(f"column {name!r}: {', '.join(said)}")
        return "; ".join(parts)

    def warn(self, stacklevel: int = 2) -> None:
        """A TruncationWarning and an UnknownTokenWarning with the counts, each only when there is something to say."""
        if any(self.truncated.values()):
            warnings.warn(TextCounts(truncated=self.truncated).summary(), TruncationWarning, stacklevel=stacklevel + 1)
        if any(self.unknown.values()):
            warnings.warn(TextCounts(unknown=self.unknown).summary(), UnknownTokenWarning, stacklevel=stacklevel + 1)


@register_step
class TextEncode(Step):
    """Replace each text column by token ids: a fixed_size_list<int64>[max_length] padded with PAD_ID, which a
    Preprocessor routes to the model as an int64 [rows, max_length] input. With lengths=True a
    `{column}_length` int64 column follows, counting the non-pad ids (bos and eos included).

    Each column gets its own vocabulary. Texts with more than max_length - add_bos - add_eos tokens are
    truncated (eos still ends them); `transform` warns with a TruncationWarning saying how many, and
    `encode` returns the counts. Empty strings give [eos] (or [bos, eos]). Null strings raise a
    PreprocessingError unless nulls="empty", which encodes them as empty strings.

    >>> step = TextEncode(["s"], max_length=4, lengths=True).fit(pa.table({"s": ["abc", "ba"]}))
    >>> step.transform(pa.table({"s": ["cab"]})).to_pydict()
    {'s': [[6, 4, 5, 2]], 's_length': [4]}
    """

    type = "text_encode"
    state = state_rules(vocabularies_=per_column("vocabularies (distinct strings, the special tokens first)",
                                                 lambda v: Vocabulary(strings(v)).tokens))

    def __init__(
        self,
        columns: Sequence[str],
        *,
        tokenizer: str = "char",
        pattern: str | None = None,
        lowercase: bool = False,
        max_length: int = 128,
        min_frequency: int = 1,
        max_size: int | None = None,
        add_bos: bool = False,
        add_eos: bool = True,
        nulls: str = "error",
        lengths: bool = False,
    ) -> None:
        pattern = Tokenizer(tokenizer, pattern, lowercase).pattern
        if max_length < 1 + add_bos + add_eos:
            raise PreprocessingError(
                f"max_length must leave room for one token after bos/eos (>= {1 + add_bos + add_eos}), got {max_length}"
            )
        if nulls not in ("error", "empty"):
            raise PreprocessingError(f"TextEncode nulls must be 'error' or 'empty', got {nulls!r}")
        _check_sizes(min_frequency, max_size)
        super().__init__(columns, tokenizer=tokenizer, pattern=pattern, lowercase=lowercase, max_length=max_length,
                         min_frequency=min_frequency, max_size=max_size, add_bos=add_bos, add_eos=add_eos, nulls=nulls,
                         lengths=lengths)

    @property
    def tokenizer(self) -> Tokenizer:
        p = self.params
        return Tokenizer(p["tokenizer"], p["pattern"], p["lowercase"])

    def vocabulary(self, column: str | None = None) -> Vocabulary:
        """The fitted vocabulary of `column` (default: the only or first column)."""
        self._check_fitted()
        index = 0 if column is None else self.columns.index(column)
        return Vocabulary(self.vocabularies_[index])

    def decode(self, ids: Any, column: str | None = None) -> list[str]:
        """Rows of token ids back to text, with this step's vocabulary and tokenizer separator."""
        return self.vocabulary(column).decode_batch(ids, self.tokenizer.separator)

    def fit(self, frame: pa.Table) -> TextEncode:
        p = self.params
        self.vocabularies_ = tuple(
            Vocabulary.fit(self._tokens(frame, n), min_frequency=p["min_frequency"], max_size=p["max_size"]).tokens
            for n in self.columns
        )
        return self

    def transform(self, frame: pa.Table) -> pa.Table:
        encoded = self.encode(frame)
        for name, n in encoded.truncated.items():
            if n:
                warnings.warn(
                    f"{self!r}: {n} of {frame.num_rows} text(s) in column {name!r} had more than "
                    f"{self._budget} tokens and were truncated",
                    TruncationWarning,
                    stacklevel=2,
                )
        return encoded.table

    def encode(self, frame: pa.Table) -> Encoded:
        """Like transform, without warnings, also returning per column how many rows were truncated and
        how many tokens were unknown. The step itself keeps no counts: it stays plain fitted state."""
        self._check_fitted()
        truncated, unknown = {}, {}
        for name, vocab in zip(self.columns, self.vocabularies_, strict=True):
            ids, lengths, truncated[name], unknown[name] = self._ids(frame, name, Vocabulary(vocab))
            at = frame.column_names.index(name)
            frame = frame.set_column(at, name, ids)
            if self.params["lengths"]:
                frame = frame.add_column(at + 1, f"{name}_length", lengths)
        return Encoded(frame, truncated, unknown)

    @property
    def _budget(self) -> int:
        p = self.params
        return p["max_length"] - p["add_bos"] - p["add_eos"]

    def _tokens(self, frame: pa.Table, name: str) -> pa.ListArray:
        col = self._column(frame, name)
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type) or pa.types.is_dictionary(col.type)
                or pa.types.is_null(col.type)):
            raise PreprocessingError(f"{self!r}: column {name!r} holds {col.type} values, not text")
        if col.null_count and self.params["nulls"] == "error":
            row = int(np.flatnonzero(np.asarray(pc.is_null(col)))[0])
            raise PreprocessingError(
                f"{self!r}: column {name!r} has {col.null_count} null text(s), first at row {row}; "
                f"use TextEncode(..., nulls='empty') to encode them as empty strings"
            )
        return self.tokenizer.split(col)

    def _ids(self, frame: pa.Table, name: str, vocab: Vocabulary) -> tuple[pa.Array, pa.Array, int, int]:
        """Padded ids [rows, max_length], lengths, rows truncated, tokens unknown: one scatter of all kept ids."""
        p = self.params
        tokens = self._tokens(frame, name)
        counts = np.asarray(tokens.value_lengths(), dtype=np.int64)
        kept = np.minimum(counts, self._budget)
        if (counts > kept).any():
            tokens = pc.list_slice(tokens, 0, self._budget)
        encoding = vocab.encode(tokens.flatten())
        n, width = len(kept), p["max_length"]
        starts = np.arange(n) * width + p["add_bos"] - np.concatenate([[0], np.cumsum(kept)[:-1]])
        out = np.full(n * width, PAD_ID, dtype=np.int64)
        out[np.arange(len(encoding.ids)) + np.repeat(starts, kept)] = encoding.ids
        out = out.reshape(n, width)
        if p["add_bos"]:
            out[:, 0] = BOS_ID
        if p["add_eos"]:
            out[np.arange(n), kept + p["add_bos"]] = EOS_ID
        ids = pa.FixedSizeListArray.from_arrays(pa.array(out.reshape(-1)), width)
        lengths = pa.array(kept + p["add_bos"] + p["add_eos"])
        return ids, lengths, int((counts > kept).sum()), encoding.unknown
