"""Checkpoints: official layout round trip, sharding, bad folders, and building from Qwen2-Audio + Qwen2.5 parts."""

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from mgrd.models import (
    CheckpointError,
    ConfigError,
    SpecialTokenIds,
    build_from_parts,
    build_model,
    load_pretrained,
    save_pretrained,
)
from mgrd.atomic import TargetError, current_umask
from mgrd.models.presets import tiny
from mgrd.tokenizer import build_tiny_tokenizer

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "step_audio2_tiny"  # the golden checkpoint
IDS = SpecialTokenIds(audio_start=5, audio_end=6, audio_patch=7)


def copy_fixture(tmp_path) -> Path:
    dst = tmp_path / "ckpt"
    shutil.copytree(FIXTURE, dst)
    for p in dst.rglob("*"):
        p.chmod(0o644 if p.is_file() else 0o755)
    dst.chmod(0o755)
    return dst


def test_fixture_saves_back_to_the_same_layout(tmp_path):
    model = load_pretrained(FIXTURE, special_ids=IDS)
    out = save_pretrained(model, tmp_path / "saved")
    original, saved = load_file(FIXTURE / "model.safetensors"), load_file(out / "model.safetensors")
    assert sorted(original) == sorted(saved)
    for k in original:
        torch.testing.assert_close(saved[k], original[k], atol=0, rtol=0)
    cfg, ref = json.loads((out / "config.json").read_text()), json.loads((FIXTURE / "config.json").read_text())
    assert cfg["model_type"] == "step_audio_2"
    assert cfg["audio_encoder_config"] == ref["audio_encoder_config"]
    assert cfg["text_config"] == ref["text_config"]
    assert cfg["audio_token_ids"] == {"audio_start": 5, "audio_end": 6, "audio_patch": 7}


@torch.no_grad()
def test_sharded_round_trip_gives_identical_outputs(tmp_path):
    model = build_model(tiny(vocab_size=64, special_ids=SpecialTokenIds(60, 61, 62)), seed=1).eval()
    out = save_pretrained(model, tmp_path / "sharded", max_shard_bytes=1_000_000)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    again = load_pretrained(out)  # ids come back from config.json
    assert again.config.special_ids == model.config.special_ids
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    torch.testing.assert_close(again(ids).logits, model(ids).logits, atol=0, rtol=0)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_save_replaces_and_leaves_nothing_behind(tmp_path):
    target = tmp_path / "ckpt"
    save_pretrained(build_model(tiny(vocab_size=64), seed=0), target)
    save_pretrained(build_model(tiny(vocab_size=64), seed=1), target)  # replacing an existing checkpoint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temp or old folders left
    torch.testing.assert_close(load_file(target / "model.safetensors")["lm_head.weight"],
                               build_model(tiny(vocab_size=64), seed=1).lm_head.weight, atol=0, rtol=0)


