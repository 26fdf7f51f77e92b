"""The fast decode path: a pre-allocated KV cache and a lean Qwen2 decoding step over the model's own weights.

A decoding step of the transformers `Qwen2Model` spends most of its time outside the matrix products on a CPU
(attention-interface dispatch, mask building, a cache that grows by concatenation). At batch 1 the step should
cost about one read of the decoder's weights (the memory roofline, `benchmarks/generate.py`); `FastDecoder.step`
gets there with a few ops per layer over fixed buffers:

- `StaticKV`: keys/values `[S, H_kv, T_max, D_h]` per layer, allocated once, written in place at each slot's own
  column (`length`), with a `valid` key mask per slot; slots may hold sequences of different lengths (left
  padding from a batched prefill, or a slot refilled with a new prompt), so one step serves all of them;
- `FastDecoder`: takes the model's weights when built (on a CPU as copies split over the threads, or packed by
  oneDNN or MKL, per CPU and row count: see `_prepare_weights` and `default_layout`; build one per rollout, after
  any update), embeds the `[S]` last tokens, runs the layers with rotary positions from a table (computed as
  transformers computes them), one grouped `scaled_dot_product_attention` per layer, and returns `[S, V]` float32
  logits. Only the attended width is read; it is tracked on the host (no sync).

The prefill stays on the model's own forward (audio encoding, padding, the checks); its transformers cache is
copied into slots with `StaticKV.load`. `supports_fast_path` says which models this covers: a plain
`AudioReasoner` whose decoder is a full-attention Qwen2 with plain `nn.Linear` projections (not sharded, not
compiled, no LoRA wrappers, no RoPE scaling); anything else decodes through the model's forward.

`compile_step` wraps the step in `torch.compile` (inductor; CUDA graphs on a GPU); under compilation every step
attends over the whole buffer (fixed shapes) and a failed compile falls back to the eager step with a warning.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


def supports_fast_path(model) -> bool:
    """True when `FastDecoder` computes exactly what `model(...)` computes for a decoding step."""
    from mgrd.models.reasoner import AudioReasoner

    if type(model) is not AudioReasoner:  # FSDP2-wrapped and compiled models are other types
        return False
    cfg = model.model.config
    rope = getattr(cfg, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        return False
    if any(t != "full_attention" for t in getattr(cfg, "layer_types", None) or []):
        return False
    if type(model.lm_head) is not nn.Linear or type(model.model.embed_tokens) is not nn.Embedding:
        return False
    for layer in model.model.layers:
        a, m = layer.self_attn, layer.mlp
        linears = (a.q_proj, a.k_proj, a.v_proj, a.o_proj, m.gate_proj, m.up_proj, m.down_proj)
        if any(type(x) is not nn.Linear for x in linears) or getattr(cfg, "hidden_act", "silu") != "silu":
            return False
    return True


@dataclass
class StaticKV:
    """Pre-allocated keys and values for `S` slots of at most `T_max` positions each.

    Attributes:
        keys, values: one `[S, H_kv, T_max, D_h]` tensor per layer (rotary already applied to keys).
        valid: `[S, T_max]` bool, the key columns each slot attends to (False on padding and unused columns).
        length: `[S]` long, the column the next token of each slot is written to.
        position: `[S]` long, the rotary position of each slot's next token.
        host_length: `length` as host ints, kept in step without reading the device (it bounds the columns a
            step reads: `width`).
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    valid: torch.Tensor
    length: torch.Tensor
    position: torch.Tensor
    host_length: list[int]

    @classmethod
    def allocate(cls, slots: int, max_len: int, model, dtype: torch.dtype | None = None) -> "StaticKV":
        """Empty buffers for `model`'s decoder on its device; every slot starts parked (see `park`)."""
        cfg = model.model.config
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        weight = model.lm_head.weight
        dtype = dtype or weight.dtype
        shape = (slots, cfg.num_key_value_heads, max_len, head_dim)
        keys = [torch.zeros(shape, dtype=dtype, device=weight.device) for _ in range(cfg.num_hidden_layers)]
        values = [torch.zeros(shape, dtype=dtype, device=weight.device) for _ in range(cfg.num_hidden_layers)]
        valid = torch.zeros(slots, max_len, dtype=torch.bool, device=weight.device)
        zeros = torch.zeros(slots, dtype=torch.long, device=weight.device)
        kv = cls(keys, values, valid, zeros.clone(), zeros.clone(), [0] * slots)
        kv.park(list(range(slots)))
        return kv

    @property
    def max_len(self) -> int:
        return self.valid.shape[1]

    @property
    def width(self) -> int:
        """Columns the next step reads: every slot's history and the column it writes."""
        return min(max(self.host_length) + 1, self.max_len)

    def load(self, slots: list[int], cache, rows: list[int], mask: torch.Tensor) -> None:
        """Copy prefilled rows of a transformers cache into slots.

        Args:
            slots: the slots to fill. cache: the prefill's `DynamicCache` (`[B, H_kv, P, D_h]` per layer).
            rows: which cache row goes to each slot. mask: `[B, P]` the prefill's attention mask (left padding 0).
        """
        width = mask.shape[1]
        if width >= self.max_len:
            raise ValueError(f"a prompt of {width} positions does not fit a cache of {self.max_len}")
        at = torch.tensor(slots, dtype=torch.long, device=self.valid.device)
        src = torch.tensor(rows, dtype=torch.long, device=mask.device)
        for layer, (k, v) in enumerate(_cache_layers(cache)):
            self.keys[layer][at, :, :width] = k[src].to(self.keys[layer].dtype)
            self.values[layer][at, :, :width] = v[src].to(self.values[layer].dtype)
        self.valid[at] = False
        self.valid[at, :width] = mask[src].bool()
        self.length[at] = width
        self.position[at] = mask[src].sum(-1)
        for slot in slots:
            self.host_length[slot] = width

    def park(self, slots: list[int]) -> None:
        """Empty slots: they attend to one zero key at column 0 (so their softmax stays finite) and restart
        there; a parked slot's outputs mean nothing and it never reads another slot's data."""
        at = torch.tensor(slots, dtype=torch.long, device=self.valid.device)
        self.valid[at] = False
        self.valid[at, 0] = True
        self.length[at] = 1
        self.position[at] = 0
        for slot in slots:
            self.host_length[slot] = 1

    def advance(self) -> None:
        """Move every slot one column on, after a step wrote its token."""
        self.length += 1
        self.position += 1
        self.host_length = [n + 1 for n in self.host_length]


