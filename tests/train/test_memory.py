"""mgrd.train.memory: exact parameter counts (tiny), LoRA counts against peft, the activation formula against the
tensors autograd really saves, and the 33B preset's totals by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mgrd.models import build_model
from mgrd.models.presets import tiny
from mgrd.train import memory as M

TINY = dict(encoder=432_384, adapter=85_472, llm=657_024, lm_head=65_536)  # tiny(vocab 512), as `mgrd inspect`


def test_tiny_counts_are_exact():
    plan = M.memory_plan("tiny", n_gpus=1, strategy="none", weight_dtype="float32", seq_len=16)
    total, trainable = sum(TINY.values()), sum(TINY.values()) - TINY["encoder"]
    assert plan.params == dict(TINY, lora=0, total=total, trainable=trainable)
    # fp32: weights 4 bytes each, gradients 4 and AdamW's two moments 8 per trainable parameter
    assert plan.rows["weights"] == 4 * total == 4_961_664
    assert plan.rows["gradients"] == 4 * trainable == 3_232_128
    assert plan.rows["optimizer (AdamW)"] == 8 * trainable
    unfrozen = M.memory_plan("tiny", n_gpus=1, strategy="none", freeze_encoder=False, train_adapter=False)
    assert unfrozen.params["trainable"] == TINY["encoder"] + TINY["llm"] + TINY["lm_head"]


def test_counts_equal_the_built_model(tok, ids):
    """The plan's per-part counts equal `parameter_counts` of a real tiny model with the project's tokenizer."""
    from mgrd.models import parameter_counts

    config = tiny(len(tok), ids)
    counts = parameter_counts(build_model(config, seed=0))
    plan = M.memory_plan(config, n_gpus=1, strategy="none")
    assert {k: plan.params[k] for k in counts} == counts


def test_fsdp2_shards_each_parameter_on_dim0_with_padding():
    assert M.Param("w", (5, 4), "layer").shard_numel(2) == 12  # ceil(5 / 2) rows of 4
    assert M.Param("b", (7,), "root").shard_numel(4) == 2
    assert M.Param("s", (), "root").shard_numel(4) == 1
    one = M.memory_plan("tiny", n_gpus=1, strategy="none")
    two = M.memory_plan("tiny", n_gpus=2, strategy="fsdp2")
    ddp = M.memory_plan("tiny", n_gpus=2, strategy="ddp")
    # every tiny dim 0 is even, so 2 ranks hold exactly half; DDP replicates
    for row in ("weights", "gradients", "optimizer (AdamW)"):
        assert two.rows[row] * 2 == one.rows[row] == ddp.rows[row]
    three = M.memory_plan("tiny", n_gpus=3, strategy="fsdp2")
    assert three.rows["weights"] * 3 > one.rows["weights"]  # padding on the dims 3 does not divide


def test_lora_parameters_equal_peft(tok, ids):
    """peft's LoRA on the same target linears has exactly the parameters the plan adds."""
    from peft import LoraConfig, get_peft_model

    rank = 8
    model = build_model(tiny(len(tok), ids), seed=0)
    lora = get_peft_model(model.model, LoraConfig(r=rank, target_modules=list(M.LORA_TARGETS)))
    peft_count = sum(p.numel() for n, p in lora.named_parameters() if "lora_" in n)
    plan = M.memory_plan(tiny(len(tok), ids), n_gpus=1, strategy="none", lora_rank=rank)
    assert plan.params["lora"] == peft_count == 3 * rank * (256 + 192 + 192 + 256 + 512 + 512 + 512)
    assert plan.params["trainable"] == peft_count + TINY["adapter"]  # the LLM frozen, the adapter trains


def _saved_bytes(model, ids: torch.Tensor) -> int:
    """Bytes of the distinct storages autograd saves for backward in one forward + loss (parameters excluded)."""
    storages: dict[int, int] = {}

    def pack(t):
        s = t.untyped_storage()
        storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logits = model(ids).logits
        F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten())
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    return sum(b for ptr, b in storages.items() if ptr not in params)


