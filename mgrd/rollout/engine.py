"""The decode loops, and the rollout engine built on them.

`rollout()` samples K completions per prompt and returns a `RolloutBatch`. Two engines sit under it:

- the fast path (`mgrd.rollout.fast`, `mgrd.rollout.slots`), for a plain `AudioReasoner`: prompts are prefilled
  through the model's forward (each prompt once, its audio encoded once, in groups of similar length), their
  keys/values copied into a pre-allocated cache of S slots, and a lean decoding step over the model's weights runs
  all slots at once; with `max_rows` < B x K, a slot whose row ended takes the next waiting row (continuous
  refill). Stops are tracked on the device and read every few steps.
- `decode_steps`, driven through `model(...)` alone, for models the fast path does not cover (FSDP2-sharded,
  compiled, LoRA-wrapped): the B prompts are prefilled once, the transformers cache repeated K times
  (`batch_repeat_interleave`), one token per step. On an FSDP2-sharded model every forward is a collective, so
  the "all rows stopped" flag (and the token budget) is reduced over the ranks and all ranks take the same steps.
  `use_cache=False` is the reference loop: every step runs the whole sequence (audio included).

All paths share the sampler (`mgrd.generate.sample_next`), so greedy tokens agree; per-token log-probs stay on
the device and are read back once.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Iterator, Protocol, Sequence

import torch

from mgrd.data.collate import PromptBatch, PromptLike, collate_prompts
from mgrd.generate import SamplingConfig, decode_text, sample_next
from mgrd.rollout.batch import RolloutBatch
from mgrd.rollout.fast import supports_fast_path
from mgrd.rollout.slots import Slots, slot_rollout

DEFAULT_MAX_POSITIONS = 32768  # transformers' Qwen2Config default, for a text_config that does not say


class Rollout(Protocol):
    """A sampling engine: K completions for each prompt, as tensors."""

    def generate(self, prompts: Sequence[PromptLike], cfg: SamplingConfig, num_samples: int = 1) -> RolloutBatch: ...


@dataclass
class TorchRollout:
    """The in-process engine: `rollout()` on one model (plain, FSDP2-wrapped or compiled)."""

    model: torch.nn.Module
    tokenizer: object | None = None
    use_cache: bool = True
    fast: bool = True
    max_rows: int | None = None
    refill: bool = True
    compile: bool | str = False

    def generate(self, prompts: Sequence[PromptLike], cfg: SamplingConfig, num_samples: int = 1) -> RolloutBatch:
        return rollout(self.model, prompts, cfg, num_samples=num_samples, tokenizer=self.tokenizer,
                       use_cache=self.use_cache, fast=self.fast, max_rows=self.max_rows, refill=self.refill,
                       compile=self.compile)


@dataclass
class Step:
    """One decoding step over R rows, all `[R]`: the chosen `tokens`, their log-prob under the distribution
    sampled from (`logprobs`) and under the raw policy (`policy_logprobs`), and `valid` (False for rows that
    had already stopped; their entries mean nothing)."""

    tokens: torch.Tensor
    logprobs: torch.Tensor
    policy_logprobs: torch.Tensor
    valid: torch.Tensor


@torch.no_grad()
def rollout(
    model,
    prompts: Sequence[PromptLike],
    cfg: SamplingConfig,
    *,
    num_samples: int = 1,
    tokenizer=None,
    use_cache: bool = True,
    fast: bool = True,
    max_rows: int | None = None,
    refill: bool = True,
    compile: bool | str = False,
) -> RolloutBatch:
    """Sample `num_samples` completions for each prompt, in one batch.

    Args:
        model: an `AudioReasoner`, possibly FSDP2-wrapped or compiled; called as `model(...)` only.
        prompts: B prompts (`mgrd.chat.ChatInputs` or `mgrd.generate.Prompt`).
        cfg: sampling settings; `cfg.stop_ids` add to the model's own (`ModelConfig.stop_ids()`).
        num_samples: K completions per prompt.
        tokenizer: decodes `texts` (special tokens skipped); None leaves them "".
        use_cache: False recomputes the full sequence each step (the reference loop).
        fast: decode on the fast path (`mgrd.rollout.fast`: static KV cache, lean step) when the model is
            covered (`supports_fast_path`); False, or a model it does not cover, decodes through `model(...)` with
            the transformers cache. Greedy tokens agree either way.
        max_rows: most rows decoded at once on the fast path (None: all B x K); more rows wait for a slot.
        refill: with `max_rows`, a slot whose row ended takes the next waiting row at once (continuous
            batching); False runs waves of `max_rows` rows (static batching).
        compile: `torch.compile` the fast path's decoding step (True: inductor, or a backend name); a failed
            compile falls back to eager decoding with a warning.
    Returns:
        A `RolloutBatch` of B x K rows, prompt-major.
    Raises:
        ValueError: no prompts, an empty prompt, K < 1, no stop id at all, or a prompt that fills the context.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    batch, kwargs = _setup(model, prompts, cfg, use_cache)
    if use_cache and fast and supports_fast_path(model):
        res = slot_rollout(model, prompts, cfg, num_samples=num_samples, max_new_tokens=kwargs["max_new_tokens"],
                           stop_ids=kwargs["stop_ids"], pad_id=kwargs["pad_id"],
                           banned=audio_ids(model.config, batch.input_ids.device), max_rows=max_rows,
                           refill=refill, compile=compile)
        picked = (res.tokens, res.logprobs, res.policy_logprobs, res.valid)
    else:
        steps = list(decode_steps(model, batch, cfg, num_samples=num_samples, **kwargs))
        picked = tuple(torch.stack([getattr(s, f) for s in steps], dim=1)
                       for f in ("tokens", "logprobs", "policy_logprobs", "valid"))
    out = _assemble(batch, *picked, num_samples, kwargs["stop_ids"], kwargs["pad_id"], tokenizer)
    out.mels, out.mel_lens = _repeat_chunks(batch, kwargs["chunks_per_prompt"], num_samples)
    return out


