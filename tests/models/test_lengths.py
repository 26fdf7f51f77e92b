"""Audio lengths over their whole domain: the token-count rule against what the layers really make.

`mgrd.audio.audio_token_count(L, rule=...)` decides how many `<audio_patch>` slots a prompt gets. It is checked
for EVERY chunk length from the shortest clip that makes a token to 3000 frames (29.98 s), not only at a table
of round durations (an off-by-one survives a table that holds only lengths where both versions agree), against
a ground truth that shares no code with it: the output length of the model's own conv, pool and adapter layers
on a lone clip (the HF reference tells the encoder L - 2 frames, the official server L). The model's
bookkeeping (`encode_audio`) must give each chunk that many rows. The encoder's pooled-length zeroing is
checked against an independent, mask-free forward of each clip alone over every residue of L mod 8. The
models are tiny (encoder width 4, no or one block) so ~3000 lengths run in seconds; no trained weights needed.
"""

from __future__ import annotations

import copy
import functools

import pytest
import torch
import torch.nn.functional as F

from mgrd.audio import audio_token_count, mel_frame_count, min_samples_for_a_token, pad_mels
from mgrd.models import AudioPlaceholderError, build_model
from mgrd.models.config import AudioEncoderConfig
from mgrd.models.presets import tiny
from mgrd.tokenizer import SpecialTokenIds

MAX_FRAMES = 3000  # 29.98 s, the most one chunk may hold
SHORTEST = mel_frame_count(min_samples_for_a_token())  # 5 frames: the shortest chunk that makes a token
IDS = SpecialTokenIds(audio_start=60, audio_end=61, audio_patch=62)
N_MELS = 2
WIDTH = 4


@functools.lru_cache(maxsize=None)
def small_model(n_layer: int = 0, token_rule: str = "hf", key_mask_rule: str = "step_audio", kernel_size: int = 3,
                adapter_stride: int = 2):
    """A tiny AudioReasoner in eval mode: encoder width 4 with `n_layer` blocks, LLM width 8 (built once per args)."""
    cfg = tiny(vocab_size=64, special_ids=IDS)
    cfg.text.update(hidden_size=WIDTH * 2, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
                    num_key_value_heads=1, head_dim=WIDTH)
    cfg.audio = AudioEncoderConfig(
        n_mels=N_MELS, n_audio_state=WIDTH, n_audio_head=2, n_audio_layer=n_layer, llm_dim=WIDTH * 2,
        adapter_hidden=WIDTH, token_rule=token_rule, key_mask_rule=key_mask_rule, kernel_size=kernel_size,
        adapter_stride=adapter_stride,
    )
    return build_model(cfg, seed=0).eval()


def random_mels(frames: list[int], seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(N_MELS, n, generator=g) for n in frames]


@torch.no_grad()
def encoded_lengths(model, frames: list[int], batch: int = 200) -> list[int]:
    """How many embeddings the model gives each chunk (its `<audio_patch>` run length), batch by batch."""
    out = []
    for i in range(0, len(frames), batch):
        out += [e.shape[0] for e in model.encode_audio(*pad_mels(random_mels(frames[i : i + batch], seed=i)))]
    return out


def test_shortest_chunk_is_five_frames():
    assert SHORTEST == 5
    assert [audio_token_count(n) for n in range(1, SHORTEST + 1)] == [0, 0, 0, 0, 1]


def layer_lengths(model):
    """`frames -> embeddings` that the model's own conv, pool and adapter layers make from a lone clip.

    Run on the meta device (shapes only, no arithmetic): the kernel, stride and padding decide, as torch
    computes them, not any of our length formulas.
    """
    enc, conv = copy.deepcopy(model.encoder).to("meta"), copy.deepcopy(model.adapter.conv).to("meta")

    def produced(frames: int) -> int:
        x = torch.empty(1, N_MELS, frames, device="meta")
        return conv(enc.avg_pooler(enc.conv2(enc.conv1(x)))).shape[-1]

    return produced


