"""The tiny offline LLaMA tokenizer and the checkpoint-tokenizer loader."""

import json

import pytest
import sentencepiece as spm

from bench.errors import UserError
from sida.tokenizer import (
    build_tiny_tokenizer,
    load_tokenizer,
    save_tokenizer,
    special_token_ids,
    tokenizer_from_sentencepiece,
    train_tiny_sentencepiece,
)


def test_sentencepiece_model_is_deterministic():
    first = train_tiny_sentencepiece()
    train_tiny_sentencepiece.cache_clear()
    assert train_tiny_sentencepiece() == first


def test_llama_ids_and_official_token_order():
    sp = spm.SentencePieceProcessor(model_proto=train_tiny_sentencepiece())
    assert (sp.unk_id(), sp.bos_id(), sp.eos_id()) == (0, 1, 2) and sp.is_byte(3)
    tok = build_tiny_tokenizer(description=True)
    ids = special_token_ids(tok)
    base = sp.get_piece_size()
    assert (ids.cls, ids.seg, ids.im_start, ids.im_end, ids.end) == (base, base + 1, base + 2, base + 3, base + 4)
    assert ids.pad == tok.unk_token_id == 0 and ids.eos == 2 and tok.bos_token_id == 1
    assert tok.padding_side == "right" and special_token_ids(build_tiny_tokenizer()).end is None


@pytest.mark.parametrize(
    "text",
    ["The image is tampered.", "Return a new list containing all items from the iterable.", "héllo wörld ✓ 日本"],
)
def test_wrapper_tokenizes_like_sentencepiece(text):
    sp = spm.SentencePieceProcessor(model_proto=train_tiny_sentencepiece())
    tok = tokenizer_from_sentencepiece(train_tiny_sentencepiece())
    assert tok(text).input_ids == [1] + sp.encode(text)
    assert tok.decode(tok(text).input_ids, skip_special_tokens=True) == text


def test_added_tokens_strip_whitespace_like_the_slow_tokenizer():
    tok = build_tiny_tokenizer()
    pieces = tok.convert_ids_to_tokens(tok("is tampered [SEG]</s>", add_special_tokens=False).input_ids)
    assert pieces[-2:] == ["[SEG]", "</s>"] and "▁" not in pieces
    assert tok("[CLS]", add_special_tokens=False).input_ids == [special_token_ids(tok).cls]
    after = tok.convert_ids_to_tokens(tok("<im_end>\nThe", add_special_tokens=False).input_ids)
    assert after == ["<im_end>", "▁The"]  # each chunk gets sentencepiece's dummy prefix (legacy)


def test_save_and_load_round_trip(tmp_path):
    tok = build_tiny_tokenizer(description=True)
    save_tokenizer(tok, tmp_path)
    loaded = load_tokenizer(tmp_path, description=True)
    text = "USER: <im_start><im_end>\nCan you? ASSISTANT: [CLS] The image is real [END]</s>"
    assert loaded(text).input_ids == tok(text).input_ids and loaded(text).input_ids[0] == tok.bos_token_id
    assert special_token_ids(loaded) == special_token_ids(tok)


def test_load_sentencepiece_layout_with_added_tokens(tmp_path):
    (tmp_path / "tokenizer.model").write_bytes(train_tiny_sentencepiece())
    (tmp_path / "added_tokens.json").write_text(json.dumps({"[SEG]": 1001, "[CLS]": 1000}))
    tok = load_tokenizer(tmp_path)
    ids = special_token_ids(tok)
    assert (ids.cls, ids.seg, ids.im_start, ids.im_end) == (1000, 1001, 1002, 1003)
    assert tok("tampered [SEG]").input_ids == build_tiny_tokenizer()("tampered [SEG]").input_ids


def test_bad_tokenizer_folders_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="No tokenizer"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.model").write_bytes(train_tiny_sentencepiece())
    (tmp_path / "added_tokens.json").write_text(json.dumps({"[SEG]": 5000}))
    with pytest.raises(UserError, match="does not belong"):
        load_tokenizer(tmp_path)
    with pytest.raises(UserError, match="lacks"):
        special_token_ids(tokenizer_from_sentencepiece(train_tiny_sentencepiece()))
