"""Benchmark: our training steps against TRL's, on the same text-only tiny Qwen2, data and batch, as ratios.

1. SFT: tokens per second of `mgrd.train.sft.SFTTrainer.train_step` against TRL's `SFTTrainer`. Both train the
   same random-init Qwen2 (ours is the LLM of an `AudioReasoner` whose encoder never runs on text; TRL's a
   transformers `Qwen2ForCausalLM` holding the very same weights, checked by comparing logits), on the same
   encoded examples in the same batches (our task-CoT source: `q -> <think>chain</think> answer`, loss on the reply
   only; TRL gets our mixture's draws in order, as token ids and the completion mask, through a sequential
   sampler), with the same batch size, AdamW, learning rate and no accumulation, so padding is equal too.
   Tokens per second counts real (non-padding) tokens of the measured steps over their wall time.
2. RL: one step (rollout of G samples for each of P prompts up to `--new-tokens` tokens, reward, one update) of our
   `mgrd.train.rl` against TRL's `GRPOTrainer` with the same group size, prompts per step, completion length,
   sampling temperature and reward function; seconds per step and the ratio.

Each side runs `--warmup` steps that are not timed, then `--steps` timed ones; with `--rounds R` the sides
alternate R times and the best round of each counts. The clock (`--clock`) is by default this process's CPU time
on one torch thread (`--threads 1`): on a shared machine wall time mostly measures the other processes (two runs of
the same side differed 3x), while CPU seconds are what each side costs. `--clock wall` for a machine of one's own.
Nothing is downloaded: the tokenizer is mgrd's tiny offline BPE, the models are built from configs.
Run: `.venv/bin/python benchmarks/train_throughput.py` (minutes) or `--quick` (a smoke run, ~1 minute).
TRL comes with the `bench` extra.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import warnings

import numpy as np
import torch

warnings.filterwarnings("ignore", category=FutureWarning)  # transformers' renames (gradient -> activation ckpt)

FULL = dict(hidden=256, intermediate=768, layers=4, heads=4, kv_heads=2, examples=256, batch=8, steps=20, warmup=3,
            rounds=2, prompts=4, group=4, new_tokens=32, rl_steps=4)
QUICK = dict(hidden=128, intermediate=384, layers=2, heads=4, kv_heads=2, examples=48, batch=4, steps=4, warmup=1,
             rounds=1, prompts=2, group=4, new_tokens=16, rl_steps=2)
LR = 1e-4
SEED = 0
CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
_CLOCK = ["cpu"]


def _now() -> float:
    """The benchmark's clock (`--clock`): this process's CPU seconds (all threads), or wall seconds."""
    return CLOCKS[_CLOCK[0]]()


# ------------------------------------------------------------------------------------------------ model and data


def model_config(dims: dict, tok):
    """Our tiny preset with the LLM resized to `dims` (the encoder stays tiny: text never reaches it)."""
    from mgrd.models.presets import tiny
    from mgrd.tokenizer import special_token_ids

    config = tiny(len(tok), special_token_ids(tok))
    config.text.update(hidden_size=dims["hidden"], intermediate_size=dims["intermediate"],
                       num_hidden_layers=dims["layers"], num_attention_heads=dims["heads"],
                       num_key_value_heads=dims["kv_heads"], num_attention_groups=dims["kv_heads"])
    config.audio.llm_dim = dims["hidden"]
    return config


def write_checkpoint(dims: dict, folder: Path) -> Path:
    """A random-init checkpoint (official layout + the tiny tokenizer) that our trainers load by path."""
    from mgrd.models import build_model, save_pretrained
    from mgrd.tokenizer import build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    return save_pretrained(build_model(model_config(dims, tok), seed=SEED), folder, tokenizer=tok, overwrite=True)


def hf_twin(checkpoint: Path):
    """transformers' `Qwen2ForCausalLM` with our checkpoint's LLM weights (same names: `model.*`, `lm_head`)."""
    from transformers import Qwen2ForCausalLM

    from mgrd.models import load_pretrained

    ours = load_pretrained(checkpoint)
    qcfg = ours.config.qwen2_config()
    qcfg._attn_implementation = ours.model.config._attn_implementation
    hf = Qwen2ForCausalLM(qcfg)
    state = {k: v for k, v in ours.state_dict().items() if k.startswith(("model.", "lm_head."))}
    missing, unexpected = hf.load_state_dict(state, strict=False)
    assert not unexpected and all("rotary" in k for k in missing), (missing, unexpected)
    ids = torch.randint(0, qcfg.vocab_size - 8, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, ours(ids).logits, rtol=1e-4, atol=1e-4)
    return hf


def write_manifest(n: int, folder: Path) -> Path:
    """`n` text-only arithmetic items with chains of 1-24 steps, so lengths vary (about 40 to 150 tokens)."""
    rng = np.random.default_rng(SEED)
    rows = []
    for i in range(n):
        terms = [int(x) for x in rng.integers(1, 99, size=1 + int(rng.integers(1, 25)))]
        steps, total = [], terms[0]
        for t in terms[1:]:
            steps.append(f"{total} plus {t} makes {total + t}.")
            total += t
        rows.append(dict(id=f"sum-{i:05d}", task="bench_sum", audio=[], answer=str(total),
                         question="What is " + " + ".join(map(str, terms)) + "?", reasoning=" ".join(steps)))
    path = folder / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ------------------------------------------------------------------------------------------------ SFT


@dataclass
class Timing:
    """Measured steps: their seconds (the `--clock`) and tokens (SFT: real, non-padding; RL: sampled)."""

    seconds: list[float]
    tokens: list[int]
    slots: list[int] = field(default_factory=list)  # SFT: padded positions (rows x longest row per forward)

    @property
    def padding(self) -> float:
        """The fraction of computed positions that were padding (SFT)."""
        return 1 - sum(self.tokens) / sum(self.slots) if self.slots else float("nan")

    @property
    def tokens_per_s(self) -> float:
        return sum(self.tokens) / sum(self.seconds)

    @property
    def step_s(self) -> float:
        return statistics.median(self.seconds)


def sft_config(checkpoint: Path, manifest: Path, out: Path, dims: dict, steps: int):
    from mgrd.train.config import load
    from mgrd.train.sft import SFTConfig

    overrides = [f"model.path={checkpoint}", f"data.task_cot.manifests=[{manifest}]", "data.audio_qa.weight=0",
                 "data.conversation.weight=0", f"optim.micro_batch_size={dims['batch']}", "optim.grad_accum=1",
                 f"optim.lr={LR}", "optim.weight_decay=0.0", "optim.warmup_steps=0", "optim.schedule=constant",
                 f"run.max_steps={steps}", f"run.out_dir={out}", "run.name=ours", "run.progress=false",
                 "run.tensorboard=false", "run.device=cpu", f"run.seed={SEED}"]
    return load(SFTConfig, None, overrides)


def ours_sft(checkpoint: Path, manifest: Path, out: Path, dims: dict, n_steps: int, warmup: int) -> Timing:
    """Our SFT trainer's steps (draw the mixture, collate, forward/backward, clip, AdamW), timed one by one."""
    from mgrd.train.sft import SFTTrainer

    trainer = SFTTrainer(sft_config(checkpoint, manifest, out, dims, warmup + n_steps))
    timing = Timing([], [])
    try:
        for step in range(warmup + n_steps):
            start = _now()
            examples = trainer.mixture.draw(trainer.step, trainer.global_batch)
            metrics = trainer.train_step(examples)
            elapsed = _now() - start
            if step >= warmup:
                timing.seconds.append(elapsed)
                timing.tokens.append(sum(len(e.input_ids) for e in examples))
                timing.slots.append(round(timing.tokens[-1] / (1 - metrics["padding"])))
    finally:
        trainer.run_dir.close()
    return timing


