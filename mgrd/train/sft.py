"""`mgrd sft`: supervised fine-tuning on the cold-start mixture (task CoT, conversation, audio QA), one process or
many (`torchrun --nproc-per-node N -m mgrd.train.sft --config ...`).

Setup -> loop -> save, in this file:

1. setup: the model (a checkpoint folder, or a fresh tiny preset) and its tokenizer; trainable parameters
   (`optim.prepare_trainable`: frozen encoder, adapter + LLM or LoRA); activation checkpointing; the wrapper
   (`distributed.wrap`: none / DDP / FSDP2); the encoded sources and their `Mixture` (`train.data`); AdamW and
   the warm-up + cosine schedule; the run folder (`train.run.RunDir`), restored from its newest checkpoint
   with `--resume`.
2. each optimiser step (`SFTTrainer.train_step`): draw the step's global batch (micro x accum x ranks), sort it
   by length and deal it into this rank's micro-batches; each micro-batch's summed token loss is divided by the
   *global* number of target tokens of the step (`distributed.loss_divisor`), so accumulation and ranks give
   the token mean of the whole batch (1x8 == 8x1); clip, and step, unless the loss or gradient norm is not
   finite (then the step is skipped and counted; past `run.max_nan_skips` the run stops with an error).
3. every `eval_every` steps and at the end (`SFTTrainer.evaluate`): held-out loss, and accuracy by greedy
   generation (`mgrd.rollout.rollout`, graded by `Task.grade`), as `eval/` rows.
4. `final/` in the official layout with the tokenizer, then `done.json`.

The loss numerics live in `token_loss_sum`. Prompts, targets and label masks come from the shared path
(`Task.encode_example`, `collate_sft`); nothing here builds a prompt.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mgrd.train.config import ModelSetup, OptimConfig, RunConfig, describe, load, option
from mgrd.train.data import SFTDataConfig, kind_of

if TYPE_CHECKING:  # torch, the model and the data path load when a run starts, so `mgrd --help` stays fast
    import torch

COMMAND_HELP = "supervised fine-tuning on the cold-start mixture (task CoT, conversation, audio QA)"


class TrainingDivergedError(ValueError):
    """Too many steps with a non-finite loss or gradient norm."""


@dataclass
class EvalSetup:
    """Held-out evaluation: loss on every example, accuracy by greedy generation on the first few."""

    manifests: tuple[str, ...] = option((), "held-out manifests (items routed to sources as in training)")
    max_items: int = option(64, "held-out examples scored for the loss (0: all)")
    generate_items: int = option(16, "question items answered by greedy generation for eval/accuracy (0: off)")
    max_new_tokens: int = option(128, "token budget of each generated answer")
    batch_size: int = option(8, "sequences per eval forward / generation batch, per GPU")

    def __post_init__(self):
        for key in ("max_items", "generate_items"):
            if getattr(self, key) < 0:
                raise ValueError(f"eval.{key} must be >= 0, got {getattr(self, key)}")
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise ValueError("eval.max_new_tokens and eval.batch_size must be >= 1")


@dataclass
class SFTConfig:
    """`mgrd sft`'s whole config: run, optimiser, model setup, data mixture, evaluation."""

    run: RunConfig = option(RunConfig(name="sft"), "run folder, length, logging, checkpoints")
    optim: OptimConfig = option(OptimConfig(), "AdamW, schedule, clipping, batch geometry")
    model: ModelSetup = option(ModelSetup(), "model source, trainable parts, precision, distribution")
    data: SFTDataConfig = option(SFTDataConfig(), "the mixture of sources")
    eval: EvalSetup = option(EvalSetup(), "held-out evaluation")


# ---------------------------------------------------------------------------------------------- numerics


