"""Continuous batching: one thread runs shared decoding steps for every request in flight.

A request (`Job`: one encoded prompt, its `SamplingConfig`, n samples) waits in a bounded queue until its rows
fit (`max_rows`); it then joins at the next step. Joining prefills the new prompts (one padded forward, each
prompt's audio encoded once), samples their first token from the prefill's logits, and merges their KV cache
into the running batch: both caches are left-padded to a common length and stacked on the batch dimension, the
padding masked. Every step then feeds each row its last token (one forward of `[R, 1]` ids over the shared cache)
and samples each job's rows with the job's own settings and generator, with the logit maths of
`mgrd.generate` (the same functions `mgrd.rollout.decode_steps` uses). A job's rows leave the batch together,
when all of them have stopped (a finished row goes on with a masked pad token, as in the rollout engine), when
its budget is spent, or when the job is cancelled (a client that went away); the cache columns that no
remaining row attends to are then cut off.

So a job decodes exactly as `mgrd.rollout.rollout` would decode it alone: same positions, same masked keys,
same sampling order for its rows, so greedy (and seeded) tokens agree with a lone run up to float rounding of
the batch shapes. Events (`JobEvent`: the step's token per row, and finish reasons) go to the job's `sink`,
called from the scheduler thread; the server turns them into text. This module knows nothing of HTTP or text.
"""

from __future__ import annotations

import collections
import itertools
import threading
import traceback
from dataclasses import dataclass, field
from typing import Callable

import torch

