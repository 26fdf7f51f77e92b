"""The OpenAI chat-completions protocol: request schema, errors, requests turned into prompts, response shapes.

A request's messages map onto `mgrd.chat` messages (the official template, the official "\\n" part join, the
channel mean of the official server, reference §9.5): text parts stay text, each `input_audio` part (base64 wav,
mp3, flac or ogg) is decoded here, once, so its length can be checked against the server's limits before the
chat encoder featurises it. The official client's fields (role `human`, an open assistant `<think>\\n` with
`continue_final_message` or `"eot": false`, `stop_token_ids`, `skip_special_tokens`) and vLLM's sampling extras
(`top_k`, `repetition_penalty`) are honoured. `RowText` turns one row's token ids into reasoning and answer
pieces (stop strings held back until decided), `chat_completion` builds the response document (`mgrd generate
--json` prints the same shape). This module runs no model and knows no HTTP framework beyond pydantic.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from mgrd.audio import SAMPLE_RATE, AudioError, load_audio
from mgrd.chat import OFFICIAL_PART_JOIN, ChatInputs, ReasoningStream, encode_chat, split_reasoning
from mgrd.generate import SamplingConfig, TextDecoder

AUDIO_FORMATS = ("wav", "mp3", "flac", "ogg")  # what libsndfile decodes among OpenAI's input_audio formats


# --------------------------------------------------------------------------------------------- errors
class ApiError(Exception):
    """A request the server refuses, as OpenAI's error shape with its HTTP status."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    """`{"error": {"message", "type", "param", "code"}}`, as OpenAI (and vLLM) send it."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


# --------------------------------------------------------------------------------------------- request schema
class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class InputAudio(BaseModel):
    data: str = Field(description="the audio file's bytes, base64")
    format: str = Field("wav", description="wav, mp3, flac or ogg (the bytes are sniffed; this is checked)")


class InputAudioPart(BaseModel):
    type: Literal["input_audio"]
    input_audio: InputAudio


Part = Annotated[Union[TextPart, InputAudioPart], Field(discriminator="type")]


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str = Field(min_length=1, description="system, developer (as system), user, human, assistant, or any "
                                                "other name (written into the template as given)")
    content: Union[str, list[Part], None] = Field(None, description="text, or text and input_audio parts")
    eot: bool | None = Field(None, description="the official client's marker: false leaves the last assistant "
                                               "message open (as continue_final_message)")


class StreamOptions(BaseModel):
    include_usage: bool = False


class AudioOutput(BaseModel):
    voice: str = Field("alloy", description="an OpenAI voice name (mapped to an espeak-ng voice) or en, en-us, en-gb")
    format: Literal["wav", "pcm16"] = Field("wav", description="wav: one WAV file (per sentence when streaming); "
                                                               "pcm16: raw 16-bit mono at 24 kHz")


class ChatCompletionRequest(BaseModel):
    """OpenAI's chat-completions body with vLLM's extras; unknown fields are ignored, as vLLM ignores them."""

    model_config = ConfigDict(extra="allow")

    model: str | None = Field(None, description="the served model name; omitted = the served model")
    messages: list[Message] = Field(min_length=1)
    temperature: float | None = Field(None, ge=0, le=100, description="0 (or under 1e-5) = greedy; default 1")
    top_p: float | None = Field(None, ge=1e-6, le=1, description="nucleus mass; smaller values underflow float32")
    top_k: int | None = Field(None, ge=-1, description="vLLM: -1 or 0 = off")
    repetition_penalty: float | None = Field(None, ge=0.01, le=100, description="1 = off")
    presence_penalty: float | None = Field(None, description="not supported: 0 only")
    frequency_penalty: float | None = Field(None, description="not supported: 0 only")
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    n: int = Field(1, ge=1)
    stop: Union[str, list[str], None] = None
    stop_token_ids: list[Annotated[int, Field(ge=0)]] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    skip_special_tokens: bool = True
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    modalities: list[Literal["text", "audio"]] | None = None
    audio: AudioOutput | None = None
    user: str | None = None