@pytest.mark.parametrize("dtype, checkpointing", [(torch.float32, False), (torch.bfloat16, False),
                                                  (torch.float32, True), (torch.bfloat16, True)])
def test_activation_formula_matches_what_autograd_saves(dtype, checkpointing):
    """A 3-layer Qwen2 (h 128, i 384, 4 heads, 2 KV heads, V 512), 2 x 128 tokens: within 2 % (the formula leaves
    out per-token scalars: norm statistics, token ids)."""
    config = tiny(512)
    model = build_model(config, dtype=dtype, seed=0).train()
    if checkpointing:
        model.model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    ids = torch.randint(0, 512, (2, 128), generator=torch.Generator().manual_seed(0))
    measured = _saved_bytes(model, ids)
    plan = M.memory_plan(config, n_gpus=1, strategy="none", weight_dtype=str(dtype).split(".")[1], seq_len=128,
                         micro_batch=2, activation_checkpointing=checkpointing)
    assert plan.rows["activations"] == pytest.approx(measured, rel=0.02)


def test_33b_preset_by_hand():
    """step-audio-r1: 33.49 B parameters; bf16 weights ~67 GB in all, /N under FSDP2, whole on each DDP GPU."""
    fsdp = M.memory_plan("step-audio-r1", n_gpus=8, strategy="fsdp2", seq_len=4096)
    ddp = M.memory_plan("step-audio-r1", n_gpus=8, strategy="ddp", seq_len=4096)
    p = fsdp.params
    assert p["total"] == 33_487_033_600 and p["trainable"] == p["total"] - p["encoder"]
    assert ddp.rows["weights"] == 2 * p["total"] == 66_974_067_200
    assert fsdp.rows["weights"] == pytest.approx(ddp.rows["weights"] / 8, rel=1e-4)  # padding only
    assert fsdp.rows["optimizer (AdamW)"] == pytest.approx(4 * p["trainable"] / 8, rel=1e-4)
    # activations with checkpointing: each of 64 layers keeps its bf16 input, the head the fp32 log-softmax
    h, vocab, tokens = 5120, 158_720, 4096
    assert fsdp.rows["activations"] == tokens * (64 * h * 2 + h * 4 + 2 * h * 2 + vocab * 4)
    assert fsdp.rows["activations"] == ddp.rows["activations"]  # per GPU, not divided
    assert 40e9 < fsdp.total < 80e9 and not ddp.fits(141e9) and fsdp.fits(141e9)  # an H200 holds the fsdp2 plan
    lora = M.memory_plan("step-audio-r1", n_gpus=8, strategy="fsdp2", lora_rank=16)
    assert lora.params["lora"] == 64 * 16 * (2 * 5120 + 2 * (5120 + 1024) + 2 * 5120 + 3 * (5120 + 27648))
    assert lora.rows["optimizer (AdamW)"] < 0.01 * fsdp.rows["optimizer (AdamW)"]


def test_format_and_side_by_side_tables():
    plan = M.memory_plan("tiny", n_gpus=2, strategy="fsdp2", lora_rank=4, reference_model=True, value_model=True,
                         rollout_tokens=1000)
    text = plan.format()
    for word in ("memory plan: tiny", "LoRA r=4", "2 GPU(s), fsdp2", "weights", "optimizer (AdamW)", "activations",
                 "reference policy", "value model", "rollout KV cache", "total"):
        assert word in text
    assert plan.rows["rollout KV cache"] == 1000 * 2 * 3 * 64 * 2  # tokens x (k, v) x layers x kv width x bf16
    side = M.format_plans([M.memory_plan("tiny", n_gpus=2, strategy=s) for s in ("ddp", "fsdp2")])
    assert side.splitlines()[0].split()[-2:] == ["ddp/full/2", "fsdp2/full/2"]
    assert math.isclose(plan.to_dict()["total"], plan.total)


@pytest.mark.parametrize("kwargs, message", [
    (dict(strategy="zero3"), "unknown distributed strategy 'zero3'"),
    (dict(weight_dtype="fp8"), "weight_dtype must be one of"),
    (dict(strategy="none", n_gpus=2), "strategy 'none' runs on one GPU"),
    (dict(seq_len=0), "must be >= 1"),
])
def test_bad_input_is_one_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        M.memory_plan("tiny", **kwargs)
    with pytest.raises(ValueError, match="neither a preset"):
        M.memory_plan("no-such-preset")


