"""Continuous batching: one thread runs shared decoding steps for every request in flight.

A request (`Job`: one encoded prompt, its `SamplingConfig`, n samples) waits in a bounded queue until its rows
fit (`max_rows`); it then joins at the next step. Joining prefills the new prompts through the model's own
forward (one padded forward, each prompt's audio encoded once) and samples their first token from the
prefill's logits. The rows in flight then decode together, one step for all of them, on one of two paths:

- the fast path (`mgrd.rollout.fast`, for the models `supports_fast_path` covers): a `StaticKV` of `max_rows`
  slots; a job owns `n` slots, its prefilled keys/values are copied into them without the batch's left padding
  (`StaticKV.load`), and each step is one `FastDecoder.step` over the slots up to the highest one in use (free
  slots below it are parked again before each step, so they read nothing and do not grow). The buffers hold as
  many positions as the jobs in flight need (a job's prompt plus its budget), allocated at the first join, grown
  (reallocated and copied) when a joining job needs more, and released when the batch empties: never the
  model's whole context up front;
- the fallback (any other model, e.g. LoRA-wrapped): `model(...)` with a transformers `DynamicCache` shared by
  all rows; a joining job's cache is left-padded and stacked onto the running one, and a leaving job's rows
  are cut (with the leading columns no remaining row attends to).

Either way each job samples its own rows of the step's logits with its own settings, generator and seen-token
mask through `mgrd.generate.sample_next` (the sampler the rollout engine uses; greedy jobs with the same penalty
share one call, which changes no token). A row that finished goes on being fed (a masked pad on the fallback,
as in the rollout engine) until its job leaves: when all its rows stopped, its budget is spent, or it is
cancelled (a client that went away). Its slots are then parked and freed (fast path), or its rows cut from the
cache (fallback).

So a job decodes exactly as `mgrd.rollout.rollout` would decode it alone: same positions, same keys, same
sampling order for its rows, so greedy (and seeded) tokens agree with a lone run up to float rounding of the
batch shapes. Events (`JobEvent`: the step's token and log-prob per row, and finish reasons) go to the job's
`sink`, called from the scheduler thread; the server turns them into text. This module knows nothing of HTTP or
text.
"""

from __future__ import annotations

import collections
import itertools
import threading
import traceback
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Callable

import torch

from mgrd.data.collate import PromptBatch, PromptLike, collate_prompts
from mgrd.generate import SamplingConfig, sample_next
from mgrd.rollout.engine import DEFAULT_MAX_POSITIONS, audio_ids, pad_id, resolve_stop_ids, seen_prompt_tokens
from mgrd.rollout.fast import FastDecoder, StaticKV, supports_fast_path

KV_ROUND = 64  # the fast path's buffers hold a multiple of this many positions (fewer reallocations)


class QueueFull(RuntimeError):
    """The waiting queue is at its limit (the server answers 429)."""


@dataclass
class JobEvent:
    """What one step produced for a job.

    Attributes:
        tokens: one entry per row: the id sampled this step, or None for a row that had already finished.
        finish_reasons: one entry per row: "stop" (a stop id) or "length" (the budget) for rows that ended at
            this step, None otherwise.
        done: the job has left the batch; no more events follow.
        error: set when the step failed (the job is over); a one-line message.
        logprobs: one entry per row: the token's log-prob under the distribution it was sampled from (after
            penalty, temperature, top-k/p), None where `tokens` is None.
    """

    tokens: list[int | None]
    finish_reasons: list[str | None]
    done: bool = False
    error: str | None = None
    logprobs: list[float | None] = field(default_factory=list)


@dataclass(eq=False)
class Job:
    """One request in the scheduler: `n` rows sampled from one prompt.

    Attributes:
        prompt: token ids (audio blocks expanded) and `[n_mels, L]` mels per chunk.
        cfg: sampling settings; `cfg.max_new_tokens` must already fit the context (`mgrd.rollout.fit_context`).
        n: rows (samples) for this prompt.
        sink: called with each `JobEvent`, from the scheduler thread; it must not block.
    """

    prompt: PromptLike
    cfg: SamplingConfig
    n: int
    sink: Callable[[JobEvent], None]
    id: int = 0
    stop_ids: tuple[int, ...] = ()
    cancelled: bool = False
    ended_rows: set = field(default_factory=set)  # rows the consumer ended (a stop string): finish at next step
    # device state while in the batch
    rows: torch.Tensor | None = None  # [n] long: the job's rows of a step's logits (its slots on the fast path)
    running: torch.Tensor | None = None  # [n] bool
    seen: torch.Tensor | None = None  # [n, V] bool, tokens in prompt or output (with a repetition penalty)
    generator: torch.Generator | None = None
    generated: int = 0
    done_sent: bool = False  # the last event sent had `done` set


