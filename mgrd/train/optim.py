"""What trains and how: parameter selection (frozen encoder; adapter + LLM, or LoRA through peft), AdamW, the
warm-up + cosine schedule, and gradient clipping.

`prepare_trainable(model, setup)` sets `requires_grad` (and injects LoRA layers into the LLM in place, so the
model keeps its `forward` and its tensor names gain only `lora_A` / `lora_B` entries); `build_optimizer` and
`build_scheduler` follow the `OptimConfig`; `merge_lora` folds LoRA back into plain linear layers before a
model is saved in the official layout. The learning-rate maths is one pure function, `lr_factor`.

This module runs no forward or backward and knows nothing of data or distribution.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mgrd.train.config import LoraSetup, ModelSetup, OptimConfig


def prepare_trainable(model: nn.Module, setup: ModelSetup) -> list[str]:
    """Freeze and unfreeze the model's parts as `setup` says; returns the trainable parameter names.

    Full fine-tuning: the encoder stays frozen (unless `freeze_encoder=False`), the adapter trains when
    `train_adapter`, the LLM (embeddings, decoder, lm_head) when `train_llm`. With LoRA (`setup.lora.rank > 0`)
    the LLM's own weights freeze and only the LoRA matrices (plus the adapter, when `train_adapter`) train.

    Raises:
        ValueError: the selection leaves nothing trainable.
    """
    model.requires_grad_(False)
    if setup.lora.enabled:
        add_lora(model, setup.lora)  # only the injected lora_A / lora_B require grad
    elif setup.train_llm:
        model.model.requires_grad_(True)
        model.lm_head.requires_grad_(True)
    if setup.train_adapter:
        model.adapter.requires_grad_(True)
    if not setup.freeze_encoder:
        model.encoder.requires_grad_(True)
        model.encoder.positional_embedding.requires_grad_(False)  # fixed sinusoids in the official encoder
    model.freeze_encoder = setup.freeze_encoder  # the forward encodes without grad when frozen
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    if not names:
        raise ValueError("no parameter is trainable with this model setup")
    return names


def add_lora(model: nn.Module, lora: LoraSetup) -> None:
    """Inject LoRA layers (peft) into the LLM's `target_modules` in place; only they require grad afterwards.

    Raises:
        ValueError: no LLM layer matches `target_modules`.
    """
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                        target_modules=list(lora.target_modules), bias="none")
    try:
        inject_adapter_in_model(config, model.model)
    except ValueError as err:
        raise ValueError(f"model.lora.target_modules {list(lora.target_modules)}: {err}") from None


def lora_config_dict(lora: LoraSetup) -> dict:
    """The peft `adapter_config.json` content for the LoRA of `lora` (target modules inside `model.`)."""
    from peft import LoraConfig

    config = LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                        target_modules=list(lora.target_modules), bias="none")
    return config.to_dict()


def merge_lora(model: nn.Module) -> int:
    """Fold every LoRA layer into its base linear layer and put the base layer back; returns how many merged.

    Afterwards the model has exactly the official tensor names again (for `save_pretrained`).
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    targets = [(name, module) for name, module in model.named_modules() if isinstance(module, BaseTunerLayer)]
    for name, module in targets:
        module.merge()
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, module.get_base_layer())
    return len(targets)


def has_lora(model: nn.Module) -> bool:
    return any("lora_" in name for name, _ in model.named_parameters())


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters: weight decay on matrices only (not on biases, norm scales).

    The group order is fixed (decay, then no decay, each in `named_parameters` order), so a saved optimizer
    state maps back onto the same parameters. With `cfg.encoder_lr` set and a training audio encoder, the
    encoder's parameters form two more groups (decay, no decay) at that peak lr after those; the scheduler scales
    every group by the same factor.
    """
    base = getattr(model, "module", model)  # DDP wraps the model; FSDP2 shards it in place
    encoder = getattr(base, "encoder", None)
    separate = {id(p) for p in encoder.parameters()} if cfg.encoder_lr is not None and encoder is not None else set()
    decay, no_decay, enc_decay, enc_no_decay = [], [], [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            if id(p) in separate:
                (enc_decay if p.dim() >= 2 else enc_no_decay).append(p)
            else:
                (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0},
              {"params": enc_decay, "weight_decay": cfg.weight_decay, "lr": cfg.encoder_lr},
              {"params": enc_no_decay, "weight_decay": 0.0, "lr": cfg.encoder_lr}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                             eps=cfg.eps)


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str = "cosine",
              min_lr_ratio: float = 0.1) -> float:
    """The learning rate at optimiser step `step` (0-based) as a fraction of the peak.

    Warm-up: `(step + 1) / warmup_steps` for the first `warmup_steps` steps (the first step already moves).
    Then cosine from 1 at the end of warm-up to `min_lr_ratio` at step `total_steps - 1`:
    `min + (1 - min) * (1 + cos(pi * progress)) / 2`, progress = `(step - warmup) / (total - 1 - warmup)`;
    `constant` stays at 1.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    span = max(total_steps - 1 - warmup_steps, 1)
    progress = min((step - warmup_steps) / span, 1.0)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int):
    """A `LambdaLR` following `lr_factor` (stepped once per optimiser step)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, cfg.warmup_steps, cfg.schedule, cfg.min_lr_ratio))


def clip_gradients(model: nn.Module, max_norm: float) -> torch.Tensor:
    """Clip the global gradient norm of the trainable parameters to `max_norm` (0: measure only).

    Returns the norm before clipping (a scalar tensor; not finite when a gradient is NaN or inf, in which case
    nothing is scaled and the caller skips the step). Works on DTensor (FSDP2) gradients too.
    """
    params = [p for p in model.parameters() if p.grad is not None]
    if not params:
        return torch.tensor(0.0)
    limit = max_norm if max_norm > 0 else float("inf")
    return torch.nn.utils.clip_grad_norm_(params, limit, error_if_nonfinite=False, foreach=True)