def _cache_layers(cache):
    """(keys, values) per layer of a transformers cache."""
    return [(layer.keys, layer.values) for layer in cache.layers]


class FastDecoder:
    """One decoding step of an `AudioReasoner`'s Qwen2 decoder over a `StaticKV` (see the module docstring)."""

    def __init__(self, model, rows: int = 1, layout: str | None = None):
        """`rows`: the slots its steps feed (a `StaticKV`'s `S`). `layout`: how the step multiplies by the matrices,
        one of `LAYOUTS` (`_prepare_weights`; the packed ones are packed for `rows` rows, and a step of another
        height is still exact, only slower); None: the one measured to pay on this CPU for that many rows
        (`default_layout`)."""
        if not supports_fast_path(model):
            raise ValueError("this model is not covered by the fast decode path (see supports_fast_path)")
        self.model = model
        cfg = model.model.config
        self.heads, self.kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.eps = cfg.rms_norm_eps
        weight = model.lm_head.weight
        if layout is None:
            layout = default_layout(weight, rows)
        elif layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}: one of {', '.join(LAYOUTS)}")
        elif layout != "split" and not _can_pack(weight, layout):
            raise ValueError(f"layout={layout!r} needs {_PACK_NEEDS[layout]}")
        self.layout = layout
        self.weights = _prepare_weights(model, layout, rows)
        self._rope: tuple[torch.Tensor, torch.Tensor] | None = None
        self._compiled = None

    def rope_table(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and signed sin `[length, D_h]` for positions 0..length-1, computed as transformers' rotary embedding
        does (float32 outer product, then cast), so table lookups equal its per-call values; the sine's first half is
        negated (`_rotate`)."""
        if self._rope is None or self._rope[0].shape[0] < length:
            rotary = self.model.model.rotary_emb
            inv_freq = rotary.inv_freq.float()
            positions = torch.arange(length, device=inv_freq.device, dtype=torch.float32)
            freqs = positions[:, None] * inv_freq[None, :]
            emb = torch.cat((freqs, freqs), dim=-1)
            dtype = self.model.lm_head.weight.dtype
            scale = getattr(rotary, "attention_scaling", 1.0)
            sin = (emb.sin() * scale).to(dtype)
            half = sin.shape[-1] // 2
            signed = torch.cat((-sin[:, :half], sin[:, half:]), dim=-1)  # rotate_half's sign moved onto the table
            self._rope = ((emb.cos() * scale).to(dtype), signed)
        return self._rope

    def step(self, kv: StaticKV, tokens: torch.Tensor) -> torch.Tensor:
        """Feed `[S]` tokens (one per slot) at each slot's position; write their keys/values; return `[S, V]`
        float32 logits. Advances `kv` by one column for every slot."""
        cos, sin = self.rope_table(kv.max_len + 1)
        width = kv.max_len if self._compiled is not None else kv.width
        fn = self._compiled or _decode_step
        logits = fn(self.weights, kv.keys, kv.values, kv.valid, kv.length, kv.position, tokens, cos, sin,
                    width, self.heads, self.kv_heads, self.head_dim, self.eps)
        kv.advance()
        return logits

    def compile_step(self, backend: str = "inductor") -> bool:
        """Compile the step with `torch.compile` (fixed shapes: every step reads the whole buffer; CUDA graphs
        on a GPU with inductor); returns whether it compiled. The first call compiles; a failure there falls back
        to the eager step with a warning."""
        if self.layout != "split":  # the compiled step multiplies the plain matrices
            self.weights, self.layout = _prepare_weights(self.model), "split"
        try:
            cuda = self.model.lm_head.weight.is_cuda and backend == "inductor"
            compiled = torch.compile(_decode_step, backend=backend, mode="reduce-overhead" if cuda else None,
                                     dynamic=False, fullgraph=True)
        except Exception as err:  # noqa: BLE001 - any compiler failure means: decode eagerly
            warnings.warn(f"torch.compile unavailable ({err}); decoding without it", stacklevel=2)
            return False

        def guarded(*args):
            try:
                return compiled(*args)
            except Exception as err:  # noqa: BLE001
                warnings.warn(f"torch.compile failed ({type(err).__name__}: {str(err)[:200]}); decoding without "
                              "it", stacklevel=3)
                self._compiled = None
                return _decode_step(*args)  # the same call: the whole buffer, masked

        self._compiled = guarded
        return True


LAYOUTS = ("split", "mkl", "onednn")
_PACK_NEEDS = {"mkl": "float32 weights on a CPU and a torch build with MKL",
               "onednn": "float32 or bfloat16 weights on a CPU and a torch build with oneDNN (mkldnn)"}


def _prepare_weights(model, layout: str = "split", rows: int = 1) -> tuple:
    """The decoder's weights as a step multiplies them (`_matmul`): `(embedding, final norm, lm_head, layers)`,
    each layer `(norm 1, W_qkv, b_qkv, W_o, norm 2, W_gate_up, W_down)`, with q/k/v and gate/up each fused into one
    matrix (fewer, larger products). `layout` (one of `LAYOUTS`, chosen by `FastDecoder`):

    - "split": every matrix `[in, out]` (`x @ W`). On a CPU with n > 1 torch threads each is split by output
      columns into n parts `[n, in, out / n]`: a decoding step's mat-vecs are too small for the BLAS to spread over
      the threads, but a batched product of n parts runs one part per thread, which reads the weights about
      1.3-1.6x faster on the EPYC (`benchmarks/RESULTS.md`). Copies of the parameters, made once per decoder (one
      rollout call, or one server); only `o_proj`, `down_proj` and `lm_head` stay views of them on a GPU.
    - "mkl": `_Packed` by MKL for `rows` rows (`cblas_sgemm_pack`, what inductor uses for float32 linears on a
      CPU), read in the order its kernel consumes them: on a Xeon a product `[S, in] @ [in, out]` over weights
      streamed from memory runs far below the bandwidth a mat-vec reaches; packed, 1.26x per decoding step at 8
      rows on a 2-core Xeon, 0.70x on an AMD EPYC. MKL's buffers are larger than the matrices (1.7-6x for these
      shapes); the fused `[out, in]` matrices are kept beside them (MKL multiplies other heights by those).
    - "onednn": `_Packed` by oneDNN for `rows` rows (the blocked layout of `mkldnn._reorder_linear_weight`, what
      inductor uses for bfloat16 linears), multiplied by its own kernels, which spread a product of any height
      over the threads: on a 2-core AMD EPYC (Zen 5) the products of a step at 8 rows run 2.2x faster than split
      (the whole step 1.6-1.8x); at one row within +-5 % of split.
    """
    device = model.lm_head.weight.device
    parts = torch.get_num_threads() if device.type == "cpu" else 1

    def mat(*ws: torch.Tensor) -> torch.Tensor | _Packed:
        if layout != "split":
            weight = torch.cat([w.detach() for w in ws]) if len(ws) > 1 else ws[0].detach()  # [out, in]
            if layout == "mkl":
                return _Packed(torch.ops.mkl._mkl_reorder_linear_weight(weight, rows), weight, rows, layout)
            return _Packed(torch.ops.mkldnn._reorder_linear_weight(weight, rows), None, rows, layout)
        wt = torch.cat([w.detach() for w in ws]).t() if len(ws) > 1 else ws[0].detach().t()  # [in, out]
        if parts == 1 or wt.shape[1] % parts:
            return wt.contiguous() if device.type == "cpu" else wt
        return torch.stack(wt.chunk(parts, dim=1)).contiguous()  # [n, in, out / n]

    layers = []
    for block in model.model.layers:
        a, m = block.self_attn, block.mlp
        layers.append((block.input_layernorm.weight, mat(a.q_proj.weight, a.k_proj.weight, a.v_proj.weight),
                       torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias]).detach(), mat(a.o_proj.weight),
                       block.post_attention_layernorm.weight, mat(m.gate_proj.weight, m.up_proj.weight),
                       mat(m.down_proj.weight)))
    return model.model.embed_tokens.weight, model.model.norm.weight, mat(model.lm_head.weight), layers


class _Packed(NamedTuple):
    """A matrix packed for products with inputs of `rows` rows by `kind` ("mkl" or "onednn", `_prepare_weights`).
    `weight` is the same matrix `[out, in]` (contiguous) for MKL, which multiplies inputs of other heights by it;
    None for oneDNN, whose packed matrix serves any height."""

    packed: torch.Tensor
    weight: torch.Tensor | None
    rows: int
    kind: str


def _can_pack(weight: torch.Tensor, kind: str) -> bool:
    """The library's packed products are in this torch build (MKL, or oneDNN) and the decoder's weights (`weight`,
    one of them) are on a CPU in a dtype it packs (MKL: float32; oneDNN: float32 or bfloat16)."""
    if weight.device.type != "cpu":
        return False
    if kind == "mkl":
        return (weight.dtype == torch.float32 and torch.backends.mkl.is_available()
                and hasattr(torch.ops.mkl, "_mkl_linear") and hasattr(torch.ops.mkl, "_mkl_reorder_linear_weight"))
    return (weight.dtype in (torch.float32, torch.bfloat16) and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_linear_pointwise") and hasattr(torch.ops.mkldnn, "_reorder_linear_weight"))


@functools.cache
def _cpu_vendor() -> str:
    """The CPU's vendor id as Linux reports it ("GenuineIntel", "AuthenticAMD"), "" where it cannot be read."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("vendor_id"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def default_layout(weight: torch.Tensor, rows: int) -> str:
    """The matrix layout a decoder for `rows` rows uses unless told (`FastDecoder`'s `layout=None`), by what was
    measured per CPU (benchmarks/RESULTS.md): split at one row (packing gains nothing there: a 2-core Xeon, MKL;
    a 2-core AMD EPYC, oneDNN within +-5 %); above one row, oneDNN's packing on an AMD CPU (the EPYC, Zen 5: the
    step 1.6-1.8x split at 8 rows, where MKL's packing is 0.70x) and MKL's on an Intel CPU (the Xeon: 1.26x split at 8
    rows; oneDNN not measured there); split otherwise (and on a GPU). A fixed rule per CPU, not a timing, so the
    sampled tokens do not depend on a measurement."""
    if rows == 1:
        return "split"
    vendor = _cpu_vendor()
    if vendor == "AuthenticAMD" and _can_pack(weight, "onednn"):
        return "onednn"
    if vendor == "GenuineIntel" and _can_pack(weight, "mkl"):
        return "mkl"
    return "split"