class Scheduler:
    """Continuous batching over one model, on a background thread.

    Args:
        model: an `AudioReasoner` (any device); prefills call `model(...)`, steps run the fast path when
            `supports_fast_path(model)` (else `model(...)` too).
        max_rows: rows decoded together at most (vLLM's `--max-num-seqs`); a job waits until its rows fit.
        max_waiting: jobs waiting for rows at most (a job whose rows are free joins without waiting); `submit`
            raises `QueueFull` past it.
        max_join: jobs prefilled together at most when several join at once.
        fast: False decodes through `model(...)` even when the fast path covers the model (for comparisons).
    """

    def __init__(self, model, *, max_rows: int = 32, max_waiting: int = 64, max_join: int = 8, fast: bool = True):
        if max_rows < 1 or max_waiting < 0 or max_join < 1:
            raise ValueError(f"need max_rows >= 1, max_waiting >= 0, max_join >= 1; got {max_rows}, {max_waiting}, "
                             f"{max_join}")
        self.model, self.max_rows, self.max_waiting, self.max_join = model, max_rows, max_waiting, max_join
        self.device = next(model.parameters()).device
        self.pad_id = pad_id(model.config)
        self.banned = audio_ids(model.config, self.device)
        self.forwards = 0  # model calls so far (prefills and decode steps): what batching saves
        self.cancelled = 0  # jobs cancelled so far (clients that went away)
        self.fast = fast and supports_fast_path(model)
        self._rows = _SlotRows(model, max_rows, self.pad_id) if self.fast else _CacheRows(model, self.pad_id)
        self._cond = threading.Condition()
        self._waiting: collections.deque[Job] = collections.deque()
        self._jobs: list[Job] = []  # in the batch, in joining order
        self._ids = itertools.count(1)
        self._stopping = False
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------------------ public API
    def submit(self, prompt: PromptLike, cfg: SamplingConfig, n: int, sink: Callable[[JobEvent], None]) -> Job:
        """Queue a job; it joins the batch at the next step that has room for its `n` rows.

        Raises:
            ValueError: n outside [1, max_rows], an empty prompt, no stop id.
            QueueFull: `max_waiting` jobs are already waiting.
        """
        if not 1 <= n <= self.max_rows:
            raise ValueError(f"n must be between 1 and {self.max_rows} (the server's rows per batch), got {n}")
        if len(prompt.input_ids) == 0:
            raise ValueError("the prompt has no tokens")
        job = Job(prompt=prompt, cfg=cfg, n=n, sink=sink, stop_ids=resolve_stop_ids(self.model.config, cfg))
        with self._cond:
            free = self.max_rows - sum(j.n for j in [*self._jobs, *self._waiting])
            if n > free and len(self._waiting) >= self.max_waiting:
                raise QueueFull(f"{len(self._waiting)} requests are waiting for a free row, this server's limit; "
                                "retry later")
            job.id = next(self._ids)
            self._waiting.append(job)
            self._cond.notify()
        return job

    def cancel(self, job: Job) -> None:
        """Drop a job (its client went away): it leaves the queue or the batch before the next step."""
        with self._cond:
            if not job.cancelled:
                self.cancelled += 1
            job.cancelled = True
            if job in self._waiting:
                self._waiting.remove(job)
            self._cond.notify()

    def end_row(self, job: Job, row: int) -> None:
        """Stop one row of a job (the consumer found a stop string); its slot is freed with the job's."""
        job.ended_rows.add(row)

    @property
    def load(self) -> dict[str, int]:
        """Jobs and rows in flight and jobs waiting (for /health and tests)."""
        with self._cond:
            return {"running_jobs": len(self._jobs), "running_rows": sum(j.n for j in self._jobs),
                    "waiting_jobs": len(self._waiting)}

    def start(self) -> "Scheduler":
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._loop, name="mgrd-scheduler", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread; jobs still in flight get an error event."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        for job in [*self._jobs, *self._waiting]:
            _emit(job, JobEvent([None] * job.n, [None] * job.n, done=True, error="the server is shutting down"))
        self._jobs = []
        self._rows.reset()
        self._waiting.clear()

    # ------------------------------------------------------------------------------------------ the loop
    def _loop(self) -> None:
        with torch.inference_mode():
            while True:
                with self._cond:
                    while not self._stopping and not self._waiting and not self._jobs:
                        self._cond.wait()
                    if self._stopping:
                        return
                    joining = self._take_joining()
                try:
                    if joining:
                        self._join(joining)
                    self._drop_finished()
                    if self._jobs:
                        self._step()
                        self._drop_finished()
                except Exception as err:  # a failed forward ends the jobs it touched, not the server
                    traceback.print_exc()
                    self._fail_all(f"generation failed: {type(err).__name__}: {err}")

    def _take_joining(self) -> list[Job]:
        """Waiting jobs (in order) whose rows fit beside the running ones; called with the lock held."""
        rows = sum(j.n for j in self._jobs)
        joining = []
        while self._waiting and len(joining) < self.max_join and rows + self._waiting[0].n <= self.max_rows:
            job = self._waiting.popleft()
            rows += job.n
            joining.append(job)
        return joining

    def _join(self, jobs: list[Job]) -> None:
        """Prefill `jobs` together, give their rows places in the batch, and sample each row's first token."""
        batch = collate_prompts([j.prompt for j in jobs], self.pad_id).to(self.device)
        out = self.model(batch.input_ids, batch.attention_mask, batch.mels, batch.mel_lens,
                         position_ids=batch.position_ids, use_cache=True, logits_to_keep=1)
        self.forwards += 1
        rows = torch.tensor([i for i, j in enumerate(jobs) for _ in range(j.n)], device=self.device)
        logits = out.logits[:, -1].float()[rows]  # [R', V]: each prompt's logits repeated for its n rows
        spans, start = [], 0
        for job in jobs:
            spans.append(torch.arange(start, start + job.n, device=self.device))
            job.running = torch.ones(job.n, dtype=torch.bool, device=self.device)
            if job.cfg.repetition_penalty != 1.0:  # the penalty's starting set: the prompt's own tokens
                prompt = rows[spans[-1]]
                job.seen = seen_prompt_tokens(batch.input_ids[prompt], batch.attention_mask[prompt], logits.shape[-1])
            job.generator = (None if job.cfg.seed is None
                             else torch.Generator(device=self.device).manual_seed(job.cfg.seed))
            start += job.n
        self._rows.add(jobs, out.cache, batch, rows)
        with self._cond:
            self._jobs += jobs
        self._sample(logits, jobs, spans)

    def _step(self) -> None:
        """One decoding step for every row in the batch."""
        logits = self._rows.step(self._jobs)
        self.forwards += 1
        self._sample(logits, list(self._jobs), [j.rows for j in self._jobs])

    def _sample(self, logits: torch.Tensor, jobs: list[Job], rows: list[torch.Tensor]) -> None:
        """Pick each job's next tokens from its `rows` (`[n]` indices) of `[R', V]` logits, keep them as what its
        rows are fed next, and send each job its event."""
        picked = self._pick(logits, jobs, rows)
        tokens_all = torch.cat([tokens for tokens, _ in picked])
        self._rows.last[torch.cat([j.rows for j in jobs])] = tokens_all
        host, host_lp = tokens_all.tolist(), torch.cat([lp for _, lp in picked]).tolist()  # the step's host reads
        start = 0
        for job, (tokens, _) in zip(jobs, picked):
            if not job.cancelled:
                self._advance(job, tokens, host[start: start + job.n], host_lp[start: start + job.n])
            start += job.n

    def _pick(self, logits: torch.Tensor, jobs: list[Job], rows: list[torch.Tensor]
              ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """`[n]` tokens and log-probs per job, from `mgrd.generate.sample_next` with the job's settings, seen-token
        mask and generator. Greedy jobs with the same penalty share one call (an argmax per row: no token changes,
        no random stream is read); a call that fails is retried job by job, and a job whose own call fails (e.g.
        settings that overflow to NaN) is ended with an error event and fed pads until it leaves."""
        picked: list[tuple | None] = [None] * len(jobs)
        groups = collections.defaultdict(list)
        for i, job in enumerate(jobs):
            groups[(job.cfg.repetition_penalty,) if job.cfg.greedy else ("alone", i)].append(i)
        pending = list(groups.values())
        while pending:
            group = pending.pop()
            members = [jobs[i] for i in group]
            seen = None if members[0].seen is None else torch.cat([j.seen for j in members])
            try:
                tokens, lp, _ = sample_next(logits[torch.cat([rows[i] for i in group])], seen, members[0].cfg,
                                            self.banned, members[0].generator)
            except RuntimeError as err:
                if len(group) > 1:
                    pending += [[i] for i in group]
                    continue
                self._fail(members[0], f"sampling failed: {err}")
                tokens = torch.full((members[0].n,), self.pad_id, dtype=torch.long, device=logits.device)
                lp = torch.zeros(members[0].n, device=logits.device)
            for i, t, p in zip(group, tokens.split([j.n for j in members]), lp.split([j.n for j in members])):
                picked[i] = (t, p)
        return picked

    def _advance(self, job: Job, tokens: torch.Tensor, host: list[int], logprobs: list[float]) -> None:
        """Record one step of `job`: seen tokens, stops, budget; send its event."""
        was = job.running.tolist()
        if job.seen is not None:
            job.seen[torch.arange(job.n, device=tokens.device), tokens] |= job.running
        stops = set(job.stop_ids)
        job.generated += 1
        out_of_budget = job.generated >= job.cfg.max_new_tokens
        reasons: list[str | None] = [None] * job.n
        for r in range(job.n):
            if not was[r]:
                continue
            if host[r] in stops:
                reasons[r] = "stop"
            elif out_of_budget:
                reasons[r] = "length"
        still = [was[r] and reasons[r] is None for r in range(job.n)]
        job.running = torch.tensor(still, dtype=torch.bool, device=tokens.device)
        event = JobEvent([host[r] if was[r] else None for r in range(job.n)], reasons, done=not any(still),
                         logprobs=[logprobs[r] if was[r] else None for r in range(job.n)])
        job.done_sent = event.done
        _emit(job, event)

    def _drop_finished(self) -> None:
        """Remove jobs that are done, cancelled, or whose rows were all ended; free their rows."""
        kept, leaving = [], []
        for job in self._jobs:
            for r in list(job.ended_rows):
                if bool(job.running[r]):
                    job.running[r] = False
            done = job.cancelled or not bool(job.running.any())
            if done and not job.cancelled and not job.done_sent:  # its rows were ended by the consumer
                job.done_sent = True
                _emit(job, JobEvent([None] * job.n, [None] * job.n, done=True))
            (leaving if done else kept).append(job)
        if not leaving:
            return
        with self._cond:
            self._jobs = kept
        self._rows.remove(kept, leaving)

    def _fail(self, job: Job, message: str) -> None:
        """End one job with an error event; it leaves the batch before the next step."""
        job.cancelled = True
        _emit(job, JobEvent([None] * job.n, [None] * job.n, done=True, error=message))

    def _fail_all(self, message: str) -> None:
        for job in self._jobs:
            self._fail(job, message)
        with self._cond:
            self._jobs = []
        self._rows.reset()


class _SlotRows:
    """The fast path's rows: a `StaticKV` of `max_rows` slots, each job's rows in slots it owns.

    Attributes:
        kv: the slots' keys/values (None while no job is in flight), as long as the jobs in flight need.
        last: `[max_rows]` long, the token each slot is fed next.
        free: the slots no job owns, in order (a joining job takes the lowest).
    """

    def __init__(self, model, max_rows: int, pad: int):
        self.model, self.max_rows, self.pad = model, max_rows, pad
        self.decoder = FastDecoder(model, rows=max_rows)
        self.limit = int(model.config.text.get("max_position_embeddings", DEFAULT_MAX_POSITIONS)) + 1
        self.last = torch.full((max_rows,), pad, dtype=torch.long, device=model.lm_head.weight.device)
        self.reset()

    def reset(self) -> None:
        """No job in flight: every slot free, the buffers released."""
        self.kv: StaticKV | None = None
        self.free = list(range(self.max_rows))
        self.owned: dict[Job, list[int]] = {}

    def add(self, jobs: list[Job], cache, batch: PromptBatch, rows: torch.Tensor) -> None:
        """Copy the prefill `cache` (rows `[R']`: each prompt's row repeated for its job's n rows) into free
        slots, each job's without the batch's left padding (a slot holds its own prompt's columns only), after
        growing the buffers to the columns the joining jobs need: prompt plus budget."""
        self._fit(max(len(j.prompt.input_ids) + j.cfg.max_new_tokens for j in jobs))
        host_rows, start = rows.tolist(), 0
        for job in jobs:
            slots = self.free[: job.n]
            del self.free[: job.n]
            cut = batch.attention_mask.shape[1] - len(job.prompt.input_ids)  # the prompt's left padding
            self.kv.load(slots, _from_column(cache, cut), host_rows[start: start + job.n],
                         batch.attention_mask[:, cut:])
            self.owned[job] = slots
            job.rows = torch.tensor(slots, dtype=torch.long, device=self.last.device)
            start += job.n

    def step(self, jobs: list[Job]) -> torch.Tensor:
        """One `FastDecoder.step` over slots 0..h (h the highest owned slot), free ones parked first so they do
        not grow; returns `[h + 1, V]` float32 logits (row s = slot s)."""
        n = max(s for slots in self.owned.values() for s in slots) + 1
        holes = [s for s in self.free if s < n and self.kv.host_length[s] > 1]
        if holes:
            self.kv.park(holes)
        view = _first_slots(self.kv, n)
        logits = self.decoder.step(view, self.last[:n])
        self.kv.host_length[:n] = view.host_length
        return logits

    def remove(self, kept: list[Job], leaving: list[Job]) -> None:
        """Park and free the slots of `leaving`; release the buffers when nothing is left."""
        slots = [s for job in leaving for s in self.owned.pop(job)]
        if not self.owned:
            self.reset()
            return
        self.kv.park(slots)
        self.free = sorted(self.free + slots)

    def _fit(self, need: int) -> None:
        """Buffers of at least `need` positions: allocated at the first join (rounded up to `KV_ROUND`); when a
        joining job needs more, reallocated at twice the length (at most the model's positions, at least `need`)
        and copied."""
        if self.kv is not None and need <= self.kv.max_len:
            return
        size = -(-need // KV_ROUND) * KV_ROUND
        if self.kv is None:
            self.kv = StaticKV.allocate(self.max_rows, size, self.model)
            return
        self.kv = _grown(self.kv, max(size, min(2 * self.kv.max_len, self.limit)), self.model)


def _from_column(cache, first: int):
    """The transformers `cache`'s layers (`[B, H_kv, P, D_h]` keys/values) from column `first` on, as views, in
    the shape `StaticKV.load` reads (`cache.layers[i].keys`, `.values`)."""
    return SimpleNamespace(layers=[SimpleNamespace(keys=layer.keys[:, :, first:], values=layer.values[:, :, first:])
                                   for layer in cache.layers])


def _first_slots(kv: StaticKV, n: int) -> StaticKV:
    """Slots 0..n-1 of `kv` as a `StaticKV` on the same storage: a step over it writes into `kv` (all but
    `host_length`, a host list the caller copies back)."""
    return StaticKV([k[:n] for k in kv.keys], [v[:n] for v in kv.values], kv.valid[:n], kv.length[:n],
                    kv.position[:n], kv.host_length[:n])


def _grown(kv: StaticKV, max_len: int, model) -> StaticKV:
    """A copy of `kv` with `max_len` columns per slot (`[S, H_kv, max_len, D_h]` per layer)."""
    new = StaticKV.allocate(kv.valid.shape[0], max_len, model, dtype=kv.keys[0].dtype)
    old = kv.max_len
    for mine, theirs in zip(new.keys + new.values, kv.keys + kv.values):
        mine[:, :, :old] = theirs
    new.valid[:, :old] = kv.valid
    new.length.copy_(kv.length)
    new.position.copy_(kv.position)
    new.host_length = list(kv.host_length)
    return new


class _CacheRows:
    """The fallback's rows: one transformers `DynamicCache` for all, a job's rows contiguous, in joining order.

    Attributes:
        cache: keys/values `[R, H, T, D]` per layer, left-padded (None while no job is in flight).
        mask: `[R, T]` long, 1 on the cache columns each row attends to.
        positions: `[R]` long, the rotary position of the token each row is fed next.
        last: `[R]` long, that token (each row's last sampled id; finished rows are fed a masked pad).
    """

    def __init__(self, model, pad: int):
        self.model, self.pad = model, pad
        self.reset()

    def reset(self) -> None:
        self.cache, self.mask, self.positions, self.last = None, None, None, None

    def add(self, jobs: list[Job], cache, batch: PromptBatch, rows: torch.Tensor) -> None:
        """Stack the prefill `cache` (rows `[R']` of it, each prompt's row repeated for its n rows) under the
        running rows, both left-padded to the longer cache (padding masked)."""
        cache.batch_select_indices(rows)
        mask, positions = batch.attention_mask[rows], batch.position_ids[rows, -1] + 1
        last = torch.zeros(len(rows), dtype=torch.long, device=rows.device)
        offset = 0 if self.cache is None else self.last.shape[0]
        if self.cache is None:
            self.cache, self.mask, self.positions, self.last = cache, mask, positions, last
        else:
            width = max(self.mask.shape[1], mask.shape[1])
            for mine, theirs in zip(self.cache.layers, cache.layers):
                mine.keys = torch.cat([_left_pad(mine.keys, width, 2), _left_pad(theirs.keys, width, 2)])
                mine.values = torch.cat([_left_pad(mine.values, width, 2), _left_pad(theirs.values, width, 2)])
            self.mask = torch.cat([_left_pad(self.mask, width, 1), _left_pad(mask, width, 1)])
            self.positions = torch.cat([self.positions, positions])
            self.last = torch.cat([self.last, last])
        _number_rows(jobs, offset)

    def step(self, jobs: list[Job]) -> torch.Tensor:
        """Feed each row its last token (a masked pad for finished rows) through `model(...)`; `[R, V]` logits."""
        running = torch.cat([j.running for j in jobs])
        fed = torch.where(running, self.last, torch.full_like(self.last, self.pad))
        self.mask = torch.cat([self.mask, running[:, None].to(self.mask.dtype)], dim=1)
        out = self.model(fed[:, None], self.mask, position_ids=self.positions[:, None], cache=self.cache,
                         use_cache=True, logits_to_keep=1)
        self.cache, self.positions = out.cache, self.positions + 1
        return out.logits[:, -1].float()

    def remove(self, kept: list[Job], leaving: list[Job]) -> None:
        """Keep the rows of `kept`, then drop leading columns no kept row attends to."""
        if not kept:
            self.reset()
            return
        rows = torch.cat([j.rows for j in kept])
        self.cache.batch_select_indices(rows)
        self.mask, self.positions, self.last = self.mask[rows], self.positions[rows], self.last[rows]
        used = self.mask.any(dim=0).nonzero()
        first = int(used[0]) if len(used) else 0
        if first:
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]
            self.mask = self.mask[:, first:]
        _number_rows(kept, 0)


def _number_rows(jobs: list[Job], start: int) -> None:
    """Give `jobs` consecutive rows from `start`, in order (the fallback's batch layout)."""
    for job in jobs:
        job.rows = torch.arange(start, start + job.n, device=job.running.device)
        start += job.n


def _emit(job: Job, event: JobEvent) -> None:
    """Send `event` to the job's sink; a sink that fails (its consumer is gone) cancels the job, nothing else."""
    try:
        job.sink(event)
    except Exception:  # noqa: BLE001 - e.g. the consumer's event loop closed
        job.cancelled = True


def _left_pad(t: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    """`t` with zeros prepended along `dim` (1 for `[R, T]` masks, 2 for `[R, H, T, D]` keys) up to `width`."""
    missing = width - t.shape[dim]
    if missing == 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)