@pytest.mark.parametrize("rule, told", [("hf", lambda n: n - 2), ("vllm", lambda n: n)])
def test_count_equals_what_the_layers_make_for_every_length(rule, told):
    """The HF reference tells the encoder L - 2 frames, the official server L; the count is the layers' output.

    Kills `(L - 2 + 1) // 2 // 2` -> `(L - 2) // 2 // 2` (wrong at L = 5 mod 8) wherever the count is computed.
    """
    produced = layer_lengths(small_model())
    pairs = [(n, audio_token_count(n, rule=rule), produced(told(n))) for n in range(SHORTEST, MAX_FRAMES + 1)]
    wrong = [p for p in pairs if p[1] != p[2]]
    assert not wrong, f"{len(wrong)} lengths disagree (L, count, layers), first: {wrong[:5]}"


@pytest.mark.parametrize("rule", ["hf", "vllm"])
def test_model_gives_each_chunk_as_many_embeddings_as_the_count(rule):
    """A prompt built with the count fits the model: `encode_audio` yields that many rows per chunk, batched."""
    frames = list(range(SHORTEST, MAX_FRAMES + 1))
    got = encoded_lengths(small_model(token_rule=rule), frames)
    want = [audio_token_count(n, rule=rule) for n in frames]
    wrong = [(n, c, w) for n, c, w in zip(frames, got, want) if c != w]
    assert not wrong, f"{len(wrong)} lengths disagree (L, model, count), first: {wrong[:5]}"


@pytest.mark.parametrize("kernel_size, stride, first", [(5, 3, 30), (3, 4, SHORTEST)])
def test_a_non_default_adapter_geometry_is_counted_from_the_config(kernel_size, stride, first):
    """Nothing hard-codes kernel 3 / stride 2: the config's count equals the layers and the model's rows.

    (The adapter pads by 1, so a kernel of 5 needs at least 3 encoder frames: clips from 30 mel frames.)
    """
    model = small_model(kernel_size=kernel_size, adapter_stride=stride)
    produced = layer_lengths(model)
    frames = list(range(first, 400))
    want = [model.config.audio.token_count(n) for n in frames]
    assert want == [produced(n - 2) for n in frames]
    assert want == encoded_lengths(model, frames)
    assert want != [audio_token_count(n) for n in frames]  # it really is a different geometry


def test_rules_differ_only_at_residues_3_and_4_mod_8():
    differ = [n for n in range(SHORTEST, MAX_FRAMES + 1) if audio_token_count(n, rule="vllm") != audio_token_count(n)]
    assert differ and all(n % 8 in (3, 4) for n in differ)
    assert audio_token_count(52) == 6 and audio_token_count(52, rule="vllm") == 7  # 0.5 s


# ---------------------------------------------------------------------------------------- pooled-length zeroing


