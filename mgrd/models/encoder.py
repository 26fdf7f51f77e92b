"""The audio encoder: Whisper-style, 100 Hz log-mel in, 25 Hz features out, batch-invariant.

Parameter names follow the official Step-Audio 2 checkpoints (`conv1`, `conv2`, `positional_embedding`,
`blocks.{i}.attn.{query,key,value,out}`, `attn_ln`, `mlp.{0,2}`, `mlp_ln`, `after_norm`).

Batch invariance: every clip's output equals what it gets when encoded alone (the reference computes each
clip alone; its padded-batch mask depends on the batch's padded length). Three things make that hold:
  1. after conv1, frames past a clip's own length are zeroed, so conv2 sees the same zero padding;
  2. attention masks the keys past a clip's valid length (`mgrd.audio.conv_frames` under the token rule:
     "hf" `(L - 1) // 2` conv frames, "vllm" all `(L + 1) // 2`);
  3. pooled frames past a clip's own pooled length are zeroed, so the adapter conv sees zero padding.
The valid output lengths follow the same token rule (`mgrd.audio.encoder_frames`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mgrd.audio import TOKEN_RULES, conv_frames, encoder_frames


class EncoderAttention(nn.Module):
    """Multi-head self-attention; `key` has no bias (Whisper)."""

    def __init__(self, width: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width, bias=False)
        self.value = nn.Linear(width, width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        """x `[N, T, D]`, key_mask `[N, T]` bool (True = attend) -> `[N, T, D]`."""
        n, t, d = x.shape
        q, k, v = (proj(x).view(n, t, self.n_head, d // self.n_head).transpose(1, 2) for proj in (self.query, self.key, self.value))
        # The reference scales q and k by (d/h)^-0.25 each, which is SDPA's default 1/sqrt(d/h).
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask[:, None, None, :])
        return self.out(y.transpose(1, 2).reshape(n, t, d))


class EncoderBlock(nn.Module):
    """Pre-LN transformer block: x + attn(ln(x)), then x + mlp(ln(x)) with a 4x GELU MLP."""

    def __init__(self, width: int, n_head: int):
        super().__init__()
        self.attn_ln = nn.LayerNorm(width)
        self.attn = EncoderAttention(width, n_head)
        self.mlp_ln = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_ln(x), key_mask)
        return x + self.mlp(self.mlp_ln(x))


def valid_conv_frames(mel_lens: torch.Tensor) -> torch.Tensor:
    """Conv2 frames the HF reference attends to for clips of `mel_lens` mel frames: `((L - 2) + 1) // 2`."""
    return conv_frames(mel_lens, "hf")


# Conv2 frames attended beyond `valid_conv_frames`: Step-Audio's rule, or Qwen2-Audio's `(L - 1) // 2 + 1`
# (an encoder taken from a Qwen2-Audio checkpoint was trained with the latter).
KEY_MASK_RULES = {"step_audio": 0, "qwen2_audio": 1}


class AudioEncoder(nn.Module):
    """conv1 (k3) -> conv2 (k3, s2, 50 Hz) -> + positions -> blocks -> avg-pool 2 (25 Hz) -> LayerNorm."""

    def __init__(
        self, n_mels: int, n_ctx: int, width: int, n_head: int, n_layer: int, key_mask_rule: str = "step_audio",
        token_rule: str = "hf",
    ):
        super().__init__()
        if key_mask_rule not in KEY_MASK_RULES:
            raise ValueError(f"unknown key_mask_rule {key_mask_rule!r}; choose from {', '.join(KEY_MASK_RULES)}")
        if token_rule not in TOKEN_RULES:
            raise ValueError(f"unknown token_rule {token_rule!r}; choose from {', '.join(TOKEN_RULES)}")
        self.extra_key_frames = KEY_MASK_RULES[key_mask_rule]
        self.token_rule = token_rule
        if width % n_head:
            raise ValueError(f"encoder width {width} is not divisible by {n_head} heads")
        self.n_ctx = n_ctx
        self.conv1 = nn.Conv1d(n_mels, width, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(width, width, kernel_size=3, stride=2, padding=1)
        self.positional_embedding = nn.Embedding(n_ctx, width)
        self.positional_embedding.requires_grad_(False)
        self.blocks = nn.ModuleList(EncoderBlock(width, n_head) for _ in range(n_layer))
        self.avg_pooler = nn.AvgPool1d(2, stride=2)
        self.after_norm = nn.LayerNorm(width)

    def forward(
        self, mels: torch.Tensor, mel_lens: torch.Tensor, conv_valid_lens: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode a right-padded batch of clips.

        Args:
            mels: `[N, n_mels, T]` log-mel, zero past each clip's length.
            mel_lens: `[N]` mel frames per clip.
            conv_valid_lens: `[N]` conv2 frames each clip attends to; default from the token rule ("hf":
                `(L - 1) // 2`, one more under the Qwen2-Audio key-mask rule; "vllm": all `(L + 1) // 2`).
        Returns:
            features `[N, P, D]` at 25 Hz, zero past each clip's own pooled length, and `[N]` valid
            lengths `mgrd.audio.encoder_frames(L, token_rule)` (they fix the audio token count).
        """
        t = mels.shape[-1]
        if t < 3:  # one sample already makes 3 frames ((1 + 479) // 160); the pool needs 2 conv2 frames
            raise ValueError(f"audio chunks of {t} mel frames are too short for the encoder (at least 3)")
        if conv_frames(t, "vllm") > self.n_ctx:  # every frame conv2 makes needs a position
            raise ValueError(
                f"audio chunk of {t} mel frames exceeds the encoder's {self.n_ctx} positions "
                f"(at most {2 * self.n_ctx} frames, 29.98 s): split long audio into chunks"
            )
        mel_lens = mel_lens.to(mels.device)
        frames = torch.arange(t, device=mels.device)
        x = F.gelu(self.conv1(mels.to(self.conv1.weight.dtype)))
        x = x * (frames[None, :] < mel_lens[:, None]).unsqueeze(1).to(x.dtype)  # (1) zero past each clip
        x = F.gelu(self.conv2(x)).transpose(1, 2)  # [N, T2, D]
        t2 = x.shape[1]
        if conv_valid_lens is None:
            own = conv_frames(mel_lens, self.token_rule) + self.extra_key_frames
            conv_valid_lens = torch.minimum(own, conv_frames(mel_lens, "vllm"))  # at most every frame conv2 made
        key_mask = torch.arange(t2, device=x.device)[None, :] < conv_valid_lens.to(x.device)[:, None]  # (2)
        x = x + self.positional_embedding.weight[:t2].to(x.dtype)
        for block in self.blocks:
            x = block(x, key_mask)
        x = self.avg_pooler(x.transpose(1, 2)).transpose(1, 2)  # [N, T2 // 2, D]
        x = self.after_norm(x)
        pooled_lens = encoder_frames(mel_lens, "vllm")  # every pooled frame a lone clip has
        keep = torch.arange(x.shape[1], device=x.device)[None, :] < pooled_lens[:, None]
        x = x * keep.unsqueeze(-1).to(x.dtype)  # (3) zero past each clip
        return x, encoder_frames(mel_lens, self.token_rule)