def test_plan_from_the_trainer_config_sections():
    """`plan_from_setup` reads ModelSetup / OptimConfig by attribute (the SFT and RL --dry-run path)."""
    from types import SimpleNamespace as NS

    setup = NS(path=None, preset="tiny", dtype="bfloat16", autocast_bf16=False, activation_checkpointing=True,
               freeze_encoder=True, train_adapter=True, train_llm=True, lora=NS(rank=0, target_modules=M.LORA_TARGETS),
               distributed="fsdp2")
    plan = M.plan_from_setup(setup, NS(micro_batch_size=3), seq_len=64, n_gpus=2)
    assert (plan.n_gpus, plan.strategy, plan.micro_batch, plan.seq_len, plan.weight_dtype) == (2, "fsdp2", 3, 64,
                                                                                               "bfloat16")


def test_cli_prints_the_plan_and_the_grid(capsys):
    assert M.main(["tiny", "--gpus", "2", "--lora-rank", "4", "--seq-len", "32"]) == 0
    out = capsys.readouterr().out
    assert "memory plan: tiny" in out and "fsdp2/lora4/2" in out and "ddp/full/2" in out
    assert M.main(["nope"]) == 2
    assert "error: 'nope' is neither a preset" in capsys.readouterr().err


def test_format_plan_for_the_stage_configs(monkeypatch):
    """`format_plan(config, cfg)` (what `--dry-run` prints): SFT plans 8 GPUs for fsdp2 outside torchrun; an RL
    config adds its KV cache, PPO's value model and (with KL) the reference policy."""
    from types import SimpleNamespace as NS

    from mgrd.models import preset_config

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    setup = NS(dtype="bfloat16", autocast_bf16=False, activation_checkpointing=True, freeze_encoder=True,
               train_adapter=True, train_llm=True, lora=NS(rank=0, target_modules=M.LORA_TARGETS), distributed="fsdp2",
               path=None, preset="step-audio-r1")
    sft = NS(model=setup, optim=NS(micro_batch_size=1), data=NS(max_length=8192))
    text = M.format_plan(preset_config("step-audio-r1"), sft)
    assert text.startswith("memory plan: step-audio-r1: 33.487 B parameters")
    assert "8 GPU(s), fsdp2" in text and "micro-batch 1 x 8192 tokens" in text and "fsdp2/lora16/8" in text
    rl = NS(model=setup, optim=NS(micro_batch_size=2), data=NS(), sampling=NS(max_new_tokens=1024),
            algo=NS(name="ppo", kl_coef=0.0, prompts_per_step=16, samples_per_prompt=8))
    text = M.format_plan(preset_config("step-audio-r1"), rl)
    assert "value model" in text and "rollout KV cache" in text and "reference policy" not in text
    assert "x 1536 tokens" in text  # 512 prompt tokens + 1024 new


def test_autocast_copies_only_over_fp32_weights():
    """DDP + autocast holds bf16 copies of fp32 weights (2 bytes each, encoder excluded); bf16 weights need none."""
    base = dict(n_gpus=2, strategy="ddp", seq_len=16)
    fp32 = M.memory_plan("tiny", weight_dtype="float32", **base).rows["working buffers"]
    mixed = M.memory_plan("tiny", weight_dtype="float32", autocast_bf16=True, **base).rows["working buffers"]
    bf16 = M.memory_plan("tiny", weight_dtype="bfloat16", **base).rows["working buffers"]
    bf16_auto = M.memory_plan("tiny", weight_dtype="bfloat16", autocast_bf16=True, **base).rows["working buffers"]
    assert bf16_auto == bf16
    copies = 2 * (TINY["adapter"] + TINY["llm"] + TINY["lm_head"])
    dims = M.model_params(tiny(512))[1]
    recompute = 16 * (M._one_layer_bytes_per_token(dims, 2) - M._one_layer_bytes_per_token(dims, 4))  # bf16 layer
    assert mixed - fp32 == copies + recompute
