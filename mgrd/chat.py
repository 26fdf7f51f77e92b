"""The Step-Audio-R1 chat format: render and encode conversations, and split output into reasoning and answer.

Template (reference §6.1): every turn is `<|BOT|>{role}\\n{content}<|EOT|>`, role `user` is written `human`, a
system message may only come first, and the generation prompt `<|BOT|>assistant\\n<think>\\n` switches reasoning
on. Each audio part becomes one `<audio_start> <audio_patch>×N <audio_end>` block per <= 25 s chunk, with N from
the model's `AudioEncoderConfig.token_count` (`mgrd.audio.audio_token_count` under its token rule); its log-mel
features travel beside the ids in `ChatInputs.mels`. The parts of a message are joined with `part_join`: "" (the
transformers client) or `OFFICIAL_PART_JOIN` = "\\n", which reproduces the official vLLM server (it joins parts
with "\\n" and its template then drops the "\\n" right after each `<audio_patch>`, reference §9.5). The same
format is shipped as a Jinja `CHAT_TEMPLATE` for `tokenizer.apply_chat_template`.

Training and inference agree by construction. An assistant target is `format_reasoning(reasoning, answer)` =
`<think>\\n{reasoning}\\n</think>\\n{answer}`. When encoding, its `<think>\\n` prefix is tokenised together with
the `assistant\\n` header, exactly as the generation prompt is, so the ids of a training sequence up to the
assistant content equal the inference prompt; the loss (`labels_mask`) covers what the model generates after
that prompt, `format_completion(reasoning, answer)` + `<|EOT|>`.

Messages are OpenAI-style dicts. Control tokens are inserted by id, and message text is encoded with special
tokens split, so a message that contains the string `<|EOT|>` or `<audio_patch>` cannot forge a turn boundary or
an audio slot. `split_reasoning` and its incremental form `ReasoningStream` are the one think/answer splitter.
This module does no batching or padding (that is collation) and no model code.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from mgrd.audio import CHANNEL_MODES, CHUNK_SECONDS, features_for_clip
from mgrd.tokenizer import AUDIO_PATCH_TOKEN, BOT_TOKEN, EOT_TOKEN, SpecialTokenIds, special_token_ids

if TYPE_CHECKING:
    from mgrd.models.config import AudioEncoderConfig

THINK_START = "<think>"
THINK_END = "</think>"
THINK_PREFIX = THINK_START + "\n"  # ends every inference prompt; starts every assistant target
GENERATION_PROMPT = f"{BOT_TOKEN}assistant\n{THINK_PREFIX}"
ROLE_NAMES = {"user": "human"}  # how a role is written in the template; others are written as given
PART_TYPES = ("text", "audio", "input_audio")
OFFICIAL_PART_JOIN = "\n"  # the official server's join of a message's parts (none after an audio part)

Message = dict[str, Any]

# `render_chat` as a Jinja template, saved with every tokenizer (`mgrd.tokenizer.save_tokenizer`) so that
# `tokenizer.apply_chat_template(messages, add_generation_prompt=True, part_join="\n")` renders what mgrd renders
# (tests/test_chat.py checks them against each other). Audio parts render as one `<audio_patch>` placeholder.
# `continue_final_message` is transformers' own: it cuts the render after the last message's content (4.46 also
# strips the "\n" of a final "<think>\n" there; 4.57 and 5.x keep it). The official client's marker, a last
# assistant message with `"eot": False`, is rendered open by the template itself, the same in every version.
CHAT_TEMPLATE = (
    "{%- set join = part_join if part_join is defined else '' -%}"
    "{%- set last = messages | length - 1 -%}"
    "{%- set open_last = messages and messages[last]['role'] == 'assistant'"
    " and messages[last].get('eot', true) is false -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' and not loop.first -%}"
    "{{- raise_exception('a system message may only be the first message') -}}"
    "{%- endif -%}"
    "{%- if message['content'] is string -%}{%- set text = message['content'] -%}"
    "{%- else -%}"
    "{%- set ns = namespace(text='', after_audio=true) -%}"
    "{%- for part in message['content'] -%}"
    "{%- if not loop.first and not ns.after_audio -%}{%- set ns.text = ns.text + join -%}{%- endif -%}"
    "{%- if part['type'] == 'text' -%}{%- set ns.text = ns.text + part['text'] -%}{%- set ns.after_audio = false -%}"
    "{%- elif part['type'] in ['audio', 'input_audio'] -%}"
    "{%- set ns.text = ns.text + '<audio_patch>' -%}{%- set ns.after_audio = true -%}"
    "{%- else -%}{{- raise_exception('unknown content part type ' + part['type']) -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- set text = ns.text -%}"
    "{%- endif -%}"
    "{%- set role = 'human' if message['role'] == 'user' else message['role'] -%}"
    "{{- '<|BOT|>' + role + '\n' + text -}}"
    "{%- if not (loop.last and open_last) -%}{{- '<|EOT|>' -}}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt and not open_last -%}{{- '<|BOT|>assistant\n<think>\n' -}}{%- endif -%}"
)


@dataclass
class ChatInputs:
    """One encoded conversation.

    Attributes:
        input_ids: `[T]` token ids.
        mels: one `[n_mels, L_i]` float32 tensor per audio block, in order of appearance; block i holds
            `audio_config.token_count(L_i)` `<audio_patch>` ids.
        labels_mask: `[T]` 1 on the tokens an assistant turn generates (its content after `<think>\\n`, and its
            `<|EOT|>`), 0 elsewhere; None unless encoded with `train=True`.
    """

    input_ids: list[int]
    mels: list[torch.Tensor]
    labels_mask: list[int] | None = None


@dataclass(frozen=True)
class _Segment:
    """A piece of the rendered conversation: text, one control token, or one audio part."""

    kind: Literal["text", "special", "audio"]
    value: Any  # text, the control-token string, or the audio part dict
    target: bool = False  # generated by the assistant (trained on)


# --------------------------------------------------------------------------------------------- public API


def render_chat(
    messages: list[Message],
    add_generation_prompt: bool = True,
    continue_final_message: bool = False,
    *,
    part_join: str = "",
) -> str:
    """The template text of a conversation, with one `<audio_patch>` placeholder per audio part.

    For display and debugging: audio is not decoded, so a long clip still shows a single placeholder. The
    tokenizer's `CHAT_TEMPLATE` renders the same string.

    Args:
        messages: OpenAI-style messages (see `encode_chat`).
        add_generation_prompt: end with `<|BOT|>assistant\\n<think>\\n`.
        continue_final_message: leave the last (assistant) message open, without `<|EOT|>`, so generation
            continues it (the official client's `{"role": "assistant", "content": "<think>\\n"}` prefix). A last
            assistant message with `"eot": False` (the official client's marker) is left open the same way.
        part_join: put between the parts of a message, except right after an audio part ("" or
            `OFFICIAL_PART_JOIN`).
    Returns:
        The prompt string.
    """
    segments = _segments(messages, add_generation_prompt, continue_final_message, part_join)
    return "".join(AUDIO_PATCH_TOKEN if s.kind == "audio" else s.value for s in segments)


def encode_chat(
    tokenizer: PreTrainedTokenizerBase,
    messages: list[Message],
    *,
    add_generation_prompt: bool = True,
    continue_final_message: bool = False,
    audio_config: AudioEncoderConfig | None = None,
    chunk_seconds: float = CHUNK_SECONDS,
    train: bool = False,
    part_join: str = "",
    channel: str = "first",
) -> ChatInputs:
    """Token ids and audio features of a conversation.

    Messages: `{"role": str, "content": str | list[part]}`; role `system` (first message only), `user` (written
    `human`), `human`, `assistant`, or any other name (written as given); other keys are ignored, except
    `"eot": False` on a last assistant message, which leaves it open (as `continue_final_message`). Parts:
    `{"type": "text", "text": str}`, `{"type": "audio", "audio": path | bytes | np.ndarray}` (an array is `[S]`
    float samples at 16 kHz) and OpenAI's `{"type": "input_audio", "input_audio": {"data": base64, "format": ...}}`
    (the format is sniffed from the bytes). An audio part may carry precomputed features instead, `"mels": [tensor,
    ...]` (one `[n_mels, L]` per chunk, as `mgrd.audio.features_for_clip` returns them); then its audio is not
    decoded again, so a collator can featurise each clip once. Assistant messages are text only.

    Text between control tokens is tokenised as one piece without BOS/EOS, so a text-only conversation encodes as
    `tokenizer(render_chat(...))` does, with one exception: an assistant turn's content is tokenised apart from its
    header `assistant\\n<think>\\n` (or `assistant\\n`), so the training prefix equals the inference prompt and
    the loss boundary falls between tokens. A tail chunk too short for one audio token (under 20 ms with the "hf"
    rule) is dropped.

    Args:
        tokenizer: a tokenizer holding the control tokens (`mgrd.tokenizer.special_token_ids`).
        messages: the conversation.
        add_generation_prompt: end with `<|BOT|>assistant\\n<think>\\n`; ignored when `train` or when the last
            message is an open assistant turn (`"eot": False`).
        continue_final_message: leave the last assistant message open (no `<|EOT|>`).
        audio_config: the model's audio side (`ModelConfig.audio`): mel bins and the token-count rule, so the
            prompt has as many `<audio_patch>` slots as the model makes embeddings; None = the defaults (128 mels,
            the "hf" rule, adapter k3 s2).
        chunk_seconds: the longest audio chunk; longer clips become several blocks.
        train: build `labels_mask` and add no generation prompt.
        part_join: put between the parts of a message, except right after an audio part; "" (default) or
            `OFFICIAL_PART_JOIN` ("\\n", the official server; tasks, evaluation and serving use it).
        channel: "first" or "mean": how a multi-channel file becomes mono (`mgrd.audio.load_audio`).
    Returns:
        `ChatInputs` with `input_ids` `[T]`, `mels` (one `[n_mels, L]` per block) and, if `train`, `labels_mask` `[T]`.
    Raises:
        ValueError: malformed messages or parts, undecodable audio (`mgrd.audio.AudioError`), a tokenizer without
            the control tokens, or `train` with no assistant tokens to learn.
    """
    if channel not in CHANNEL_MODES:
        raise ValueError(f"channel must be one of {', '.join(CHANNEL_MODES)}, got {channel!r}")
    from mgrd.models.config import AudioEncoderConfig

    if audio_config is None:
        audio_config = AudioEncoderConfig()
    elif not isinstance(audio_config, AudioEncoderConfig):
        got = type(audio_config).__name__
        raise ValueError(f"audio_config must be an AudioEncoderConfig (a ModelConfig's .audio), got {got}")
    ids = special_token_ids(tokenizer)
    segments = _segments(messages, add_generation_prompt and not train, continue_final_message, part_join)
    input_ids: list[int] = []
    labels_mask: list[int] = []
    mels: list[torch.Tensor] = []
    for seg in segments:
        if seg.kind == "audio":
            piece, feats = _encode_audio(seg.value, ids, audio_config, chunk_seconds, channel)
            mels += feats
        elif seg.kind == "special":
            piece = [_special_id(seg.value, ids)]
        else:
            piece = _encode_text(tokenizer, seg.value)
        input_ids += piece
        labels_mask += [int(seg.target)] * len(piece)
    if train and not any(labels_mask):
        raise ValueError("train=True needs at least one assistant message with content to learn")
    return ChatInputs(input_ids=input_ids, mels=mels, labels_mask=labels_mask if train else None)


def format_reasoning(reasoning: str, answer: str) -> str:
    """The assistant target: `<think>\\n{reasoning}\\n</think>\\n{answer}`.

    Empty reasoning gives `<think>\\n\\n</think>\\n{answer}`, the paper's format for samples without a chain.

    Use it as an assistant message's content for SFT; `encode_chat(..., train=True)` trains on the part after
    `<think>\\n` (see `format_completion`), since the inference prompt already ends with `<think>\\n`.

    Raises:
        ValueError: if `reasoning` contains `</think>` (the answer would be split off at the wrong place).
    """
    if THINK_END in reasoning:
        raise ValueError(f"reasoning must not contain {THINK_END!r}: split_reasoning would cut the answer there")
    return f"{THINK_PREFIX}{reasoning}\n{THINK_END}\n{answer}"


def format_completion(reasoning: str, answer: str) -> str:
    """What the model generates after the inference prompt: `{reasoning}\\n</think>\\n{answer}` (then `<|EOT|>`).

    Equals `format_reasoning(reasoning, answer)` without its `<think>\\n` prefix; RL and distillation compare
    sampled completions against it.
    """
    return format_reasoning(reasoning, answer)[len(THINK_PREFIX) :]


def split_reasoning(text: str) -> tuple[str, str | None]:
    """Split model output into reasoning and answer at the FIRST `</think>` (reference §7).

    Accepts a completion (text after the `<think>\\n` prompt) or a full `<think>…` block: a leading `<think>` is
    removed, and newlines around the reasoning and before the answer are stripped. Decode with special tokens
    skipped, so no `<|EOT|>` is left at the end.

    Returns:
        `(reasoning, answer)`; `answer` is None when there is no `</think>` (truncated output, or no answer yet),
        and then `reasoning` is all the text.
    """
    stripped = text.lstrip()
    body = stripped[len(THINK_START) :] if stripped.startswith(THINK_START) else text
    reasoning, found, answer = body.partition(THINK_END)
    reasoning = reasoning.strip("\r\n")
    return (reasoning, answer.lstrip("\r\n")) if found else (reasoning, None)


class ReasoningStream:
    """`split_reasoning` for a stream of text deltas, in time linear in the text.

    `feed(delta)` returns the reasoning and answer pieces that are final so far; `finish()` returns the rest.
    Concatenated, the reasoning pieces equal `split_reasoning(full_text)[0]` and the answer pieces its answer
    ("" where `split_reasoning` gives None; `has_answer` tells the two apart). Text that might still turn out to
    be part of a `<think>` / `</think>` tag, or newlines that the split would strip, is held back until the next
    delta decides it.

    Example:
        >>> stream = ReasoningStream()
        >>> [stream.feed(d) for d in ["Two be", "eps.\\n</th", "ink>\\n2"]] + [stream.finish()]
        [('Two be', ''), ('eps.', ''), ('', '2'), ('', '')]
    """

    def __init__(self):
        self._state = "prefix"  # "prefix": a leading "<think>" not yet decided; then "reasoning"; then "answer"
        self._pending = ""  # text received but not yet returned
        self._started = False  # a non-newline reasoning character has been returned (leading newlines are cut)
        self._answer_started = False  # likewise for the answer
        self.has_answer = False  # a `</think>` has been seen

    def feed(self, delta: str) -> tuple[str, str]:
        """Take the next piece of text; returns `(reasoning_piece, answer_piece)`, either possibly ""."""
        if self._state == "finished":
            raise ValueError("ReasoningStream.feed after finish()")
        self._pending += delta
        if self._state == "prefix":
            stripped = self._pending.lstrip()
            if THINK_START.startswith(stripped) and len(stripped) < len(THINK_START):
                return "", ""  # still only whitespace and a beginning of "<think>"
            self._state = "reasoning"
            if stripped.startswith(THINK_START):
                self._pending = stripped[len(THINK_START) :]
        return self._advance()

    def finish(self) -> tuple[str, str]:
        """The rest, at the end of the text; the stream takes no more deltas."""
        if self._state == "prefix":
            self._state = "reasoning"  # whitespace or a cut-off "<thi": plain text
        reasoning, answer = self._advance()
        if self._state == "reasoning":
            reasoning += self._reasoning_out(self._pending.rstrip("\r\n"))
        self._state, self._pending = "finished", ""
        return reasoning, answer

    def _advance(self) -> tuple[str, str]:
        reasoning = ""
        if self._state == "reasoning":
            head, found, tail = self._pending.partition(THINK_END)
            if found:
                reasoning = self._reasoning_out(head.rstrip("\r\n"))
                self._state, self._pending, self.has_answer = "answer", tail, True
            else:
                held = _tag_prefix_len(self._pending, THINK_END)
                body = self._pending[: len(self._pending) - held]
                keep = len(body) - len(body.rstrip("\r\n"))  # trailing newlines: cut if the reasoning ends here
                out = body[: len(body) - keep]
                self._pending = self._pending[len(out) :]
                return self._reasoning_out(out), ""
        if self._state == "answer":
            if not self._answer_started:
                self._pending = self._pending.lstrip("\r\n")
                self._answer_started = bool(self._pending)
            answer, self._pending = self._pending, ""
            return reasoning, answer
        return reasoning, ""

    def _reasoning_out(self, text: str) -> str:
        if not self._started:
            text = text.lstrip("\r\n")
            self._started = bool(text)
        return text


def _tag_prefix_len(text: str, tag: str) -> int:
    """Length of the longest proper prefix of `tag` that `text` ends with (0 when none)."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


# --------------------------------------------------------------------------------------------- rendering


def _segments(
    messages: list[Message], add_generation_prompt: bool, continue_final_message: bool, part_join: str = ""
) -> list[_Segment]:
    """The conversation as segments, adjacent text of the same `target` merged."""
    if not isinstance(messages, list):
        raise ValueError(f"messages must be a list of dicts, got {type(messages).__name__}")
    if not isinstance(part_join, str):
        raise ValueError(f"part_join must be a string, got {part_join!r}")
    if add_generation_prompt and continue_final_message:
        raise ValueError("add_generation_prompt and continue_final_message cannot both be set")
    if continue_final_message and (not messages or _role(messages[-1], len(messages) - 1) != "assistant"):
        raise ValueError("continue_final_message needs an assistant message last")
    if _open_by_eot(messages):  # the official client's {"role": "assistant", "content": "<think>\n", "eot": False}
        continue_final_message, add_generation_prompt = True, False
    segments: list[_Segment] = []
    for i, message in enumerate(messages):
        role, parts = _role(message, i), _content(message, i, part_join)
        if role == "system" and i > 0:
            raise ValueError(f"messages[{i}]: a system message may only be the first message")
        if role == "assistant":
            open_turn = continue_final_message and i == len(messages) - 1
            segments += _assistant_segments(parts, i, close=not open_turn)
        else:
            header = _Segment("text", f"{ROLE_NAMES.get(role, role)}\n")
            segments += [_Segment("special", BOT_TOKEN), header, *parts, _Segment("special", EOT_TOKEN)]
    if add_generation_prompt:
        segments += [_Segment("special", BOT_TOKEN), _Segment("text", f"assistant\n{THINK_PREFIX}")]
    return _merge_text(segments)


def _assistant_segments(parts: list[_Segment], index: int, close: bool) -> list[_Segment]:
    if any(p.kind == "audio" for p in parts):
        raise ValueError(f"messages[{index}]: assistant messages are text only (the model does not generate audio)")
    text = "".join(p.value for p in parts)
    # A reasoning target's "<think>\n" belongs to the prompt side, so its tokens match the generation prompt.
    head = THINK_PREFIX if text.startswith(THINK_PREFIX) else ""
    segments = [
        _Segment("special", BOT_TOKEN),
        _Segment("text", f"assistant\n{head}"),
        _Segment("text", text[len(head) :], target=True),
    ]
    if close:
        segments.append(_Segment("special", EOT_TOKEN, target=True))
    return segments


def _merge_text(segments: list[_Segment]) -> list[_Segment]:
    merged: list[_Segment] = []
    for seg in segments:
        if seg.kind == "text" and not seg.value:
            continue
        prev = merged[-1] if merged else None
        if prev and prev.kind == seg.kind == "text" and prev.target == seg.target:
            merged[-1] = _Segment("text", prev.value + seg.value, seg.target)
        else:
            merged.append(seg)
    return merged


def _open_by_eot(messages: list[Message]) -> bool:
    """True when the last message is an assistant turn marked `"eot": False`; the marker is refused elsewhere."""
    for i, message in enumerate(messages):
        if isinstance(message, dict) and message.get("eot", True) is False:
            if i != len(messages) - 1 or _role(message, i) != "assistant":
                raise ValueError(f"messages[{i}]: 'eot': False only marks the last message, an assistant turn, as open")
            return True
    return False


def _role(message: Message, index: int) -> str:
    if not isinstance(message, dict):
        raise ValueError(f"messages[{index}] must be a dict, got {type(message).__name__}")
    role = message.get("role")
    if not isinstance(role, str) or not role:
        raise ValueError(f"messages[{index}]: 'role' must be a non-empty string, got {role!r}")
    return role


def _content(message: Message, index: int, part_join: str = "") -> list[_Segment]:
    """Validate a message's content (without decoding audio) and return its text and audio segments.

    `part_join` goes between consecutive parts, except after an audio part: the official server joins with "\\n"
    and its template then removes the "\\n" that follows each `<audio_patch>`.
    """
    content = message.get("content")
    if isinstance(content, str):
        return [_Segment("text", content)]
    if not isinstance(content, list):
        raise ValueError(f"messages[{index}]: 'content' must be a string or a list of parts, got {content!r:.80}")
    segments: list[_Segment] = []
    for j, part in enumerate(content):
        if j and part_join and segments[-1].kind != "audio":
            segments.append(_Segment("text", part_join))
        segments.append(_part(part, f"messages[{index}].content[{j}]"))
    return segments


def _part(part: Any, where: str) -> _Segment:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind not in PART_TYPES:
        raise ValueError(f"{where}: expected a dict with 'type' in {PART_TYPES}, got {part!r:.80}")
    if kind == "text":
        if not isinstance(part.get("text"), str):
            raise ValueError(f"{where}: a text part needs a string 'text'")
        return _Segment("text", part["text"])
    if part.get("mels") is not None:
        if not isinstance(part["mels"], (list, tuple)) or not part["mels"]:
            raise ValueError(f"{where}: 'mels' must be a non-empty list of [n_mels, L] tensors, one per chunk")
        return _Segment("audio", part)
    if kind == "audio" and part.get("audio") is None:
        raise ValueError(f"{where}: an audio part needs 'audio' (a path, bytes or a float array) or 'mels'")
    if kind == "input_audio" and not isinstance((part.get("input_audio") or {}).get("data"), str):
        raise ValueError(f"{where}: an input_audio part needs 'input_audio': {{'data': <base64>, 'format': ...}}")
    return _Segment("audio", part)


# --------------------------------------------------------------------------------------------- encoding


def _encode_text(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    # split_special_tokens: a control-token string inside message text is ordinary text, never a control id.
    return tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]


def _special_id(token: str, ids: SpecialTokenIds) -> int:
    return ids.bot if token == BOT_TOKEN else ids.eot


def _encode_audio(
    part: dict, ids: SpecialTokenIds, audio_config: AudioEncoderConfig, chunk_seconds: float, channel: str
) -> tuple[list[int], list[torch.Tensor]]:
    """One `<audio_start> <audio_patch>×N <audio_end>` block and one `[n_mels, L]` feature per chunk."""
    if part.get("mels") is not None:
        chunks = _precomputed_mels(part["mels"], audio_config)
    else:  # features_for_clip drops a tail chunk that makes no token and rejects a clip too short for one
        chunks = features_for_clip(
            _audio_source(part), audio_config.n_mels, chunk_seconds, channel=channel, token_count=audio_config.token_count
        )
    piece: list[int] = []
    for mel in chunks:
        piece += [ids.audio_start] + [ids.audio_patch] * audio_config.token_count(mel.shape[-1]) + [ids.audio_end]
    return piece, list(chunks)


def _precomputed_mels(mels: list, audio_config: AudioEncoderConfig) -> list[torch.Tensor]:
    """Check precomputed features: `[n_mels, L]` float tensors, each long enough for one audio token."""
    for i, mel in enumerate(mels):
        if not isinstance(mel, torch.Tensor) or mel.ndim != 2 or mel.shape[0] != audio_config.n_mels:
            shape = tuple(mel.shape) if isinstance(mel, torch.Tensor) else type(mel).__name__
            raise ValueError(f"mels[{i}] must be a [{audio_config.n_mels}, L] tensor, got {shape}")
        if not mel.is_floating_point():
            raise ValueError(f"mels[{i}] must hold float features, got dtype {mel.dtype}")
        if audio_config.token_count(mel.shape[-1]) < 1:
            raise ValueError(f"mels[{i}] has {mel.shape[-1]} frames, too few for one audio token")
    return list(mels)


def _audio_source(part: dict) -> str | os.PathLike | bytes | np.ndarray:
    """What `mgrd.audio.features_for_clip` takes: a path, file bytes, or `[S]` float32 samples at 16 kHz."""
    if part["type"] == "input_audio":
        try:
            return base64.b64decode(part["input_audio"]["data"], validate=True)
        except (binascii.Error, ValueError) as err:
            raise ValueError(f"input_audio 'data' is not valid base64: {err}") from None
    source = part["audio"]
    if isinstance(source, np.ndarray):
        if not np.issubdtype(source.dtype, np.floating):
            raise ValueError(f"audio arrays must hold float samples in [-1, 1] at 16 kHz, got dtype {source.dtype}")
        return source.astype(np.float32, copy=False)
    if isinstance(source, (str, os.PathLike, bytes, bytearray)):
        return bytes(source) if isinstance(source, bytearray) else source
    raise ValueError(f"audio must be a path, bytes or a float numpy array, got {type(source).__name__}")
