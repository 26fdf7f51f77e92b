"""`RolloutBatch`: K sampled completions per prompt as tensors, the form a trainer consumes.

Rows are prompt-major: row `r` is sample `r % K` of prompt `r // K` (`group_ids[r]`). The prompt side is
left-padded (as it was fed to the model), the response side right-padded, so `cat([prompt_ids, response_ids])`
is each row's full sequence with padding only at its two ends. This module holds data only; `engine.py` fills it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

import torch

FinishReason = Literal["stop", "length"]


@dataclass
class RolloutBatch:
    """R = B x K sampled completions.

    Attributes:
        prompt_ids: `[R, P]` long, left-padded prompts (each prompt's K rows identical).
        prompt_mask: `[R, P]` long, 1 on real prompt tokens.
        response_ids: `[R, T]` long, generated ids right-padded with the pad id; a stop id that ended a row is its
            last real token.
        response_mask: `[R, T]` long, 1 on generated tokens.
        logprobs: `[R, T]` float32 log-probability of each token under the distribution it was drawn from (after
            repetition penalty, audio-id ban, temperature, top-k and top-p; for greedy decoding, after the penalty
            and ban at temperature 1, as vLLM's `processed_logprobs`); 0 on padding.
        policy_logprobs: `[R, T]` float32 `log_softmax` of the raw logits (temperature 1, no filter) at each
            token: what a trainer's teacher-forced forward gives; 0 on padding.
        group_ids: `[R]` long, the prompt index of each row.
        finish_reasons: R × "stop" (a stop id was generated) or "length" (the token budget ran out).
        texts: R decoded responses (special tokens skipped); "" when no tokenizer was given.
        mels: `[N_R, n_mels, L]` the prompts' audio chunks repeated for each row, in reading order of the R
            rows (what `model(input_ids, attention_mask, mels, mel_lens)` needs); None without audio.
        mel_lens: `[N_R]` frames per chunk; None without audio.
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    logprobs: torch.Tensor
    policy_logprobs: torch.Tensor
    group_ids: torch.Tensor
    finish_reasons: list[FinishReason]
    texts: list[str]
    mels: torch.Tensor | None = None
    mel_lens: torch.Tensor | None = None

    @property
    def num_rows(self) -> int:
        return self.response_ids.shape[0]

    @property
    def num_prompts(self) -> int:
        return int(self.group_ids[-1]) + 1

    @property
    def num_samples(self) -> int:
        """K, samples per prompt."""
        return self.num_rows // self.num_prompts

    @property
    def response_lengths(self) -> torch.Tensor:
        """`[R]` generated tokens per row."""
        return self.response_mask.sum(-1)

    @property
    def input_ids(self) -> torch.Tensor:
        """`[R, P + T]` prompt then response: the sequence a teacher-forced forward scores."""
        return torch.cat([self.prompt_ids, self.response_ids], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        """`[R, P + T]` 1 on real tokens of `input_ids`."""
        return torch.cat([self.prompt_mask, self.response_mask], dim=1)

    @property
    def position_ids(self) -> torch.Tensor:
        """`[R, P + T]` rotary positions of `input_ids`: 0 at each row's first real token, as generation used."""
        return (self.attention_mask.cumsum(-1) - 1).clamp(min=0)

    def row_tokens(self, r: int) -> list[int]:
        """Row `r`'s generated ids, without padding."""
        return self.response_ids[r, : int(self.response_lengths[r])].tolist()

    def to(self, device: torch.device | str) -> "RolloutBatch":
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        moved = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in moved.items()}
        return RolloutBatch(**moved)