def test_save_failing_mid_write_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    """An injected failure after the first shard is on disk: the old checkpoint is byte-for-byte intact.
    (Writing into the target in place would leave a new shard beside old ones.)"""
    target = save_pretrained(build_model(tiny(vocab_size=64), seed=0), tmp_path / "ckpt", max_shard_bytes=1_000_000)
    before = _files(target)
    written = []

    def fail_after_one(tensors, filename, metadata=None):
        if written:
            raise OSError("disk full (injected)")
        save_file(tensors, filename, metadata=metadata)
        written.append(filename)

    monkeypatch.setattr("mgrd.models.checkpoint.save_file", fail_after_one)
    with pytest.raises(OSError, match="injected"):
        save_pretrained(build_model(tiny(vocab_size=64), seed=1), target, max_shard_bytes=1_000_000)
    assert written and _files(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


KILL_MID_SAVE = """
import os, signal, sys
import mgrd.models.checkpoint as ckpt
from mgrd.models import build_model
from mgrd.models.presets import tiny
real = ckpt.save_file
def save_then_die(tensors, filename, metadata=None):
    real(tensors, filename, metadata=metadata)
    os.kill(os.getpid(), signal.SIGKILL)  # killed after the first shard: no clean-up code runs
ckpt.save_file = save_then_die
ckpt.save_pretrained(build_model(tiny(vocab_size=64), seed=1), sys.argv[1], max_shard_bytes=1_000_000)
"""


@pytest.mark.integration
def test_save_killed_mid_write_keeps_the_old_checkpoint_and_the_next_save_sweeps(tmp_path):
    target = save_pretrained(build_model(tiny(vocab_size=64), seed=0), tmp_path / "ckpt", max_shard_bytes=1_000_000)
    before = _files(target)
    killed = subprocess.run([sys.executable, "-c", KILL_MID_SAVE, str(target)], capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert _files(target) == before
    left = [p.name for p in tmp_path.iterdir() if p.name != "ckpt"]
    assert len(left) == 1 and left[0].startswith(".ckpt.tmp-")  # what SIGKILL leaves ...
    save_pretrained(build_model(tiny(vocab_size=64), seed=2), target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # ... the next save of the same target removes


def test_save_never_replaces_a_file_and_can_refuse_a_full_folder(tmp_path):
    model = build_model(tiny(vocab_size=64), seed=0)
    wav = tmp_path / "a.wav"
    wav.write_bytes(b"RIFF....WAVE")
    with pytest.raises(TargetError, match="exists and is not a folder"):
        save_pretrained(model, wav)
    assert wav.read_bytes() == b"RIFF....WAVE" and sorted(p.name for p in tmp_path.iterdir()) == ["a.wav"]
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep")
    with pytest.raises(TargetError, match="not empty"):
        save_pretrained(model, tmp_path / "notes", overwrite=False)
    assert (tmp_path / "notes" / "todo.txt").read_text() == "keep"


def test_saved_files_are_readable_by_others(tmp_path):
    """safetensors writes 0600 and mkdtemp 0700; a checkpoint gets 0644/0755 (under umask 022)."""
    mask = current_umask()
    out = save_pretrained(build_model(tiny(vocab_size=64), seed=0), tmp_path / "ckpt", tokenizer=build_tiny_tokenizer())
    assert out.stat().st_mode & 0o777 == 0o777 & ~mask
    for f in out.iterdir():
        assert f.stat().st_mode & 0o777 == 0o666 & ~mask, f.name


def test_missing_and_unexpected_tensors(tmp_path):
    ckpt = copy_fixture(tmp_path)
    state = load_file(ckpt / "model.safetensors")
    del state["encoder.blocks.1.attn.key.weight"]
    state["encoder.blocks.1.attn.key.bias"] = torch.zeros(64)
    save_file(state, ckpt / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"1 missing tensor\(s\): encoder.blocks.1.attn.key.weight.*1 unexpected tensor\(s\): encoder.blocks.1.attn.key.bias"):
        load_pretrained(ckpt, special_ids=IDS)


def test_mis_shaped_tensor(tmp_path):
    ckpt = copy_fixture(tmp_path)
    state = load_file(ckpt / "model.safetensors")
    state["lm_head.weight"] = torch.zeros(301, 64)
    save_file(state, ckpt / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"lm_head.weight is \(301, 64\), expected \(300, 64\)"):
        load_pretrained(ckpt, special_ids=IDS)


def test_wrong_model_type_and_missing_files(tmp_path):
    ckpt = copy_fixture(tmp_path)
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["model_type"] = "qwen2"
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="model_type is 'qwen2', expected 'step_audio_2'"):
        load_pretrained(ckpt)
    with pytest.raises(ConfigError, match="config not found"):
        load_pretrained(tmp_path / "nowhere")
    (ckpt / "config.json").write_text(json.dumps({**cfg, "model_type": "step_audio_2"}))
    (ckpt / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no model\\*.safetensors"):
        load_pretrained(ckpt)


def test_missing_shard_named_in_index(tmp_path):
    model = build_model(tiny(vocab_size=64), seed=0)
    out = save_pretrained(model, tmp_path / "sharded", max_shard_bytes=1_000_000)
    next(out.glob("model-00002-of-*.safetensors")).unlink()
    with pytest.raises(CheckpointError, match="lists model-00002-of-.*which is missing"):
        load_pretrained(out)


# ------------------------------------------------------------------------------------ build from parts
def make_parts(tmp_path):
    """A Qwen2-Audio checkpoint (audio_tower.* names) and a Qwen2.5 checkpoint, saved by transformers."""
    from transformers import Qwen2AudioEncoderConfig, Qwen2Config, Qwen2ForCausalLM
    from transformers.models.qwen2_audio.modeling_qwen2_audio import Qwen2AudioEncoder

    torch.manual_seed(0)
    enc_cfg = Qwen2AudioEncoderConfig(
        num_mel_bins=128, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=256, d_model=64, max_source_positions=1500
    )
    enc_cfg._attn_implementation = "eager"
    encoder = Qwen2AudioEncoder(enc_cfg).eval()
    with torch.no_grad():  # non-trivial norms and biases, so a wrong mapping shows
        for name, p in encoder.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    enc_dir = tmp_path / "qwen2_audio"
    enc_dir.mkdir()
    save_file({f"audio_tower.{k}": v.contiguous() for k, v in encoder.state_dict().items()}, enc_dir / "model.safetensors")
    (enc_dir / "config.json").write_text(json.dumps({"model_type": "qwen2_audio", "audio_config": enc_cfg.to_dict()}))

    llm = Qwen2ForCausalLM(
        Qwen2Config(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
    ).eval()
    llm_dir = tmp_path / "qwen2_5"
    llm.save_pretrained(llm_dir)
    return encoder, enc_dir, llm, llm_dir


@torch.no_grad()
def test_build_from_parts_reproduces_qwen2_audio_encoder_and_llm(tmp_path):
    hf_encoder, enc_dir, llm, llm_dir = make_parts(tmp_path)
    model, tokenizer = build_from_parts(enc_dir, llm_dir, seed=0)
    assert tokenizer is None  # this LLM folder has no tokenizer
    mels = torch.randn(1, 128, 3000)
    full = torch.tensor([3000])
    # All 1500 positions attended: transformers' encoder with no mask.
    ref = hf_encoder(mels).last_hidden_state
    ours, _ = model.encoder(mels, full, conv_valid_lens=torch.tensor([1500]))
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    # A padded clip: Qwen2-Audio masks the keys past the clip's frames.
    n_valid = 700
    bias = torch.zeros(1, 1, 1500, 1500)
    bias[..., n_valid:] = float("-inf")
    ref = hf_encoder(mels, attention_mask=bias).last_hidden_state
    ours, _ = model.encoder(mels, full, conv_valid_lens=torch.tensor([n_valid]))
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    # A short clip as Qwen2-Audio runs it (zero-padded to 3000 frames, keys masked past (L - 1) // 2 + 1)
    # equals the built model's encoder on the clip alone, over the clip's frames.
    frames = 700
    padded = torch.zeros(1, 128, 3000)
    padded[..., :frames] = mels[..., :frames]
    bias = torch.zeros(1, 1, 1500, 1500)
    bias[..., (frames - 1) // 2 + 1 :] = float("-inf")
    ref = hf_encoder(padded, attention_mask=bias).last_hidden_state
    ours, lens = model.encoder(mels[..., :frames], torch.tensor([frames]))
    assert model.config.audio.key_mask_rule == "qwen2_audio" and ours.shape[1] == frames // 4
    torch.testing.assert_close(ours, ref[:, : frames // 4], atol=1e-5, rtol=1e-5)
    # The LLM half gives transformers' Qwen2ForCausalLM logits on text.
    ids = torch.tensor([[5, 17, 42, 8, 90]])
    torch.testing.assert_close(model(ids).logits, llm(ids).logits, atol=1e-5, rtol=1e-5)
    assert model.adapter.linear2.weight.shape == (32, 2048)


def test_build_from_parts_adds_special_tokens_to_the_llm_tokenizer(tmp_path):
    """A Qwen-style tokenizer without the template/audio tokens gets them, and the embeddings grow."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from mgrd.tokenizer import SPECIAL_TOKENS, special_token_ids

    _, enc_dir, llm, llm_dir = make_parts(tmp_path)  # LLM vocab_size 96
    words = ["<|endoftext|>"] + [f"w{i}" for i in range(94)]
    raw = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="w0"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|endoftext|>", pad_token="<|endoftext|>").save_pretrained(llm_dir)
    model, tokenizer = build_from_parts(enc_dir, llm_dir)
    vocab = tokenizer.get_vocab()
    assert all(t in vocab for t in SPECIAL_TOKENS)
    ids = special_token_ids(tokenizer)
    assert model.config.special_ids.audio_patch == ids.audio_patch >= 95
    emb = model.model.embed_tokens.weight
    assert emb.shape[0] == len(tokenizer) == 95 + len([t for t in SPECIAL_TOKENS if t != "<|endoftext|>"])
    torch.testing.assert_close(emb[:96], llm.model.embed_tokens.weight)  # old rows kept
    torch.testing.assert_close(emb[-1], llm.model.embed_tokens.weight.mean(0))  # new rows: the mean
    out = save_pretrained(model, tmp_path / "built", tokenizer=tokenizer)
    again = load_pretrained(out)  # the saved tokenizer gives the ids back
    assert again.config.special_ids == model.config.special_ids


def test_build_from_parts_rejects_wrong_configs(tmp_path):
    _, enc_dir, _, llm_dir = make_parts(tmp_path)
    with pytest.raises(ConfigError, match="expected 'qwen2'"):
        build_from_parts(enc_dir, enc_dir)
    with pytest.raises(ConfigError, match="expected a Qwen2-Audio encoder"):
        build_from_parts(llm_dir, llm_dir)
    (llm_dir / "config.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="config.json: expected a JSON object, got a list"):
        build_from_parts(enc_dir, llm_dir)
    (llm_dir / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="config.json: not valid JSON"):
        build_from_parts(enc_dir, llm_dir)


def test_loaded_model_keeps_the_encoder_frozen_and_loads_in_bf16():
    model = load_pretrained(FIXTURE, special_ids=IDS, dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert all(p.requires_grad for p in model.adapter.parameters()) and model.lm_head.weight.requires_grad
    assert model.model.rotary_emb.inv_freq.dtype == torch.float32  # rotary frequencies are not rounded
    assert load_pretrained(FIXTURE, special_ids=IDS).lm_head.weight.dtype == torch.float32  # auto on CPU


def test_damaged_files_give_one_clear_error(tmp_path):
    ckpt = copy_fixture(tmp_path)
    data = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors: cannot read safetensors"):
        load_pretrained(ckpt, special_ids=IDS)
    (ckpt / "model.safetensors.index.json").write_text("not json")
    with pytest.raises(CheckpointError, match="model.safetensors.index.json: not a safetensors index"):
        load_pretrained(ckpt, special_ids=IDS)
    (ckpt / "model.safetensors.index.json").unlink()
    cfg = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**cfg, "audio_token_ids": {"audio_start": 1}}))
    with pytest.raises(ConfigError, match="audio_token_ids must map audio_start, audio_end and audio_patch"):
        load_pretrained(ckpt)


def test_official_ids_only_for_the_released_vocabulary():
    from mgrd.models.checkpoint import OFFICIAL_AUDIO_TOKEN_IDS, _official_ids
    from mgrd.models.presets import step_audio_r1

    cfg = step_audio_r1()
    assert _official_ids(cfg) == OFFICIAL_AUDIO_TOKEN_IDS
    cfg.text["vocab_size"] = 152_064  # Qwen2.5's own vocabulary has no audio tokens
    assert _official_ids(cfg) is None


@torch.no_grad()
def test_build_from_parts_with_a_tied_embedding_llm(tmp_path):
    """Small Qwen2.5 models tie lm_head to the embeddings and save no lm_head.weight."""
    from safetensors import safe_open
    from transformers import Qwen2Config, Qwen2ForCausalLM

    _, enc_dir, _, _ = make_parts(tmp_path)
    torch.manual_seed(1)
    llm = Qwen2ForCausalLM(Qwen2Config(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                       num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)).eval()
    llm.save_pretrained(tmp_path / "tied")
    with safe_open(tmp_path / "tied" / "model.safetensors", framework="pt") as f:
        assert "lm_head.weight" not in f.keys()
    model, _ = build_from_parts(enc_dir, tmp_path / "tied")
    torch.testing.assert_close(model.lm_head.weight, llm.model.embed_tokens.weight)
    ids = torch.tensor([[3, 1, 4, 1, 5]])
    torch.testing.assert_close(model(ids).logits, llm(ids).logits, atol=1e-5, rtol=1e-5)
