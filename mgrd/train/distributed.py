"""One process or many: process-group setup from the `torchrun` environment, model wrapping, and the few
collectives a trainer needs to be rank-correct.

- `init()` reads `RANK` / `WORLD_SIZE` / `LOCAL_RANK` (set by `torchrun`), starts gloo on CPU or NCCL on GPU, and
  returns a `DistInfo`. Without those variables (a plain `python` / `mgrd` run) it starts nothing: every function
  here then takes the single-process path (no collective, no wrapper), so a trainer has one code path.
- `wrap(model, strategy)`: "none", "ddp" (`DistributedDataParallel`) or "fsdp2" (`fully_shard` on every decoder
  layer, then the root). The frozen encoder is fine under both: DDP only syncs parameters that require grad,
  FSDP2 shards frozen parameters like the others and gives them no gradient.
- Rank-correct training (what a trainer calls; see each docstring): `shard` splits a list per rank, `loss_divisor`
  normalises a summed token loss by the *global* token count, `grad_sync` skips the gradient all-reduce on
  accumulation micro-steps, `UnusedParams.drop_grads` leaves modules no rank ran without gradients (as one
  process does), `clip_grad_norm` clips by the global norm (sharded or not), `reduce_metrics` averages /
  sums / maxes a metric dict over ranks, `full_state_dict` / `load_full_state_dict` gather and scatter model and
  optimizer states for checkpoints (written by rank 0 only: `is_main`).

It does no training, no I/O of its own and no model building. Launch: `torchrun --nproc-per-node N -m mgrd ...`.
"""

from __future__ import annotations

import contextlib
import os
import zlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Iterator, Mapping, Sequence, TypeVar

import torch
import torch.distributed as dist
from torch import nn

T = TypeVar("T")
STRATEGIES = ("none", "ddp", "fsdp2")
REDUCE_OPS = ("mean", "sum", "max", "min")


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: its rank among `world_size` processes and the device it computes on.

    `backend` is None when no process group was started (a single process).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when a process group is running (collectives are real)."""
        return self.backend is not None


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from None


def resolve_device(device: str = "auto", local_rank: int = 0) -> torch.device:
    """"auto" -> this rank's GPU when CUDA is available, else the CPU; "cuda" -> cuda:LOCAL_RANK; else as given."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' asked for but CUDA is not available (use device=cpu or auto)")
        return torch.device("cuda", local_rank)
    return torch.device(device)


def init(device: str = "auto", timeout_s: float = 600.0) -> DistInfo:
    """Start the process group from the `torchrun` environment; a single process starts nothing.

    Args:
        device: "auto" | "cpu" | "cuda" | a torch device string. Under torchrun, "cuda" means cuda:LOCAL_RANK.
        timeout_s: how long a collective may wait for a rank that is out of step before failing
            (gloo's default, 30 minutes, turns a bug into a long hang).
    Returns:
        DistInfo. The backend is NCCL for a CUDA device and gloo otherwise. Calling `init` again while the group
        runs returns the same facts; after `cleanup` it starts a new group (runs one after another in a process).
    """
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"bad torchrun environment: RANK={rank} WORLD_SIZE={world}")
    dev = resolve_device(device, local_rank)
    launched = "MASTER_ADDR" in os.environ and "WORLD_SIZE" in os.environ
    if not launched:  # plain `python`: one process, no process group
        if world != 1:
            raise ValueError(f"WORLD_SIZE={world} but MASTER_ADDR is unset: launch with torchrun")
        return DistInfo(device=dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        kwargs = {"device_id": dev} if dev.type == "cuda" else {}
        timeout = timedelta(seconds=timeout_s)
        dist.init_process_group(backend, store=_fresh_store(timeout), rank=rank, world_size=world, timeout=timeout,
                                **kwargs)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev, backend=backend)


_BASE_STORE: list = []  # the torchrun rendezvous store, kept for the life of the process
_GROUPS_STARTED = [0]