def _matmul(x: torch.Tensor, w, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`x @ W (+ bias)` for `[S, in]` x and a `_prepare_weights` matrix (`[in, out]`, or `[n, in, out / n]`) or
    a `_Packed` one."""
    if isinstance(w, _Packed):
        if w.kind == "mkl":
            return torch.ops.mkl._mkl_linear(x, w.packed, w.weight, bias, w.rows)
        return torch.ops.mkldnn._linear_pointwise(x, w.packed, bias, "none", [None], "")
    if w.dim() == 2:
        return x @ w if bias is None else torch.addmm(bias, x, w)
    parts = x.expand(w.shape[0], *x.shape)
    # [n, S, out / n]: one part per thread
    y = torch.bmm(parts, w) if bias is None else torch.baddbmm(bias.view(w.shape[0], 1, -1), parts, w)
    return y.transpose(0, 1).reshape(x.shape[0], -1)


def _decode_step(weights, keys, values, valid, length, position, tokens, cos, sin, width, heads, kv_heads, head_dim,
                 eps):
    """The decoding step proper (a free function over `_prepare_weights`' tensors, for `torch.compile`).

    `sin` is the signed table of `FastDecoder.rope_table` (see `_rotate`)."""
    embed, final_norm, head, layers = weights
    x = F.embedding(tokens, embed)  # [S, D]
    rows = x.shape[0]
    slots = torch.arange(rows, device=tokens.device)
    cos_t, sin_t = cos[position][:, None, :], sin[position][:, None, :]  # [S, 1, D_h]
    mask = valid[:, :width].clone()
    mask[slots, length] = True  # the token written this step attends to itself
    # additive, made once per step (a boolean mask is turned into this by every attention call)
    mask = torch.zeros(mask.shape, dtype=x.dtype, device=x.device).masked_fill_(~mask, float("-inf"))
    mask = mask[:, None, None, :]  # [S, 1, 1, W]
    # this step's cache column as rows of a layer's keys viewed `[S * H_kv * T_max, D_h]`: one index_copy_ a write
    column = ((slots[:, None] * kv_heads + torch.arange(kv_heads, device=tokens.device)) * keys[0].shape[2]
              + length[:, None]).reshape(-1)  # [S * H_kv]
    group = heads // kv_heads
    for layer, (norm1, wqkv, bqkv, wo, norm2, wgu, wd) in enumerate(layers):
        qkv = _matmul(_rms_norm(x, norm1, eps), wqkv, bqkv).view(rows, heads + 2 * kv_heads, head_dim)
        qk = _rotate(qkv[:, : heads + kv_heads], cos_t, sin_t)  # q and k heads rotated together
        _write(keys[layer], column, qk[:, heads:])
        _write(values[layer], column, qkv[:, heads + kv_heads :])
        # the G query heads of a KV head act as its G "query positions": one attention call per layer, no copies
        out = F.scaled_dot_product_attention(
            qk[:, :heads].reshape(-1, kv_heads, group, head_dim), keys[layer][:, :, :width],
            values[layer][:, :, :width], attn_mask=mask, scale=head_dim**-0.5,
        )
        x = x + _matmul(out.reshape(rows, -1), wo)
        gate, up = _matmul(_rms_norm(x, norm2, eps), wgu).chunk(2, dim=-1)
        x = x + _matmul(F.silu(gate) * up, wd)
    valid[slots, length] = True
    return _matmul(_rms_norm(x, final_norm, eps), head).float()


def _write(cache: torch.Tensor, column: torch.Tensor, heads: torch.Tensor) -> None:
    """Write `[S, H_kv, D_h]` keys or values into a layer's `[S, H_kv, T_max, D_h]` cache at the flat rows
    `column` (`_decode_step`)."""
    cache.view(-1, cache.shape[-1]).index_copy_(0, column, heads.reshape(-1, heads.shape[-1]).to(cache.dtype))


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Qwen2's RMSNorm: normalise in float32, cast back, then scale (as transformers' `Qwen2RMSNorm`); one kernel
    for a float32 model (the same products: `x * rsqrt(mean(x^2) + eps) * weight`)."""
    if x.dtype == torch.float32 and weight.dtype == torch.float32:
        return F.rms_norm(x, (x.shape[-1],), weight, eps=eps)
    return weight * F.rms_norm(x.float(), (x.shape[-1],), eps=eps).to(x.dtype)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of `[S, H, D_h]` heads (transformers' rotate-half convention) with the signed sine table
    (`FastDecoder.rope_table`): `rotate_half(x) * sin == roll(x, D_h / 2) * signed_sin`, product for product, in
    one roll instead of two slices, a negation and a concatenation."""
    return x * cos + x.roll(x.shape[-1] // 2, dims=-1) * sin
