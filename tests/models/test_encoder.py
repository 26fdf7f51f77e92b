"""The encoder and adapter under each audio-token rule: lengths, key mask, and prompts that match the model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mgrd.audio import SAMPLE_RATE, audio_token_count, conv_frames, pad_mels
from mgrd.chat import encode_chat
from mgrd.models import AudioPlaceholderError, build_model
from mgrd.models.encoder import AudioEncoder
from mgrd.models.presets import tiny


def sine(seconds: float, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(round(seconds * SAMPLE_RATE))) / SAMPLE_RATE
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def tiny_model(tok, ids, rule: str):
    config = tiny(len(tok), ids)
    config.audio.token_rule = rule
    return build_model(config, seed=0).eval()


def user(seconds: float) -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": "How long?"}, {"type": "audio", "audio": sine(seconds)}]}]


@pytest.mark.parametrize(("rule", "tokens"), [("hf", 6), ("vllm", 7)])
@torch.no_grad()
def test_each_rule_runs_a_forward_on_prompts_built_with_it(tok, ids, rule, tokens):
    model = tiny_model(tok, ids, rule)
    prompt = encode_chat(tok, user(0.5), audio_config=model.config.audio)  # 0.5 s: 52 frames, L mod 8 = 4
    assert prompt.input_ids.count(ids.audio_patch) == tokens == model.config.audio.token_count(52)
    mels, lens = pad_mels(prompt.mels)
    logits = model(torch.tensor([prompt.input_ids]), None, mels, lens).logits
    assert logits.shape == (1, len(prompt.input_ids), len(tok)) and torch.isfinite(logits).all()
    other = "vllm" if rule == "hf" else "hf"
    wrong = encode_chat(tok, user(0.5), audio_config=dataclasses.replace(model.config.audio, token_rule=other))
    with pytest.raises(AudioPlaceholderError, match="<audio_patch> tokens but its chunk encodes to"):
        model(torch.tensor([wrong.input_ids]), None, *pad_mels(wrong.mels))


@torch.no_grad()
def test_rules_agree_where_the_counts_agree(tok, ids):
    prompt = encode_chat(tok, user(1.0))  # 102 frames: 13 tokens under both rules
    assert audio_token_count(102) == audio_token_count(102, rule="vllm") == 13
    for rule in ("hf", "vllm"):
        model = tiny_model(tok, ids, rule)
        assert model(torch.tensor([prompt.input_ids]), None, *pad_mels(prompt.mels)).logits.shape[1] == len(prompt.input_ids)


def _encode_alone(encoder: AudioEncoder, mel: torch.Tensor, keys: int) -> torch.Tensor:
    """A lone clip with the first `keys` conv2 frames attended, written out without the encoder's masking code."""
    x = F.gelu(encoder.conv2(F.gelu(encoder.conv1(mel[None])))).transpose(1, 2)
    mask = torch.arange(x.shape[1])[None] < keys
    x = x + encoder.positional_embedding.weight[: x.shape[1]]
    for block in encoder.blocks:
        x = block(x, mask)
    return encoder.after_norm(encoder.avg_pooler(x.transpose(1, 2)).transpose(1, 2))[0]


@pytest.mark.parametrize("frames", [51, 52, 59, 60, 101])
@torch.no_grad()
def test_vllm_rule_attends_to_every_conv_frame_of_a_lone_clip(frames):
    torch.manual_seed(0)
    hf, vllm = AudioEncoder(8, 1500, 16, 2, 1), AudioEncoder(8, 1500, 16, 2, 1, token_rule="vllm")
    vllm.load_state_dict(hf.state_dict())
    mel = torch.randn(8, frames)
    n_conv = (frames + 1) // 2  # every frame conv2 makes
    assert conv_frames(frames, "vllm") == n_conv and conv_frames(frames, "hf") == n_conv - 1
    out, lens = vllm(*pad_mels([mel]))
    torch.testing.assert_close(out[0, : int(lens[0])], _encode_alone(vllm, mel, n_conv)[: int(lens[0])])
    assert int(lens[0]) == n_conv // 2
    out_hf, lens_hf = hf(*pad_mels([mel]))
    torch.testing.assert_close(out_hf[0, : int(lens_hf[0])], _encode_alone(hf, mel, n_conv - 1)[: int(lens_hf[0])])
    assert int(lens_hf[0]) == (n_conv - 1) // 2
    assert not torch.allclose(out[0, : int(lens_hf[0])], out_hf[0, : int(lens_hf[0])])  # the masked frame matters


@torch.no_grad()
def test_vllm_rule_is_batch_invariant():
    torch.manual_seed(1)
    encoder = AudioEncoder(8, 1500, 16, 2, 1, token_rule="vllm")
    mels = [torch.randn(8, n) for n in (51, 52, 97, 160)]
    batch, lens = encoder(*pad_mels(mels))
    for row, mel in enumerate(mels):
        alone, alone_len = encoder(*pad_mels([mel]))
        assert int(lens[row]) == int(alone_len[0])
        torch.testing.assert_close(batch[row, : int(lens[row])], alone[0, : int(lens[row])], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("rule", ["hf", "vllm"])
@torch.no_grad()
def test_shortest_chunks(rule):
    encoder = AudioEncoder(8, 1500, 16, 2, 1, token_rule=rule)
    for frames in (3, 4, 5):  # 3 frames: a single sample of audio
        _, lens = encoder(*pad_mels([torch.randn(8, frames)]))
        assert int(lens[0]) == {"hf": (frames - 1) // 2 // 2, "vllm": (frames + 1) // 2 // 2}[rule]
    with pytest.raises(ValueError, match="audio chunks of 2 mel frames are too short for the encoder"):
        encoder(*pad_mels([torch.randn(8, 2)]))


def test_unknown_token_rule_is_refused():
    with pytest.raises(ValueError, match="unknown token_rule 'official'; choose from hf, vllm"):
        AudioEncoder(8, 1500, 16, 2, 1, token_rule="official")
