"""Named model sizes, the generic builder, and parameter counting.

- `tiny`: trains in seconds on a CPU (encoder 2 x 96, LLM 3 x 128, the tiny BPE vocabulary);
- `step-audio-2-mini`: Qwen2.5-7B text dims (~8B with the encoder);
- `step-audio-r1`: Qwen2.5-32B text dims, vocab 158,720 (~33B).
Building a preset on the meta device counts its parameters without allocating memory.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mgrd.models.checkpoint import OFFICIAL_AUDIO_TOKEN_IDS as RELEASED_AUDIO_IDS
from mgrd.models.checkpoint import RELEASED_VOCAB
from mgrd.models.config import AudioEncoderConfig, ModelConfig
from mgrd.models.reasoner import AudioReasoner
from mgrd.tokenizer import SpecialTokenIds

WHISPER_LARGE = dict(n_mels=128, n_audio_ctx=1500, n_audio_state=1280, n_audio_head=20, n_audio_layer=32)
# The official text config class always extends the eos list to these (<|endoftext|>, <|im_end|>, <|EOT|>).
RELEASED_EOS_PAD = dict(eos_token_id=[151643, 151645, 151665], pad_token_id=151643)


def _qwen2_text(hidden, intermediate, layers, heads, kv_heads, vocab, rms_eps, max_pos, **extra) -> dict:
    text = dict(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        num_attention_groups=kv_heads,  # the official configs carry both names
        max_position_embeddings=max_pos,
        rms_norm_eps=rms_eps,
        rope_theta=1_000_000.0,
        tie_word_embeddings=False,
    )
    text.update(extra)
    return text


def tiny(vocab_size: int = 512, special_ids: SpecialTokenIds | None = None) -> ModelConfig:
    """CPU-sized: encoder 2 layers x 96, adapter 256 hidden, LLM 3 layers x 128 (4 heads, 2 KV heads).

    When `special_ids` knows eos / pad (a tokenizer's ids), `text_config` records them as the released configs do.
    """
    audio = AudioEncoderConfig(
        n_mels=128, n_audio_ctx=1500, n_audio_state=96, n_audio_head=4, n_audio_layer=2, llm_dim=128, adapter_hidden=256
    )
    known = {} if special_ids is None else {"eos_token_id": special_ids.eos, "pad_token_id": special_ids.pad}
    text = _qwen2_text(128, 384, 3, 4, 2, vocab_size, 1e-6, 4096, **{k: v for k, v in known.items() if v is not None})
    return ModelConfig(audio=audio, text=text, special_ids=special_ids, extra={"torch_dtype": "float32"})


def step_audio_2_mini() -> ModelConfig:
    """Step-Audio-2-mini: Whisper-large encoder + Qwen2.5-7B text dims, released vocabulary, 16,384 positions."""
    audio = AudioEncoderConfig(**WHISPER_LARGE, llm_dim=3584)
    text = _qwen2_text(3584, 18944, 28, 28, 4, RELEASED_VOCAB, 1e-6, 16384, **RELEASED_EOS_PAD)
    return ModelConfig(audio=audio, text=text, special_ids=RELEASED_AUDIO_IDS, extra={"torch_dtype": "bfloat16"})


def step_audio_r1() -> ModelConfig:
    """Step-Audio-R1: Whisper-large encoder + Qwen2.5-32B text dims (64 layers, 5120 wide), vocab 158,720."""
    audio = AudioEncoderConfig(**WHISPER_LARGE, llm_dim=5120)
    text = _qwen2_text(5120, 27648, 64, 40, 8, RELEASED_VOCAB, 1e-5, 65536, **RELEASED_EOS_PAD)
    return ModelConfig(audio=audio, text=text, special_ids=RELEASED_AUDIO_IDS, extra={"torch_dtype": "bfloat16"})


PRESETS = {"tiny": tiny, "step-audio-2-mini": step_audio_2_mini, "step-audio-r1": step_audio_r1}


def preset_config(name: str) -> ModelConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return PRESETS[name]()


def build_model(
    config: ModelConfig, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, seed: int | None = 0
) -> AudioReasoner:
    """A freshly initialised model (`device="meta"` builds shapes only, to count parameters).

    The weights are created in `dtype` (not float32 first), so peak memory is the model's own size in `dtype`.
    """
    if seed is not None and str(device) != "meta":
        torch.manual_seed(seed)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = AudioReasoner(config)
    finally:
        torch.set_default_dtype(default)
    model = model.to(dtype)
    if str(device) != "meta":
        model.reset_rotary()
    return model


def parameter_counts(model: AudioReasoner) -> dict[str, int]:
    """Parameters per part: encoder, adapter, llm (embeddings + decoder), lm_head, total, trainable."""
    parts = {name: sum(p.numel() for p in getattr(model, attr).parameters()) for name, attr in
             (("encoder", "encoder"), ("adapter", "adapter"), ("llm", "model"), ("lm_head", "lm_head"))}
    parts["total"] = sum(parts.values())
    parts["trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return parts


def init_checkpoint(
    preset: str, out: str | Path, *, seed: int = 0, tokenizer_dir: str | Path | None = None,
    dtype: torch.dtype = torch.float32, overwrite: bool = True,
) -> Path:
    """Write a freshly initialised checkpoint (official layout + tokenizer) for a preset.

    `tiny` gets the project's offline BPE tokenizer and a vocabulary sized to it; the released sizes need
    their tokenizer (`tokenizer_dir`), whose audio token ids the config then records.
    """
    from mgrd.models.checkpoint import save_pretrained
    from mgrd.tokenizer import build_tiny_tokenizer, load_tokenizer, special_token_ids

    if tokenizer_dir is None and preset != "tiny":
        raise ValueError(f"preset {preset!r} needs its tokenizer: pass tokenizer_dir")
    tokenizer = build_tiny_tokenizer() if tokenizer_dir is None else load_tokenizer(tokenizer_dir)
    ids = special_token_ids(tokenizer)
    config = tiny(vocab_size=len(tokenizer), special_ids=ids) if preset == "tiny" else preset_config(preset)
    config.special_ids = ids
    if len(tokenizer) > config.text["vocab_size"]:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens but preset {preset!r} only {config.text['vocab_size']}")
    return save_pretrained(build_model(config, seed=seed, dtype=dtype), out, tokenizer=tokenizer, overwrite=overwrite)