def _fresh_store(timeout: timedelta):
    """The rendezvous store under a prefix of its own for each process group this process starts.

    One process may start and stop several groups (the MGRD loop runs SFT then RL, each calling `init` and
    `cleanup`). With `env://` every group would reuse the same store keys and read the previous group's stale
    addresses (gloo: "connection refused"). Every rank starts its groups in the same order, so the counter agrees.
    """
    if not _BASE_STORE:
        store, _, _ = next(dist.rendezvous("env://", timeout=timeout))
        _BASE_STORE.append(store)
    _GROUPS_STARTED[0] += 1
    return dist.PrefixStore(f"mgrd_group_{_GROUPS_STARTED[0]}", _BASE_STORE[0])


def info() -> DistInfo:
    """The facts of the running process group (or the single-process ones), without starting anything."""
    if not dist.is_initialized():
        return DistInfo()
    backend = dist.get_backend()
    local_rank = _env_int("LOCAL_RANK", 0)
    device = torch.device("cuda", local_rank) if backend == "nccl" else torch.device("cpu")
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, device, backend)


def is_main() -> bool:
    """True on rank 0 and in a single process: the rank that logs, shows progress and writes files."""
    return not dist.is_initialized() or dist.get_rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    """Stop the process group (no-op when none runs). Call once at the end, in a `finally`."""
    if dist.is_initialized():
        dist.destroy_process_group()


# ------------------------------------------------------------------------------------------------ wrapping


def wrap(
    model: nn.Module,
    strategy: str,
    dist_info: DistInfo | None = None,
    *,
    param_dtype: torch.dtype | None = None,
    reshard_after_forward: bool = True,
) -> nn.Module:
    """Wrap a model for data-parallel training; call after freezing, LoRA and activation checkpointing.

    Args:
        model: an `AudioReasoner` (or a peft model around one, or any module with `.model.layers`), on its device.
        strategy: "none" (returned as is), "ddp" or "fsdp2". In a single process (no process group) every
            strategy returns the model as is: there is nothing to synchronise.
        param_dtype: FSDP2 only: compute dtype of gathered parameters (bf16 on GPU); gradients are reduced in fp32.
        reshard_after_forward: FSDP2 only: free gathered layers after forward (ZeRO-3); False keeps them (ZeRO-2).
    Returns:
        The module to call. Under DDP it is a `DistributedDataParallel` (reach the model with `unwrap`); under
        FSDP2 the same object, its parameters now `DTensor` shards.

    DDP uses `find_unused_parameters=True`: a text-only micro-batch leaves the adapter without gradients on one
    rank while another rank's audio batch gives it some, and DDP must still reduce them (as zeros). Gradients are
    views into DDP's all-reduce buckets (`gradient_as_bucket_view`), so they are not held twice.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown distributed strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
    dist_info = dist_info or info()
    if strategy == "none" or not dist.is_initialized():
        return model
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [dist_info.device.index] if dist_info.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True,
                                       gradient_as_bucket_view=True)
    return _fully_shard(model, dist_info, param_dtype, reshard_after_forward)


def _fully_shard(model: nn.Module, dist_info: DistInfo, param_dtype, reshard_after_forward: bool) -> nn.Module:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(dist_info.device.type, (dist_info.world_size,))
    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32 if param_dtype else None)
    kwargs = dict(mesh=mesh, mp_policy=mp, reshard_after_forward=reshard_after_forward)
    # One communication group per decoder layer (gathered just before use, freed after) and the root holding the
    # rest. The audio encoder and adapter stay in the root group on purpose: a rank whose micro-batch has no audio
    # skips them, and a group of their own would then be gathered on one rank and not the other (a hang).
    for layer in _decoder_layers(unwrap(model)):
        fully_shard(layer, **kwargs)
    fully_shard(model, **kwargs)
    # A parameter unused on one rank (the adapter under a text-only batch) still joins the gradient
    # reduce-scatter, with zeros, so every rank reduces the same buffers.
    model.set_reduce_scatter_unused_params(True)
    return model


def _decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The LLM's decoder layers of an `AudioReasoner` / Qwen2 model (also under a peft wrapper): the first
    `layers` ModuleList whose blocks have `self_attn` (the audio encoder's blocks are `blocks`, and stay in the root
    group)."""
    for mod in model.modules():
        layers = getattr(mod, "layers", None)
        if isinstance(layers, nn.ModuleList) and len(layers) > 0 and hasattr(layers[0], "self_attn"):
            return list(layers)
    raise ValueError(f"{type(model).__name__} has no decoder `layers` to shard")


