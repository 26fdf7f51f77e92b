"""Continuous batching (`mgrd.serve.scheduler`): jobs that share decoding steps decode as they would alone.

The reference is `mgrd.generate.generate` on one prompt at a time (the rollout engine), on the tiny preset with
random weights: greedy and seeded tokens must agree, and jobs that join a running batch take fewer model calls
than one-at-a-time decoding.
"""

from __future__ import annotations

import queue
import threading

import pytest

from mgrd.generate import Prompt, SamplingConfig, generate
from mgrd.models import build_model
from mgrd.models.presets import tiny
from mgrd.serve.scheduler import JobEvent, QueueFull, Scheduler


@pytest.fixture(scope="module")
def model(tok, ids):
    return build_model(tiny(len(tok), ids), seed=2).eval()


@pytest.fixture(scope="module")
def prompts(mixed_prompts):
    return mixed_prompts  # tests/conftest.py


class Collector:
    """A job's sink: keeps every event; `wait()` returns each row's tokens and finish reason."""

    def __init__(self):
        self.events: queue.Queue[JobEvent] = queue.Queue()

    def __call__(self, event: JobEvent) -> None:
        self.events.put(event)

    def wait(self, n: int, timeout: float = 120.0):
        tokens, reasons = [[] for _ in range(n)], [None] * n
        while True:
            event = self.events.get(timeout=timeout)
            assert event.error is None, event.error
            for r, (tok, why) in enumerate(zip(event.tokens, event.finish_reasons)):
                if tok is not None:
                    tokens[r].append(tok)
                reasons[r] = why or reasons[r]
            if event.done:
                return tokens, reasons


def alone(model, prompt, cfg, n=1):
    out = generate(model, [prompt], cfg, num_samples=n)[0]
    return [c.token_ids for c in out], [c.finish_reason for c in out]


@pytest.mark.parametrize("cfg, n", [
    (SamplingConfig(max_new_tokens=12, temperature=0), 1),
    (SamplingConfig(max_new_tokens=10, temperature=0.8, top_k=40, top_p=0.9, repetition_penalty=1.3, seed=3), 3),
])
def test_jobs_in_one_batch_decode_as_they_would_alone(model, prompts, cfg, n):
    sched = Scheduler(model, max_rows=16)
    sinks = [Collector() for _ in prompts]
    for p, sink in zip(prompts, sinks):  # queued before the thread starts: all join at the first step
        sched.submit(p, cfg, n, sink)
    sched.start()
    try:
        for p, sink in zip(prompts, sinks):
            assert sink.wait(n) == alone(model, p, cfg, n)
    finally:
        sched.stop()


def test_a_job_joins_a_running_batch_and_saves_model_calls(model, prompts):
    """The second and third jobs arrive while the first decodes; each joins at the next step and decodes as alone.
    Together they take fewer model calls than one at a time (prefill + one call per further token each)."""
    cfg = SamplingConfig(max_new_tokens=16, temperature=0, stop_ids=())
    sched = Scheduler(model, max_rows=8)
    first, later = Collector(), [Collector(), Collector()]
    started = threading.Event()

    def first_sink(event):
        first(event)
        started.set()

    sched.start()
    try:
        sched.submit(prompts[0], cfg, 1, first_sink)
        assert started.wait(60)
        jobs = [sched.submit(p, cfg, 1, s) for p, s in zip(prompts[1:], later)]
        results = [first.wait(1)] + [s.wait(1) for s in later]
        for p, got in zip(prompts, results):
            assert got == alone(model, p, cfg)
        sequential = sum(len(tokens[0]) for tokens, _ in results)  # one call per token, the prefill included
        assert sched.forwards < sequential
        assert all(j.done_sent for j in jobs)
    finally:
        sched.stop()
    assert sched.load == {"running_jobs": 0, "running_rows": 0, "waiting_jobs": 0}


def test_cancel_frees_the_rows_and_the_others_go_on(model, prompts):
    cfg = SamplingConfig(max_new_tokens=200, temperature=0, stop_ids=())
    sched = Scheduler(model, max_rows=2, max_waiting=1)
    stuck, other = Collector(), Collector()
    sched.start()
    try:
        job = sched.submit(prompts[0], cfg, 2, stuck)  # fills both rows
        stuck.events.get(timeout=60)
        short = SamplingConfig(max_new_tokens=5, temperature=0)
        sched.submit(prompts[2], short, 1, other)  # waits: no free row
        with pytest.raises(QueueFull):
            sched.submit(prompts[1], short, 1, Collector())
        sched.cancel(job)
        assert other.wait(1) == alone(model, prompts[2], short)
    finally:
        sched.stop()


def test_end_row_stops_that_row_only(model, prompts):
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

    holder["job"] = sched.submit(prompts[2], cfg, 2, sink)
    sched.start()
    try:
        assert done.wait(60)
    finally:
        sched.stop()
    row0 = [e.tokens[0] for e in got if e.tokens[0] is not None]
    row1 = [e.tokens[1] for e in got if e.tokens[1] is not None]
    assert len(row1) == 8 and 2 <= len(row0) <= 3  # ended at the step after it was asked


def test_bad_jobs_are_refused(model, prompts):
    sched = Scheduler(model, max_rows=2)
    with pytest.raises(ValueError, match="n must be between 1 and 2"):
        sched.submit(prompts[0], SamplingConfig(), 3, Collector())
    with pytest.raises(ValueError, match="no tokens"):
        sched.submit(Prompt([], []), SamplingConfig(), 1, Collector())


def test_a_job_whose_sampling_fails_ends_alone(model, prompts):
    """Settings that overflow to NaN (a repetition penalty of 5e-324, found by the schemathesis run) fail that
    job with an error event; the job beside it decodes on as alone."""
    sched = Scheduler(model, max_rows=4)
    bad, good = Collector(), Collector()
    ok = SamplingConfig(max_new_tokens=6, temperature=0)
    sched.submit(prompts[0], SamplingConfig(max_new_tokens=6, temperature=1.0, repetition_penalty=5e-324), 1, bad)
    sched.submit(prompts[2], ok, 1, good)
    sched.start()
    try:
        event = bad.events.get(timeout=60)
        assert event.done and "sampling failed" in event.error
        assert good.wait(1) == alone(model, prompts[2], ok)
    finally:
        sched.stop()
