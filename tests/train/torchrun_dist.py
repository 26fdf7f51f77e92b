"""A few AdamW steps of the tiny preset on a fixed global batch, with `mgrd.train.distributed`'s rank-correct parts.

Run by `tests/train/test_distributed.py` in two ways on the same global batches:
- under `torchrun --nproc-per-node 2` as `python torchrun_dist.py OUT RUNS_JSON STRATEGY...` (ddp, fsdp2): for
  each strategy in turn each rank trains a fresh model on its `shard` of every global batch in micro-batches; rank 0
  writes {strategy: result} to OUT (`torch.save`). Then, in the same processes, each `[stage, argv]` of RUNS_JSON
  runs `mgrd sft` or `mgrd rl` (`mgrd.train.sft.main` / `mgrd.train.rl.main`), each starting and stopping a process
  group of its own; RL runs can use the reward `variety` (distinct characters over characters: it varies between
  any two samples of a random model, so advantages and gradients are not zero). One launch for everything saves
  the start-up (imports) of the next.
- in the test process itself through `train("none", DistInfo())`, one process taking the whole global batch.
The two results (loss per step, gradient norm per step, final parameters) must agree to float tolerance.

The loss here is the plain summed token cross-entropy over `distributed.loss_divisor`; it stands in for the SFT
trainer's only so that the distributed primitives are tested on their own.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch
import torch.nn.functional as F

from mgrd.train import distributed as D

GLOBAL_BATCH = 8  # conversations per optimizer step, split over the ranks
MICRO_BATCH = 2  # per rank
STEPS = 3
SEED = 0


def conversations(step: int) -> list[dict]:
    """The global batch of `step`: even rows carry a short tone clip, odd rows are text only; step 1 is all text.

    Under 2 ranks the strided shard gives rank 0 every audio row and rank 1 none, so the adapter gets gradients on
    one rank only (DDP's unused parameters, FSDP2's zero reduce-scatter) and the ranks' token counts differ. In
    step 1 no rank runs the adapter: one process leaves its gradients None (AdamW skips it), and so must 2 ranks
    (`UnusedParams`).
    """
    rng = np.random.default_rng(100 + step)
    rows = []
    for i in range(GLOBAL_BATCH):
        answer = " ".join(["high", "low", "tone", "beep"][j] for j in rng.integers(0, 4, size=1 + i % 5))
        if i % 2 == 0 and step != 1:
            t = np.arange(int(16000 * (0.2 + 0.1 * (i % 3)))) / 16000
            clip = (0.3 * np.sin(2 * np.pi * (200 + 50 * i) * t)).astype(np.float32)
            content = [{"type": "audio", "audio": clip}, {"type": "text", "text": "Which tone?"}]
        else:
            content = "Say a word " * (1 + i % 3)
        rows.append([{"role": "user", "content": content}, {"role": "assistant", "content": answer}])
    return rows


def build():
    """The tiny preset (seed 0) and its tokenizer; the encoder is frozen by the model's default."""
    from mgrd.models import build_model
    from mgrd.models.presets import tiny
    from mgrd.tokenizer import build_tiny_tokenizer, special_token_ids

    tok = build_tiny_tokenizer()
    model = build_model(tiny(len(tok), special_token_ids(tok)), seed=SEED)
    return model, tok


def token_loss_sum(model, batch) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy over the label tokens of a `SFTBatch`, and their count."""
    logits = model(batch.input_ids, batch.attention_mask, batch.mels, batch.mel_lens).logits
    labels = batch.labels[:, 1:]
    loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels.flatten(), reduction="sum")
    return loss, int((labels != -100).sum())


def collectives(info: D.DistInfo) -> dict:
    """The reductions on rank-dependent values (rank r contributes r + 1), and the mismatched-names error."""
    r = info.rank
    out = dict(
        metrics=D.reduce_metrics({"a": r + 1, "b": r + 1, "c": r + 1, "d": torch.tensor(r + 1.0)},
                                 {"a": "mean", "b": "sum", "c": "max", "d": "min"}, info),
        all_sum_int=D.all_sum(r + 1, info),
        all_sum_tensor=D.all_sum(torch.tensor([r + 1.0, 2.0]), info).tolist(),
        gathered=D.gather_objects({"rank": r}, info),
        broadcast=D.broadcast_object(f"from {r}"),
        shard=D.gather_objects(D.shard(list(range(7)), info), info),
        divisor=D.loss_divisor(10 * (r + 1), info),
    )
    try:
        D.reduce_metrics({f"only_rank_{r}": 1.0}, "mean", info)
    except ValueError as err:
        out["mismatch_error"] = str(err)
    return out


def train(strategy: str, info: D.DistInfo) -> dict:
    """STEPS optimizer steps; returns loss and grad norm per step, and the full final state (on rank 0)."""
    from mgrd.chat import encode_chat
    from mgrd.data.collate import collate_sft

    torch.manual_seed(SEED)
    model, tok = build()
    encoder_before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    wrapped = D.wrap(model.train(), strategy, info)
    params = [p for p in wrapped.parameters() if p.requires_grad]
    unused = D.UnusedParams(wrapped)
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.1)
    pad = tok.pad_token_id
    losses, norms = [], []
    for step in range(STEPS):
        mine = D.shard([encode_chat(tok, c, train=True) for c in conversations(step)], info)
        micro = [collate_sft(mine[i:i + MICRO_BATCH], pad) for i in range(0, len(mine), MICRO_BATCH)]
        local_tokens = sum(int((b.labels[:, 1:] != -100).sum()) for b in micro)
        divisor = D.loss_divisor(local_tokens, info)
        loss_sum = 0.0
        for i, batch in enumerate(micro):
            with D.grad_sync(wrapped, enabled=i == len(micro) - 1):
                loss, _ = token_loss_sum(wrapped, batch)
                (loss / divisor).backward()
            loss_sum += loss.item()
        unused.drop_grads(info)
        norms.append(D.clip_grad_norm(params, 1.0))
        opt.step()
        opt.zero_grad(set_to_none=True)
        m = D.reduce_metrics({"loss_sum": loss_sum, "tokens": local_tokens}, "sum", info)
        losses.append(m["loss_sum"] / m["tokens"])
    state, optim_state = D.full_state_dict(wrapped, opt)
    encoder_same = all(torch.equal(state[f"encoder.{k}"], v) for k, v in encoder_before.items()) if state else None
    return dict(losses=losses, norms=norms, state=state, optim=optim_state, encoder_same=encoder_same)


if __name__ == "__main__":
    out, stage_runs, strategies = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3:]
    torch.set_num_threads(1)
    info = D.init("cpu", timeout_s=120)  # a rank out of step fails in 2 minutes, not gloo's 30
    try:
        results = {s: dict(train(s, info), world_size=info.world_size) for s in strategies}
        results["collectives"] = collectives(info)
        D.cleanup()  # a second group in the same processes (the MGRD loop runs stage after stage)
        info = D.init("cpu", timeout_s=120)
        results["collectives"]["second_group"] = D.reduce_metrics({"a": info.rank + 1}, "sum", info)
        if D.is_main():
            torch.save(results, out)
        D.barrier()
    finally:
        D.cleanup()
    from mgrd.train import rl, sft
    from mgrd.train.rewards import register_reward

    register_reward("variety", lambda completions, **columns: [len(set(t)) / max(len(t), 1) for t in completions])
    for stage, argv in stage_runs:
        if {"sft": sft.main, "rl": rl.main}[stage](argv):
            raise SystemExit(f"mgrd {stage} {' '.join(argv)} failed")