@torch.no_grad()
def response_logprobs(model, batch: RolloutBatch) -> torch.Tensor:
    """Teacher-forced log-probs of each row's response under `model`: one forward over prompt + response.

    The trainer's view of `batch.policy_logprobs` (equal to it, to float32 rounding, for the model that
    sampled), and how a reference or updated policy scores the same tokens. Runs without grad.

    Args:
        model: an `AudioReasoner` (plain, FSDP2-wrapped or compiled), called as `model(...)` only.
        batch: a `RolloutBatch` from `rollout()` (it carries the prompts' audio per row).
    Returns:
        `[R, T]` float32 `log_softmax` at each response token, 0 on padding.
    """
    steps = batch.response_ids.shape[1]
    out = model(batch.input_ids, batch.attention_mask, batch.mels, batch.mel_lens,
                position_ids=batch.position_ids, logits_to_keep=steps + 1)
    logits = out.logits[:, :-1].float()  # position P - 1 + t predicts response token t
    picked = logits.log_softmax(-1).gather(-1, batch.response_ids[..., None]).squeeze(-1)
    return picked.masked_fill(batch.response_mask == 0, 0.0)


@torch.no_grad()
def stream_tokens(model, prompt: PromptLike, cfg: SamplingConfig, fast: bool = True) -> Iterator[int]:
    """Generate one completion for `prompt` and yield its ids as they come (one host read per token), on the
    fast path when the model is covered (see `rollout`)."""
    batch, kwargs = _setup(model, [prompt], cfg, use_cache=True)
    if not (fast and supports_fast_path(model)):
        for step in decode_steps(model, batch, cfg, num_samples=1, **kwargs):
            yield int(step.tokens[0])
        return
    slots = Slots(model, [prompt], cfg, num_samples=1, slots=1, max_new_tokens=kwargs["max_new_tokens"],
                  stop_ids=kwargs["stop_ids"], pad_id=kwargs["pad_id"],
                  banned=audio_ids(model.config, batch.input_ids.device))
    chosen = slots.admit([0], [0])
    for n in range(1, kwargs["max_new_tokens"] + 1):
        yield int(chosen.tokens[0])
        if bool(chosen.stopped[0]) or n == kwargs["max_new_tokens"]:
            return
        chosen = slots.step()


