"""Continuous batching (`mgrd.serve.scheduler`): jobs that share decoding steps decode as they would alone.

The reference is `mgrd.rollout.rollout` on one prompt at a time, on the tiny preset with random weights: greedy and
seeded tokens must agree (log-probs to 1e-5), on both decoding paths (the fast path's slots, and the fallback's
transformers cache, forced with `fast=False`), and jobs that join a running batch take fewer model calls than
one-at-a-time decoding. The fast path's own invariants (slots, buffer growth, LoRA fallback) are in
test_scheduler_slots.py.
"""

from __future__ import annotations

import threading

import pytest

from mgrd.generate import Prompt, SamplingConfig
from mgrd.serve.scheduler import JobEvent, QueueFull, Scheduler

from .helpers import Collector, assert_decodes_alone

PATHS = pytest.mark.parametrize("fast", [True, False], ids=["fast", "fallback"])


@PATHS
@pytest.mark.parametrize("cfg, n", [
    (SamplingConfig(max_new_tokens=12, temperature=0), 1),
    (SamplingConfig(max_new_tokens=10, temperature=0.8, top_k=40, top_p=0.9, repetition_penalty=1.3, seed=3), 3),
], ids=["greedy", "seeded"])
def test_jobs_in_one_batch_decode_as_they_would_alone(model, mixed_prompts, cfg, n, fast):
    sched = Scheduler(model, max_rows=16, fast=fast)
    assert sched.fast is fast
    sinks = [Collector() for _ in mixed_prompts]
    for p, sink in zip(mixed_prompts, sinks):  # queued before the thread starts: all join at the first step
        sched.submit(p, cfg, n, sink)
    sched.start()
    try:
        for p, sink in zip(mixed_prompts, sinks):
            assert_decodes_alone(model, p, cfg, n, sink)
    finally:
        sched.stop()


@PATHS
def test_a_job_joins_a_running_batch_and_saves_model_calls(model, mixed_prompts, fast):
    """The second and third jobs arrive while the first decodes; each joins at the next step and decodes as alone.
    Together they take fewer model calls than one at a time (prefill + one call per further token each)."""
    cfg = SamplingConfig(max_new_tokens=16, temperature=0, stop_ids=())
    sched = Scheduler(model, max_rows=8, fast=fast)
    first, later = Collector(), [Collector(), Collector()]
    started = threading.Event()

    def first_sink(event):
        first(event)
        started.set()

    sched.start()
    try:
        sched.submit(mixed_prompts[0], cfg, 1, first_sink)
        assert started.wait(60)
        jobs = [sched.submit(p, cfg, 1, s) for p, s in zip(mixed_prompts[1:], later)]
        for p, sink in zip(mixed_prompts, [first, *later]):
            assert_decodes_alone(model, p, cfg, 1, sink)
        assert sched.forwards < 3 * cfg.max_new_tokens  # one call per token each, the prefill included
        assert all(j.done_sent for j in jobs)
    finally:
        sched.stop()
    assert sched.load == {"running_jobs": 0, "running_rows": 0, "waiting_jobs": 0}


def test_cancel_frees_the_rows_and_the_others_go_on(model, mixed_prompts):
    cfg = SamplingConfig(max_new_tokens=200, temperature=0, stop_ids=())
    sched = Scheduler(model, max_rows=2, max_waiting=1)
    stuck, other = Collector(), Collector()
    sched.start()
    try:
        job = sched.submit(mixed_prompts[0], cfg, 2, stuck)  # fills both rows
        stuck.events.get(timeout=60)
        short = SamplingConfig(max_new_tokens=5, temperature=0)
        sched.submit(mixed_prompts[2], short, 1, other)  # waits: no free row
        with pytest.raises(QueueFull):
            sched.submit(mixed_prompts[1], short, 1, Collector())
        sched.cancel(job)
        assert_decodes_alone(model, mixed_prompts[2], short, 1, other)
    finally:
        sched.stop()


def test_end_row_stops_that_row_only(model, mixed_prompts):
    cfg = SamplingConfig(max_new_tokens=8, temperature=0, stop_ids=())
    sched = Scheduler(model, max_rows=4)
    got: list[JobEvent] = []
    done = threading.Event()
    holder = {}

    def sink(event):
        got.append(event)
        if len(got) == 2:
            sched.end_row(holder["job"], 0)
        if event.done:
            done.set()

    holder["job"] = sched.submit(mixed_prompts[2], cfg, 2, sink)
    sched.start()
    try:
        assert done.wait(60)
    finally:
        sched.stop()
    row0 = [e.tokens[0] for e in got if e.tokens[0] is not None]
    row1 = [e.tokens[1] for e in got if e.tokens[1] is not None]
    assert len(row1) == 8 and 2 <= len(row0) <= 3  # ended at the step after it was asked


def test_bad_jobs_are_refused(model, mixed_prompts):
    sched = Scheduler(model, max_rows=2)
    with pytest.raises(ValueError, match="n must be between 1 and 2"):
        sched.submit(mixed_prompts[0], SamplingConfig(), 3, Collector())
    with pytest.raises(ValueError, match="no tokens"):
        sched.submit(Prompt([], []), SamplingConfig(), 1, Collector())


@PATHS
def test_a_job_whose_sampling_fails_ends_alone(model, mixed_prompts, fast):
    """Settings that overflow to NaN (a repetition penalty of 5e-324, found by the schemathesis run) fail that
    job with an error event; the job beside it decodes on as alone."""
    sched = Scheduler(model, max_rows=4, fast=fast)
    bad, good = Collector(), Collector()
    ok = SamplingConfig(max_new_tokens=6, temperature=0)
    sched.submit(mixed_prompts[0], SamplingConfig(max_new_tokens=6, temperature=1.0, repetition_penalty=5e-324), 1,
                 bad)
    sched.submit(mixed_prompts[2], ok, 1, good)
    sched.start()
    try:
        event = bad.events.get(timeout=60)
        assert event.done and "sampling failed" in event.error
        assert_decodes_alone(model, mixed_prompts[2], ok, 1, good)
    finally:
        sched.stop()


def test_greedy_jobs_sample_together_and_a_failing_one_ends_alone(model, mixed_prompts, monkeypatch):
    """Greedy jobs with the same penalty share one sampling call; when that call fails, each job is sampled alone,
    so only the job whose own call fails gets an error event and the other decodes on as alone."""
    from mgrd.serve import scheduler

    only_bad = (set(mixed_prompts[0].input_ids) - set(mixed_prompts[2].input_ids)).pop()
    calls, real = [], scheduler.sample_next

    def sample_next(logits, seen, *args):
        calls.append(logits.shape[0])
        if seen[:, only_bad].any():  # a row of the bad job's prompt is in this call
            raise RuntimeError("injected")
        return real(logits, seen, *args)

    monkeypatch.setattr(scheduler, "sample_next", sample_next)
    cfg = SamplingConfig(max_new_tokens=6, temperature=0, repetition_penalty=1.3)
    sched = Scheduler(model, max_rows=4)
    bad, good = Collector(), Collector()
    sched.submit(mixed_prompts[0], cfg, 1, bad)
    sched.submit(mixed_prompts[2], cfg, 2, good)
    sched.start()
    try:
        event = bad.events.get(timeout=60)
        assert event.done and event.error == "sampling failed: injected"
        assert_decodes_alone(model, mixed_prompts[2], cfg, 2, good)
    finally:
        sched.stop()
    assert calls == [3, 2, 1] + [2] * 5  # together, then job by job; then the good job alone in the batch