# --------------------------------------------------------------------------------------------- request -> prompt
@dataclass
class Limits:
    """What one request may ask for.

    Attributes:
        max_model_len: positions a prompt and its completion may fill together.
        max_audio_seconds: seconds of audio, all parts together.
        max_audio_parts: input_audio parts.
        max_n: choices per request.
        default_max_tokens: the completion budget when a request gives none (None: what the context leaves).
    """

    max_model_len: int
    max_audio_seconds: float = 600.0
    max_audio_parts: int = 64
    max_n: int = 8
    default_max_tokens: int | None = None


@dataclass
class Prepared:
    """A request ready for the scheduler: the prompt, its sampling, and how to turn its tokens into text."""

    prompt: ChatInputs
    cfg: SamplingConfig
    n: int
    stop_strings: tuple[str, ...]
    skip_special_tokens: bool
    prefix: str  # an open assistant message's text, which the completion continues ("" if none)
    audio_seconds: float


def prepare(req: ChatCompletionRequest, tokenizer, audio_config, limits: Limits,
            tokenizer_lock: threading.Lock | None = None) -> Prepared:
    """Check a request against `limits`, decode its audio, encode the prompt and resolve its sampling.

    `tokenizer_lock` serialises the encoding for callers on several threads: a fast tokenizer called with
    `split_special_tokens` (as `mgrd.chat` does) switches that mode on the shared Rust tokenizer for the call, so
    two threads encoding at once see each other's mode (measured: "<|endoftext|> not registered as a single added
    token" under 8 concurrent clients). Audio is decoded before the lock is taken.

    Raises:
        ApiError: 400 for anything the request got wrong, each with the field it names.
    """
    if req.n > limits.max_n:
        raise ApiError(400, f"n must be at most {limits.max_n} on this server, got {req.n}", param="n")
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(req, name) not in (None, 0, 0.0):
            raise ApiError(400, f"{name} is not supported (use repetition_penalty)", param=name)
    if req.modalities is not None and "text" not in req.modalities:
        raise ApiError(400, "modalities must include 'text'", param="modalities")
    messages, seconds = _chat_messages(req.messages, limits)
    try:
        with tokenizer_lock or contextlib.nullcontext():
            prompt = encode_chat(tokenizer, messages, add_generation_prompt=req.add_generation_prompt,
                                 continue_final_message=req.continue_final_message, audio_config=audio_config,
                                 part_join=OFFICIAL_PART_JOIN, channel="mean")
    except ValueError as err:
        raise ApiError(400, str(err), param="messages") from None
    budget = _completion_budget(req, len(prompt.input_ids), limits)
    stops = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    if any(not s for s in stops):
        raise ApiError(400, "stop strings must not be empty", param="stop")
    top_k = req.top_k if req.top_k and req.top_k > 0 else 0
    try:
        cfg = SamplingConfig(
            max_new_tokens=budget,
            temperature=_temperature(req.temperature),
            top_p=1.0 if req.top_p is None else req.top_p,
            top_k=top_k,
            repetition_penalty=1.0 if req.repetition_penalty is None else req.repetition_penalty,
            stop_ids=tuple(req.stop_token_ids or ()),
            seed=req.seed,
        )
    except ValueError as err:
        raise ApiError(400, str(err)) from None
    return Prepared(prompt=prompt, cfg=cfg, n=req.n, stop_strings=tuple(stops),
                    skip_special_tokens=req.skip_special_tokens, prefix=_open_prefix(req), audio_seconds=seconds)


GREEDY_BELOW = 1e-5  # a smaller temperature is greedy (vLLM's rule): dividing by it would overflow the logits


def _temperature(value: float | None) -> float:
    return 1.0 if value is None else 0.0 if value < GREEDY_BELOW else value


