"""The scheduler's fast path: jobs own slots of a `StaticKV`, its buffers grow with the jobs in flight, and models
the fast path does not cover are served through `model(...)`.

Jobs arrive from inside other jobs' sinks (called on the scheduler thread between steps), so when each one joins
is fixed, and the sinks look at the slots as the scheduler leaves them after each step. Every job must still decode
as `mgrd.rollout.rollout` does alone (`assert_decodes_alone`).
"""

from __future__ import annotations

import copy

import torch

from mgrd.generate import SamplingConfig
from mgrd.rollout import rollout
from mgrd.serve.scheduler import Scheduler

from .helpers import Collector, assert_decodes_alone


def greedy(tokens: int) -> SamplingConfig:
    return SamplingConfig(max_new_tokens=tokens, temperature=0, stop_ids=())  # no stop within 200 tokens here


def snapshot(sched: Scheduler) -> dict:
    """Who owns which slot, and each slot's columns (written and attended), as the last step left them."""
    rows = sched._rows
    return {"owned": {job.id: list(slots) for job, slots in rows.owned.items()},
            "length": list(rows.kv.host_length), "attended": rows.kv.valid.sum(1).tolist(),
            "max_len": rows.kv.max_len}


def test_jobs_join_and_leave_while_others_run_in_reused_slots(model, mixed_prompts):
    """A (2 rows, 6 tokens) starts; B (1 row, 20 tokens) joins at A's 2nd token; A leaves after its 6th (B's 5th),
    and C joins at B's 8th token, in A's first slot. Free slots below the highest owned one stay parked (one column
    and the step's own, never more); the slot above it is never stepped; the buffers go when the batch empties."""
    sched = Scheduler(model, max_rows=4)
    sinks = {name: Collector() for name in "ABC"}
    cfgs, prompt = {"A": greedy(6), "B": greedy(20), "C": greedy(5)}, dict(zip("ABC", mixed_prompts))
    jobs, seen = {}, []

    def on(name, event):
        sinks[name](event)
        seen.append((name, snapshot(sched)))
        count = sum(who == name for who, _ in seen)
        if (name, count) in (("A", 2), ("B", 8)):
            joining = {"A": "B", "B": "C"}[name]
            jobs[joining] = sched.submit(prompt[joining], cfgs[joining], 1, lambda e: on(joining, e))

    jobs["A"] = sched.submit(prompt["A"], cfgs["A"], 2, lambda e: on("A", e))
    sched.start()
    try:
        for name, n in (("A", 2), ("B", 1), ("C", 1)):
            assert_decodes_alone(model, prompt[name], cfgs[name], n, sinks[name])
    finally:
        sched.stop()
    a, b, c = (jobs[name].id for name in "ABC")
    owners = {}
    for _, snap in seen:
        owners.update(snap["owned"])
    assert owners == {a: [0, 1], b: [2], c: [0]}
    b_alone = [s for _, s in seen if s["owned"].keys() == {b}]
    b_and_c = [s for _, s in seen if s["owned"].keys() == {b, c}]
    assert len(b_alone) >= 3 and all(s["length"][:2] == s["attended"][:2] == [2, 2] for s in b_alone)
    assert b_and_c and all(s["length"][1] == s["attended"][1] == 2 for s in b_and_c)
    assert all(snap["length"][3] == 1 for _, snap in seen)  # slot 3: never stepped
    assert sched._rows.kv is None and sched._rows.free == [0, 1, 2, 3]


def test_the_buffers_grow_when_a_long_job_joins(model, mixed_prompts):
    """A short job's buffers hold its prompt and budget (64 positions, not the model's 4096); a job with a 150-token
    budget joining at its 3rd token grows them (copied: the first job decodes on as alone)."""
    sched = Scheduler(model, max_rows=4)
    short, long = Collector(), Collector()
    cfg_short, cfg_long = greedy(8), greedy(150)
    lengths = []

    def on_short(event):
        short(event)
        lengths.append(sched._rows.kv.max_len)
        if len(lengths) == 3:
            sched.submit(mixed_prompts[0], cfg_long, 1, long)

    sched.submit(mixed_prompts[2], cfg_short, 1, on_short)
    sched.start()
    try:
        assert_decodes_alone(model, mixed_prompts[2], cfg_short, 1, short)
        assert_decodes_alone(model, mixed_prompts[0], cfg_long, 1, long)
    finally:
        sched.stop()
    prompt = len(mixed_prompts[0].input_ids)
    assert lengths[:3] == [64] * 3
    assert prompt + 150 <= lengths[3] < 4096 and lengths[3:] == [lengths[3]] * (len(lengths) - 3)


def test_a_lora_model_is_served_through_its_forward(model, mixed_prompts):
    """A peft-wrapped decoder is not covered by the fast path: steps go through `model(...)`, so the adapters
    count; greedy and seeded jobs in one batch decode as the wrapped model's rollout alone."""
    from mgrd.train.optim import LoraSetup, add_lora

    lora = copy.deepcopy(model)
    add_lora(lora, LoraSetup(rank=4, target_modules=("q_proj", "v_proj")))
    torch.nn.init.normal_(lora.model.layers[0].self_attn.q_proj.lora_B["default"].weight)
    sched = Scheduler(lora, max_rows=8)
    assert not sched.fast
    cfgs = [greedy(10), SamplingConfig(max_new_tokens=8, temperature=0.8, top_k=40, repetition_penalty=1.2, seed=1)]
    sinks = [Collector(), Collector()]
    for p, cfg, sink in zip(mixed_prompts, cfgs, sinks):
        sched.submit(p, cfg, 2, sink)
    sched.start()
    try:
        got = [assert_decodes_alone(lora, p, cfg, 2, sink) for p, cfg, sink in zip(mixed_prompts, cfgs, sinks)]
    finally:
        sched.stop()
    plain = rollout(model, mixed_prompts[:1], cfgs[0], num_samples=2)
    assert got[0] != [plain.row_tokens(r) for r in range(2)]


def test_a_slot_holds_its_own_prompt_without_the_batchs_padding(model, mixed_prompts):
    """Prompts of 23 and 7 tokens prefilled together (one forward, the short one left-padded): each slot starts at
    its own prompt's length and attends to exactly those columns; both decode as alone."""
    sched = Scheduler(model, max_rows=4)
    cfg = greedy(4)
    long, short = Collector(), Collector()
    first = []

    def on_long(event):
        long(event)
        first.append(snapshot(sched)) if not first else None

    sched.submit(mixed_prompts[0], cfg, 1, on_long)
    sched.submit(mixed_prompts[2], cfg, 2, short)
    sched.start()
    try:
        assert_decodes_alone(model, mixed_prompts[0], cfg, 1, long)
        assert_decodes_alone(model, mixed_prompts[2], cfg, 2, short)
    finally:
        sched.stop()
    lengths = [len(mixed_prompts[0].input_ids)] + [len(mixed_prompts[2].input_ids)] * 2
    assert lengths == [23, 7, 7]
    assert first[0]["length"][:3] == first[0]["attended"][:3] == lengths