def token_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token cross-entropy over the labelled positions, and how many there are.

    Args:
        logits: `[B, T, V]` the model's logits (any float dtype; the loss is computed in float32).
        labels: `[B, T]` long, aligned with the inputs (`collate_sft`): position t's logits predict `labels[t + 1]`;
            `IGNORE_INDEX` marks prompt, padding and other non-assistant tokens.
    Returns:
        (loss_sum, n_tokens): a float32 scalar and a long scalar.
    """
    import torch.nn.functional as F

    from mgrd.data.collate import IGNORE_INDEX

    target = labels[:, 1:]
    pred = logits[:, :-1].float()
    loss = F.cross_entropy(pred.reshape(-1, pred.shape[-1]), target.reshape(-1), ignore_index=IGNORE_INDEX,
                           reduction="sum")
    return loss, (target != IGNORE_INDEX).sum()


def target_tokens(examples) -> int:
    """The loss tokens of examples: their labelled positions after the shift (position 0 never predicts)."""
    return sum(int(sum(e.labels_mask[1:])) for e in examples)


# ---------------------------------------------------------------------------------------------- setup


def load_model_and_tokenizer(setup: ModelSetup, device: torch.device, seed: int):
    """The starting model (on `device`, in `setup.dtype`) and its tokenizer.

    A checkpoint folder (`setup.path`) loads with the tokenizer saved beside it; without one, the `tiny` preset is
    initialised from `seed` with the project's offline tokenizer.

    Raises:
        ValueError: no path and a preset other than tiny (its tokenizer is not offline), or an unknown preset.
    """
    import torch

    from mgrd.models import build_model, load_pretrained
    from mgrd.models.presets import PRESETS, tiny
    from mgrd.tokenizer import build_tiny_tokenizer, load_tokenizer, special_token_ids

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[setup.dtype]
    if setup.path is not None:
        path = Path(setup.path)
        if not path.is_dir():
            raise FileNotFoundError(f"model.path not found: {path}")
        tokenizer = load_tokenizer(path)
        return load_pretrained(path, dtype=dtype, device=device, tokenizer=tokenizer), tokenizer
    if setup.preset not in PRESETS:
        raise ValueError(f"unknown model.preset {setup.preset!r}; choose from {', '.join(PRESETS)}")
    if setup.preset != "tiny":
        raise ValueError(f"model.preset {setup.preset!r} needs its tokenizer: write a checkpoint with "
                         f"`mgrd init --preset {setup.preset} --tokenizer DIR` and set model.path to it")
    tokenizer = build_tiny_tokenizer()
    model = build_model(tiny(len(tokenizer), special_token_ids(tokenizer)), device=device, dtype=dtype, seed=seed)
    return model, tokenizer


def activation_checkpointing(model, enabled: bool = True) -> None:
    """Recompute each decoder layer's activations in backward instead of keeping them (transformers' own
    non-reentrant checkpointing of the Qwen2 layers; the encoder and adapter are small and keep theirs)."""
    if enabled:
        model.model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.model.activation_checkpointing_disable()


def context_limit(model_config, data: SFTDataConfig) -> int:
    """The longest example in tokens: `data.max_length`, or the model's `max_position_embeddings`."""
    positions = int(model_config.text.get("max_position_embeddings", 32768))
    return min(data.max_length, positions) if data.max_length else positions


def eval_source(item, data: SFTDataConfig) -> str:
    """Which source's target style a held-out item gets: by its kind (audio: audio_cot when only it is weighted)."""
    kind = kind_of(item)
    if kind == "audio":
        return "audio_cot" if data.audio_cot.weight > 0 and data.audio_qa.weight == 0 else "audio_qa"
    return "conversation" if kind == "conversation" else "task_cot"