def _setup(model, prompts: Sequence[PromptLike], cfg: SamplingConfig, use_cache: bool) -> tuple[PromptBatch, dict]:
    """Check the call, collate the prompts onto the model's device; returns them and `decode_steps` kwargs."""
    max_new = fit_context(model.config, prompts, cfg.max_new_tokens)
    if _is_sharded(model):  # every rank must run the same number of forwards
        max_new = -_max_over_ranks(torch.tensor(-max_new, device=_device(model)), True)
    stop_ids = resolve_stop_ids(model.config, cfg)
    pad = pad_id(model.config)
    batch = collate_prompts(prompts, pad).to(_device(model))
    kwargs = dict(stop_ids=stop_ids, pad_id=pad, max_new_tokens=max_new, use_cache=use_cache,
                  chunks_per_prompt=[len(p.mels) for p in prompts])
    return batch, kwargs


def resolve_stop_ids(config, cfg: SamplingConfig) -> tuple[int, ...]:
    """The model's stop ids (`<|EOT|>`, `text_config.eos_token_id`) then `cfg.stop_ids`, without repeats."""
    ids = tuple(dict.fromkeys(tuple(config.stop_ids()) + tuple(cfg.stop_ids)))
    if not ids:
        raise ValueError(
            "no stop ids: the model config knows no <|EOT|> or eos_token_id and SamplingConfig.stop_ids is empty "
            "(load the model with its tokenizer, or pass stop_ids)"
        )
    return ids


def fit_context(config, prompts: Sequence[PromptLike], max_new_tokens: int) -> int:
    """`max_new_tokens`, capped (with a warning) so the longest prompt plus its completion fit the positions.

    Raises:
        ValueError: no prompts, an empty prompt, or a prompt that leaves no position for a new token.
    """
    if len(prompts) == 0:
        raise ValueError("generate needs at least one prompt")
    for i, p in enumerate(prompts):
        if len(p.input_ids) == 0:
            raise ValueError(f"prompt {i} has no tokens")
    limit = int(config.text.get("max_position_embeddings", DEFAULT_MAX_POSITIONS))
    longest = max(len(p.input_ids) for p in prompts)
    if longest >= limit:
        raise ValueError(
            f"prompt of {longest} tokens does not fit the model's {limit} positions (max_position_embeddings) "
            "with room for a new token: shorten it or cut the audio"
        )
    if max_new_tokens > limit - longest:
        warnings.warn(
            f"max_new_tokens {max_new_tokens} capped to {limit - longest}: the longest prompt has {longest} of the "
            f"model's {limit} positions",
            stacklevel=3,
        )
        return limit - longest
    return max_new_tokens