def _completion_budget(req: ChatCompletionRequest, prompt_tokens: int, limits: Limits) -> int:
    """max_completion_tokens (or max_tokens), checked against the context; the default fills what is left."""
    context = limits.max_model_len
    room = context - prompt_tokens
    if room < 1:
        raise ApiError(400, f"the prompt has {prompt_tokens} tokens but the model's context is {context} "
                       "(--max-model-len): shorten the messages or the audio", param="messages",
                       code="context_length_exceeded")
    asked = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    if asked is None:
        return min(room, limits.default_max_tokens or room)
    if asked > room:
        name = "max_completion_tokens" if req.max_completion_tokens is not None else "max_tokens"
        raise ApiError(400, f"this model's maximum context length is {context} tokens; the prompt has "
                       f"{prompt_tokens} and {name} asks for {asked} more (at most {room})", param=name,
                       code="context_length_exceeded")
    return asked


def _chat_messages(messages: list[Message], limits: Limits) -> tuple[list[dict], float]:
    """`mgrd.chat` messages, each input_audio part decoded to `[S]` float32 at 16 kHz; and the audio's seconds."""
    out, seconds, parts = [], 0.0, 0
    for i, m in enumerate(messages):
        role = "system" if m.role == "developer" else m.role
        content: Any = m.content if m.content is not None else ""
        if isinstance(content, list):
            converted = []
            for j, part in enumerate(content):
                if isinstance(part, TextPart):
                    converted.append({"type": "text", "text": part.text})
                    continue
                parts += 1
                if parts > limits.max_audio_parts:
                    raise ApiError(400, f"more than {limits.max_audio_parts} audio parts in one request",
                                   param=f"messages[{i}].content[{j}]", code="too_many_audio_parts")
                wave = decode_input_audio(part.input_audio, f"messages[{i}].content[{j}].input_audio")
                seconds += len(wave) / SAMPLE_RATE
                if seconds > limits.max_audio_seconds:
                    raise ApiError(400, f"the request holds more than {limits.max_audio_seconds:g} s of audio, "
                                   "this server's limit", param=f"messages[{i}].content[{j}]", code="audio_too_long")
                converted.append({"type": "audio", "audio": wave})
            content = converted
        message = {"role": role, "content": content}
        if m.eot is False:
            message["eot"] = False
        out.append(message)
    return out, seconds


