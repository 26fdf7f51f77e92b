"""The config sections every training stage shares: the run, the optimiser, the model setup.

Stage configs compose them (`mgrd.train.sft.SFTConfig`, `mgrd.train.rl.RLConfig`). Defaults live here, once;
a YAML file and `--set key=value` overrides change them through `mgrd.config.load_config` (an unknown key is an
error naming the key, with the closest known one). Every field carries a one-line `help` in its metadata;
`describe(cls)` lists them all (the `--help` epilog of `mgrd sft`). Sizes follow STYLE.md: algorithmic sizes
are global, performance sizes are per GPU (`micro_batch_size`).

This module builds nothing: no model, optimiser or folder.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from mgrd.config import load_config

T = TypeVar("T")

DISTRIBUTED = ("none", "ddp", "fsdp2")
WEIGHT_DTYPES = ("float32", "bfloat16")
SCHEDULES = ("cosine", "constant")
# Qwen2 linear layers LoRA adapts by default: attention and MLP projections (peft's names inside Qwen2Model).
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def option(default, help: str):
    """A dataclass field with its help line (a list/dict/dataclass default goes through a factory)."""
    if dataclasses.is_dataclass(default) or isinstance(default, (list, dict)):
        return field(default_factory=lambda: dataclasses.replace(default) if dataclasses.is_dataclass(default)
                     else type(default)(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")


def _check_positive(name: str, value, allow_zero: bool = False) -> None:
    if not (value >= 0 if allow_zero else value > 0):  # `not` also catches NaN
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")


@dataclass
class RunConfig:
    """Where a run writes, how long it runs, and how often it logs, evaluates and saves."""

    name: str = option("sft", "run name: everything goes to <out_dir>/<name>/")
    out_dir: str = option("runs", "folder holding the run folders")
    seed: int = option(0, "seed for the model init (fresh presets), the data order and dropout")
    device: str = option("auto", "cpu, cuda, cuda:N, or auto (cuda when available); under torchrun each rank "
                                 "takes its own GPU")
    max_steps: int = option(100, "optimiser steps to run (the cosine schedule ends here)")
    log_every: int = option(1, "write a metrics row (metrics.jsonl, TensorBoard) every N steps")
    eval_every: int = option(0, "evaluate on the held-out manifests at step 0 and every N steps (0: only at the end, "
                                "if any are given)")
    save_every: int = option(0, "write checkpoints/step_<N>/ every N steps (0: never; final/ is always written)")
    keep_checkpoints: int = option(2, "keep only the newest N step checkpoints (0 keeps all)")
    max_nan_skips: int = option(5, "a step whose loss or grad norm is not finite is skipped and counted; stop after N")
    progress: bool = option(True, "show a progress bar with ETA")
    tensorboard: bool = option(True, "also write the metrics to TensorBoard under tb/")
    resume: bool = option(False, "continue from the newest checkpoint in the run folder (the --resume flag)")

    def __post_init__(self):
        if not self.name or "/" in self.name or self.name in (".", ".."):
            raise ValueError(f"run.name must be a plain folder name, got {self.name!r}")
        _check_positive("run.max_steps", self.max_steps)
        _check_positive("run.log_every", self.log_every)
        for key in ("eval_every", "save_every", "keep_checkpoints", "max_nan_skips"):
            _check_positive(f"run.{key}", getattr(self, key), allow_zero=True)

    @property
    def path(self) -> Path:
        """The run folder, `<out_dir>/<name>`."""
        return Path(self.out_dir) / self.name


@dataclass
class OptimConfig:
    """AdamW with a warm-up then cosine schedule, gradient clipping, and the batch geometry."""

    lr: float = option(1e-5, "peak learning rate (after warm-up)")
    encoder_lr: float | None = option(None, "peak learning rate of the audio encoder when it trains "
                                            "(model.freeze_encoder=false); null: optim.lr")
    weight_decay: float = option(0.0, "AdamW decoupled weight decay on matrices (never on 1-D tensors: biases, norms)")
    beta1: float = option(0.9, "AdamW beta1")
    beta2: float = option(0.95, "AdamW beta2")
    eps: float = option(1e-8, "AdamW epsilon")
    schedule: str = option("cosine", "learning-rate schedule after warm-up: cosine or constant")
    warmup_steps: int = option(0, "linear warm-up from 0 to lr over this many steps")
    min_lr_ratio: float = option(0.1, "the cosine ends at lr * min_lr_ratio")
    grad_clip: float = option(1.0, "clip the global gradient norm to this (0: no clipping, the norm is still logged)")
    micro_batch_size: int = option(4, "sequences per forward, per GPU (performance only)")
    grad_accum: int = option(1, "micro-batches per optimiser step, per GPU; global batch = micro x accum x GPUs")

    def __post_init__(self):
        _check_choice("optim.schedule", self.schedule, SCHEDULES)
        _check_positive("optim.lr", self.lr)
        if self.encoder_lr is not None:
            _check_positive("optim.encoder_lr", self.encoder_lr)
        for key in ("weight_decay", "warmup_steps", "grad_clip", "eps"):
            _check_positive(f"optim.{key}", getattr(self, key), allow_zero=True)
        _check_positive("optim.micro_batch_size", self.micro_batch_size)
        _check_positive("optim.grad_accum", self.grad_accum)
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"optim.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ValueError(f"optim.beta1 and beta2 must be in [0, 1), got {self.beta1}, {self.beta2}")


@dataclass
class LoraSetup:
    """LoRA through peft on the LLM's linear layers (rank 0 = off: full fine-tuning).

    A run's final/ always holds the merged weights in the official layout (what `mgrd generate`, the server and
    the released vLLM fork, which refuses LoRA, load); final_lora/ holds the LoRA matrices alone in peft's layout
    (`peft.PeftModel.from_pretrained(base_model, "runs/<name>/final_lora")`; a trained audio adapter is in final/).
    """

    rank: int = option(0, "LoRA rank r; 0 trains the LLM's own weights instead")
    alpha: float = option(16.0, "LoRA alpha (the update is scaled by alpha / rank)")
    dropout: float = option(0.0, "dropout on the LoRA input")
    target_modules: tuple[str, ...] = option(LORA_TARGETS, "names of the Qwen2 linear layers that get LoRA")

    def __post_init__(self):
        _check_positive("model.lora.rank", self.rank, allow_zero=True)
        _check_positive("model.lora.alpha", self.alpha)
        if not 0 <= self.dropout < 1:
            raise ValueError(f"model.lora.dropout must be in [0, 1), got {self.dropout}")
        if self.rank and not self.target_modules:
            raise ValueError("model.lora.target_modules is empty: name the linear layers LoRA adapts")

    @property
    def enabled(self) -> bool:
        return self.rank > 0


@dataclass
class ModelSetup:
    """Which model trains, which of its parts, in which precision, and how it is spread over GPUs."""

    path: str | None = option(None, "checkpoint folder in the official layout (with its tokenizer) to start from")
    preset: str = option("tiny", "when path is null: a freshly initialised preset (tiny only: the released sizes need "
                             "their tokenizer; --dry-run plans any preset)")
    dtype: str = option("float32", "weights (and optimiser state) dtype: float32 or bfloat16")
    autocast_bf16: bool = option(False, "run forwards under bf16 autocast (GPU; float32 master weights)")
    activation_checkpointing: bool = option(False, "recompute each LLM layer's activations in backward (saves memory)")
    freeze_encoder: bool = option(True, "keep the audio encoder frozen (the recipe never trains it; when it trains, "
                                        "optim.encoder_lr sets its learning rate)")
    train_adapter: bool = option(True, "train the audio adapter")
    train_llm: bool = option(True, "train the LLM (embeddings, decoder, lm_head); with LoRA only the LoRA weights")
    lora: LoraSetup = option(LoraSetup(), "LoRA settings")
    distributed: str = option("none", "none, ddp or fsdp2 (under torchrun)")

    def __post_init__(self):
        _check_choice("model.dtype", self.dtype, WEIGHT_DTYPES)
        _check_choice("model.distributed", self.distributed, DISTRIBUTED)
        if not self.freeze_encoder and self.lora.enabled:
            raise ValueError("model.freeze_encoder=false with LoRA is not supported: LoRA adapts the LLM only")
        if not (self.train_adapter or self.train_llm or self.lora.enabled or not self.freeze_encoder):
            raise ValueError("nothing to train: set model.train_adapter, model.train_llm or model.lora.rank")


def load(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """A stage config from its defaults, a YAML file (a path or a named config) and `key=value` overrides.

    Raises:
        mgrd.config.ConfigKeyError: an unknown key (named, with the closest known one) or a bad value.
    """
    return load_config(cls, path, overrides)


def describe(cls, prefix: str = "", defaults=None) -> list[str]:
    """One line per leaf field of a config class: `dotted.key = default  help` (for --help and docs).

    The defaults shown are the stage's own: a nested section's value comes from the enclosing default
    instance (RLConfig's `run.name` is "rl"), not from the section class's defaults.
    """
    defaults = cls() if defaults is None else defaults
    lines = []
    for f in dataclasses.fields(cls):
        default = getattr(defaults, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(default):
            lines += describe(type(default), prefix=f"{key}.", defaults=default)
        else:
            shown = list(default) if isinstance(default, tuple) else default
            lines.append(f"  {key} = {shown!r}: {f.metadata.get('help', '')}")
    return lines
