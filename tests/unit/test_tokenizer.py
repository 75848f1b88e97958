"""Tokenizers: byte-level default and the local tokenizer.json wrapper, same example layout."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvideo.config.data import DataConfig
from kvideo.data.tokenizer import IGNORE_INDEX, ByteTokenizer, HFTokenizer, build_tokenizer


def test_byte_tokenizer_round_trip() -> None:
    tok = ByteTokenizer()
    assert (tok.vocab_size, tok.pad_id, tok.bos_id, tok.eos_id) == (259, 256, 257, 258)
    ids = tok.encode("a red circle — é")
    assert all(0 <= i < 256 for i in ids)
    assert tok.decode([tok.bos_id, *ids, tok.eos_id, tok.pad_id]) == "a red circle — é"


def test_encode_example_layout() -> None:
    tok = ByteTokenizer()
    input_ids, labels = tok.encode_example("Q:", "ab", 10)
    bos, eos, pad = tok.bos_id, tok.eos_id, tok.pad_id
    assert input_ids == [bos, ord("Q"), ord(":"), ord("a"), ord("b"), eos, pad, pad, pad, pad]
    # Aligned with input_ids (the model shifts); only caption tokens and EOS are targets.
    assert labels == [IGNORE_INDEX] * 3 + [ord("a"), ord("b"), eos] + [IGNORE_INDEX] * 4


def test_encode_example_without_prompt() -> None:
    tok = ByteTokenizer()
    input_ids, labels = tok.encode_example("", "hi", 5)
    assert input_ids == [tok.bos_id, ord("h"), ord("i"), tok.eos_id, tok.pad_id]
    assert labels == [IGNORE_INDEX, ord("h"), ord("i"), tok.eos_id, IGNORE_INDEX]


def test_encode_example_truncation_drops_eos() -> None:
    tok = ByteTokenizer()
    input_ids, labels = tok.encode_example("", "abcdef", 4)
    assert input_ids == [tok.bos_id, ord("a"), ord("b"), ord("c")]
    assert labels == [IGNORE_INDEX, ord("a"), ord("b"), ord("c")]
    # A prompt that fills the budget leaves nothing to learn.
    _, labels = tok.encode_example("long prompt", "cap", 6)
    assert labels == [IGNORE_INDEX] * 6
    with pytest.raises(ValueError, match="max_len must be >= 2"):
        tok.encode_example("", "x", 1)


def test_build_tokenizer_default_and_missing_file(tmp_path: Path) -> None:
    assert isinstance(build_tokenizer(DataConfig()), ByteTokenizer)
    with pytest.raises(FileNotFoundError, match=r"data.tokenizer=.*no tokenizer.json"):
        build_tokenizer(DataConfig(tokenizer=str(tmp_path / "missing.json")))


def _word_level_tokenizer(path: Path, specials: list[str]) -> Path:
    import tokenizers

    vocab = {name: i for i, name in enumerate([*specials, "[UNK]", "a", "red", "circle", "moves", "left"])}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.decoder = tokenizers.decoders.WordPiece()
    if specials:
        tok.add_special_tokens(specials)
    tok.save(str(path))
    return path


def test_hf_tokenizer_finds_special_tokens(tmp_path: Path) -> None:
    path = _word_level_tokenizer(tmp_path / "tokenizer.json", ["<pad>", "<s>", "</s>"])
    tok = build_tokenizer(DataConfig(tokenizer=str(tmp_path)))  # a folder holding tokenizer.json works
    assert isinstance(tok, HFTokenizer) and tok.path == str(path)
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.vocab_size) == (0, 1, 2, 9)
    ids = tok.encode("a red circle")
    assert ids == [4, 5, 6]
    assert tok.decode([tok.bos_id, *ids, tok.eos_id, tok.pad_id]) == "a red circle"
    input_ids, labels = tok.encode_example("a", "red circle", 7)
    assert input_ids == [1, 4, 5, 6, 2, 0, 0]
    assert labels == [IGNORE_INDEX, IGNORE_INDEX, 5, 6, 2, IGNORE_INDEX, IGNORE_INDEX]


def test_hf_tokenizer_without_special_tokens_appends_ids(tmp_path: Path) -> None:
    path = _word_level_tokenizer(tmp_path / "plain.json", [])
    tok = HFTokenizer(str(path))
    base = 6  # [UNK] + five words
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.vocab_size) == (base, base + 1, base + 2, base + 3)
    assert tok.decode([tok.bos_id, *tok.encode("red circle"), tok.eos_id]) == "red circle"


@pytest.mark.parametrize(
    "content", ["not json at all\n", "{}", '{"model": 3}', ""], ids=["text", "empty_object", "model", "empty"]
)
def test_a_file_that_is_not_a_tokenizer_json_names_the_key_the_file_and_what_was_expected(
    tmp_path: Path, content: str
) -> None:
    path = tmp_path / "tokenizer.json"
    path.write_text(content)
    with pytest.raises(ValueError) as info:
        build_tokenizer(DataConfig(tokenizer=str(tmp_path)))  # the folder: the message names the file in it
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"data.tokenizer={str(tmp_path)!r}: ") and str(path) in msg
    assert "not a Hugging Face tokenizers JSON file" in msg