def unwrap(model: nn.Module) -> nn.Module:
    """The user's model under a DDP wrapper (FSDP2 and "none" leave the object itself)."""
    from torch.nn.parallel import DistributedDataParallel

    return model.module if isinstance(model, DistributedDataParallel) else model


@contextlib.contextmanager
def grad_sync(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Gradient accumulation: `enabled=False` on every micro-batch but the last skips the gradient all-reduce
    (DDP `no_sync`, FSDP2 `set_requires_gradient_sync`); backward then only accumulates locally.

    Usage: `with grad_sync(model, enabled=(micro == n_micro - 1)): loss.backward()` (the forward inside too for DDP).
    """
    from torch.distributed.fsdp import FSDPModule
    from torch.nn.parallel import DistributedDataParallel

    if enabled:
        yield
    elif isinstance(model, DistributedDataParallel):
        with model.no_sync():
            yield
    elif isinstance(model, FSDPModule):
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    else:
        yield


# ------------------------------------------------------------------------------------------------ data


def shard(items: Sequence[T], dist_info: DistInfo | None = None, *, drop_remainder: bool = False) -> list[T]:
    """This rank's share of a list: items `rank, rank + W, rank + 2W, ...` (strided, so a length-sorted list
    gives every rank a similar mix of lengths).

    With `len(items) = q*W + r`, ranks `0..r-1` get `q + 1` items and the others `q`; `drop_remainder=True` drops
    the last `r` items so every rank gets exactly `q`. Training steps need equal work per rank (each forward
    under FSDP2 is a collective): shard each *global* batch, whose size the config makes a multiple of W.
    """
    dist_info = dist_info or info()
    world, rank = dist_info.world_size, dist_info.rank
    n = len(items) - len(items) % world if drop_remainder else len(items)
    return [items[i] for i in range(rank, n, world)]


def check_divisible(global_size: int, world_size: int, what: str) -> int:
    """`global_size / world_size`, or a one-line error naming the config field when it does not divide."""
    if global_size % world_size:
        raise ValueError(f"{what}={global_size} is not a multiple of the {world_size} processes")
    return global_size // world_size


def rank_seed(seed: int, dist_info: DistInfo | None = None) -> int:
    """A per-rank seed for sampling (rollouts differ across ranks); model init must use the shared `seed`."""
    return seed + 1_000_003 * (dist_info or info()).rank


# ------------------------------------------------------------------------------------------------ reductions


def all_sum(value: float | int | torch.Tensor, dist_info: DistInfo | None = None) -> float | int | torch.Tensor:
    """The sum over ranks of a number or tensor (the value itself in a single process). Floats in float64."""
    if not dist.is_initialized():
        return value
    device = (dist_info or info()).device
    if isinstance(value, torch.Tensor):
        out = value.detach().clone().to(device)
        dist.all_reduce(out)
        return out.to(value.device)
    t = torch.tensor(value, dtype=torch.int64 if isinstance(value, int) else torch.float64, device=device)
    dist.all_reduce(t)
    return t.item()


def loss_divisor(local_tokens: int, dist_info: DistInfo | None = None) -> float:
    """The divisor that makes a rank's summed token loss give the global token-mean gradient.

    A step's loss is `sum over every loss token of every rank and micro-batch / N`, with N the global count. DDP
    and FSDP2 *average* gradients over the W ranks, so each rank backpropagates `its token-loss sum / (N / W)`;
    with grad accumulation, each micro-batch's sum over the same divisor. One process: N / 1 = the local count.

    Args:
        local_tokens: loss tokens in this rank's whole optimizer step (all its micro-batches).
    Returns:
        `N / W` (a collective: every rank must call it at the same point of the step).
    """
    dist_info = dist_info or info()
    total = int(all_sum(int(local_tokens), dist_info))
    if total <= 0:
        raise ValueError("no loss tokens in this step on any rank (every target masked or truncated)")
    return total / dist_info.world_size


def _key_check(keys: list[str]) -> float:
    return float(zlib.crc32("\x00".join(keys).encode()))


def reduce_metrics(
    metrics: Mapping[str, float | int | torch.Tensor],
    op: str | Mapping[str, str] = "mean",
    dist_info: DistInfo | None = None,
) -> dict[str, float]:
    """Reduce a metric dict over ranks: every rank gets the same dict of floats.

    Args:
        metrics: name -> scalar (number or 0-d tensor). Every rank must pass the same names (checked: a rank
            with other names is a ValueError on every rank, not a hang or a silent mix).
        op: "mean" | "sum" | "max" | "min" for all keys, or a dict name -> op (names missing from it: "mean").
            A token-weighted mean is two sums: reduce `loss_sum` and `tokens` with "sum", then divide.
    Returns:
        name -> reduced float (the values themselves, as floats, in a single process). At most two collectives.
    """
    keys = sorted(metrics)
    ops = {k: (op if isinstance(op, str) else op.get(k, "mean")) for k in keys}
    bad = sorted({o for o in ops.values() if o not in REDUCE_OPS})
    if bad:
        raise ValueError(f"unknown metric reduction {bad[0]!r}; choose from {', '.join(REDUCE_OPS)}")
    values = {k: float(metrics[k].item() if isinstance(metrics[k], torch.Tensor) else metrics[k]) for k in keys}
    if not dist.is_initialized():
        return values
    dist_info = dist_info or info()
    sums = [k for k in keys if ops[k] in ("mean", "sum")]
    maxes = [k for k in keys if ops[k] in ("max", "min")]
    sign = {k: (-1.0 if ops[k] == "min" else 1.0) for k in maxes}  # min = -max(-x)
    check = _key_check(keys)
    # The key checksum rides in the MAX reduction as (c, -c): every rank equal <=> max(c) == c == min(c).
    mx = torch.tensor([check, -check] + [sign[k] * values[k] for k in maxes], dtype=torch.float64,
                      device=dist_info.device)
    dist.all_reduce(mx, op=dist.ReduceOp.MAX)
    if mx[0].item() != check or -mx[1].item() != check:
        raise ValueError(f"ranks reduce different metric names (this rank: {', '.join(keys)})")
    out = {k: sign[k] * mx[2 + i].item() for i, k in enumerate(maxes)}
    if sums:
        sm = torch.tensor([values[k] for k in sums], dtype=torch.float64, device=dist_info.device)
        dist.all_reduce(sm)
        for i, k in enumerate(sums):
            out[k] = sm[i].item() / (dist_info.world_size if ops[k] == "mean" else 1)
    return {k: out[k] for k in keys}


def gather_objects(obj: T, dist_info: DistInfo | None = None) -> list[T]:
    """Every rank's picklable `obj`, in rank order, on every rank (`[obj]` in a single process).

    For small things (per-rank rollout records, eval rows); tensors go through `all_sum` / `reduce_metrics`.
    """
    if not dist.is_initialized():
        return [obj]
    out: list = [None] * (dist_info or info()).world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: T, src: int = 0) -> T:
    """Rank `src`'s picklable `obj` on every rank (e.g. a run name or a resume step decided on rank 0)."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


