"""The adapter: 25 Hz encoder features -> 12.5 Hz embeddings in the LLM's width.

conv (k3, s2, p1) + GELU -> linear1 (-> 2048) + ReLU -> linear2 (-> LLM width); names as the official
`adapter.*` tensors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mgrd.audio import adapter_frames


class Adapter(nn.Module):
    """Downsample by `stride` with a conv (padding 1), then a two-layer MLP into the LLM's width."""

    def __init__(self, in_width: int, out_width: int, hidden: int = 2048, kernel_size: int = 3, stride: int = 2):
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride
        self.conv = nn.Conv1d(in_width, in_width, kernel_size, stride, padding=1)
        self.linear1 = nn.Linear(in_width, hidden)
        self.linear2 = nn.Linear(hidden, out_width)

    def forward(self, x: torch.Tensor, enc_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x `[N, P, D_enc]` (zero past each clip), enc_lens `[N]` -> `[N, P', D_llm]`, token counts `[N]`."""
        x = F.gelu(self.conv(x.transpose(1, 2))).transpose(1, 2)
        x = self.linear2(F.relu(self.linear1(x)))
        return x, adapter_frames(enc_lens, self.kernel_size, self.stride)