# conv2 frames a lone clip attends to: the HF reference tells the encoder L - 2 frames (conv2 keeps
# (L - 2 + 1) // 2 of them as valid), the official server tells it L (every frame conv2 makes)
# (an encoder from Qwen2-Audio was trained attending to one frame more than Step-Audio's HF rule)
REFERENCE_KEYS = {"hf": lambda n: (n - 2 + 1) // 2, "vllm": lambda n: (n + 1) // 2,
                  "qwen2_audio": lambda n: min((n - 2 + 1) // 2 + 1, (n + 1) // 2)}


@torch.no_grad()
def reference_encode(encoder, mel: torch.Tensor, rule: str = "hf") -> torch.Tensor:
    """One clip alone, the reference way: no zeroing at all, keys masked by the reference rule.

    Args:
        mel: `[n_mels, L]`.
        rule: "hf", "vllm" or "qwen2_audio": which reference's key mask.
    Returns:
        `[(L + 1) // 2 // 2, D]` pooled features, every frame the convolutions and pool produce.
    """
    x = F.gelu(encoder.conv1(mel[None]))
    x = F.gelu(encoder.conv2(x)).transpose(1, 2)
    keys = torch.arange(x.shape[1]) < REFERENCE_KEYS[rule](mel.shape[-1])
    x = x + encoder.positional_embedding.weight[: x.shape[1]]
    for block in encoder.blocks:
        x = block(x, keys[None])
    x = encoder.avg_pooler(x.transpose(1, 2)).transpose(1, 2)
    return encoder.after_norm(x)[0]


# every residue of L mod 8, short and near the 3000-frame limit
RESIDUE_LENGTHS = [*range(48, 64), *range(2984, 3000)]


@pytest.mark.parametrize("rule", ["hf", "vllm", "qwen2_audio"])
@torch.no_grad()
def test_lone_clip_keeps_every_pooled_frame(rule):
    """Kills `(L + 1) // 2 // 2` -> `L // 2 // 2` in encoder.py (drops a real frame when L = 3 mod 4); under
    each token and key-mask rule the encoder attends to the keys that rule's reference attends to."""
    model = small_model(n_layer=1, **({"key_mask_rule": rule} if rule == "qwen2_audio" else {"token_rule": rule}))
    for n, mel in zip(RESIDUE_LENGTHS, random_mels(RESIDUE_LENGTHS)):
        alone, _ = model.encoder(*pad_mels([mel]))
        want = reference_encode(model.encoder, mel, rule)
        assert alone.shape[1] == want.shape[0] == (n + 1) // 2 // 2, n
        torch.testing.assert_close(alone[0], want, atol=1e-5, rtol=1e-5, msg=f"L={n}")


@torch.no_grad()
def test_batch_rows_equal_lone_clips_and_are_zero_past_them():
    model = small_model(n_layer=1)
    mels = random_mels(RESIDUE_LENGTHS, seed=1)
    feats, _ = model.encoder(*pad_mels(mels))
    for row, (n, mel) in enumerate(zip(RESIDUE_LENGTHS, mels)):
        want = reference_encode(model.encoder, mel)
        torch.testing.assert_close(feats[row, : want.shape[0]], want, atol=1e-5, rtol=1e-5, msg=f"L={n}")
        assert not feats[row, want.shape[0] :].any(), n
    embeds = model.encode_audio(*pad_mels(mels))
    for n, mel, from_batch in zip(RESIDUE_LENGTHS, mels, embeds):
        torch.testing.assert_close(from_batch, model.encode_audio(*pad_mels([mel]))[0], atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_the_longest_chunk_fits_the_positions_and_one_frame_more_is_a_clear_error():
    model = small_model()
    assert model.encode_audio(*pad_mels(random_mels([MAX_FRAMES])))[0].shape[0] == audio_token_count(MAX_FRAMES)
    with pytest.raises(ValueError, match="3001 mel frames exceeds the encoder's 1500 positions"):
        model.encode_audio(*pad_mels(random_mels([MAX_FRAMES + 1])))


# ---------------------------------------------------------------------------------------- placeholder runs


def _prompt(runs: int, n_patch: int) -> torch.Tensor:
    block = [IDS.audio_start] + [IDS.audio_patch] * n_patch + [IDS.audio_end]
    return torch.tensor([[1, 2] + block * runs + [3]])


@torch.no_grad()
def test_more_patch_runs_than_chunks_is_a_clear_error():
    """Kills relaxing the run-count check from `!=` to `<` (extra runs would keep their text embeddings)."""
    model = small_model()
    n = audio_token_count(172)
    mels, lens = pad_mels(random_mels([172]))
    assert model(_prompt(1, n), None, mels, lens).logits.shape[1] == n + 5  # one run, one chunk: fine
    with pytest.raises(AudioPlaceholderError, match="2 <audio_patch> run"):
        model(_prompt(2, n), None, mels, lens)
    with pytest.raises(AudioPlaceholderError, match="1 <audio_patch> run"):
        model(_prompt(1, n))  # a run and no audio at all
