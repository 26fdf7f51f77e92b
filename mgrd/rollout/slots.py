"""Decoding slots over the fast path, and rollouts with continuous refill.

`Slots` holds S decoding slots (a `StaticKV` and a `FastDecoder`, `mgrd.rollout.fast`). A row (sample j of prompt
i) enters a free slot with `admit`: its prompt is prefilled through the model's own forward (once per prompt, for
all K of its rows, in groups of similar length so little padding is computed), the prefill's keys/values are
copied into the slot and the row's first token is sampled from the prefill's logits. `step` then feeds every
slot its last token and samples the next one. Sampling is `mgrd.generate.sample_next`, as everywhere.

`slot_rollout` drives the slots for a whole rollout and returns the stacked `[R, T]` results:

- with `refill` (continuous batching), a slot whose row stopped takes the next waiting row at once, so the S
  slots stay busy until the queue is empty;
- without it (static batching), rows go in waves of S, and a wave's slots wait for its longest row.

With S >= R (the default: every row at once) both are one wave, and the rows are admitted in order and sampled
in one call per step, exactly as the plain cached loop samples them: greedy tokens agree with it, and so do
seeded ones up to float rounding. Which rows ended is tracked on the device (`_Book`) and read by the host every
`sync_every` steps (every step on a CPU, where a read is free; every 8th on a GPU, so the token loop does not wait
on the device): that is when ended rows free their slots for the next ones.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Sequence

import torch

from mgrd.data.collate import PromptLike, collate_prompts
from mgrd.generate import SamplingConfig, sample_next
from mgrd.rollout.fast import FastDecoder, StaticKV

PREFILL_GROUP = 8  # prompts prefilled in one forward


@dataclass
class Sampled:
    """What one admission or step produced for some slots, all `[n]`: tokens, their log-probs under the
    distribution sampled from and under the raw policy, and whether each token is a stop id."""

    slots: list[int]
    tokens: torch.Tensor
    logprobs: torch.Tensor
    policy_logprobs: torch.Tensor
    stopped: torch.Tensor

    def only(self, slots: list[int]) -> "Sampled":
        """The choices of `slots` (a subset of `self.slots`, which must be 0..S-1 in order)."""
        if len(slots) == len(self.slots):  # all of them: nothing to gather
            return self
        at = torch.tensor(slots, dtype=torch.long, device=self.tokens.device)
        return Sampled(slots, self.tokens[at], self.logprobs[at], self.policy_logprobs[at], self.stopped[at])


class Slots:
    """S decoding slots for the rows of `prompts` (row r = sample r % K of prompt r // K)."""

    def __init__(self, model, prompts: Sequence[PromptLike], cfg: SamplingConfig, *, num_samples: int, slots: int,
                 max_new_tokens: int, stop_ids: Sequence[int], pad_id: int, banned: torch.Tensor,
                 compile: bool | str = False):
        self.model, self.prompts, self.cfg, self.k, self.pad_id = model, prompts, cfg, num_samples, pad_id
        device = model.lm_head.weight.device
        self.kv = StaticKV.allocate(slots, max(len(p.input_ids) for p in prompts) + max_new_tokens + 1, model)
        self.decoder = FastDecoder(model, rows=slots)
        if compile:
            self.decoder.compile_step("inductor" if compile is True else compile)
        self.stop = torch.tensor(list(stop_ids), dtype=torch.long, device=device)
        self.banned = banned
        self.generator = None if cfg.seed is None else torch.Generator(device=device).manual_seed(cfg.seed)
        vocab = model.lm_head.weight.shape[0]
        self.seen = None if cfg.repetition_penalty == 1.0 else torch.zeros(slots, vocab, dtype=torch.bool,
                                                                           device=device)
        self.last = torch.full((slots,), pad_id, dtype=torch.long, device=device)
        self._prefilled: dict[int, tuple[object, int, torch.Tensor, torch.Tensor]] = {}
        self._admitted = [0] * len(prompts)  # rows of each prompt admitted so far

    @property
    def num_slots(self) -> int:
        return self.last.shape[0]

    @torch.no_grad()
    def admit(self, slots: list[int], rows: list[int]) -> Sampled:
        """Put `rows` into `slots` (same length), prefilling prompts not seen yet; sample their first tokens."""
        prompts = [r // self.k for r in rows]
        self._prefill(sorted({p for p in prompts if p not in self._prefilled}))
        logits = []
        for slot, prompt in zip(slots, prompts):
            cache, cache_row, mask, first = self._prefilled[prompt]
            self.kv.load([slot], cache, [cache_row], mask)
            logits.append(first)
            self._admitted[prompt] += 1
            if self._admitted[prompt] == self.k:
                del self._prefilled[prompt]  # its K rows are in: free the prompt's prefill
        at = torch.tensor(slots, dtype=torch.long, device=self.last.device)
        if self.seen is not None:
            self.seen[at] = self._prompt_tokens(prompts)
        return self._sample(torch.stack(logits), slots, at)

    @torch.no_grad()
    def step(self) -> Sampled:
        """One decoding step of every slot, sampled in one call (empty slots too, so the random stream does not
        depend on which rows ended: as the plain loop, which samples finished rows and ignores them)."""
        logits = self.decoder.step(self.kv, self.last)
        slots = list(range(self.num_slots))
        return self._sample(logits, slots, torch.arange(self.num_slots, device=self.last.device))

    def park(self, slots: list[int]) -> None:
        """Empty slots (their row ended and nothing waits): they stop growing and read nothing of others."""
        if slots:
            self.kv.park(slots)
            self.last[torch.tensor(slots, dtype=torch.long, device=self.last.device)] = self.pad_id

    def _sample(self, logits: torch.Tensor, slots: list[int], at: torch.Tensor) -> Sampled:
        seen = None if self.seen is None else self.seen[at]
        tokens, logprobs, policy = sample_next(logits, seen, self.cfg, self.banned, self.generator)
        self.last[at] = tokens
        if self.seen is not None:
            self.seen[at, tokens] = True
        return Sampled(slots, tokens, logprobs, policy, torch.isin(tokens, self.stop))

    def _prefill(self, prompts: list[int]) -> None:
        """Prefill `prompts` through the model's forward in groups of similar length; keep each one's cache row,
        mask and last-position logits until its K rows are admitted."""
        order = sorted(prompts, key=lambda p: len(self.prompts[p].input_ids))
        device = self.last.device
        for start in range(0, len(order), PREFILL_GROUP):
            group = order[start : start + PREFILL_GROUP]
            b = collate_prompts([self.prompts[p] for p in group], self.pad_id).to(device)
            out = self.model(b.input_ids, b.attention_mask, b.mels, b.mel_lens, position_ids=b.position_ids,
                             use_cache=True, logits_to_keep=1)
            logits = out.logits[:, -1].float()
            for i, p in enumerate(group):
                self._prefilled[p] = (out.cache, i, b.attention_mask, logits[i])

    def _prompt_tokens(self, prompts: list[int]) -> torch.Tensor:
        """`[n, V]` bool: each prompt's own tokens (the repetition penalty's starting set)."""
        vocab = self.seen.shape[1]
        out = torch.zeros(len(prompts), vocab, dtype=torch.bool, device=self.seen.device)
        for i, p in enumerate(prompts):
            out[i, torch.tensor(list(self.prompts[p].input_ids), device=out.device)] = True
        return out


@dataclass
class SlotResult:
    """A whole rollout's choices, `[R, T]` each (T = the longest row), rows in prompt-major order."""

    tokens: torch.Tensor
    logprobs: torch.Tensor
    policy_logprobs: torch.Tensor
    valid: torch.Tensor
    steps: int  # decoding steps run (each over all slots)


@torch.no_grad()
def slot_rollout(model, prompts: Sequence[PromptLike], cfg: SamplingConfig, *, num_samples: int, max_new_tokens: int,
                 stop_ids: Sequence[int], pad_id: int, banned: torch.Tensor, max_rows: int | None = None,
                 refill: bool = True, compile: bool | str = False, sync_every: int | None = None) -> SlotResult:
    """Sample `num_samples` rows per prompt on at most `max_rows` slots (None: all rows at once).

    A row ends at a stop id (kept as its last token) or after `max_new_tokens`. See the module docstring for
    `refill`. Which rows ended is tracked on the device and read by the host every `sync_every` steps (None: 1
    on a CPU, where a read costs nothing, 8 elsewhere); a slot whose row ended between reads decodes on
    unrecorded until the next read. The model must pass `mgrd.rollout.fast.supports_fast_path`.
    """
    rows = len(prompts) * num_samples
    n_slots = rows if max_rows is None else max(1, min(max_rows, rows))
    device = model.lm_head.weight.device
    sync_every = sync_every or (1 if device.type == "cpu" else 8)
    slots = Slots(model, prompts, cfg, num_samples=num_samples, slots=n_slots, stop_ids=stop_ids, pad_id=pad_id,
                  max_new_tokens=max_new_tokens + sync_every - 1, banned=banned, compile=compile)
    book = _Book(rows, n_slots, max_new_tokens, pad_id, device)
    waiting, free, busy = deque(range(rows)), list(range(n_slots)), []
    steps = 0
    while waiting or busy:
        if waiting and free and (refill or not busy):
            taken = [free.pop(0) for _ in range(min(len(free), len(waiting)))]
            admitted = [waiting.popleft() for _ in taken]
            book.assign(taken, admitted)
            book.record(slots.admit(taken, admitted))
            busy = sorted(busy + taken)
            busy = _release(book, busy, free, slots, waiting, refill)  # rows that ended at their first token
            continue
        book.record(slots.step().only(busy))
        steps += 1
        if steps % sync_every == 0:
            busy = _release(book, busy, free, slots, waiting, refill)
    return book.result(steps)


def _release(book: "_Book", busy: list[int], free: list[int], slots: Slots, waiting: deque, refill: bool) -> list[int]:
    """Read which busy slots' rows ended (one host read); free those slots, parking them when no row will
    take them at once. Returns the slots still busy."""
    alive = book.alive.tolist()
    ended = [s for s in busy if not alive[s]]
    free.extend(ended)
    free.sort()
    if not (refill and waiting):
        slots.park(ended)
    return [s for s in busy if alive[s]]


class _Book:
    """Device-side bookkeeping: which row each slot holds, how many tokens it has written, whether it still runs;
    and the `[R, max_new]` buffers the choices go into. Row R is a sink for slots whose row ended."""

    def __init__(self, rows: int, n_slots: int, max_new: int, pad_id: int, device):
        self.rows, self.max_new = rows, max_new
        self.tokens = torch.full((rows + 1, max_new), pad_id, dtype=torch.long, device=device)
        self.logprobs = torch.zeros(rows + 1, max_new, device=device)
        self.policy = torch.zeros(rows + 1, max_new, device=device)
        self.valid = torch.zeros(rows + 1, max_new, dtype=torch.bool, device=device)
        self.row = torch.full((n_slots,), rows, dtype=torch.long, device=device)
        self.col = torch.zeros(n_slots, dtype=torch.long, device=device)
        self.alive = torch.zeros(n_slots, dtype=torch.bool, device=device)

    def assign(self, slots: list[int], rows: list[int]) -> None:
        at = torch.tensor(slots, dtype=torch.long, device=self.row.device)
        self.row[at] = torch.tensor(rows, dtype=torch.long, device=self.row.device)
        self.col[at] = 0
        self.alive[at] = True

    def record(self, s: Sampled) -> None:
        """Write the choices of the live slots among `s.slots`, then mark rows that hit a stop id or the budget."""
        at = torch.tensor(s.slots, dtype=torch.long, device=self.row.device)
        live = self.alive[at]
        row = torch.where(live, self.row[at], self.rows)
        col = self.col[at].clamp(max=self.max_new - 1)
        self.tokens[row, col] = s.tokens
        self.logprobs[row, col] = s.logprobs
        self.policy[row, col] = s.policy_logprobs
        self.valid[row, col] = live
        col = self.col[at] + live.long()
        self.col[at] = col
        self.alive[at] = live & ~s.stopped & (col < self.max_new)

    def result(self, steps: int) -> SlotResult:
        keep = slice(0, self.rows)
        t = max(int(self.valid[keep].sum(1).max()), 1)  # the one read of the lengths
        return SlotResult(self.tokens[keep, :t], self.logprobs[keep, :t], self.policy[keep, :t],
                          self.valid[keep, :t], steps)
