"""Memory plan: the bytes one GPU holds to train a model, before anything is allocated.

Parameter shapes come from the model built on the meta device (no memory), so every count is exact; the rest is
arithmetic. Rows (per GPU, rank 0, the largest shard):

- weights: every parameter (frozen encoder included) in the weight dtype; LoRA adds `r * (in + out)` per adapted
  linear. Under FSDP2 each parameter is split on dim 0, padded up to a multiple of N (as `fully_shard` does).
- master weights: an fp32 copy of the trainable parameters, only with `master_weights=True` (bf16 weights).
- gradients: trainable parameters only, in the weight dtype (PyTorch keeps a gradient in its parameter's dtype;
  DDP's are views into its buckets, see `distributed.wrap`).
- optimizer: AdamW's two moments per trainable parameter, in `optim_dtype` (default: the weight dtype, which is
  what `torch.optim.AdamW` does).
- activations: the tensors autograd saves for backward in one micro-batch (`micro_batch x seq_len` tokens):
  per token and layer `2h` fp32 elements (each RMSNorm's input, upcast) plus `6h + 2 kv + 4i` in the compute
  dtype (each norm's normalised value and output, rotated q/k, v, attention output, the four SwiGLU tensors);
  LoRA adds `r` per adapted linear; the head keeps `h` fp32 + `2h` (final norm) and the fp32 log-softmax (`V`).
  With activation checkpointing a layer keeps only its input (`h`). Measured against autograd's saved tensors
  in `tests/train/test_memory.py`. Audio-side activations (adapter over audio frames) are left out: a few
  hundred positions of width `h`, next to thousands of text tokens.
- working buffers (estimate): the gradient of the logits (`V` fp32 per token), one layer recomputed under
  checkpointing, FSDP2's gathered units (the root group plus two decoder layers in flight, and two layers'
  unsharded gradients), and under DDP with bf16 autocast the cached bf16 copies of the weights.
- RL extras when asked: a frozen reference policy (weights only), a PPO value model (a second LLM body with its
  gradients, optimizer and activations), and the rollout KV cache (`2 L kv` per token in the compute dtype).

Left out: the CUDA context and NCCL buffers (~1 GB), allocator fragmentation; keep 10-20 % headroom.
This module allocates nothing and imports no trainer.
"""

from __future__ import annotations

import argparse
import functools
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mgrd.models.config import ModelConfig

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
STRATEGIES = ("none", "ddp", "fsdp2")
# Qwen2 linear layers LoRA adapts by default (the same names as `mgrd.train.config.LORA_TARGETS`).
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
GB = 1e9


