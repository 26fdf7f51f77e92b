"""Tokenizers: the special tokens of the Step-Audio-R1 format, the tiny preset's BPE tokenizer, loading and saving.

Real checkpoints bring their own tokenizer (a Hugging Face tokenizer folder, Qwen2.5 vocabulary plus the
`<|BOT|>`, `<|EOT|>` and audio tokens); `load_tokenizer` reads it. The tiny preset gets a real byte-level BPE
tokenizer trained offline and deterministically on an embedded corpus (`build_tiny_tokenizer`), so tests and the
CPU speedrun use the same code path as a 33B checkpoint. `special_token_ids` resolves the ids every other module
needs from whichever tokenizer is in use; no id is ever a constant.

`<think>` / `</think>` are plain multi-token text, not special tokens (reference §7). This module does no chat
rendering (`mgrd.chat`, whose Jinja `CHAT_TEMPLATE` the tiny tokenizer carries and `save_tokenizer` writes) and
no model code.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

# Official strings (reference §6.2). Order matters for the tiny tokenizer: they take the last ids, in this order,
# so that, as in the official vocabulary, every text token id is below the audio token ids.
EOS_TOKEN = "<|endoftext|>"  # eos and pad, as in Qwen2.5
BOT_TOKEN = "<|BOT|>"
EOT_TOKEN = "<|EOT|>"
AUDIO_START_TOKEN = "<audio_start>"
AUDIO_END_TOKEN = "<audio_end>"
AUDIO_PATCH_TOKEN = "<audio_patch>"
SPECIAL_TOKENS = (EOS_TOKEN, BOT_TOKEN, EOT_TOKEN, AUDIO_START_TOKEN, AUDIO_END_TOKEN, AUDIO_PATCH_TOKEN)

TINY_VOCAB_SIZE = 512
# Qwen2's pre-tokenizer split: contractions, words with one leading non-letter, single digits, punctuation runs
# with trailing newlines, newline runs, whitespace. Single digits keep arithmetic and Hz values compositional.
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")


@dataclass(frozen=True)
class SpecialTokenIds:
    """Ids of the control tokens: the one special-id type of the package.

    A tokenizer fills every field (`special_token_ids`); a `config.json` carries only the three audio ids (its
    official `audio_token_ids` key), so the others are None when no tokenizer was seen. The ids that end
    generation are the model's: `ModelConfig.stop_ids()`.

    Attributes:
        audio_start, audio_end, audio_patch: the audio block `<audio_start> <audio_patch>×N <audio_end>`.
        bot, eot: turn delimiters `<|BOT|>` and `<|EOT|>`.
        pad: padding id (the tokenizer's pad token, else `<|endoftext|>`).
        eos: the tokenizer's eos id (else `<|endoftext|>`).
    """

    audio_start: int
    audio_end: int
    audio_patch: int
    bot: int | None = None
    eot: int | None = None
    pad: int | None = None
    eos: int | None = None

    @property
    def audio_ids(self) -> dict[str, int]:
        """The three audio ids, as the official `config.json` key `audio_token_ids` stores them."""
        return {"audio_start": self.audio_start, "audio_end": self.audio_end, "audio_patch": self.audio_patch}


def special_token_ids(tokenizer: PreTrainedTokenizerBase) -> SpecialTokenIds:
    """Resolve the control-token ids of `tokenizer`.

    Each token must exist and encode to exactly one id (it is registered as an added token, so text never
    splits it).

    Raises:
        ValueError: naming every missing or splittable token, e.g. for a plain Qwen2.5 tokenizer that lacks the
            audio tokens.
    """
    found = {t: _token_id(tokenizer, t) for t in SPECIAL_TOKENS}
    missing = [t for t, i in found.items() if i is None]
    split = [t for t, i in found.items() if i is not None and _encode(tokenizer, t) != [i]]
    if missing or split:
        problems = []
        if missing:
            problems.append(f"missing from the vocabulary: {', '.join(missing)}")
        if split:
            problems.append(f"not registered as single added tokens: {', '.join(split)}")
        raise ValueError(
            f"tokenizer {type(tokenizer).__name__} ({getattr(tokenizer, 'name_or_path', '')!s}) cannot encode the "
            f"Step-Audio-R1 chat format; {'; '.join(problems)}. A Step-Audio 2 / R1 checkpoint's own tokenizer has "
            "them; a plain Qwen2.5 tokenizer does not."
        )
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else found[EOS_TOKEN]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else found[EOS_TOKEN]
    return SpecialTokenIds(
        bot=found[BOT_TOKEN],
        eot=found[EOT_TOKEN],
        audio_start=found[AUDIO_START_TOKEN],
        audio_end=found[AUDIO_END_TOKEN],
        audio_patch=found[AUDIO_PATCH_TOKEN],
        pad=pad,
        eos=eos,
    )


def _token_id(tokenizer: PreTrainedTokenizerBase, token: str) -> int | None:
    """The id of `token` if it is in the vocabulary (lookups only: no full-vocabulary copy), else None."""
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None or tokenizer.convert_ids_to_tokens(token_id) != token:
        return None  # absent (None), or mapped to the unknown token
    return token_id


def _encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False, split_special_tokens=False)["input_ids"]


# --------------------------------------------------------------------------------------------- tiny tokenizer


def build_tiny_tokenizer(vocab_size: int = TINY_VOCAB_SIZE) -> PreTrainedTokenizerFast:
    """Train the tiny preset's byte-level BPE tokenizer on the embedded corpus.

    Byte-level: the 256 byte symbols are always in the vocabulary, so any text round-trips through
    encode/decode. Training is deterministic (same vocab and merges on every run and machine). The special
    tokens take the last `len(SPECIAL_TOKENS)` ids in `SPECIAL_TOKENS` order; `<|endoftext|>` is eos and pad and
    there is no bos.

    Args:
        vocab_size: total size including the special tokens (default 512: 256 bytes + 250 merges + 6 special).
    Returns:
        A `PreTrainedTokenizerFast` with `len(tokenizer) == vocab_size` and mgrd's `chat_template`.
    Raises:
        ValueError: if `vocab_size` is below 256 bytes + the special tokens, or above what the corpus can reach.
    """
    n_special = len(SPECIAL_TOKENS)
    byte_alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(byte_alphabet) + n_special:
        raise ValueError(f"vocab_size must be >= {len(byte_alphabet) + n_special} (bytes + special), got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_QWEN2_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - n_special,
        min_frequency=2,
        initial_alphabet=byte_alphabet,
        show_progress=False,
    )
    tok.train_from_iterator(tiny_corpus(), trainer)
    if tok.get_vocab_size() != vocab_size - n_special:
        raise ValueError(
            f"the embedded corpus yields at most {tok.get_vocab_size() + n_special} tokens, asked for {vocab_size}"
        )
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    from mgrd.chat import CHAT_TEMPLATE  # chat builds on this module, so it is imported here

    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        additional_special_tokens=list(SPECIAL_TOKENS[1:]),
        clean_up_tokenization_spaces=False,  # decode must give the exact text back (as Qwen2.5 sets it)
        chat_template=CHAT_TEMPLATE,
    )


def tiny_corpus() -> list[str]:
    """The embedded training text of the tiny tokenizer (~28 KB, generated from word lists, no randomness).

    English about sounds (tones, pitch, Hz, beeps, chords, tempo, loudness), arithmetic, the chat roles and the
    `<think>` / `</think>` reasoning format, so the common words of the synthetic tasks become single tokens.
    """
    lines = [_chat_line(i) for i in range(24)]
    for i in range(16):
        lines += [_pitch_line(i), _beep_line(i), _chord_line(i), _tempo_line(i), _loudness_line(i), _arith_line(i)]
    lines += [_scene_line(i) for i in range(len(_SOURCES) * 2)]
    return lines


def _pick(words: tuple[str, ...], i: int, stride: int = 1) -> str:
    return words[(i * stride) % len(words)]


_SOURCES = (
    "bell", "whistle", "piano", "violin", "flute", "drum", "voice", "bird", "engine", "siren", "guitar", "horn",
    "speaker", "woman", "man", "child", "crowd", "rain", "wind", "dog", "car", "clock", "phone", "alarm",
)  # fmt: skip
_QUALITIES = (
    "bright", "dark", "warm", "harsh", "soft", "sharp", "smooth", "noisy", "pure", "buzzing", "clear", "muffled",
    "quiet", "loud", "steady", "rising", "falling", "short", "long", "distant", "close", "deep", "high", "low",
)  # fmt: skip
_ORDINALS = ("first", "second", "third", "fourth", "last")
_NOTES = ("C", "D", "E", "F", "G", "A", "B")
_MOODS = ("happy", "sad", "tense", "calm", "bright", "dark")
_QUESTIONS = (
    "Which of the two tones is higher?",
    "How many beeps do you hear?",
    "Is the chord major or minor?",
    "Does the sound get louder or softer?",
    "What is the tempo in beats per minute?",
    "Which sound is longer?",
    "What is the sum of the two numbers?",
    "Describe the audio.",
)


def _chat_line(i: int) -> str:
    ordinal, f = _pick(_ORDINALS, i, 3), 200 + (i * 41) % 700
    return (
        "system\nYou are a helpful assistant that listens to audio and reasons about sound.\n"
        f"human\n{_pick(_QUESTIONS, i)}\nassistant\n<think>\nI listen to the audio. The {ordinal} sound has a "
        f"pitch near {f} Hz and it is {_pick(_QUALITIES, i, 5)}, so I compare the tones and count the beeps."
        f"\n</think>\nThe answer is the {ordinal} one.\nuser\nThank you."
    )


def _pitch_line(i: int) -> str:
    f1, f2 = 110 + (i * 37) % 880, 110 + (i * 53) % 880
    higher = "first" if f1 > f2 else "second"
    return (
        f"The first tone is at {f1} Hz and the second tone is at {f2} Hz, so the {higher} tone is higher in pitch "
        "and the other one is lower. Frequency decides the pitch.\nA. the first\nB. the second"
    )


def _beep_line(i: int) -> str:
    n, ms = 1 + i % 9, 50 + (i * 30) % 400
    return (
        f"I hear {n} short beeps, each about {ms} milliseconds long, with silence between them. "
        f"The number of beeps is {n}; counting them one by one gives the total."
    )


def _chord_line(i: int) -> str:
    kind = "major" if i % 2 == 0 else "minor"
    return (
        f"The chord is {_pick(_NOTES, i, 3)} {kind}; three notes played together sound {_pick(_MOODS, i, 5)}. "
        "The interval between the root and the third tells major from minor, and the melody follows the harmony."
    )


def _tempo_line(i: int) -> str:
    bpm = 60 + (i * 7) % 120
    speed = "fast" if bpm > 120 else "slow" if bpm < 90 else "moderate"
    return f"The tempo is {bpm} beats per minute, which feels {speed}; the rhythm is steady and the beat is regular."


def _loudness_line(i: int) -> str:
    a, b = 40 + (i * 11) % 50, 40 + (i * 17) % 50
    trend = "louder" if b > a else "softer" if b < a else "equally loud"
    return f"The sound gets {trend} over time, from {a} dB to {b} dB; the volume and energy change slowly."


def _arith_line(i: int) -> str:
    a, b = 2 + (i * 13) % 97, 1 + (i * 29) % 89
    return (
        f"{a} plus {b} equals {a + b}. {a} + {b} = {a + b}. {a} times {b} is {a * b}. {a} minus {b} is {a - b}. "
        "First add, then check the result, because the final answer must be correct."
    )


def _scene_line(i: int) -> str:
    src, quality = _pick(_SOURCES, i), _pick(_QUALITIES, i, 7)
    return (
        f"A {quality} {src} sound lasts {1 + i % 12} seconds; its duration, timbre and frequency are easy to hear, "
        "and the recording also contains background noise, music and speech."
    )


# --------------------------------------------------------------------------------------------- load / save


def load_tokenizer(path: str | os.PathLike) -> PreTrainedTokenizerBase:
    """Load a Hugging Face tokenizer folder (a checkpoint's own, or one written by `save_tokenizer`).

    Returns:
        The fast tokenizer `AutoTokenizer` picks (a `PreTrainedTokenizerFast` subclass for Qwen-based
        checkpoints). Check it with `special_token_ids` before building chat inputs.
    Raises:
        FileNotFoundError: if `path` is not a folder or holds no tokenizer files.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"tokenizer folder not found: {folder}")
    if not any((folder / name).is_file() for name in _TOKENIZER_FILES):
        raise FileNotFoundError(
            f"no tokenizer files in {folder} (expected one of {', '.join(_TOKENIZER_FILES)}); "
            "a checkpoint folder must carry its tokenizer, e.g. written by mgrd.tokenizer.save_tokenizer"
        )
    if (folder / "tokenizer.json").is_file():
        # Read the fast tokenizer directly: AutoTokenizer would also parse the folder's model config.json,
        # which transformers does not know (model_type step_audio_2) and warns about.
        return PreTrainedTokenizerFast.from_pretrained(str(folder))
    return AutoTokenizer.from_pretrained(str(folder))


def save_tokenizer(tokenizer: PreTrainedTokenizerBase, path: str | os.PathLike) -> Path:
    """Save `tokenizer` beside a model so that transformers 4.x and 5.x (and tools built on them) load it.

    Writes `tokenizer.json`, `tokenizer_config.json` and `special_tokens_map.json` with `save_pretrained`, then
    replaces transformers 5's generic class name `TokenizersBackend` (unknown to 4.x) by `PreTrainedTokenizerFast`
    and stores the extra special tokens under the key both versions read (`additional_special_tokens`). mgrd's
    chat template (`mgrd.chat.CHAT_TEMPLATE`, what `encode_chat` builds) replaces any other: it goes in
    `chat_template.jinja` (transformers 5) and under `chat_template` in `tokenizer_config.json` (4.x).

    Returns:
        The folder.
    """
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(folder))
    from mgrd.chat import CHAT_TEMPLATE

    (folder / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["chat_template"] = CHAT_TEMPLATE
    if config.get("tokenizer_class") == "TokenizersBackend":
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
    if isinstance(config.get("extra_special_tokens"), list):
        config["additional_special_tokens"] = config.pop("extra_special_tokens")
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False, sort_keys=True) + "\n")
    special_map = {k: str(v) for k, v in tokenizer.special_tokens_map.items() if isinstance(v, str)}
    special_map["additional_special_tokens"] = [str(t) for t in config.get("additional_special_tokens", [])]
    (folder / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2, ensure_ascii=False) + "\n")
    return folder