from mgrd.data.collate import PromptLike, collate_prompts
from mgrd.generate import SamplingConfig, pick_tokens, process_logits
from mgrd.rollout.engine import audio_ids, pad_id, resolve_stop_ids, seen_prompt_tokens


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
    """

    tokens: list[int | None]
    finish_reasons: list[str | None]
    done: bool = False
    error: str | None = None


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
    running: torch.Tensor | None = None  # [n] bool
    seen: torch.Tensor | None = None  # [n, V] bool, tokens in prompt or output (repetition penalty)
    generator: torch.Generator | None = None
    generated: int = 0
    done_sent: bool = False  # the last event sent had `done` set


class Scheduler:
    """Continuous batching over one model, on a background thread.

    Args:
        model: an `AudioReasoner` (any device), called as `model(...)` only.
        max_rows: rows decoded together at most (vLLM's `--max-num-seqs`); a job waits until its rows fit.
        max_waiting: jobs waiting for rows at most (a job whose rows are free joins without waiting); `submit`
            raises `QueueFull` past it.
        max_join: jobs prefilled together at most when several join at once.
    """

    def __init__(self, model, *, max_rows: int = 32, max_waiting: int = 64, max_join: int = 8):
        if max_rows < 1 or max_waiting < 0 or max_join < 1:
            raise ValueError(f"need max_rows >= 1, max_waiting >= 0, max_join >= 1; got {max_rows}, {max_waiting}, "
                             f"{max_join}")
        self.model, self.max_rows, self.max_waiting, self.max_join = model, max_rows, max_waiting, max_join
        self.device = next(model.parameters()).device
        self.pad_id = pad_id(model.config)
        self.banned = audio_ids(model.config, self.device)
        self.forwards = 0  # model calls so far (prefills and decode steps): what batching saves
        self.cancelled = 0  # jobs cancelled so far (clients that went away)
        self._cond = threading.Condition()
        self._waiting: collections.deque[Job] = collections.deque()
        self._jobs: list[Job] = []  # in the batch, in row order (each job's rows contiguous)
        self._batch: _Batch | None = None
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
        self._jobs, self._batch = [], None
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
        """Prefill `jobs` together, sample each row's first token, and merge their rows into the batch."""
        batch = collate_prompts([j.prompt for j in jobs], self.pad_id).to(self.device)
        out = self.model(batch.input_ids, batch.attention_mask, batch.mels, batch.mel_lens,
                         position_ids=batch.position_ids, use_cache=True, logits_to_keep=1)
        self.forwards += 1
        rows = torch.tensor([i for i, j in enumerate(jobs) for _ in range(j.n)], device=self.device)
        cache = out.cache
        cache.batch_select_indices(rows)  # each prompt's cache repeated for its n rows, in order
        new = _Batch(cache=cache, mask=batch.attention_mask[rows], positions=batch.position_ids[rows, -1] + 1,
                     last=torch.zeros(len(rows), dtype=torch.long, device=self.device))
        logits = out.logits[:, -1].float()[rows]
        start = 0
        for job in jobs:
            span = slice(start, start + job.n)
            job.running = torch.ones(job.n, dtype=torch.bool, device=self.device)
            job.seen = seen_prompt_tokens(batch.input_ids[rows[span]], new.mask[span], logits.shape[-1])
            job.generator = (None if job.cfg.seed is None
                             else torch.Generator(device=self.device).manual_seed(job.cfg.seed))
            start += job.n
        self._batch = new if self._batch is None else self._batch.merge(new)
        with self._cond:
            self._jobs += jobs
        self._sample(logits, jobs, offset=self._batch.last.shape[0] - len(rows))  # the new rows come last

    def _step(self) -> None:
        """One decoding step for every row in the batch."""
        b = self._batch
        running = torch.cat([j.running for j in self._jobs])
        fed = torch.where(running, b.last, torch.full_like(b.last, self.pad_id))
        b.mask = torch.cat([b.mask, running[:, None].to(b.mask.dtype)], dim=1)
        out = self.model(fed[:, None], b.mask, position_ids=b.positions[:, None], cache=b.cache, use_cache=True,
                         logits_to_keep=1)
        self.forwards += 1
        b.cache, b.positions = out.cache, b.positions + 1
        self._sample(out.logits[:, -1].float(), list(self._jobs), offset=0)

    def _sample(self, logits: torch.Tensor, jobs: list[Job], offset: int) -> None:
        """Pick each job's next tokens from its rows of `[R', V]` logits, update its state and send its event.

        `logits` rows start at the batch row `offset` and cover `jobs` in order.
        """
        picked, start = [], 0
        for job in jobs:
            rows = logits[start: start + job.n].index_fill(1, self.banned, float("-inf"))
            try:
                tokens = pick_tokens(process_logits(rows, job.seen, job.cfg), job.cfg.greedy, job.generator)
            except RuntimeError as err:  # e.g. settings that overflow to NaN: this job fails, the others go on
                job.cancelled = True
                _emit(job, JobEvent([None] * job.n, [None] * job.n, done=True, error=f"sampling failed: {err}"))
                tokens = torch.full((job.n,), self.pad_id, dtype=torch.long, device=rows.device)
            picked.append(tokens)
            start += job.n
        tokens_all = torch.cat(picked)
        self._batch.last[offset: offset + len(tokens_all)] = tokens_all
        host = tokens_all.tolist()  # the step's one host read
        start = 0
        for job, tokens in zip(jobs, picked):
            if not job.cancelled:
                self._advance(job, tokens, host[start: start + job.n])
            start += job.n

    def _advance(self, job: Job, tokens: torch.Tensor, host: list[int]) -> None:
        """Record one step of `job`: seen tokens, stops, budget; send its event."""
        was = job.running.tolist()
        arange = torch.arange(job.n, device=tokens.device)
        job.seen[arange, tokens] |= job.running
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
        event = JobEvent([host[r] if was[r] else None for r in range(job.n)], reasons, done=not any(still))
        job.done_sent = event.done
        _emit(job, event)

    def _drop_finished(self) -> None:
        """Remove jobs that are done, cancelled, or whose rows were all ended; cut unused cache columns."""
        keep_rows, kept, start = [], [], 0
        for job in self._jobs:
            for r in list(job.ended_rows):
                if bool(job.running[r]):
                    job.running[r] = False
            done = job.cancelled or not bool(job.running.any())
            if done and not job.cancelled and not job.done_sent:  # its rows were ended by the consumer
                job.done_sent = True
                _emit(job, JobEvent([None] * job.n, [None] * job.n, done=True))
            if not done:
                kept.append(job)
                keep_rows += range(start, start + job.n)
            start += job.n
        if len(kept) == len(self._jobs):
            return
        with self._cond:
            self._jobs = kept
        if not kept:
            self._batch = None
            return
        self._batch.select(torch.tensor(keep_rows, device=self.device))

    def _fail_all(self, message: str) -> None:
        for job in self._jobs:
            _emit(job, JobEvent([None] * job.n, [None] * job.n, done=True, error=message))
        with self._cond:
            self._jobs = []
        self._batch = None


@dataclass
class _Batch:
    """The rows in flight: their shared KV cache and what the next step feeds.

    Attributes:
        cache: transformers `DynamicCache`, keys/values `[R, H, T, D]` per layer, left-padded.
        mask: `[R, T]` long, 1 on the cache columns each row attends to.
        positions: `[R]` long, the rotary position of the token each row is fed next.
        last: `[R]` long, that token (each row's last sampled id).
    """

    cache: object
    mask: torch.Tensor
    positions: torch.Tensor
    last: torch.Tensor

    def merge(self, other: "_Batch") -> "_Batch":
        """This batch's rows then `other`'s, both left-padded to the longer cache (padding masked)."""
        width = max(self.mask.shape[1], other.mask.shape[1])
        for mine, theirs in zip(self.cache.layers, other.cache.layers):
            mine.keys = torch.cat([_left_pad(mine.keys, width, 2), _left_pad(theirs.keys, width, 2)])
            mine.values = torch.cat([_left_pad(mine.values, width, 2), _left_pad(theirs.values, width, 2)])
        self.mask = torch.cat([_left_pad(self.mask, width, 1), _left_pad(other.mask, width, 1)])
        self.positions = torch.cat([self.positions, other.positions])
        self.last = torch.cat([self.last, other.last])
        return self

    def select(self, rows: torch.Tensor) -> None:
        """Keep `rows` (a `[R']` index), then drop leading columns no kept row attends to."""
        self.cache.batch_select_indices(rows)
        self.mask, self.positions, self.last = self.mask[rows], self.positions[rows], self.last[rows]
        used = self.mask.any(dim=0).nonzero()
        first = int(used[0]) if len(used) else 0
        if first:
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]
            self.mask = self.mask[:, first:]


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