@dataclass(frozen=True)
class Param:
    """One parameter's facts: dotted name, shape, and its FSDP2 group ("layer" or "root")."""

    name: str
    shape: tuple[int, ...]
    group: str

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def shard_numel(self, n: int) -> int:
        """Elements on rank 0 when dim 0 is split over n ranks (padded up to a multiple of n)."""
        if n == 1 or not self.shape:
            return self.numel
        return -(-self.shape[0] // n) * math.prod(self.shape[1:])


@dataclass(frozen=True)
class Dims:
    """The LLM sizes the activation formula needs."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * (self.hidden // self.heads)


@dataclass
class MemoryPlan:
    """Per-GPU bytes by row, with the inputs that produced them. `format()` prints the table."""

    model: str
    n_gpus: int
    strategy: str
    weight_dtype: str
    optim_dtype: str
    compute_dtype: str
    seq_len: int
    micro_batch: int
    activation_checkpointing: bool
    lora_rank: int
    params: dict[str, int]  # encoder, adapter, llm, lm_head, lora, total, trainable
    rows: dict[str, int] = field(default_factory=dict)  # name -> bytes per GPU
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Bytes per GPU, all rows."""
        return sum(self.rows.values())

    def fits(self, gpu_bytes: float, headroom: float = 0.1) -> bool:
        """True when the total plus `headroom` (a fraction) fits in `gpu_bytes`."""
        return self.total * (1 + headroom) <= gpu_bytes

    def to_dict(self) -> dict:
        return dict(asdict(self), total=self.total)

    def format(self) -> str:
        """A plain-text table: one line per row, per GPU and over all GPUs, in GB (1e9 bytes)."""
        p = self.params
        mode = f"LoRA r={self.lora_rank}" if self.lora_rank else "full fine-tune"
        head = [
            f"memory plan: {self.model}: {p['total'] / 1e9:.3f} B parameters, {p['trainable'] / 1e9:.3f} B trainable "
            f"({mode})",
            f"  {self.n_gpus} GPU(s), {self.strategy}; weights {self.weight_dtype}, AdamW states {self.optim_dtype}, "
            f"compute {self.compute_dtype}; micro-batch {self.micro_batch} x {self.seq_len} tokens per GPU, "
            f"activation checkpointing {'on' if self.activation_checkpointing else 'off'}",
            f"  {'':<22}{'per GPU':>12}{'all GPUs':>12}",
        ]
        lines = [f"  {name:<22}{_gb(b):>12}{_gb(b * self.n_gpus):>12}" for name, b in self.rows.items()]
        lines.append(f"  {'total':<22}{_gb(self.total):>12}{_gb(self.total * self.n_gpus):>12}")
        return "\n".join(head + lines + [f"  note: {n}" for n in self.notes])


def _gb(b: float) -> str:
    return f"{b / GB:.2f} GB" if b >= 0.01 * GB else f"{b / 1e6:.2f} MB"


# ------------------------------------------------------------------------------------------------ shapes


def resolve_config(model: str | Path | ModelConfig) -> tuple[str, ModelConfig]:
    """A preset name, a checkpoint folder (its config.json) or a ModelConfig -> (display name, config)."""
    from mgrd.models import PRESETS, preset_config

    if isinstance(model, ModelConfig):
        return "model", model
    if isinstance(model, str) and model in PRESETS:
        return model, preset_config(model)
    path = Path(model)
    if path.is_dir() or path.name == "config.json":
        return str(path), ModelConfig.from_file(path / "config.json" if path.is_dir() else path)
    raise ValueError(f"{model!r} is neither a preset ({', '.join(PRESETS)}) nor a checkpoint folder")


def model_params(config: ModelConfig) -> tuple[list[Param], Dims]:
    """Every parameter of the model built on the meta device, with its FSDP2 group, and the LLM's sizes."""
    return _model_params(_config_key(config))


def _config_key(config: ModelConfig) -> tuple:
    import json

    return (json.dumps(config.to_dict(), sort_keys=True, default=str),)


@functools.lru_cache(maxsize=8)
def _model_params(key: tuple) -> tuple[list[Param], Dims]:
    import json

    from mgrd.models import build_model

    config = ModelConfig.from_dict(json.loads(key[0]))
    model = build_model(config, device="meta")
    params = [Param(n, tuple(p.shape), "layer" if n.startswith("model.layers.") else "root")
              for n, p in model.named_parameters()]
    q = model.model.config
    dims = Dims(q.hidden_size, q.intermediate_size, q.num_hidden_layers, q.num_attention_heads,
                q.num_key_value_heads, q.vocab_size)
    return params, dims


def lora_params(params: list[Param], rank: int, targets: tuple[str, ...] = LORA_TARGETS) -> list[Param]:
    """The LoRA A `[r, in]` and B `[out, r]` matrices peft adds to each target linear of the decoder layers."""
    out = []
    for p in params:
        parts = p.name.split(".")
        if rank and p.group == "layer" and parts[-1] == "weight" and len(p.shape) == 2 and parts[-2] in targets:
            base = ".".join(parts[:-1])
            out += [Param(f"{base}.lora_A.weight", (rank, p.shape[1]), "layer"),
                    Param(f"{base}.lora_B.weight", (p.shape[0], rank), "layer")]
    return out


def _part(name: str) -> str:
    head = name.split(".")[0]
    return {"model": "llm"}.get(head, head)


def _trainable(p: Param, lora: bool, freeze_encoder: bool, train_adapter: bool, train_llm: bool) -> bool:
    if "lora_" in p.name:
        return True
    part = _part(p.name)
    if part == "encoder":
        return not freeze_encoder
    if part == "adapter":
        return train_adapter
    return train_llm and not lora


# ------------------------------------------------------------------------------------------------ activations


def activation_bytes_per_token(dims: Dims, compute_bytes: int, checkpointing: bool, lora_rank: int = 0,
                               n_lora_targets: int = 0) -> tuple[int, int]:
    """Bytes autograd saves per token: (decoder layers, head).

    An RMSNorm saves its input upcast to fp32 (`h`, 4 bytes) and its normalised value and output (`2h`, compute
    dtype; in fp32 the upcast is the input itself, the same count). A layer: two norms, then rotated q and k
    (`h + kv`), v (`kv`), the attention output (`h`), and SwiGLU's gate, silu(gate), up and their product (`4i`):
    `2h` fp32 + `6h + 2kv + 4i` compute elements. With checkpointing a layer keeps only its input (`h`). The head
    keeps the final norm's and the fp32 log-softmax of the logits (`V`). LoRA adds `r` per target (A's output).
    """
    h, i, kv = dims.hidden, dims.intermediate, dims.kv_dim
    if checkpointing:
        layer = h * compute_bytes
    else:
        layer = 2 * h * 4 + (6 * h + 2 * kv + 4 * i + lora_rank * n_lora_targets) * compute_bytes
    head = h * 4 + 2 * h * compute_bytes + dims.vocab * 4
    return layer * dims.layers, head


def _one_layer_bytes_per_token(dims: Dims, compute_bytes: int) -> int:
    return activation_bytes_per_token(dataclass_replace_layers(dims, 1), compute_bytes, False)[0]


def dataclass_replace_layers(dims: Dims, layers: int) -> Dims:
    return Dims(dims.hidden, dims.intermediate, layers, dims.heads, dims.kv_heads, dims.vocab)


# ------------------------------------------------------------------------------------------------ the plan


def memory_plan(
    model: str | Path | ModelConfig = "step-audio-r1",
    *,
    n_gpus: int = 8,
    strategy: str = "fsdp2",
    weight_dtype: str = "bfloat16",
    optim_dtype: str | None = None,
    master_weights: bool = False,
    autocast_bf16: bool = False,
    seq_len: int = 4096,
    micro_batch: int = 1,
    activation_checkpointing: bool = True,
    lora_rank: int = 0,
    lora_targets: tuple[str, ...] = LORA_TARGETS,
    freeze_encoder: bool = True,
    train_adapter: bool = True,
    train_llm: bool = True,
    reference_model: bool = False,
    value_model: bool = False,
    rollout_tokens: int = 0,
    name: str | None = None,
) -> MemoryPlan:
    """The per-GPU memory of one training setup, from parameter shapes on the meta device (no allocation).

    Args:
        model: a preset name ("tiny", "step-audio-2-mini", "step-audio-r1"), a checkpoint folder or a ModelConfig.
        n_gpus: data-parallel processes (one per GPU).
        strategy: "none" (one GPU), "ddp" (everything replicated) or "fsdp2" (parameters, gradients and
            optimizer states sharded over n_gpus).
        weight_dtype: parameters and gradients ("float32" | "bfloat16").
        optim_dtype: AdamW moments; None = the weight dtype (torch's AdamW). "float32" with bf16 weights and
            `master_weights=True` is the classic mixed-precision recipe (2 + 2 + 4 + 4 + 4 = 16 bytes per parameter).
        master_weights: keep an fp32 copy of the trainable parameters (only meaningful with bf16 weights).
        autocast_bf16: compute in bf16 over fp32 weights (activations in bf16).
        seq_len, micro_batch: tokens per sequence and sequences per forward, per GPU.
        activation_checkpointing: recompute each decoder layer in backward.
        lora_rank: 0 = full fine-tuning of the LLM; r > 0 = LoRA on `lora_targets` (the LLM frozen).
        freeze_encoder, train_adapter, train_llm: which parts train (as `mgrd.train.config.ModelSetup`).
        reference_model: add a frozen reference policy (GRPO's KL).
        value_model: add a PPO value model (the LLM body trained beside the policy).
        rollout_tokens: sequences x tokens the rollout holds in its KV cache per GPU (0: no row).
        name: what the table calls the model (default: the preset name or folder).
    Returns:
        MemoryPlan (`.rows` in bytes per GPU, `.format()` a table).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown distributed strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
    for key, value in (("weight_dtype", weight_dtype), ("optim_dtype", optim_dtype or weight_dtype)):
        if value not in DTYPE_BYTES:
            raise ValueError(f"{key} must be one of {', '.join(DTYPE_BYTES)}, got {value!r}")
    if n_gpus < 1 or seq_len < 1 or micro_batch < 1 or lora_rank < 0 or rollout_tokens < 0:
        raise ValueError("n_gpus, seq_len and micro_batch must be >= 1; lora_rank and rollout_tokens >= 0")
    if strategy == "none" and n_gpus != 1:
        raise ValueError(f"strategy 'none' runs on one GPU, got n_gpus={n_gpus} (use ddp or fsdp2)")
    shown, config = resolve_config(model)
    name = name or shown
    base, dims = model_params(config)
    lora = lora_params(base, lora_rank, lora_targets)
    params = base + lora
    trainable = [p for p in params if _trainable(p, bool(lora_rank), freeze_encoder, train_adapter, train_llm)]
    n = n_gpus if strategy == "fsdp2" else 1
    wb, ob = DTYPE_BYTES[weight_dtype], DTYPE_BYTES[optim_dtype or weight_dtype]
    cb = 2 if autocast_bf16 else wb  # compute dtype bytes
    compute_dtype = "bfloat16" if autocast_bf16 else weight_dtype

    def size(ps: list[Param], bytes_: int) -> int:
        return sum(p.shard_numel(n) for p in ps) * bytes_

    counts = {part: sum(p.numel for p in base if _part(p.name) == part) for part in
              ("encoder", "adapter", "llm", "lm_head")}
    counts.update(lora=sum(p.numel for p in lora), total=sum(p.numel for p in params),
                  trainable=sum(p.numel for p in trainable))
    plan = MemoryPlan(name, n_gpus, strategy, weight_dtype, optim_dtype or weight_dtype, compute_dtype, seq_len,
                      micro_batch, activation_checkpointing, lora_rank, counts)
    rows = plan.rows
    rows["weights"] = size(params, wb)
    if master_weights:
        rows["master weights (fp32)"] = size(trainable, 4)
    rows["gradients"] = size(trainable, wb)
    rows["optimizer (AdamW)"] = size(trainable, 2 * ob)
    tokens = seq_len * micro_batch
    n_targets = len(lora) // 2 // max(dims.layers, 1)
    layers_b, head_b = activation_bytes_per_token(dims, cb, activation_checkpointing, lora_rank, n_targets)
    rows["activations"] = tokens * (layers_b + head_b)
    rows["working buffers"] = _working(params, trainable, dims, tokens, n, cb, strategy,
                                       autocast_bf16 and wb == 4, activation_checkpointing)
    _rl_rows(plan, params, trainable, dims, n, wb, ob, cb, tokens, layers_b,
             reference_model, value_model, rollout_tokens)
    plan.notes.append("excluded: CUDA context and NCCL buffers (~1 GB per GPU) and fragmentation; keep 10-20 % free")
    if strategy == "fsdp2":
        plan.notes.append("fsdp2: each parameter split on dim 0 over the GPUs (rank 0's shard shown)")
    return plan


def _working(params, trainable, dims: Dims, tokens: int, n: int, cb: int, strategy: str, autocast: bool,
             checkpointing: bool) -> int:
    """Transient buffers at the peak of a step (an estimate, see the module docstring). `autocast`: bf16 compute
    over fp32 weights (bf16 weights need no cast copies)."""
    out = tokens * dims.vocab * 4  # d(loss)/d(logits), fp32
    if checkpointing:
        out += tokens * _one_layer_bytes_per_token(dims, cb)  # the layer being recomputed
    if strategy == "fsdp2" and n > 1:
        root = sum(p.numel for p in params if p.group == "root")
        layer = sum(p.numel for p in params if p.group == "layer") // max(dims.layers, 1)
        layer_train = sum(p.numel for p in trainable if p.group == "layer") // max(dims.layers, 1)
        # gathered units (compute dtype); unsharded gradients in flight (fp32 reduction under mixed precision)
        out += (root + 2 * layer) * cb + 2 * layer_train * (4 if autocast else cb)
    elif autocast:
        out += sum(p.numel for p in params if _part(p.name) != "encoder") * 2  # autocast's bf16 weight copies
    return out


def _rl_rows(plan: MemoryPlan, params, trainable, dims: Dims, n: int, wb: int, ob: int, cb: int, tokens: int,
             layers_b: int, reference: bool, value: bool, rollout_tokens: int) -> None:
    def size(ps, bytes_):
        return sum(p.shard_numel(n) for p in ps) * bytes_

    if reference:
        plan.rows["reference policy"] = size(params, wb)
    if value:
        body = [p for p in params if _part(p.name) == "llm" and "lora_" not in p.name]
        plan.rows["value model"] = size(body, wb + wb + 2 * ob) + tokens * layers_b
        plan.notes.append("value model: the LLM body (no lm_head) trained in full, with its activations")
    if rollout_tokens:
        plan.rows["rollout KV cache"] = rollout_tokens * 2 * dims.layers * dims.kv_dim * cb


def plan_from_setup(setup, optim, *, seq_len: int, n_gpus: int = 1, **extra) -> MemoryPlan:
    """`memory_plan` from the trainer's config sections (duck-typed, read by attribute).

    Args:
        setup: `mgrd.train.config.ModelSetup` (path or preset, dtype, autocast_bf16, activation_checkpointing,
            freeze_encoder, train_adapter, train_llm, lora.rank / lora.target_modules, distributed).
        optim: `mgrd.train.config.OptimConfig` (micro_batch_size).
        seq_len: the longest sequence the data gives (the plan is for a full micro-batch of it).
        n_gpus: processes (WORLD_SIZE); "none" plans one.
        extra: further `memory_plan` keywords (reference_model, value_model, rollout_tokens, ...).
    """
    strategy = setup.distributed
    return memory_plan(
        setup.path or setup.preset, n_gpus=1 if strategy == "none" else n_gpus, strategy=strategy,
        weight_dtype=setup.dtype, autocast_bf16=setup.autocast_bf16, seq_len=seq_len,
        micro_batch=optim.micro_batch_size, activation_checkpointing=setup.activation_checkpointing,
        lora_rank=setup.lora.rank, lora_targets=tuple(setup.lora.target_modules),
        freeze_encoder=setup.freeze_encoder, train_adapter=setup.train_adapter, train_llm=setup.train_llm, **extra)


def format_plan(config: ModelConfig, cfg, n_gpus: int | None = None, seq_len: int | None = None) -> str:
    """The memory section of `mgrd sft --dry-run` / `mgrd rl --dry-run`: the run's plan, then ddp vs fsdp2 and
    full vs LoRA side by side.

    Args:
        config: the model's config (a preset's or a checkpoint's).
        cfg: the stage config, read by attribute: `cfg.model` (ModelSetup) and `cfg.optim` (OptimConfig); an RL
            config (`cfg.algo`, `cfg.sampling`) also plans its rollout KV cache, a PPO value model and, with a KL
            coefficient, a reference policy.
        n_gpus: processes to plan for; None = WORLD_SIZE when launched by torchrun, else 8 for ddp / fsdp2
            (the dry run itself is one process) and 1 for "none".
        seq_len: tokens per sequence; None = `cfg.data.max_length` when set, else for RL the prompt budget
            (`cfg.data.max_prompt_tokens`, else 512) plus `sampling.max_new_tokens`, else the model's context.
    """
    import os

    setup, strategy = cfg.model, cfg.model.distributed
    if n_gpus is None:
        world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        n_gpus = 1 if strategy == "none" else (world if world > 1 else 8)
    algo, sampling, data = getattr(cfg, "algo", None), getattr(cfg, "sampling", None), getattr(cfg, "data", None)
    if seq_len is None:
        max_length = getattr(data, "max_length", 0) or 0
        if max_length:
            seq_len = max_length
        elif sampling is not None:
            seq_len = (getattr(data, "max_prompt_tokens", 0) or 512) + sampling.max_new_tokens
        else:
            seq_len = int(config.text.get("max_position_embeddings", 4096))
    extra = {}
    if algo is not None:
        rows = algo.prompts_per_step * algo.samples_per_prompt
        extra = dict(value_model=algo.name == "ppo", reference_model=getattr(algo, "kl_coef", 0) > 0,
                     rollout_tokens=-(-rows // n_gpus) * seq_len)
    common = dict(weight_dtype=setup.dtype, autocast_bf16=setup.autocast_bf16, seq_len=seq_len,
                  micro_batch=cfg.optim.micro_batch_size, activation_checkpointing=setup.activation_checkpointing,
                  lora_targets=tuple(setup.lora.target_modules), freeze_encoder=setup.freeze_encoder,
                  train_adapter=setup.train_adapter, train_llm=setup.train_llm, **extra)
    name = str(setup.path or setup.preset) if hasattr(setup, "preset") else None
    plan = memory_plan(config, n_gpus=n_gpus, strategy=strategy, lora_rank=setup.lora.rank, name=name, **common)
    text = plan.format()
    if n_gpus > 1:
        r = setup.lora.rank or 16
        grid = [(st, lr) for st in ("ddp", "fsdp2") for lr in (0, r)]
        text += "\n\n" + format_plans([memory_plan(config, n_gpus=n_gpus, strategy=st, lora_rank=lr, **common)
                                     for st, lr in grid])
    return text


def format_plans(plans: list[MemoryPlan], labels: list[str] | None = None) -> str:
    """Several plans side by side (per-GPU GB), e.g. ddp vs fsdp2, full vs LoRA, one column each."""
    labels = labels or [f"{p.strategy}/{'lora' + str(p.lora_rank) if p.lora_rank else 'full'}/{p.n_gpus}"
                        for p in plans]
    names = list(dict.fromkeys(r for p in plans for r in p.rows))
    width = max(14, *(len(s) + 2 for s in labels))
    lines = [f"{'per GPU':<22}" + "".join(f"{s:>{width}}" for s in labels)]
    for r in names + ["total"]:
        vals = [p.total if r == "total" else p.rows.get(r) for p in plans]
        lines.append(f"{r:<22}" + "".join(f"{'-' if v is None else _gb(v):>{width}}" for v in vals))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ CLI


def add_parser(subparsers) -> argparse.ArgumentParser:
    """`mgrd memory`: print the plan of a preset or checkpoint, ddp vs fsdp2 and full vs LoRA."""
    p = subparsers.add_parser(
        "memory", help="per-GPU training memory of a preset (no allocation)",
        description="Per-GPU memory to train a model (weights, gradients, AdamW states, activations, buffers), "
                    "computed from parameter shapes on the meta device: nothing is allocated. Prints the chosen "
                    "setup, then ddp vs fsdp2 and full vs LoRA side by side.")
    p.add_argument("model", nargs="?", default="step-audio-r1", help="preset name or checkpoint folder")
    p.add_argument("--gpus", type=int, default=8, help="data-parallel GPUs (processes)")
    p.add_argument("--strategy", choices=STRATEGIES, default="fsdp2", help="how the model is spread")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="bfloat16", help="weight and gradient dtype")
    p.add_argument("--optim-dtype", choices=("float32", "bfloat16"), default=None,
                   help="AdamW moments' dtype (default: the weight dtype)")
    p.add_argument("--master-weights", action="store_true", help="keep an fp32 copy of the trainable weights")
    p.add_argument("--autocast-bf16", action="store_true", help="bf16 compute over fp32 weights")
    p.add_argument("--seq-len", type=int, default=4096, help="tokens per sequence")
    p.add_argument("--micro-batch", type=int, default=1, help="sequences per forward, per GPU")
    p.add_argument("--no-checkpointing", action="store_true", help="no activation checkpointing")
    p.add_argument("--lora-rank", type=int, default=0, help="LoRA rank (0: full fine-tuning)")
    p.add_argument("--reference", action="store_true", help="add a frozen reference policy (RL with KL)")
    p.add_argument("--value", action="store_true", help="add a PPO value model")
    p.add_argument("--rollout-tokens", type=int, default=0, help="sequences x tokens in the rollout KV cache per GPU")
    p.set_defaults(func=run_cli)
    return p


def run_cli(args: argparse.Namespace) -> int:
    common = dict(weight_dtype=args.dtype, optim_dtype=args.optim_dtype, master_weights=args.master_weights,
                  autocast_bf16=args.autocast_bf16, seq_len=args.seq_len, micro_batch=args.micro_batch,
                  activation_checkpointing=not args.no_checkpointing, reference_model=args.reference,
                  value_model=args.value, rollout_tokens=args.rollout_tokens)
    gpus = 1 if args.strategy == "none" else args.gpus
    print(memory_plan(args.model, n_gpus=gpus, strategy=args.strategy, lora_rank=args.lora_rank, **common).format())
    if args.gpus > 1:
        r = args.lora_rank or 16
        grid = [(s, lr) for s in ("ddp", "fsdp2") for lr in (0, r)]
        plans = [memory_plan(args.model, n_gpus=args.gpus, strategy=s, lora_rank=lr, **common) for s, lr in grid]
        print()
        print(format_plans(plans))
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m mgrd.train.memory [MODEL] [flags]`; returns the exit code (2 with one line for bad input)."""
    parser = argparse.ArgumentParser(prog="mgrd")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(["memory", *(argv if argv is not None else __import__("sys").argv[1:])])
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=__import__("sys").stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