def decode_input_audio(audio: InputAudio, where: str) -> np.ndarray:
    """An input_audio part as `[S]` float32 mono (channel mean) at 16 kHz.

    Raises:
        ApiError: 400 for an unsupported format, invalid base64, or bytes that do not decode as audio.
    """
    fmt = audio.format.lower()
    if fmt not in AUDIO_FORMATS:
        raise ApiError(400, f"{where}: unsupported audio format {audio.format!r}; use {', '.join(AUDIO_FORMATS)}",
                       param=f"{where}.format", code="unsupported_audio_format")
    try:
        raw = base64.b64decode("".join(audio.data.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, f"{where}.data is not valid base64", param=f"{where}.data", code="invalid_base64") from None
    try:
        return load_audio(raw, channel="mean")
    except AudioError as err:
        raise ApiError(400, f"{where}: {err}", param=f"{where}.data", code="invalid_audio") from None


def _open_prefix(req: ChatCompletionRequest) -> str:
    """The text of a last assistant message left open (the completion continues it), else ""."""
    last = req.messages[-1]
    open_turn = req.continue_final_message or last.eot is False
    if last.role != "assistant" or not open_turn:
        return ""
    if isinstance(last.content, str):
        return last.content
    return "".join(p.text for p in last.content or [] if isinstance(p, TextPart))


# --------------------------------------------------------------------------------------------- tokens -> text
class RowText:
    """One choice's text as its tokens arrive: decoded, cut at stop strings, split into reasoning and answer.

    `push(id)` returns the `(reasoning, answer)` pieces that are final; `finish()` the rest. A stop id is not
    text (vLLM leaves it out too). A stop string ends the text before it (`stopped` is then True and later ids
    are ignored); text that could still be the start of a stop string is held back. The split starts after
    `prefix` (an open assistant message such as `<think>\\n`, or one that already closed its reasoning).
    """

    def __init__(self, tokenizer, *, stop_ids=(), stop_strings=(), skip_special_tokens=True, prefix: str = ""):
        self._decoder = TextDecoder(lambda ids: tokenizer.decode(ids, skip_special_tokens=skip_special_tokens,
                                                                 clean_up_tokenization_spaces=False))
        self._stop_ids, self._stops = set(stop_ids), tuple(stop_strings)
        self._hold = max((len(s) for s in self._stops), default=1) - 1
        self._pending = ""
        self.split = ReasoningStream()
        if prefix:
            self.split.feed(prefix)  # what the prompt already holds is not returned
        self.tokens = 0  # ids taken (a stop id included), the usage count
        self.stopped = False  # ended by a stop string
        self.closed = False

    def push(self, token_id: int) -> tuple[str, str]:
        if self.stopped or self.closed:
            return "", ""
        self.tokens += 1
        if token_id in self._stop_ids:
            return "", ""
        return self._release(self._pending + self._decoder.push(token_id), final=False)

    def finish(self) -> tuple[str, str]:
        """The rest of the text; the row takes no more ids."""
        if self.closed:
            return "", ""
        reasoning, answer = ("", "") if self.stopped else self._release(self._pending + self._decoder.flush(),
                                                                         final=True)
        self.closed = True
        tail = self.split.finish()
        return reasoning + tail[0], answer + tail[1]

    def _release(self, text: str, final: bool) -> tuple[str, str]:
        cut = min((i for i in (text.find(s) for s in self._stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped, text, self._pending = True, text[:cut], ""
        elif not final and self._hold:
            keep = len(text) - self._hold
            text, self._pending = text[:max(keep, 0)], text[max(keep, 0):]
        else:
            self._pending = ""
        return self.split.feed(text) if text else ("", "")


# --------------------------------------------------------------------------------------------- responses
def new_id(prefix: str = "chatcmpl") -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion_body(messages: list[dict], finish_reasons: list[str], prompt_tokens: int, completion_tokens: int,
                    model: str, *, id: str | None = None, created: int | None = None) -> dict:
    """An OpenAI `chat.completion` object from each choice's message dict and finish reason."""
    choices = [{"index": i, "message": m, "finish_reason": f} for i, (m, f) in enumerate(zip(messages, finish_reasons))]
    return {"id": id or new_id(), "object": "chat.completion", "created": created or int(time.time()), "model": model,
            "choices": choices, "usage": usage(prompt_tokens, completion_tokens)}


def assistant_message(reasoning: str, answer: str | None) -> dict:
    """`{"role": "assistant", "content": answer, "reasoning_content": reasoning}`; content is None when the
    reasoning never closed (vLLM's reasoning parsers do the same)."""
    return {"role": "assistant", "content": answer, "reasoning_content": reasoning}


def chat_completion(completions, prompt_tokens: int, model: str) -> dict:
    """`mgrd.generate.Completion`s as an OpenAI/vLLM chat-completion object: `choices[i].message.content` (the
    answer; None when `</think>` never came), `.reasoning_content`, `finish_reason` ("stop" or "length") and
    `usage` (what `mgrd generate --json` prints and the server returns)."""
    messages = [assistant_message(*split_reasoning(c.text)) for c in completions]
    return completion_body(messages, [c.finish_reason for c in completions], prompt_tokens,
                           sum(len(c.token_ids) for c in completions), model)


def chunk(id: str, created: int, model: str, choices: list[dict], usage_doc: dict | None = None) -> dict:
    """One `chat.completion.chunk` of a stream: `choices` are `{"index", "delta", "finish_reason"}` dicts."""
    doc = {"id": id, "object": "chat.completion.chunk", "created": created, "model": model, "choices": choices}
    if usage_doc is not None:
        doc["usage"] = usage_doc
    return doc
