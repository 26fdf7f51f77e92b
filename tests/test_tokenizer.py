"""Tests for mgrd.tokenizer: the tiny BPE tokenizer, special-token ids, loading and saving."""

from __future__ import annotations

import hashlib
import json

import pytest
from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from mgrd.tokenizer import (
    SPECIAL_TOKENS,
    TINY_VOCAB_SIZE,
    SpecialTokenIds,
    build_tiny_tokenizer,
    load_tokenizer,
    save_tokenizer,
    special_token_ids,
    tiny_corpus,
)


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_tiny_vocab_size_and_special_ids_are_last(tok):
    assert len(tok) == TINY_VOCAB_SIZE == 512
    ids = special_token_ids(tok)
    assert ids == SpecialTokenIds(bot=507, eot=508, audio_start=509, audio_end=510, audio_patch=511, pad=506, eos=506)
    assert tok.eos_token == tok.pad_token == "<|endoftext|>"
    assert tok.bos_token is None


# The tiny tokenizer's vocabulary, pinned: same on every run, machine and `tokenizers` version, or tests and
# checkpoints built from it (e.g. tests/test_generate.py's pinned tokens) silently change meaning.
TINY_VOCAB_SHA256 = "88309282589aeb2388992a4da55da93ddab4841deb2cd2132b14f4c2743357d5"
TINY_CORPUS_SHA256 = "9b5dc267c890e38ef558bef73c51a872d54cca21a19959731eeaf9a2692acb60"


def test_build_is_deterministic_and_pinned(tok):
    vocab = json.dumps(sorted(tok.get_vocab().items()), ensure_ascii=False)
    assert hashlib.sha256(vocab.encode()).hexdigest() == TINY_VOCAB_SHA256
    assert _ids(tok, "The first tone is at 440 Hz, so the answer is B.") == [
        283, 395, 310, 268, 421, 220, 19, 19, 15, 340, 11, 343, 260, 407, 268, 220, 33, 13
    ]  # fmt: skip
    again = build_tiny_tokenizer()
    assert again.backend_tokenizer.to_str() == tok.backend_tokenizer.to_str()


def test_special_tokens_are_single_ids_even_inside_text(tok):
    for token in SPECIAL_TOKENS:
        assert _ids(tok, token) == [tok.convert_tokens_to_ids(token)]
    ids = special_token_ids(tok)
    glued = _ids(tok, "x<|BOT|>human\n<audio_start><audio_patch><audio_end><|EOT|>y")
    assert [i for i in glued if i >= 506] == [ids.bot, ids.audio_start, ids.audio_patch, ids.audio_end, ids.eot]


def test_think_tags_are_plain_multi_token_text(tok):
    assert len(_ids(tok, "<think>")) > 1
    assert len(_ids(tok, "</think>")) > 1
    assert all(i < 506 for i in _ids(tok, "<think>\nabc\n</think>\n"))


@pytest.mark.parametrize(
    "text",
    [
        "The first tone is at 440 Hz, so the answer is B.",
        "<think>\nI hear 3 beeps.\n</think>\nThe answer is 3.",
        "  leading and trailing spaces \n\n\ttabs ",
        "Unicode: ü é 中文 🎵 — naïve café",
        "12 + 30 = 42; 7 × 6 = 42",
        "spaces before punctuation , . ? ! n't 's",
        "",
    ],
)
def test_any_text_round_trips(tok, text):
    assert tok.decode(_ids(tok, text)) == text


def test_common_words_are_single_tokens(tok):
    for word in ["human", "assistant", "system", " answer", " tone", " pitch", " Hz", " beeps", " higher"]:
        assert len(_ids(tok, word)) == 1, word
    assert len(_ids(tok, "123")) == 3  # digits split one by one, as in Qwen2


def test_special_ids_are_one_frozen_type_with_the_audio_ids_first():
    ids = SpecialTokenIds(3, 4, 5)
    assert (ids.audio_start, ids.audio_end, ids.audio_patch) == (3, 4, 5)
    assert ids.bot is ids.eot is ids.pad is ids.eos is None
    assert ids.audio_ids == {"audio_start": 3, "audio_end": 4, "audio_patch": 5}
    with pytest.raises(AttributeError):
        ids.eot = 1  # frozen: shared by configs and models


