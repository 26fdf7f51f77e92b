"""Generation: batched sampling with a KV cache, K samples per prompt, streaming text.

One `generate()` serves rollouts, evaluation, distillation sampling and the server. Each prompt's audio is
encoded once and its embeddings are repeated for the K samples; prompts are left-padded into one batch,
prefilled once, then decoded one token per step with the cache. `use_cache=False` recomputes the whole
sequence every step (the reference loop the benchmark and the invariance test compare against); both paths
share the same sampling code, so greedy decoding is token-for-token identical with and without the cache.

The logit processing (repetition penalty, temperature, top-k, top-p) lives here as pure tensor functions.
This module builds no prompts (`mgrd.chat` does) and knows no special token: stop ids come in the config.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Literal, Protocol, Sequence

import torch

from mgrd.audio import pad_mels

FinishReason = Literal["stop", "length"]
# Id fed, masked out, to rows that have finished while others go on; its value never reaches attention.
_FILL_ID = 0


# --------------------------------------------------------------------------------------------- configs and results


@dataclass
class SamplingConfig:
    """How to pick each next token; the defaults sample from the model's own distribution."""

    max_new_tokens: int = field(default=256, metadata={"help": "most tokens generated per sample (a stop id counts)"})
    temperature: float = field(default=1.0, metadata={"help": "softmax temperature; 0 means greedy (argmax)"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus: keep the smallest set holding this mass, in (0, 1]"})
    top_k: int = field(default=0, metadata={"help": "keep only the k most likely tokens; 0 keeps all"})
    repetition_penalty: float = field(
        default=1.0, metadata={"help": "CTRL-style penalty (> 0) on tokens already in prompt or output; 1 is off"}
    )
    stop_ids: tuple[int, ...] = field(
        default=(), metadata={"help": "token ids that end a sample (kept as its last token), e.g. <|EOT|>"}
    )
    seed: int | None = field(default=None, metadata={"help": "sampling seed; None uses torch's global RNG"})

    def __post_init__(self):
        self.stop_ids = tuple(int(i) for i in self.stop_ids)
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


class PromptLike(Protocol):
    """Anything with a prompt's token ids and its audio chunks (`Prompt`, or `mgrd.chat.ChatInputs`)."""

    input_ids: Sequence[int]
    mels: Sequence[torch.Tensor]


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
    """`[B]` log-softmax of raw `[B, V]` logits (in float32) at `[B]` token ids."""
    return logits.float().log_softmax(dim=-1).gather(-1, tokens[:, None]).squeeze(-1)


# --------------------------------------------------------------------------------------------- batching


@dataclass
class _Batch:
    """Left-padded prompt rows (each prompt repeated K times in a row).

    embeds `[R, T, D]`, mask `[R, T]` (1 = real token), positions `[R, T]`, input_ids `[R, T]` (pad = _FILL_ID).
    """

    embeds: torch.Tensor
    mask: torch.Tensor
    positions: torch.Tensor
    input_ids: torch.Tensor


def _encode_prompt_audio(model, prompts: Sequence[PromptLike]) -> list[list[torch.Tensor]]:
    """Encode every prompt's chunks in one encoder call; returns each prompt's `[n_i, D]` embeddings."""
    chunks = [m for p in prompts for m in p.mels]
    if not chunks:
        return [[] for _ in prompts]
    device = model.lm_head.weight.device
    mels, lens = pad_mels([m.to(device) for m in chunks])
    encoded = model.encode_audio(mels, lens)
    out, i = [], 0
    for p in prompts:
        out.append(encoded[i : i + len(p.mels)])
        i += len(p.mels)
    return out


@torch.no_grad()
def prepare_batch(model, prompts: Sequence[PromptLike], num_samples: int = 1) -> _Batch:
    """Encode and embed each prompt once, left-pad them, then repeat every row `num_samples` times.

    Row `r` of the result is sample `r % num_samples` of prompt `r // num_samples`. Positions restart at 0
    after the left padding (`cumsum(mask) - 1`, clamped at 0), so padding does not shift a prompt's rotary
    positions.
    """
    device = model.lm_head.weight.device
    ids = [torch.as_tensor(list(p.input_ids), dtype=torch.long, device=device) for p in prompts]
    audio = _encode_prompt_audio(model, prompts)
    # Embed prompt by prompt: each prompt's own audio runs are matched against its own chunks.
    embeds = [model.embed(row[None], chunks)[0] for row, chunks in zip(ids, audio)]
    width = max(len(row) for row in ids)
    n, dim = len(prompts), embeds[0].shape[-1]
    batch_embeds = embeds[0].new_zeros(n, width, dim)
    batch_ids = torch.full((n, width), _FILL_ID, dtype=torch.long, device=device)
    mask = torch.zeros(n, width, dtype=torch.long, device=device)
    for i, (row, emb) in enumerate(zip(ids, embeds)):
        batch_embeds[i, width - len(row) :] = emb
        batch_ids[i, width - len(row) :] = row
        mask[i, width - len(row) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    rep = functools.partial(torch.repeat_interleave, repeats=num_samples, dim=0)
    return _Batch(embeds=rep(batch_embeds), mask=rep(mask), positions=rep(positions), input_ids=rep(batch_ids))


# --------------------------------------------------------------------------------------------- the decode loop


@dataclass
class _Step:
    """One decoding step: `tokens` `[R]` and their `logprobs` `[R]`; rows with `valid` False had already finished."""

    tokens: torch.Tensor
    logprobs: torch.Tensor
    valid: torch.Tensor


def _audio_placeholder_ids(model, device: torch.device) -> torch.Tensor:
    """`[n]` ids of `<audio_start>`, `<audio_end>`, `<audio_patch>` (empty for a model without audio tokens)."""
    ids = model.config.special_ids
    values = [] if ids is None else [ids.audio_start, ids.audio_end, ids.audio_patch]
    return torch.tensor(values, dtype=torch.long, device=device)


def _make_generator(cfg: SamplingConfig, device: torch.device) -> torch.Generator | None:
    if cfg.seed is None:
        return None
    return torch.Generator(device=device).manual_seed(cfg.seed)


@torch.no_grad()
def _decode(model, batch: _Batch, cfg: SamplingConfig, use_cache: bool) -> Iterator[_Step]:
    """Yield one `_Step` per generated position until every row stopped or `max_new_tokens` is reached.

    With the cache: prefill the prompts once, then feed one token per step. Without it: run the whole
    sequence (prompt + tokens so far) every step. Both take the logits of the last position only, and both
    share the same processing and sampling, so they choose the same greedy tokens.
    """
    device = batch.embeds.device
    rows, vocab = batch.mask.shape[0], model.lm_head.out_features
    arange = torch.arange(rows, device=device)
    generator = _make_generator(cfg, device)
    stop_ids = torch.tensor(cfg.stop_ids, dtype=torch.long, device=device)
    banned = _audio_placeholder_ids(model, device)
    # Tokens the repetition penalty applies to: the prompt's real tokens (not the padding), then the output.
    # Padding scatters into an extra column that is then dropped.
    prompt_ids = torch.where(batch.mask.bool(), batch.input_ids, vocab)
    seen = torch.zeros(rows, vocab + 1, dtype=torch.bool, device=device).scatter_(1, prompt_ids, True)
    seen = seen[:, :vocab].contiguous()
    running = torch.ones(rows, dtype=torch.bool, device=device)
    mask, next_pos = batch.mask, batch.positions[:, -1] + 1
    embeds, positions = batch.embeds, batch.positions  # the whole sequence (no-cache path)
    step_embeds, step_positions, cache = embeds, positions, None  # what the next forward sees
    for step in range(cfg.max_new_tokens):
        out = model(
            inputs_embeds=step_embeds,
            attention_mask=mask,
            position_ids=step_positions,
            cache=cache,
            use_cache=use_cache,
            logits_to_keep=1,
        )
        logits = out.logits[:, -1].float()
        # The model writes text only: an audio placeholder in a completion would be read as an audio slot
        # when the sequence is fed back (RL logprobs, SFT), so those ids are never sampled.
        allowed = logits.index_fill(1, banned, float("-inf"))
        tokens = pick_tokens(process_logits(allowed, seen, cfg), cfg.greedy, generator)
        yield _Step(tokens=tokens, logprobs=token_logprobs(logits, tokens), valid=running.clone())
        seen[arange, tokens] |= running
        running &= ~torch.isin(tokens, stop_ids)
        if not running.any() or step == cfg.max_new_tokens - 1:
            return
        # Finished rows go on with a masked filler so the batch keeps its shape; their outputs are ignored.
        fed = torch.where(running, tokens, torch.full_like(tokens, _FILL_ID))
        # embed_tokens, not model.embed: a sampled `<audio_patch>` id is plain text here, not an audio slot.
        new_embeds = model.model.embed_tokens(fed[:, None])
        mask = torch.cat([mask, running[:, None].to(mask.dtype)], dim=1)
        new_positions = next_pos[:, None]
        next_pos = next_pos + 1
        if use_cache:
            cache, step_embeds, step_positions = out.cache, new_embeds, new_positions
        else:
            embeds = torch.cat([embeds, new_embeds], dim=1)
            positions = torch.cat([positions, new_positions], dim=1)
            step_embeds, step_positions = embeds, positions


# --------------------------------------------------------------------------------------------- public API


def generate(
    model,
    prompts: Sequence[PromptLike],
    cfg: SamplingConfig,
    *,
    num_samples: int = 1,
    tokenizer=None,
    use_cache: bool = True,
) -> list[list[Completion]]:
    """Sample `num_samples` completions for each prompt, in one batch.

    The audio of all prompts is encoded once (one encoder call) and embedded once per prompt; the K samples
    of a prompt share those embeddings. Seeded sampling (`cfg.seed`) is reproducible for the same prompts,
    `num_samples` and config.

    Args:
        model: an `AudioReasoner` (eval mode is the caller's choice; generation runs without grad).
        prompts: B prompts (`Prompt` or `mgrd.chat.ChatInputs`): token ids with audio blocks, and mels.
        cfg: sampling settings, including stop ids and max_new_tokens.
        num_samples: K completions per prompt.
        tokenizer: decodes `Completion.text` (special tokens skipped); None leaves text empty.
        use_cache: False recomputes the full sequence each step (the slow reference loop).
    Returns:
        B lists of K `Completion`s (outer: prompt, inner: sample).
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    _check_prompts(prompts)
    batch = prepare_batch(model, prompts, num_samples)
    rows = batch.mask.shape[0]
    token_ids: list[list[int]] = [[] for _ in range(rows)]
    logprobs: list[list[float]] = [[] for _ in range(rows)]
    stopped = [False] * rows
    stop_set = set(cfg.stop_ids)
    for step in _decode(model, batch, cfg, use_cache):
        for r, (tok, lp, ok) in enumerate(zip(step.tokens.tolist(), step.logprobs.tolist(), step.valid.tolist())):
            if ok:
                token_ids[r].append(tok)
                logprobs[r].append(lp)
                stopped[r] = tok in stop_set
    completions = [
        Completion(
            token_ids=token_ids[r],
            logprobs=logprobs[r],
            text=decode_text(tokenizer, token_ids[r]) if tokenizer is not None else "",
            finish_reason="stop" if stopped[r] else "length",
        )
        for r in range(rows)
    ]
    return [completions[i * num_samples : (i + 1) * num_samples] for i in range(len(prompts))]


def stream(model, prompt: PromptLike, cfg: SamplingConfig, tokenizer) -> Iterator[str]:
    """Generate one completion for `prompt` and yield its text as it grows.

    The concatenated deltas equal `generate(...)[0][0].text` for the same config and seed. A character made
    of several tokens (multi-byte UTF-8 split across byte-level BPE pieces) is yielded once it is complete.
    """
    _check_prompts([prompt])
    batch = prepare_batch(model, [prompt], 1)
    tokens = (int(step.tokens[0]) for step in _decode(model, batch, cfg, use_cache=True))
    yield from text_deltas(tokens, functools.partial(decode_text, tokenizer))


def decode_text(tokenizer, token_ids: list[int]) -> str:
    """Completion text: special tokens skipped, no whitespace clean-up (so a longer prefix never rewrites it)."""
    return tokenizer.decode(token_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)


def text_deltas(token_ids: Iterable[int], decode: Callable[[list[int]], str]) -> Iterator[str]:
    """Turn a stream of token ids into a stream of text pieces.

    Each step decodes every id so far and yields the text past what was already yielded; while the text ends
    in U+FFFD (an incomplete UTF-8 sequence, whose later bytes may still come) it waits. The last piece is
    flushed at the end, so the pieces concatenate to `decode(all ids)` whenever decoding more ids only
    extends the text, as byte-level BPE without whitespace clean-up does once a character is complete.
    """
    ids: list[int] = []
    emitted = ""
    for tok in token_ids:
        ids.append(tok)
        text = decode(ids)
        if text.endswith("\ufffd") or len(text) <= len(emitted):
            continue
        yield text[len(emitted) :]
        emitted = text
    text = decode(ids)
    if len(text) > len(emitted):
        yield text[len(emitted) :]


def _check_prompts(prompts: Sequence[PromptLike]) -> None:
    if not prompts:
        raise ValueError("generate needs at least one prompt")
    for i, p in enumerate(prompts):
        if len(p.input_ids) == 0:
            raise ValueError(f"prompt {i} has no tokens")
