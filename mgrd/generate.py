"""Generation: sampling settings, logit processing, `generate()` (lists of `Completion`) and streaming text.

One sampling path serves rollouts, evaluation, distillation sampling and the server: `mgrd.rollout` holds the
decode loop, which drives the model through `model(...)` alone (prefill once, audio encoded once per prompt,
KV cache repeated for the K samples) and returns tensors (`RolloutBatch`). `generate()` is the list view of
that batch, `stream()` yields text pieces as tokens come, decoding only a short window per token.

The logit processing (repetition penalty, temperature, top-k, top-p) lives here as pure tensor functions, and
`SamplingConfig` holds the one set of sampling defaults (the CLI builds its flags from its fields). This module
builds no prompts (`mgrd.chat` does) and knows no special token: stop ids come from the model config.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Literal, Sequence

import torch

from mgrd.data.collate import PromptLike

FinishReason = Literal["stop", "length"]


# --------------------------------------------------------------------------------------------- configs and results


@dataclass
class SamplingConfig:
    """How to pick each next token; the defaults sample from the model's own distribution."""

    max_new_tokens: int = field(
        default=512, metadata={"help": "most tokens generated per sample (a stop id counts); capped to the context"}
    )
    temperature: float = field(default=1.0, metadata={"help": "softmax temperature; 0 means greedy (argmax)"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus: keep the smallest set holding this mass, in (0, 1]"})
    top_k: int = field(default=0, metadata={"help": "keep only the k most likely tokens; 0 keeps all"})
    repetition_penalty: float = field(
        default=1.0, metadata={"help": "CTRL-style penalty (> 0) on tokens already in prompt or output; 1 is off"}
    )
    stop_ids: tuple[int, ...] = field(
        default=(),
        metadata={"help": "extra token ids that end a sample, added to the model's own (<|EOT|> and the config's "
                          "eos_token_id); a stop id is kept as the sample's last token"},
    )
    seed: int | None = field(default=None, metadata={"help": "sampling seed; None uses torch's global RNG"})

    def __post_init__(self):
        if not isinstance(self.stop_ids, (list, tuple)) or any(isinstance(i, bool) or not isinstance(i, int)
                                                               for i in self.stop_ids):
            raise ValueError(f"stop_ids must be a list of token ids (whole numbers), got {self.stop_ids!r}")
        self.stop_ids = tuple(self.stop_ids)
        for name in ("temperature", "top_p", "repetition_penalty", "max_new_tokens", "top_k"):
            if isinstance(getattr(self, name), bool):  # True is an int to Python, never a setting here
                raise ValueError(f"{name} must be a number, got {getattr(self, name)!r}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not self.temperature >= 0:  # also catches NaN
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if not self.repetition_penalty > 0:
            raise ValueError(f"repetition_penalty must be > 0 (1 = off), got {self.repetition_penalty}")
        if any(i < 0 for i in self.stop_ids):
            raise ValueError(f"stop_ids must be non-negative token ids, got {self.stop_ids}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass
class Prompt:
    """One prompt: token ids with audio blocks expanded, and its audio chunks in reading order.

    Attributes:
        input_ids: the prompt's token ids, each audio chunk as `<audio_start>`, N x `<audio_patch>`, `<audio_end>`.
        mels: `[n_mels, L_i]` log-mel features, one per `<audio_patch>` run, in reading order.
    """

    input_ids: list[int]
    mels: list[torch.Tensor] = field(default_factory=list)


@dataclass
class Completion:
    """One sampled continuation of a prompt.

    Attributes:
        token_ids: the generated ids; a stop id that ended the sample is its last token.
        logprobs: per token, `log_softmax` of the model's raw logits (temperature 1, no penalty, no top-k/p)
            at the chosen id: the policy's log-probability, the value a trainer computes for the same tokens.
        text: the decoded ids with special tokens skipped ("" when no tokenizer was given).
        finish_reason: "stop" (a stop id was generated) or "length" (max_new_tokens reached).
    """

    token_ids: list[int]
    logprobs: list[float]
    text: str
    finish_reason: FinishReason

    @property
    def reasoning(self) -> str:
        """The `<think>` part of `text` (see `mgrd.chat.split_reasoning`)."""
        return _split_reasoning(self.text)[0]

    @property
    def answer(self) -> str | None:
        """The text after `</think>`, or None when the reasoning never closed."""
        return _split_reasoning(self.text)[1]


def _split_reasoning(text: str):
    from mgrd.chat import split_reasoning  # chat renders prompts; generation only needs its parser here

    return split_reasoning(text)


# --------------------------------------------------------------------------------------------- logit processing


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL-style repetition penalty (as transformers applies it).

    Args:
        logits: `[B, V]` float logits.
        seen: `[B, V]` bool, True for tokens already in the prompt or the output.
        penalty: > 1 discourages repeats, < 1 encourages them, 1 changes nothing.
    Returns:
        `[B, V]` logits where each seen token's positive logit is divided by `penalty` and its negative logit
        multiplied by it.
    """
    if penalty == 1.0:
        return logits
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """`[B, V]` logits divided by `temperature` (> 0)."""
    return logits if temperature == 1.0 else logits / temperature


def apply_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the `k` largest logits per row (and any tied with the k-th), set the rest to -inf.

    Args:
        logits: `[B, V]`; k: 0 (or >= V) keeps everything.
    Returns:
        `[B, V]` logits.
    """
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[:, -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def apply_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filter: keep the smallest set of most likely tokens whose probability mass reaches `p`.

    A token is dropped when the tokens ranked above it already hold mass >= `p`, so the most likely token is
    always kept.

    Args:
        logits: `[B, V]`; p: in (0, 1], 1 keeps everything.
    Returns:
        `[B, V]` logits, dropped tokens at -inf.
    """
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs
    drop_sorted = mass_before >= p
    drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


def process_logits(logits: torch.Tensor, seen: torch.Tensor, cfg: SamplingConfig) -> torch.Tensor:
    """Apply, in order, the repetition penalty, temperature, top-k and top-p of `cfg` to `[B, V]` logits.

    Greedy (temperature 0) applies only the repetition penalty: the others cannot change the argmax.
    """
    logits = apply_repetition_penalty(logits, seen, cfg.repetition_penalty)
    if cfg.greedy:
        return logits
    logits = apply_temperature(logits, cfg.temperature)
    logits = apply_top_k(logits, cfg.top_k)
    return apply_top_p(logits, cfg.top_p)


def pick_tokens(logits: torch.Tensor, greedy: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """Choose one id per row of processed `[B, V]` logits: argmax if `greedy`, else a softmax sample. Returns `[B]`."""
    if greedy:
        return logits.argmax(dim=-1)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """`[B]` log-softmax of `[B, V]` logits (raw or processed, in float32) at `[B]` token ids."""
    return logits.float().log_softmax(dim=-1).gather(-1, tokens[:, None]).squeeze(-1)


def sample_next(
    logits: torch.Tensor,
    seen: torch.Tensor | None,
    cfg: SamplingConfig,
    banned: torch.Tensor,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One decoding step's choice for `[R, V]` raw float32 logits: the whole sampler, in one place.

    The `banned` ids (`[n]`, the audio placeholders) are set to -inf, then `process_logits` (penalty over the
    `[R, V]` bool `seen`, which may be None when the penalty is off), then `pick_tokens`.

    Returns:
        `[R]` tokens, their log-probs under the distribution sampled from, and under the raw logits (the
        policy's own, what a teacher-forced forward gives).
    """
    if seen is None and cfg.repetition_penalty != 1.0:
        raise ValueError("a repetition penalty needs the seen-token mask")
    processed = process_logits(logits.index_fill(1, banned, float("-inf")), seen, cfg)
    tokens = pick_tokens(processed, cfg.greedy, generator)
    return tokens, token_logprobs(processed, tokens), token_logprobs(logits, tokens)


# --------------------------------------------------------------------------------------------- public API


def generate(
    model,
    prompts: Sequence[PromptLike],
    cfg: SamplingConfig,
    *,
    num_samples: int = 1,
    tokenizer=None,
    use_cache: bool = True,
    **engine,
) -> list[list[Completion]]:
    """Sample `num_samples` completions for each prompt, in one batch (`mgrd.rollout.rollout`, as lists).

    The audio of each prompt is encoded once; its K samples share the prefilled cache. Seeded sampling
    (`cfg.seed`) is reproducible for the same prompts, `num_samples` and config. Generation stops at the
    model's stop ids (`ModelConfig.stop_ids()`) and `cfg.stop_ids`; `max_new_tokens` is capped (with a
    warning) to what fits in the model's positions.

    Args:
        model: an `AudioReasoner` (plain, FSDP2-wrapped or compiled; eval mode is the caller's choice).
        prompts: B prompts (`Prompt` or `mgrd.chat.ChatInputs`): token ids with audio blocks, and mels.
        cfg: sampling settings.
        num_samples: K completions per prompt.
        tokenizer: decodes `Completion.text` (special tokens skipped); None leaves text empty.
        use_cache: False recomputes the full sequence each step (the slow reference loop).
        **engine: the decoding engine's options (`fast`, `max_rows`, `refill`, `compile`; see
            `mgrd.rollout.rollout`).
    Returns:
        B lists of K `Completion`s (outer: prompt, inner: sample).
    Raises:
        ValueError: no prompts, an empty prompt, K < 1, no stop id at all, or a prompt that fills the context.
    """
    from mgrd.rollout import rollout  # the rollout engine builds on this module's sampling code

    batch = rollout(model, prompts, cfg, num_samples=num_samples, tokenizer=tokenizer, use_cache=use_cache, **engine)
    return completions(batch)


def completions(batch) -> list[list[Completion]]:
    """A `RolloutBatch` as B lists of K `Completion`s (one host read for the whole batch)."""
    lengths = batch.response_lengths.tolist()
    ids, logprobs = batch.response_ids.tolist(), batch.policy_logprobs.tolist()
    rows = [
        Completion(token_ids=ids[r][:n], logprobs=logprobs[r][:n], text=batch.texts[r],
                   finish_reason=batch.finish_reasons[r])
        for r, n in enumerate(lengths)
    ]
    k = batch.num_samples
    return [rows[i : i + k] for i in range(0, len(rows), k)]


def stream(model, prompt: PromptLike, cfg: SamplingConfig, tokenizer) -> Iterator[str]:
    """Generate one completion for `prompt` and yield its text as it grows.

    The concatenated deltas equal `generate(...)[0][0].text` for the same config and seed. A character made
    of several tokens (multi-byte UTF-8 split across byte-level BPE pieces) is yielded once it is complete.
    """
    from mgrd.rollout import stream_tokens

    yield from text_deltas(stream_tokens(model, prompt, cfg), functools.partial(decode_text, tokenizer))


def decode_text(tokenizer, token_ids: list[int]) -> str:
    """Completion text: special tokens skipped, no whitespace clean-up (so a longer prefix never rewrites it)."""
    return tokenizer.decode(token_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)


def text_deltas(token_ids: Iterable[int], decode: Callable[[list[int]], str]) -> Iterator[str]:
    """Turn a stream of token ids into a stream of text pieces, at a constant decoding cost per token.

    The pull form of `TextDecoder` (see there for the rule); the pieces concatenate to `decode(all ids)`
    whenever decoding splits at character boundaries, as byte-level BPE without whitespace clean-up does.
    """
    decoder = TextDecoder(decode)
    for tok in token_ids:
        piece = decoder.push(tok)
        if piece:
            yield piece
    piece = decoder.flush()
    if piece:
        yield piece


class TextDecoder:
    """Token ids in, text pieces out, one id at a time (`push`), for callers that are handed tokens (a server's
    scheduler) rather than iterating over them; `text_deltas` is the same for an iterable.

    Two offsets into the ids so far: `read` (everything before it has been returned) and `prefix` (where the
    previous piece began, kept as context). Each push decodes `ids[prefix:read]` and `ids[prefix:]` and returns
    the second's text past the first's, unless it ends in U+FFFD (an incomplete UTF-8 sequence whose later
    bytes may still come); then both offsets move up. Only the ids since the last piece are decoded, so the
    cost per token does not grow with the text. `flush()` returns what is left at the end.
    """

    def __init__(self, decode: Callable[[list[int]], str]):
        self.decode = decode
        self.ids: list[int] = []
        self._prefix = self._read = 0

    def push(self, token_id: int) -> str:
        """Add one id; returns the new text ("" while a character is still incomplete)."""
        self.ids.append(token_id)
        done, text = self.decode(self.ids[self._prefix : self._read]), self.decode(self.ids[self._prefix :])
        if len(text) > len(done) and not text.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self.ids)
            return text[len(done) :]
        return ""

    def flush(self) -> str:
        """The text not yet returned (an incomplete character decodes as U+FFFD)."""
        done, text = self.decode(self.ids[self._prefix : self._read]), self.decode(self.ids[self._prefix :])
        self._prefix = self._read = len(self.ids)
        return text[len(done) :] if len(text) > len(done) else ""