class SFTTrainer:
    """The SFT run's state (model, data, optimiser, run folder) and its operations: `train_step`, `evaluate`,
    `save` and `restore`. `SFTTrainer(cfg)` sets everything up; `run(cfg)` drives the loop."""

    def __init__(self, cfg: SFTConfig):
        import torch

        from mgrd.rollout.engine import pad_id
        from mgrd.train import distributed as dist
        from mgrd.train.optim import build_optimizer, build_scheduler, prepare_trainable
        from mgrd.train.run import RunDir, model_fingerprint

        self.cfg = cfg
        self.info = dist.init(cfg.run.device)
        # the folder first: a run that already exists is refused before any weights load or data encode
        cfg.data.check()
        self.run_dir = RunDir(cfg.run.path, is_main=self.info.is_main, tensorboard=cfg.run.tensorboard)
        self.run_dir.prepare(dataclasses.asdict(cfg), resume=cfg.run.resume)
        torch.manual_seed(cfg.run.seed)
        setup = cfg.model
        # FSDP2 moves each layer's shard to the GPU as it wraps it: load on the CPU, not a full copy per GPU
        sharded = setup.distributed == "fsdp2" and self.info.distributed
        model, self.tokenizer = load_model_and_tokenizer(setup, torch.device("cpu") if sharded else self.info.device,
                                                         cfg.run.seed)
        self.trainable = prepare_trainable(model, setup)
        self.fingerprint = model_fingerprint(model, self.trainable)
        self.model_config = model.config
        if setup.activation_checkpointing:
            activation_checkpointing(model)
        param_dtype = torch.bfloat16 if setup.autocast_bf16 and self.info.device.type == "cuda" else None
        self.model = dist.wrap(model, setup.distributed, self.info, param_dtype=param_dtype)
        self.unused = dist.UnusedParams(self.model)  # modules no rank ran get no gradient, as in one process
        self.device = self.info.device
        self.pad_id = pad_id(model.config)
        self.max_length = context_limit(model.config, cfg.data)
        self._build_data()
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, cfg.optim, cfg.run.max_steps)
        self.step, self.nan_skips = 0, 0

    # ------------------------------------------------------------------------------------------ data

    def _build_data(self) -> None:
        from mgrd.train.data import Mixture, build_sources, encode_source, load_items

        cfg = self.cfg
        audio_config = self.model_config.audio
        encoded = build_sources(cfg.data, self.tokenizer, audio_config, self.max_length,
                                progress=cfg.run.progress and self.info.is_main)
        self.data = encoded
        self.mixture = Mixture(encoded.sources, encoded.weights, cfg.run.seed)
        self.global_batch = cfg.optim.micro_batch_size * cfg.optim.grad_accum * self.info.world_size
        self.eval_examples, self.eval_items = [], []
        if cfg.eval.manifests:
            items = load_items(cfg.eval.manifests)
            if not items:
                raise ValueError(f"empty held-out set: {', '.join(cfg.eval.manifests)} hold no items")
            sources = cfg.data.sources()
            too_long = 0
            for name in sources:
                mine = [item for item in items if eval_source(item, cfg.data) == name]
                examples, skipped = encode_source(mine, name, sources[name].style, self.tokenizer, audio_config,
                                                  self.max_length)
                self.eval_examples += examples
                too_long += skipped
            if too_long and self.info.is_main:
                print(f"eval: {too_long} held-out example(s) longer than {self.max_length} tokens left out of "
                      "eval/loss", file=sys.stderr)
            order = {id(item): i for i, item in enumerate(items)}
            self.eval_examples.sort(key=lambda e: order[id(e.item)])
            if cfg.eval.max_items:
                self.eval_examples = self.eval_examples[: cfg.eval.max_items]
            self.eval_items = items[: cfg.eval.generate_items]

    # ------------------------------------------------------------------------------------------ one step

    def train_step(self, examples) -> dict:
        """One optimiser step on a global batch (the same list on every rank); returns the step's metrics.

        Args:
            examples: `micro x accum x W` encoded examples (`Mixture.draw`).
        Returns:
            loss (token mean over the global batch), lr, grad_norm, tokens, tokens_per_s, padding, skipped, ...
        """
        import torch

        from mgrd.data.collate import collate_sft
        from mgrd.train import distributed as dist
        from mgrd.train.data import micro_batches, source_counts

        start = time.perf_counter()
        cfg = self.cfg
        micro = micro_batches(examples, cfg.optim.micro_batch_size, self.info.rank, self.info.world_size)
        local_targets = target_tokens([e for mb in micro for e in mb])
        divisor = dist.loss_divisor(local_targets, self.info)  # global target tokens / W
        self.model.train()
        loss_sum = torch.zeros((), device=self.device)
        seq_tokens = padded = 0
        for i, mb in enumerate(micro):
            batch = collate_sft(mb, self.pad_id).to(self.device)
            seq_tokens += int(batch.attention_mask.sum())
            padded += batch.attention_mask.numel()
            with dist.grad_sync(self.model, enabled=i == len(micro) - 1):
                with self._autocast():
                    out = self.model(batch.input_ids, batch.attention_mask, batch.mels, batch.mel_lens)
                    s, _ = token_loss_sum(out.logits, batch.labels)
                (s / divisor).backward()
            loss_sum += s.detach()
        self.unused.drop_grads(self.info)
        grad_norm = dist.clip_grad_norm(
            [p for p in self.model.parameters() if p.requires_grad], cfg.optim.grad_clip or float("inf"))
        sums = dist.reduce_metrics({"loss_sum": loss_sum, "tokens": local_targets, "seq_tokens": seq_tokens,
                                    "positions": padded}, "sum", self.info)
        loss = sums["loss_sum"] / sums["tokens"]
        lr = self.optimizer.param_groups[0]["lr"]
        skipped = not (math.isfinite(loss) and math.isfinite(grad_norm))
        if skipped:
            self.nan_skips += 1
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        with warnings.catch_warnings():  # a skipped step still advances the schedule (torch warns about that)
            warnings.filterwarnings("ignore", message=".*lr_scheduler.step.*")
            self.scheduler.step()
        self.step += 1
        elapsed = time.perf_counter() - start
        metrics = {"loss": loss, "lr": lr, "grad_norm": grad_norm, "tokens": int(sums["tokens"]),
                   "tokens_per_s": sums["seq_tokens"] / elapsed, "target_tokens_per_s": sums["tokens"] / elapsed,
                   "padding": 1.0 - sums["seq_tokens"] / max(sums["positions"], 1), "examples": len(examples),
                   "max_len": max(e.length for e in examples), "step_time_s": elapsed, "skipped": int(skipped),
                   "nan_skips": self.nan_skips}
        metrics.update({f"mix/{k}": v for k, v in source_counts(examples).items()})
        if self.device.type == "cuda":
            metrics["gpu_mem_gb"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        if self.nan_skips > cfg.run.max_nan_skips:
            err = TrainingDivergedError(
                f"stopped at step {self.step}: {self.nan_skips} step(s) had a non-finite loss or gradient norm "
                f"(run.max_nan_skips={cfg.run.max_nan_skips}); lower optim.lr or check the data")
            err.metrics = metrics  # the last step's row, for the log
            raise err
        return metrics

    def _autocast(self):
        import torch

        if not self.cfg.model.autocast_bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    # ------------------------------------------------------------------------------------------ evaluation

    def evaluate(self) -> dict:
        """Held-out loss (token mean) and, when asked, accuracy by greedy generation; keys start with `eval/`."""
        import torch

        with torch.no_grad():
            return self._evaluate()

    def _evaluate(self) -> dict:
        from mgrd.data.collate import collate_sft
        from mgrd.train import distributed as dist

        out: dict = {}
        self.model.eval()
        if self.eval_examples:
            mine = dist.shard(self.eval_examples, self.info)
            loss_sum, tokens = 0.0, 0
            size = self.cfg.eval.batch_size
            for i in range(0, len(mine), size):
                batch = collate_sft(mine[i:i + size], self.pad_id).to(self.device)
                with self._autocast():
                    logits = self.model(batch.input_ids, batch.attention_mask, batch.mels, batch.mel_lens).logits
                s, n = token_loss_sum(logits, batch.labels)
                loss_sum, tokens = loss_sum + float(s), tokens + int(n)
            sums = dist.reduce_metrics({"s": loss_sum, "n": tokens}, "sum", self.info)
            out["eval/loss"] = sums["s"] / max(sums["n"], 1)
            out["eval/tokens"] = int(sums["n"])
        if self.eval_items:
            out.update(self._accuracy())
        self.model.train()
        return out

    def _accuracy(self) -> dict:
        from mgrd.generate import SamplingConfig
        from mgrd.train import distributed as dist
        from mgrd.train.data import task_for
        from mgrd.rollout import rollout

        items = self.eval_items
        tasks = sorted({item.task for item in items})
        # every rank runs the same number of generation batches (each FSDP2 forward is a collective)
        per_rank = -(-len(items) // self.info.world_size)
        mine = dist.shard(items, self.info)
        real = len(mine)
        mine = mine + [items[0]] * (per_rank - real)
        sampling = SamplingConfig(max_new_tokens=self.cfg.eval.max_new_tokens, temperature=0.0)
        audio_config = self.model_config.audio
        model = dist.unwrap(self.model)
        counts = {f"correct/{t}": 0.0 for t in tasks} | {f"n/{t}": 0.0 for t in tasks}
        counts.update({"length": 0.0, "truncated": 0.0})
        size = self.cfg.eval.batch_size
        for i in range(0, len(mine), size):
            chunk = mine[i:i + size]
            prompts = [task_for(item).encode_prompt(item, self.tokenizer, audio_config) for item in chunk]
            with self._autocast():
                batch = rollout(model, prompts, sampling, tokenizer=self.tokenizer)
            for j, item in enumerate(chunk):
                if i + j >= real:
                    continue  # padding so every rank takes the same steps
                counts[f"correct/{item.task}"] += task_for(item).grade(item, batch.texts[j])
                counts[f"n/{item.task}"] += 1
                counts["length"] += int(batch.response_lengths[j])
                counts["truncated"] += batch.finish_reasons[j] == "length"
        sums = dist.reduce_metrics(counts, "sum", self.info)
        n = sum(sums[f"n/{t}"] for t in tasks)
        out = {"eval/accuracy": sum(sums[f"correct/{t}"] for t in tasks) / n,
               "eval/response_tokens": sums["length"] / n, "eval/truncated": sums["truncated"] / n}
        out.update({f"eval/accuracy/{t}": sums[f"correct/{t}"] / sums[f"n/{t}"] for t in tasks if sums[f"n/{t}"]})
        return out

    # ------------------------------------------------------------------------------------------ state

    def state(self) -> dict:
        """What a checkpoint restores besides tensors: scheduler, data position, counters."""
        return {"scheduler": self.scheduler.state_dict(), "data": self.mixture.state_dict(),
                "nan_skips": self.nan_skips}

    def restore(self, checkpoint: Path) -> None:
        step, state = self.run_dir.load_checkpoint(checkpoint, self.model, self.optimizer, self.fingerprint)
        self.scheduler.load_state_dict(state["scheduler"])
        self.mixture.load_state_dict(state["data"])
        self.nan_skips = int(state.get("nan_skips", 0))
        self.step = step

    def save(self) -> Path:
        return self.run_dir.save_checkpoint(self.step, self.model, self.optimizer, self.state(), self.fingerprint,
                                            keep=self.cfg.run.keep_checkpoints)


# ---------------------------------------------------------------------------------------------- the run


def run(cfg: SFTConfig) -> Path:
    """Train as `cfg` says; returns the run folder (with `final/` and `done.json`).

    Raises:
        ValueError: bad data (empty, all too long), a run folder that holds a run without `run.resume`, a
            checkpoint of another model, or `TrainingDivergedError`.
    """
    from mgrd.train import distributed as dist

    trainer = SFTTrainer(cfg)
    try:
        return _loop(trainer)
    finally:
        trainer.run_dir.close()
        dist.cleanup()


def _loop(trainer: SFTTrainer) -> Path:
    cfg, run_dir = trainer.cfg, trainer.run_dir
    if cfg.run.resume:
        latest = run_dir.latest_checkpoint()
        if latest is not None:
            trainer.restore(latest)
            run_dir.truncate_metrics(trainer.step)
        elif trainer.info.is_main:
            print(f"--resume: no checkpoint in {run_dir.checkpoints}; starting at step 0", file=sys.stderr)
    if trainer.info.is_main:
        counts = ", ".join(f"{k} {len(v)}" for k, v in trainer.data.sources.items())
        print(f"sft {cfg.run.name}: {counts} examples; global batch {trainer.global_batch}; "
              f"{sum(p.numel() for p in trainer.model.parameters() if p.requires_grad):,} trainable parameters",
              file=sys.stderr)
    last_eval = {}
    if cfg.run.eval_every and trainer.step == 0:
        last_eval = _log_eval(trainer, 0)  # the curve starts at the initial model
    bar = run_dir.progress(cfg.run.max_steps, initial=trainer.step, enabled=cfg.run.progress)
    while trainer.step < cfg.run.max_steps:
        examples = trainer.mixture.draw(trainer.step, trainer.global_batch)
        try:
            metrics = trainer.train_step(examples)
        except TrainingDivergedError as err:
            run_dir.log(trainer.step, err.metrics)  # the row that shows why the run stopped
            raise
        step = trainer.step
        if step % cfg.run.log_every == 0 or step == cfg.run.max_steps:
            run_dir.log(step, metrics)
        bar.update(1)
        bar.set_postfix(loss=f"{metrics['loss']:.4f}", lr=f"{metrics['lr']:.2e}")
        if cfg.run.eval_every and step % cfg.run.eval_every == 0 and step < cfg.run.max_steps:
            last_eval = _log_eval(trainer, step)
        if cfg.run.save_every and step % cfg.run.save_every == 0 and step < cfg.run.max_steps:
            trainer.save()
    bar.close()
    if trainer.eval_examples or trainer.eval_items:
        last_eval = _log_eval(trainer, trainer.step)
    lora = None
    if cfg.model.lora.enabled:
        from mgrd.train.optim import lora_config_dict

        lora = lora_config_dict(cfg.model.lora)
    run_dir.save_final(trainer.model, trainer.tokenizer, lora_config=lora)
    run_dir.finish({"steps": trainer.step, "nan_skips": trainer.nan_skips, "final": str(run_dir.final), **last_eval})
    return run_dir.path


def _log_eval(trainer: SFTTrainer, step: int) -> dict:
    metrics = trainer.evaluate()
    if metrics:
        trainer.run_dir.log(step, metrics)
    return metrics


# ---------------------------------------------------------------------------------------------- dry run


def dry_run(cfg: SFTConfig) -> str:
    """The plan of a run, without loading weights or encoding data: parameters, batch, data, memory."""
    import torch

    cfg.data.check()

    from mgrd.models import AudioReasoner, ModelConfig
    from mgrd.models.presets import parameter_counts, preset_config, tiny

    note = []
    if cfg.model.path is not None and (Path(cfg.model.path) / "config.json").is_file():
        config = ModelConfig.from_file(Path(cfg.model.path) / "config.json")
    else:
        config = tiny() if cfg.model.preset == "tiny" else preset_config(cfg.model.preset)
        if cfg.model.path is not None:
            note = [f"note: {cfg.model.path}/config.json not found; planning the {cfg.model.preset} preset"]
    from mgrd.train.optim import prepare_trainable

    with torch.device("meta"):
        model = AudioReasoner(config)
        prepare_trainable(model, cfg.model)
    counts = parameter_counts(model)
    # the GPUs planned for: torchrun's WORLD_SIZE, else 8 for ddp / fsdp2 (as the memory plan assumes)
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    world = world if world > 1 else (8 if cfg.model.distributed != "none" else 1)
    lines = note + [f"sft {cfg.run.name} -> {cfg.run.path}",
             "parameters: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()),
             f"batch: {cfg.optim.micro_batch_size} x {cfg.optim.grad_accum} accum x {world} GPU(s)/process(es) = "
             f"{cfg.optim.micro_batch_size * cfg.optim.grad_accum * world} sequences per step, "
             f"{cfg.run.max_steps} steps",
             f"context: {context_limit(config, cfg.data)} tokens"]
    for name, src in cfg.data.sources().items():
        if src.weight > 0 and src.manifests:
            lines.append(f"data {name}: weight {src.weight}, {', '.join(src.manifests)}")
    lines += _memory_plan(cfg, config)
    return "\n".join(lines)


def _memory_plan(cfg: SFTConfig, config) -> list[str]:
    """The per-GPU memory plan (`mgrd.train.memory.format_plan`: weights, grads, optimizer, activations)."""
    from mgrd.train.memory import format_plan

    return [format_plan(config, cfg)]


# ---------------------------------------------------------------------------------------------- CLI


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the `sft` command to a top-level argparse subparsers object."""
    p = subparsers.add_parser(
        "sft", help=COMMAND_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Fine-tune on a weighted mixture of manifests (task CoT, conversation, audio QA), loss on the "
        "assistant's reply only. Writes runs/<name>/: metrics.jsonl, tb/, checkpoints/, final/ (official layout). "
        "Under torchrun: `torchrun --nproc-per-node N -m mgrd.train.sft --config FILE`.",
        epilog="config keys (set with --set key=value):\n" + "\n".join(describe(SFTConfig)))
    p.add_argument("--config", default=None, metavar="FILE",
                   help="YAML config: a path or a named config (sft_tiny, sft_step_audio_2_mini, sft_step_audio_r1)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key (dotted, e.g. optim.lr=1e-5); repeatable; wins over the file")
    p.add_argument("--resume", action="store_true",
                   help="continue the run from its newest checkpoint (same config: the continuation is exact)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan (parameters, batch, data, memory per GPU) and exit without training")
    p.set_defaults(func=cmd_sft)
    return p


def cmd_sft(args: argparse.Namespace) -> int:
    overrides = list(args.set) + (["run.resume=true"] if args.resume else [])
    cfg = load(SFTConfig, args.config, overrides)
    if args.dry_run:
        print(dry_run(cfg))
        return 0
    path = run(cfg)
    if os.environ.get("RANK", "0") == "0":
        print(f"wrote {path / 'final'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`mgrd sft ...` without the top-level CLI: `main(["--config", "sft_tiny"])`."""
    from mgrd.cli import run_stage  # the same exit codes and signal handling as `mgrd sft ...`

    return run_stage(add_parser, "sft", argv)


if __name__ == "__main__":
    sys.exit(main())