def encoded_examples(checkpoint: Path, manifest: Path, out: Path, dims: dict, n_steps: int) -> list:
    """The examples our trainer draws in its first `n_steps` steps (its own data path and mixture), in order, for
    TRL: ids and the reply mask. Fed to TRL in this order, both sides train on the very same batches."""
    from mgrd.train.sft import SFTTrainer

    trainer = SFTTrainer(sft_config(checkpoint, manifest, out, dims, n_steps))
    trainer.run_dir.close()
    drawn = [e for step in range(n_steps) for e in trainer.mixture.draw(step, trainer.global_batch)]
    return [(list(e.input_ids), list(e.labels_mask)) for e in drawn]


class _StepClock:
    """A transformers TrainerCallback timing each optimizer step (begin to end)."""

    def __init__(self):
        from transformers import TrainerCallback

        clock = self

        class Callback(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                clock.start = _now()

            def on_step_end(self, args, state, control, **kw):
                clock.seconds.append(_now() - clock.start)

        self.callback, self.seconds, self.start = Callback(), [], 0.0


def trl_sft(checkpoint: Path, examples: list, out: Path, dims: dict, n_steps: int, warmup: int,
            padding_free: bool = False) -> Timing:
    """TRL's SFTTrainer on the same ids and reply masks, same batch, LR and schedule; steps timed by a callback.

    The data loading of a step happens before `on_step_begin`, so each step's time adds the collator's time
    (measured in the collator) to be counted as ours is.
    """
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from mgrd.tokenizer import build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    data = Dataset.from_dict({"input_ids": [e[0] for e in examples], "completion_mask": [e[1] for e in examples]})
    args = SFTConfig(output_dir=str(out), per_device_train_batch_size=dims["batch"], gradient_accumulation_steps=1,
                     max_steps=warmup + n_steps, learning_rate=LR, lr_scheduler_type="constant", warmup_steps=0,
                     weight_decay=0.0, max_grad_norm=1.0, report_to=[], save_strategy="no",
                     use_cpu=True, bf16=False, seed=SEED, max_length=None, completion_only_loss=True,
                     padding_free=padding_free, dataloader_num_workers=0, disable_tqdm=True)
    clock = _StepClock()
    trainer = SFTTrainer(model=hf_twin(checkpoint), args=args, train_dataset=data, processing_class=tok,
                         callbacks=[clock.callback])
    _quiet(trainer)
    # our draws, in order: a sequential sampler instead of the Trainer's random one (the same batches, same padding)
    trainer._get_train_sampler = lambda *a, **k: torch.utils.data.SequentialSampler(trainer.train_dataset)
    collate, tokens, slots, collate_s = trainer.data_collator, [], [], []

    def counting(batch):
        start = _now()
        out_batch = collate(batch)
        collate_s.append(_now() - start)
        tokens.append(sum(len(b["input_ids"]) for b in batch))
        slots.append(len(batch) * max(len(b["input_ids"]) for b in batch))
        return out_batch

    trainer.data_collator = counting
    trainer.train()
    n = len(clock.seconds)
    seconds = [s + c for s, c in zip(clock.seconds, collate_s[:n])]
    return Timing(seconds[warmup:], tokens[warmup:n], slots[warmup:n])


def _quiet(trainer) -> None:
    """No per-step log dicts on stdout (the table is the output); TRL's own logging cadence is left as is."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)


# ------------------------------------------------------------------------------------------------ RL


def digit_reward(completions: list[str], **columns) -> list[float]:
    """The benchmark's reward, on both sides: the fraction of a completion's characters that are digits."""
    return [sum(c.isdigit() for c in text) / max(len(text), 1) for text in completions]


def write_rl_suite(n: int, folder: Path) -> Path:
    """A text-only synthetic suite (`text_arithmetic`, a registered task: our rollouts build prompts by task)."""
    from mgrd.data.synth.writer import synthesize

    return synthesize(folder, n=n, seed=SEED, families=["text_arithmetic"], workers=1, progress=False)


def rl_prompts(manifest: Path, n_steps: int, per_step: int, tok) -> list[str]:
    """The prompts our trainer draws (`rl.step_items`) in `n_steps` steps, as our tasks render them (ending in
    `<think>\\n`), as text for TRL (fed in this order, unshuffled); each checked to tokenize back to the same ids."""
    from mgrd.data.manifest import load_manifest
    from mgrd.tasks import get_task
    from mgrd.train.rl import step_items

    items = load_manifest(manifest)
    texts = []
    for step in range(n_steps):
        for it in step_items(items, step, per_step, SEED):
            ids = list(get_task(it.task).encode_prompt(it, tok).input_ids)
            text = tok.decode(ids)
            assert tok(text, add_special_tokens=False).input_ids == ids, "a prompt's text does not round-trip"
            texts.append(text)
    return texts


def rl_config(checkpoint: Path, manifest: Path, out: Path, dims: dict):
    from mgrd.train.config import load
    from mgrd.train.rl import RLConfig

    rows = dims["prompts"] * dims["group"]
    overrides = [f"model.path={checkpoint}", f"data.manifests=[{manifest}]", "algo.name=grpo",
                 f"algo.prompts_per_step={dims['prompts']}", f"algo.samples_per_prompt={dims['group']}",
                 "algo.kl_coef=0", "algo.update_epochs=1", "algo.minibatches=1", "reward.functions={bench_digits: 1.0}",
                 f"sampling.max_new_tokens={dims['new_tokens']}", "sampling.temperature=1.0", "sampling.top_k=0",
                 "sampling.top_p=1.0", f"optim.micro_batch_size={rows}", f"optim.lr={LR}", "optim.warmup_steps=0",
                 "optim.schedule=constant", "optim.weight_decay=0.0", "run.device=cpu", f"run.out_dir={out}",
                 "run.name=ours", "run.progress=false", "run.tensorboard=false", f"run.seed={SEED}"]
    return load(RLConfig, None, overrides)


def ours_rl(checkpoint: Path, manifest: Path, out: Path, dims: dict, n_steps: int, warmup: int) -> Timing:
    """Our GRPO steps (`rl.rl_step`: rollout -> score -> log-probs -> advantages -> update), timed one by one;
    tokens: the sampled completion tokens."""
    from mgrd.train import distributed as D
    from mgrd.train import rl
    from mgrd.train.rewards import register_reward

    register_reward("bench_digits", digit_reward, replace=True)
    cfg = rl_config(checkpoint, manifest, out, dims)
    tr = rl.build_trainer(cfg, D.init("cpu"))
    items = rl.load_items(cfg, out)
    timing = Timing([], [])
    for step in range(warmup + n_steps):
        start = _now()
        metrics = rl.rl_step(tr, rl.step_items(items, step, dims["prompts"], SEED), step)
        elapsed = _now() - start
        if step >= warmup:
            timing.seconds.append(elapsed)
            work = sum(v for k, v in metrics.items() if k.startswith("time/"))
            timing.tokens.append(round(metrics["tokens_per_s"] * work))
    return timing


def trl_grpo(checkpoint: Path, prompts: list[str], out: Path, dims: dict, n_steps: int, warmup: int) -> Timing:
    """TRL's GRPOTrainer: P prompts x G samples per step, one generation batch per optimizer step, no KL,
    no vLLM (transformers `generate`), the same completion length and temperature; steps timed by a callback."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from mgrd.tokenizer import build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    tok.padding_side = "left"
    per_step = dims["prompts"] * dims["group"]
    args = GRPOConfig(output_dir=str(out), per_device_train_batch_size=per_step, gradient_accumulation_steps=1,
                      num_generations=dims["group"], max_completion_length=dims["new_tokens"], temperature=1.0,
                      top_k=0, top_p=1.0, beta=0.0, num_iterations=1, learning_rate=LR, lr_scheduler_type="constant",
                      warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, max_steps=warmup + n_steps,
                      report_to=[], save_strategy="no", use_cpu=True, bf16=False, seed=SEED, disable_tqdm=True,
                      dataloader_num_workers=0, logging_steps=1, shuffle_dataset=False)
    data = Dataset.from_dict({"prompt": prompts})
    clock = _StepClock()
    trainer = GRPOTrainer(model=hf_twin(checkpoint), reward_funcs=digit_reward, args=args, train_dataset=data,
                          processing_class=tok, callbacks=[clock.callback])
    _quiet(trainer)
    trainer.train()
    seconds = clock.seconds[warmup:]
    lengths = [row["completions/mean_length"] for row in trainer.state.log_history if "completions/mean_length" in row]
    return Timing(seconds, [round(per_step * n) for n in lengths[warmup:]])


# ------------------------------------------------------------------------------------------------ main


def bench_sft(dims: dict, work: Path) -> dict:
    checkpoint = write_checkpoint(dims, work / "model")
    manifest = write_manifest(dims["examples"], work)
    examples = encoded_examples(checkpoint, manifest, work / "probe", dims, dims["warmup"] + dims["steps"])
    lengths = [len(e[0]) for e in examples]
    best: dict[str, Timing] = {}
    for r in range(dims["rounds"]):
        for name, fn in (("ours", lambda: ours_sft(checkpoint, manifest, work / f"ours{r}", dims, dims["steps"],
                                                   dims["warmup"])),
                         ("trl", lambda: trl_sft(checkpoint, examples, work / f"trl{r}", dims, dims["steps"],
                                                 dims["warmup"]))):
            t = fn()
            print(f"  round {r + 1} {name}: {t.tokens_per_s:,.0f} tokens/s (median step {t.step_s:.3f} s)",
                  file=sys.stderr)
            if name not in best or t.tokens_per_s > best[name].tokens_per_s:
                best[name] = t
    return dict(examples=len(examples), mean_len=float(np.mean(lengths)), max_len=max(lengths),
                ours_tokens_per_s=best["ours"].tokens_per_s, trl_tokens_per_s=best["trl"].tokens_per_s,
                ratio=best["ours"].tokens_per_s / best["trl"].tokens_per_s, ours_padding=best["ours"].padding,
                trl_padding=best["trl"].padding)


def bench_rl(dims: dict, work: Path) -> dict:
    from mgrd.tokenizer import build_tiny_tokenizer

    checkpoint = write_checkpoint(dims, work / "model")
    manifest = write_rl_suite(64, work / "rl_suite")
    prompts = rl_prompts(manifest, dims["warmup"] + dims["rl_steps"], dims["prompts"], build_tiny_tokenizer())
    best: dict[str, Timing] = {}
    for r in range(dims["rounds"]):
        for name, fn in (("ours", lambda: ours_rl(checkpoint, manifest, work / f"rl{r}", dims, dims["rl_steps"],
                                                  dims["warmup"])),
                         ("trl", lambda: trl_grpo(checkpoint, prompts, work / f"grpo{r}", dims, dims["rl_steps"],
                                                  dims["warmup"]))):
            t = fn()
            print(f"  round {r + 1} {name}: median step {t.step_s:.3f} s", file=sys.stderr)
            if name not in best or t.step_s < best[name].step_s:
                best[name] = t
    rows = dims["prompts"] * dims["group"]
    ours, trl = best["ours"], best["trl"]
    return dict(ours_step_s=ours.step_s, trl_step_s=trl.step_s, ratio=trl.step_s / ours.step_s,
                ours_mean_completion=sum(ours.tokens) / len(ours.tokens) / rows,
                trl_mean_completion=sum(trl.tokens) / len(trl.tokens) / rows,
                ours_tokens_per_s=ours.tokens_per_s, trl_tokens_per_s=trl.tokens_per_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller model, fewer steps (a smoke run)")
    parser.add_argument("--steps", type=int, default=None, help="timed SFT steps per side and round")
    parser.add_argument("--rounds", type=int, default=None, help="alternate the sides this many times, keep the best")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu",
                        help="cpu: this process's CPU seconds (robust on a shared machine); wall: elapsed seconds")
    parser.add_argument("--skip-sft", action="store_true", help="only the RL comparison")
    parser.add_argument("--skip-rl", action="store_true", help="only the SFT comparison")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    dims = dict(QUICK if args.quick else FULL)
    for key in ("steps", "rounds"):
        if getattr(args, key) is not None:
            dims[key] = getattr(args, key)
    if args.threads:
        torch.set_num_threads(args.threads)
    _CLOCK[0] = args.clock
    print(f"# train throughput: torch {torch.__version__}, {torch.get_num_threads()} thread(s), {args.clock} clock, "
          f"{platform.processor() or platform.machine()}; LLM {dims['layers']} x {dims['hidden']} "
          f"(mlp {dims['intermediate']}, {dims['heads']} heads, {dims['kv_heads']} KV)")
    results: dict = {"dims": dims, "clock": args.clock, "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if not args.skip_sft:
            s = bench_sft(dims, work)
            results["sft"] = s
            print(f"SFT  batch {dims['batch']}, {s['examples']} examples drawn (mean {s['mean_len']:.0f}, "
                  f"max {s['max_len']} tokens): ours {s['ours_tokens_per_s']:,.0f} tokens/s, TRL SFTTrainer "
                  f"{s['trl_tokens_per_s']:,.0f} tokens/s -> {s['ratio']:.2f}x (padding: ours {s['ours_padding']:.0%}, "
                  f"TRL {s['trl_padding']:.0%})")
        if not args.skip_rl:
            r = bench_rl(dims, work)
            results["rl"] = r
            print(f"RL   {dims['prompts']} prompts x {dims['group']} samples, up to {dims['new_tokens']} tokens "
                  f"(mean ours {r['ours_mean_completion']:.1f}, TRL {r['trl_mean_completion']:.1f}): ours "
                  f"{r['ours_step_s']:.2f} s/step, TRL GRPOTrainer {r['trl_step_s']:.2f} s/step -> {r['ratio']:.2f}x "
                  f"(completion tokens/s: {r['ours_tokens_per_s']:.0f} vs {r['trl_tokens_per_s']:.0f})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