def _plain_tokenizer(specials: list[str], vocab_extra: tuple[str, ...] = ()) -> PreTrainedTokenizerFast:
    symbols = sorted(pre_tokenizers.ByteLevel.alphabet()) + list(vocab_extra)
    bpe = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(symbols)}, merges=[]))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.add_special_tokens([AddedToken(t, special=True) for t in specials])
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=specials[0])


def test_missing_special_tokens_are_all_named():
    plain = _plain_tokenizer(["<|endoftext|>", "<|BOT|>", "<|EOT|>"])  # a text-only tokenizer
    with pytest.raises(ValueError) as err:
        special_token_ids(plain)
    message = str(err.value)
    for token in ["<audio_start>", "<audio_end>", "<audio_patch>"]:
        assert token in message
    assert "<|BOT|>" not in message


def test_vocab_entry_that_text_splits_is_rejected():
    # in the vocabulary, but an ordinary entry: the pre-tokenizer cuts the string, so it never encodes as one id
    specials = ["<|endoftext|>", "<|BOT|>", "<|EOT|>", "<audio_start>", "<audio_end>"]
    plain = _plain_tokenizer(specials, vocab_extra=("<audio_patch>",))
    with pytest.raises(ValueError, match=r"not registered as single added tokens: <audio_patch>"):
        special_token_ids(plain)


def test_save_and_load_round_trip(tok, tmp_path):
    folder = save_tokenizer(tok, tmp_path / "model")
    for name in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]:
        assert (folder / name).is_file(), name
    config = json.loads((folder / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"  # loadable by transformers 4.x too
    assert config["additional_special_tokens"] == list(SPECIAL_TOKENS[1:])
    special_map = json.loads((folder / "special_tokens_map.json").read_text())
    assert special_map["eos_token"] == special_map["pad_token"] == "<|endoftext|>"

    loaded = load_tokenizer(folder)
    text = "<|BOT|>human\nWhich tone is higher?<|EOT|>"
    assert _ids(loaded, text) == _ids(tok, text)
    assert special_token_ids(loaded) == special_token_ids(tok)
    assert len(loaded) == len(tok)


def test_saved_tokenizer_carries_the_chat_template(tok, tmp_path):
    from mgrd.chat import CHAT_TEMPLATE, render_chat

    folder = save_tokenizer(tok, tmp_path / "model")
    assert (folder / "chat_template.jinja").read_text() == CHAT_TEMPLATE  # transformers 5
    assert json.loads((folder / "tokenizer_config.json").read_text())["chat_template"] == CHAT_TEMPLATE  # 4.x
    loaded = load_tokenizer(folder)
    messages = [{"role": "user", "content": [{"type": "text", "text": "Which?"}, {"type": "audio", "audio": "a.wav"}]}]
    got = loaded.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, part_join="\n")
    assert got == render_chat(messages, part_join="\n")
    assert got == "<|BOT|>human\nWhich?\n<audio_patch><|EOT|><|BOT|>assistant\n<think>\n"


def test_another_template_is_replaced_on_save(tok, tmp_path):
    from mgrd.chat import CHAT_TEMPLATE

    other = build_tiny_tokenizer()
    other.chat_template = "{{ messages[0]['content'] }}"  # e.g. a Qwen2.5 tokenizer's own <|im_start|> template
    folder = save_tokenizer(other, tmp_path / "model")
    assert load_tokenizer(folder).chat_template == CHAT_TEMPLATE


def test_load_tokenizer_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_tokenizer(tmp_path / "absent")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="no tokenizer files"):
        load_tokenizer(tmp_path)


def test_vocab_size_limits():
    with pytest.raises(ValueError, match="vocab_size must be"):
        build_tiny_tokenizer(100)
    small = build_tiny_tokenizer(300)
    assert len(small) == 300
    assert special_token_ids(small).audio_patch == 299


def test_corpus_is_embedded_text():
    corpus = tiny_corpus()
    assert hashlib.sha256("\n".join(corpus).encode()).hexdigest() == TINY_CORPUS_SHA256
    assert sum(len(line) for line in corpus) == 28_495
    assert not any(token in line for line in corpus for token in SPECIAL_TOKENS)