# ------------------------------------------------------------------------------------------------ gradients


def clip_grad_norm(parameters, max_norm: float) -> float:
    """Clip gradients to a global L2 norm `max_norm` (over all ranks' shards under FSDP2); returns the norm
    before clipping as a float (`inf`/`nan` passed through, so the caller can skip the step).

    Under DDP the gradients are already identical on every rank, so the local norm is the global one.
    """
    params = [p for p in parameters if p.grad is not None]
    if not params:
        return 0.0
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    full = getattr(norm, "full_tensor", None)  # a DTensor norm (FSDP2) holds the global value
    return float(full() if full is not None else norm)


class UnusedParams:
    """Gives the parameters no rank used in a step no gradient (None), as one process would.

    In one process a module that does not run (the audio adapter under a text-only batch) leaves its gradients
    None, and AdamW skips those parameters: no moment decay, no step count, no weight decay. Under DDP
    (`find_unused_parameters`) and FSDP2 (`set_reduce_scatter_unused_params`) such parameters get *zero*
    gradients instead, so AdamW moves them on its momentum and the runs drift apart. This tracker notes which
    modules ran a forward this step (a forward pre-hook on each module that owns trainable parameters) and, after
    the backward, drops the gradients of those that ran on no rank.

    Usage: `unused = UnusedParams(model)` once after `wrap`; `unused.drop_grads()` after the step's last backward,
    before clipping and `optimizer.step()`. One small all-reduce per step; nothing in a single process.
    """

    def __init__(self, model: nn.Module):
        self.modules = [m for m in unwrap(model).modules()
                        if any(p.requires_grad for p in m.parameters(recurse=False))]
        self.ran = [False] * len(self.modules)
        self._hooks = [m.register_forward_pre_hook(self._marker(i)) for i, m in enumerate(self.modules)]

    def _marker(self, i: int):
        def hook(module, args):
            if torch.is_grad_enabled():
                self.ran[i] = True
        return hook

    def drop_grads(self, dist_info: DistInfo | None = None) -> int:
        """Set to None the gradients of modules that ran on no rank since the last call; returns how many modules."""
        ran = self.ran
        self.ran = [False] * len(self.modules)
        if not dist.is_initialized():
            return 0  # one process: autograd already left them None
        flags = torch.tensor(ran, dtype=torch.int32, device=(dist_info or info()).device)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        idle = [m for m, f in zip(self.modules, flags.tolist()) if not f]
        for m in idle:
            for p in m.parameters(recurse=False):
                p.grad = None
        return len(idle)

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()