@torch.no_grad()
def decode_steps(
    model,
    batch: PromptBatch,
    cfg: SamplingConfig,
    *,
    num_samples: int,
    stop_ids: Sequence[int],
    pad_id: int,
    max_new_tokens: int,
    use_cache: bool = True,
    chunks_per_prompt: Sequence[int] = (),
) -> Iterator[Step]:
    """Yield one `Step` per generated position until every row stopped or `max_new_tokens` is reached.

    Rows are prompt-major (row r = sample r % K of prompt r // K). With the cache the B prompts are prefilled
    once and the cache repeated K times; without it every step runs prompt + tokens so far, audio included
    (`chunks_per_prompt` says which chunks each row repeats). Finished rows go on with a masked pad token so
    the batch keeps its shape; their outputs are marked invalid.

    Args:
        model: called as `model(...)` only. batch: the B collated prompts, on the model's device.
        cfg: sampling settings (its `max_new_tokens` and `stop_ids` are not read: pass the resolved ones).
        num_samples: K rows per prompt. stop_ids: ids that end a row. pad_id: fed to finished rows (masked).
    """
    feed = _Feed(model, batch, num_samples, use_cache, chunks_per_prompt)
    rows, device = feed.ids.shape[0], feed.ids.device
    stop = torch.tensor(list(stop_ids), dtype=torch.long, device=device)
    banned = audio_ids(model.config, device)
    generator = None if cfg.seed is None else torch.Generator(device=device).manual_seed(cfg.seed)
    sharded = _is_sharded(model)
    running = torch.ones(rows, dtype=torch.bool, device=device)
    seen, arange = None, torch.arange(rows, device=device)
    for step in range(max_new_tokens):
        logits = feed.next_logits()
        if seen is None:
            seen = seen_prompt_tokens(feed.ids, feed.mask, logits.shape[-1])
        tokens, logprobs, policy_logprobs = sample_next(logits, seen, cfg, banned, generator)
        yield Step(tokens=tokens, logprobs=logprobs, policy_logprobs=policy_logprobs, valid=running.clone())
        seen[arange, tokens] |= running
        running &= ~torch.isin(tokens, stop)
        if step == max_new_tokens - 1 or not _max_over_ranks(running.any(), sharded):
            return
        feed.append(torch.where(running, tokens, torch.full_like(tokens, pad_id)), running)


class _Feed:
    """What the decode loop feeds the model: the R = B x K rows so far, and the cache.

    With the cache, the first call prefills the B prompts and repeats the cache K times, later calls feed the
    last token; without it, every call runs the whole sequence with the audio chunks repeated per row.
    """

    def __init__(self, model, batch: PromptBatch, k: int, use_cache: bool, chunks_per_prompt: Sequence[int]):
        self.model, self.batch, self.k, self.use_cache = model, batch, k, use_cache
        rep = lambda t: t.repeat_interleave(k, dim=0)  # noqa: E731
        self.ids, self.mask, self.positions = rep(batch.input_ids), rep(batch.attention_mask), rep(batch.position_ids)
        self.mels, self.mel_lens = (None, None) if use_cache else _repeat_chunks(batch, chunks_per_prompt, k)
        self.cache = None

    def next_logits(self) -> torch.Tensor:
        """`[R, V]` float32 logits for the next position of every row."""
        b = self.batch
        if not self.use_cache:
            out = self.model(self.ids, self.mask, self.mels, self.mel_lens, position_ids=self.positions,
                             logits_to_keep=1)
            return out.logits[:, -1].float()
        if self.cache is None:
            out = self.model(b.input_ids, b.attention_mask, b.mels, b.mel_lens, position_ids=b.position_ids,
                             use_cache=True, logits_to_keep=1)
            self.cache = out.cache
            if self.k > 1:
                self.cache.batch_repeat_interleave(self.k)
            return out.logits[:, -1].float().repeat_interleave(self.k, dim=0)
        out = self.model(self.ids[:, -1:], self.mask, position_ids=self.positions[:, -1:], cache=self.cache,
                         use_cache=True, logits_to_keep=1)
        self.cache = out.cache
        return out.logits[:, -1].float()

    def append(self, tokens: torch.Tensor, running: torch.Tensor) -> None:
        """Add `[R]` tokens at the next position; rows not `running` get them masked out."""
        self.ids = torch.cat([self.ids, tokens[:, None]], dim=1)
        self.mask = torch.cat([self.mask, running[:, None].to(self.mask.dtype)], dim=1)
        self.positions = torch.cat([self.positions, self.positions[:, -1:] + 1], dim=1)


