"""Tokenizers, the vocabulary and the TextEncode step: defined behaviour for unknown, empty, long and null text."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pyarrow as pa
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from torchpredict.errors import PreprocessingError
from torchpredict.preprocessing.steps import STEP_TYPES, Step
from torchpredict.preprocessing.text import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    SPECIALS,
    UNK_ID,
    TextCounts,
    TextEncode,
    Tokenizer,
    TruncationWarning,
    UnknownTokenWarning,
    Vocabulary,
    token_mask,
)

texts = st.lists(st.text(alphabet=st.characters(codec="utf-8"), max_size=12), max_size=8)
words = st.lists(st.text(alphabet="ab cé\t\n,!1", max_size=12), max_size=8)


# --- tokenizers -----------------------------------------------------------------------------------------------

def test_char_tokenizer_splits_code_points_not_bytes():
    assert Tokenizer("char").tokenize("héllo 日本") == ["h", "é", "l", "l", "o", " ", "日", "本"]


def test_whitespace_tokenizer_drops_empty_tokens_like_str_split():
    assert Tokenizer("whitespace").tokenize("  a\tb \n c  ") == ["a", "b", "c"]
    assert Tokenizer("whitespace").tokenize("   ") == []


def test_regex_tokenizer_keeps_matches_and_defaults_to_words_and_punctuation():
    assert Tokenizer("regex").tokenize("Héllo, wörld! x_1") == ["Héllo", ",", "wörld", "!", "x_1"]
    assert Tokenizer("regex", r"\d+").tokenize("a12b3c") == ["12", "3"]
    assert Tokenizer("regex", r"x*").tokenize("axxb") == ["xx"]  # empty matches are not tokens


def test_regex_tokenizer_ignores_its_marker_characters_in_the_input():
    assert Tokenizer("regex", r"\w+").tokenize("a\x00b\x01c d") == ["abc", "d"]


def test_lowercase_applies_before_splitting():
    assert Tokenizer("whitespace", lowercase=True).tokenize("ÀB cD") == ["àb", "cd"]


def test_split_handles_nulls_slices_and_chunks():
    array = pa.array(["xx", "ab", None, "c"]).slice(1)
    assert Tokenizer("char").split(array).to_pylist() == [["a", "b"], [], ["c"]]
    chunked = pa.chunked_array([["a b"], ["c", None]])
    assert Tokenizer("whitespace").split(chunked).to_pylist() == [["a", "b"], ["c"], []]
    assert Tokenizer("char").split(pa.array([], pa.string())).to_pylist() == []


@given(texts)
def test_char_tokenizer_equals_list_of_str(batch):
    assert Tokenizer("char").split(pa.array(batch, pa.string())).to_pylist() == [list(s) for s in batch]


@given(words, st.sampled_from(["char", "whitespace", "regex"]))
def test_split_of_a_batch_equals_split_of_each_text(batch, kind):
    tokenizer = Tokenizer(kind)
    assert tokenizer.split(pa.array(batch, pa.string())).to_pylist() == [tokenizer.tokenize(s) for s in batch]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"kind": "bpe"}, "tokenizer must be one of 'char', 'whitespace', 'regex', got 'bpe'"),
    ({"kind": "char", "pattern": "a"}, "pattern is only used with tokenizer='regex'"),
    ({"kind": "regex", "pattern": "("}, r"pattern '\(' is not a valid RE2 regex"),
])
def test_bad_tokenizer_settings_are_refused(kwargs, match):
    with pytest.raises(PreprocessingError, match=match):
        Tokenizer(**kwargs)


# --- vocabulary -----------------------------------------------------------------------------------------------

def test_vocabulary_orders_by_frequency_then_token_after_the_specials():
    vocab = Vocabulary.fit([list("cabbcd"), list("dd")])
    assert vocab.tokens == (*SPECIALS, "d", "b", "c", "a")
    assert [vocab.tokens[i] for i in (PAD_ID, BOS_ID, EOS_ID, UNK_ID)] == list(SPECIALS)


def test_vocabulary_min_frequency_and_max_size_counting_the_specials():
    corpus = [list("aaabbc")]
    assert Vocabulary.fit(corpus, min_frequency=2).tokens[4:] == ("a", "b")
    assert Vocabulary.fit(corpus, max_size=5).tokens[4:] == ("a",)
    assert len(Vocabulary.fit([])) == len(SPECIALS)


def test_vocabulary_encodes_unknown_tokens_as_unk_and_counts_them():
    vocab = Vocabulary.fit([["a", "b"]])
    encoding = vocab.encode(["b", "z", "a", "z"])
    assert encoding.ids.tolist() == [5, UNK_ID, 4, UNK_ID]
    assert encoding.unknown == 2


def test_special_token_strings_in_text_are_plain_unknown_text():
    vocab = Vocabulary.fit([["<eos>", "a", "<pad>"]])
    assert vocab.tokens == (*SPECIALS, "a")
    assert vocab.encode(["<eos>", "a"]).ids.tolist() == [UNK_ID, 4]


def test_decode_stops_at_eos_skips_pad_and_bos_and_joins():
    vocab = Vocabulary((*SPECIALS, "x", "y"))
    assert vocab.decode([BOS_ID, 4, PAD_ID, 5, EOS_ID, 4]) == "xy"
    assert vocab.decode([4, 5], separator=" ") == "x y"
    assert vocab.decode([EOS_ID, 4]) == ""
    assert vocab.decode([4, UNK_ID]) == "x<unk>"
    assert vocab.decode_batch(torch.tensor([[4, EOS_ID], [5, 5]])) == ["x", "yy"]
    assert vocab.decode_array(np.array([[4, EOS_ID], [5, 5]]), "-").equals(pa.array(["x", "y-y"]))
    assert vocab.decode_array(np.zeros((0, 3), np.int64)).to_pylist() == []


def test_token_mask_marks_real_tokens_unknown_included():
    ids = np.array([[PAD_ID, BOS_ID, EOS_ID, UNK_ID, 4]])
    assert token_mask(ids).tolist() == [[False, False, False, True, True]]
    assert token_mask(torch.from_numpy(ids)).tolist() == [[False, False, False, True, True]]


def test_decode_refuses_ids_outside_the_vocabulary():
    with pytest.raises(PreprocessingError, match=r"token id 9 is outside the vocabulary \(0..5\)"):
        Vocabulary((*SPECIALS, "x", "y")).decode([4, 9])


@pytest.mark.parametrize(("tokens", "match"), [
    (("a", "b"), "starts with the special tokens"),
    ((*SPECIALS, "a", "a"), "must be unique"),
])
def test_malformed_vocabularies_are_refused(tokens, match):
    with pytest.raises(PreprocessingError, match=match):
        Vocabulary(tokens)


def test_vocabulary_size_settings_are_checked():
    with pytest.raises(PreprocessingError, match="min_frequency must be >= 1, got 0"):
        Vocabulary.fit([], min_frequency=0)
    with pytest.raises(PreprocessingError, match="max_size counts the 4 special tokens and must be > 4, got 4"):
        Vocabulary.fit([], max_size=4)


# --- the TextEncode step --------------------------------------------------------------------------------------

def fitted(**params) -> TextEncode:
    return TextEncode(["s"], **params).fit(pa.table({"s": ["abc", "ab", "a"]}))  # a=4, b=5, c=6


def test_transform_replaces_the_text_by_padded_ids():
    out = fitted(max_length=5).transform(pa.table({"before": [1], "s": ["cab"], "after": [2]}))
    assert out.column_names == ["before", "s", "after"]
    assert out.to_pydict() == {"before": [1], "s": [[6, 4, 5, EOS_ID, PAD_ID]], "after": [2]}


def test_lengths_add_a_length_column_after_the_ids():
    out = fitted(max_length=5, lengths=True).transform(pa.table({"before": [1], "s": ["cab"], "after": [2]}))
    assert out.column_names == ["before", "s", "s_length", "after"]
    assert out.schema.field("s").type == pa.list_(pa.int64(), 5)
    assert out.schema.field("s_length").type == pa.int64()
    assert out.to_pydict() == {"before": [1], "s": [[6, 4, 5, EOS_ID, PAD_ID]], "s_length": [4], "after": [2]}


def test_bos_and_eos_are_optional():
    table = pa.table({"s": ["ab"]})
    assert fitted(max_length=5, add_bos=True).transform(table)["s"].to_pylist() == [[BOS_ID, 4, 5, EOS_ID, 0]]
    assert fitted(max_length=3, add_eos=False, lengths=True).transform(table).to_pydict() == {
        "s": [[4, 5, 0]], "s_length": [2]}


def test_empty_strings_give_eos_then_padding():
    out = fitted(max_length=3, add_bos=True, lengths=True).transform(pa.table({"s": [""]}))
    assert out.to_pydict() == {"s": [[BOS_ID, EOS_ID, PAD_ID]], "s_length": [2]}


def test_unknown_tokens_encode_as_unk_and_are_counted():
    step = fitted(max_length=6)
    encoded = step.encode(pa.table({"s": ["azb", "zz"]}))
    assert encoded.table["s"].to_pylist() == [[4, UNK_ID, 5, EOS_ID, 0, 0], [UNK_ID, UNK_ID, EOS_ID, 0, 0, 0]]
    assert encoded.unknown == {"s": 3}


def test_long_texts_are_truncated_keeping_eos_with_a_warning_count():
    step = fitted(max_length=3, lengths=True)
    table = pa.table({"s": ["abcab", "ab", "abc"]})
    with pytest.warns(TruncationWarning, match="2 of 3 text\\(s\\) in column 's' had more than 2 tokens"):
        out = step.transform(table)
    assert out.to_pydict() == {"s": [[4, 5, EOS_ID], [4, 5, EOS_ID], [4, 5, EOS_ID]], "s_length": [3, 3, 3]}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        encoded = step.encode(table)  # the same result and the counts, without a warning
    assert encoded.truncated == {"s": 2} and encoded.table.equals(out)


def test_truncated_tokens_do_not_count_as_unknown():
    assert fitted(max_length=3).encode(pa.table({"s": ["abzz"]})).unknown == {"s": 0}


def test_no_warning_when_nothing_is_truncated():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fitted(max_length=4).transform(pa.table({"s": ["abc"]}))


def test_nulls_are_an_error_naming_the_row_unless_encoded_as_empty():
    table = pa.table({"s": ["a", None, None]})
    message = "column 's' has 2 null text\\(s\\), first at row 1; use .*nulls='empty'"
    with pytest.raises(PreprocessingError, match=message):
        fitted(max_length=3).transform(table)
    with pytest.raises(PreprocessingError, match="null text"):
        TextEncode(["s"]).fit(table)
    step = TextEncode(["s"], max_length=3, nulls="empty").fit(table)
    assert step.transform(table)["s"].to_pylist() == [[4, EOS_ID, 0], [EOS_ID, 0, 0], [EOS_ID, 0, 0]]


def test_each_column_gets_its_own_vocabulary():
    step = TextEncode(["x", "y"], max_length=3, lengths=True).fit(pa.table({"x": ["ab"], "y": ["zz"]}))
    out = step.transform(pa.table({"x": ["b"], "y": ["z"]}))
    assert step.vocabulary("y").tokens[4:] == ("z",)
    assert out.to_pydict() == {"x": [[5, EOS_ID, 0]], "x_length": [2], "y": [[4, EOS_ID, 0]], "y_length": [2]}


def test_word_tokenizers_decode_with_spaces():
    step = TextEncode(["s"], tokenizer="regex", lowercase=True, max_length=8).fit(pa.table({"s": ["Hi, you!"]}))
    ids = step.transform(pa.table({"s": ["you, HI"]}))["s"].to_pylist()
    assert step.decode(ids) == ["you , hi"]


def test_dictionary_and_chunked_columns_encode_like_plain_strings():
    step = fitted(max_length=4)
    plain = step.transform(pa.table({"s": ["ab", "c", "ab"]}))
    dictionary = pa.table({"s": pa.array(["ab", "c", "ab"]).dictionary_encode()})
    chunked = pa.table({"s": pa.chunked_array([["ab"], ["c", "ab"]])})
    assert step.transform(dictionary).equals(plain)
    assert step.transform(chunked)["s"].to_pylist() == plain["s"].to_pylist()


@settings(max_examples=50)
@given(words)
def test_encoding_a_batch_equals_encoding_each_row(batch):
    step = TextEncode(["s"], tokenizer="whitespace", max_length=4).fit(pa.table({"s": ["a b c", "cé ,!1"]}))
    table = pa.table({"s": pa.array(batch, pa.string())})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        together = step.transform(table).to_pylist()
        alone = [step.transform(table.slice(i, 1)).to_pylist()[0] for i in range(len(batch))]
    assert together == alone


@given(texts)
def test_char_encode_then_decode_gives_the_text_back(batch):
    step = TextEncode(["s"], max_length=14, add_bos=True).fit(pa.table({"s": pa.array(batch, pa.string())}))
    ids = step.transform(pa.table({"s": pa.array(batch, pa.string())}))["s"].to_pylist()
    assert step.decode(np.array(ids).reshape(len(batch), 14)) == batch


def test_json_round_trip_through_the_registry():
    step = TextEncode(["s"], tokenizer="regex", lowercase=True, max_length=6, max_size=10).fit(
        pa.table({"s": ["One two, three", "two"]})
    )
    again = Step.from_dict(json.loads(json.dumps(step.to_dict())))
    assert STEP_TYPES["text_encode"] is TextEncode
    assert again == step
    table = pa.table({"s": ["two one four"]})
    assert again.transform(table).equals(step.transform(table))


def test_unfitted_step_refuses_to_transform():
    with pytest.raises(PreprocessingError, match="is not fitted"):
        TextEncode(["s"]).transform(pa.table({"s": ["a"]}))


def test_non_text_columns_are_refused():
    with pytest.raises(PreprocessingError, match="column 's' holds int64 values, not text"):
        TextEncode(["s"]).fit(pa.table({"s": [1, 2]}))


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"max_length": 1}, "max_length must leave room for one token after bos/eos \\(>= 2\\), got 1"),
    ({"max_length": 2, "add_bos": True}, "\\(>= 3\\), got 2"),
    ({"nulls": "drop"}, "nulls must be 'error' or 'empty', got 'drop'"),
    ({"tokenizer": "bpe"}, "tokenizer must be one of"),
    ({"min_frequency": 0}, "min_frequency must be >= 1"),
])
def test_bad_parameters_are_refused_at_construction(kwargs, match):
    with pytest.raises(PreprocessingError, match=match):
        TextEncode(["s"], **kwargs)


def test_large_inputs_are_encoded_without_per_token_python():
    rng = np.random.default_rng(0)
    vocabulary = np.array([f"w{i}" for i in range(2000)])
    lines = [" ".join(row) for row in rng.choice(vocabulary, (20000, 12))]
    step = TextEncode(["s"], tokenizer="whitespace", max_length=16, lengths=True).fit(pa.table({"s": lines}))
    out = step.transform(pa.table({"s": lines}))
    ids = np.array(out["s"].combine_chunks().flatten()).reshape(-1, 16)
    assert ids.shape == (20000, 16) and (ids[:, 12] == EOS_ID).all() and (out["s_length"].to_numpy() == 13).all()
    assert step.decode(ids[:2], "s") == lines[:2]


def test_text_counts_add_up_and_say_what_was_lost():
    counts = TextCounts()
    assert not counts and counts.summary() == ""
    counts.add(fitted(max_length=3).encode(pa.table({"s": ["abcz", "zz"]})))
    counts.add(TextCounts({"s": 1, "t": 0}, {"t": 2}))
    assert (counts.truncated, counts.unknown) == ({"s": 2, "t": 0}, {"s": 2, "t": 2})
    assert counts.summary() == ("column 's': 2 text(s) truncated to max_length, 2 unknown token(s) encoded as <unk>; "
                                "column 't': 2 unknown token(s) encoded as <unk>")
    with pytest.warns(TruncationWarning, match="^column 's': 2 text\\(s\\) truncated to max_length$"), \
            pytest.warns(UnknownTokenWarning, match="^column 's': 2 unknown token"):
        counts.warn()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TextCounts({"s": 0}, {"s": 0}).warn()  # nothing lost, nothing said