# ------------------------------------------------------------------------------------------------ checkpoints


def full_state_dict(model: nn.Module, optimizer: torch.optim.Optimizer | None = None):
    """The full (unsharded) model state dict, and the optimizer's keyed by parameter name, on CPU.

    A collective under FSDP2: every rank calls it; rank 0 then saves (`is_main`). Keys are the unwrapped model's
    (no `module.` prefix), so a checkpoint written under any strategy loads under any other.

    Returns:
        (model_state, optim_state or None).
    """
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions, get_model_state_dict, get_optimizer_state_dict,
    )

    inner = unwrap(model)
    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_state = get_model_state_dict(inner, options=opts)
    optim_state = None if optimizer is None else get_optimizer_state_dict(inner, optimizer, options=opts)
    return model_state, optim_state


def load_full_state_dict(
    model: nn.Module, model_state: dict, optimizer: torch.optim.Optimizer | None = None, optim_state=None
) -> None:
    """Load `full_state_dict`'s output into a (wrapped or sharded) model and its optimizer, on every rank.

    Every rank must pass the full states (each reads the checkpoint file; they are CPU tensors).

    Raises:
        ValueError: the state's names differ from the model's (a checkpoint of another model), naming a few.
    """
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions, set_model_state_dict, set_optimizer_state_dict,
    )

    inner = unwrap(model)
    expected = set(inner.state_dict())
    missing, unexpected = sorted(expected - set(model_state)), sorted(set(model_state) - expected)
    if missing or unexpected:
        raise ValueError(f"model state does not fit this model: {len(missing)} missing ({', '.join(missing[:3])}), "
                         f"{len(unexpected)} unexpected ({', '.join(unexpected[:3])})")
    opts = StateDictOptions(full_state_dict=True, strict=True)
    set_model_state_dict(inner, model_state, options=opts)
    if optimizer is not None and optim_state is not None:
        set_optimizer_state_dict(inner, optimizer, optim_state, options=opts)