def seen_prompt_tokens(prompt_ids: torch.Tensor, mask: torch.Tensor, vocab: int) -> torch.Tensor:
    """`[R, V]` bool, True for each row's real prompt tokens (the repetition penalty's starting set).

    Padding scatters into an extra column that is then dropped.
    """
    ids = torch.where(mask.bool(), prompt_ids, vocab)
    seen = torch.zeros(ids.shape[0], vocab + 1, dtype=torch.bool, device=ids.device).scatter_(1, ids, True)
    return seen[:, :vocab].contiguous()


def audio_ids(config, device: torch.device) -> torch.Tensor:
    """`[n]` ids never sampled: `<audio_start>`, `<audio_end>`, `<audio_patch>` (a completion fed back would
    otherwise be read as holding audio slots); empty for a model without audio ids."""
    ids = config.special_ids
    values = [] if ids is None else [ids.audio_start, ids.audio_end, ids.audio_patch]
    return torch.tensor(values, dtype=torch.long, device=device)


def _repeat_chunks(batch: PromptBatch, chunks_per_prompt: Sequence[int], k: int):
    """mels and mel_lens with each prompt's chunks repeated for its K rows (reading order of the R rows)."""
    if batch.mels is None:
        return None, None
    if sum(chunks_per_prompt) != batch.mels.shape[0]:
        raise ValueError(f"chunks_per_prompt {list(chunks_per_prompt)} do not add up to {batch.mels.shape[0]} chunks")
    order, start = [], 0
    for n in chunks_per_prompt:
        order += list(range(start, start + n)) * k
        start += n
    index = torch.tensor(order, dtype=torch.long, device=batch.mels.device)
    return batch.mels[index], batch.mel_lens[index]


def _assemble(batch: PromptBatch, tokens: torch.Tensor, logprobs: torch.Tensor, policy_logprobs: torch.Tensor,
              valid: torch.Tensor, k: int, stop_ids, pad_id: int, tokenizer) -> RolloutBatch:
    """A `RolloutBatch` from the `[R, T]` choices (valid False after a row ended); texts and finish reasons
    need one host read."""
    stop = torch.tensor(list(stop_ids), dtype=torch.long, device=tokens.device)
    stopped = (torch.isin(tokens, stop) & valid).any(dim=1)
    response_ids = tokens.masked_fill(~valid, pad_id)
    lengths, stopped = valid.sum(1).tolist(), stopped.tolist()
    ids = response_ids.tolist()
    texts = [decode_text(tokenizer, row[:n]) if tokenizer is not None else "" for row, n in zip(ids, lengths)]
    return RolloutBatch(
        prompt_ids=batch.input_ids.repeat_interleave(k, dim=0),
        prompt_mask=batch.attention_mask.repeat_interleave(k, dim=0),
        response_ids=response_ids,
        response_mask=valid.long(),
        logprobs=logprobs.masked_fill(~valid, 0.0),
        policy_logprobs=policy_logprobs.masked_fill(~valid, 0.0),
        group_ids=torch.arange(batch.input_ids.shape[0], device=tokens.device).repeat_interleave(k),
        finish_reasons=["stop" if s else "length" for s in stopped],
        texts=texts,
    )


def _is_sharded(model) -> bool:
    """True for an FSDP2-sharded model in an initialised process group: its forwards are collectives."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # a torch built without distributed support
        return False
    return isinstance(model, FSDPModule) and torch.distributed.is_initialized()


def _max_over_ranks(value: torch.Tensor, sharded: bool) -> int:
    """`int(value)`, its maximum over all ranks when the model is sharded, so every rank takes the same number
    of steps even when one rank's rows have all stopped (they go on with masked pad tokens)."""
    if sharded:
        value = value.to(torch.long).reshape(1).clone()
        torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return int(value)


def pad_id(config) -> int:
    ids = config.special_ids
    return ids.pad if ids is not None and ids.pad is not None else 0


def _device(model) -> torch.device:
    """Where the model's inputs go: the device of its first parameter (plain, FSDP2 DTensor or compiled)."""
    return next(model.parameters()).device
