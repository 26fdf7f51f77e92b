"""One collator for encoded chats: right-padded SFT batches with labels, left-padded generation prompts.

Both take what `mgrd.chat.encode_chat` returns (`ChatInputs`: token ids with the audio blocks expanded, one
`[n_mels, L]` log-mel feature per audio chunk, and for training a `labels_mask`) or anything with the same
`input_ids` and `mels` (`mgrd.generate.Prompt`). The audio features are computed once, by the chat encoder, and
only stacked here: every chunk of every example, in reading order, goes into one right-padded `mels` tensor,
which is the order in which `AudioReasoner.forward` fills the `<audio_patch>` runs.

This module pads and stacks on the CPU; it tokenizes nothing, checks no placeholder counts (the model's forward
does) and moves nothing to a device (`SFTBatch.to`, `PromptBatch.to`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Protocol, Sequence

import torch

from mgrd.audio import pad_mels

IGNORE_INDEX = -100  # label value the loss skips (torch.nn.functional.cross_entropy's default ignore_index)


class PromptLike(Protocol):
    """Anything with a prompt's token ids and its audio chunks (`mgrd.chat.ChatInputs`, `mgrd.generate.Prompt`)."""

    input_ids: Sequence[int]
    mels: Sequence[torch.Tensor]


class _Movable:
    """`to(device)` for a dataclass of tensors (None fields stay None)."""

    def to(self, device: torch.device | str):
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        moved = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in moved.items()}
        return type(self)(**moved)


@dataclass
class SFTBatch(_Movable):
    """A right-padded training batch.

    Attributes:
        input_ids: `[B, T]` long, each row padded on the right with `pad_id`.
        attention_mask: `[B, T]` long, 1 on real tokens.
        labels: `[B, T]` long, the token id where `labels_mask` is 1, `IGNORE_INDEX` elsewhere (and on padding);
            aligned with `input_ids` (the loss shifts: position t predicts `labels[t + 1]`).
        mels: `[N, n_mels, L_max]` every audio chunk of the batch in reading order, right-padded; None without audio.
        mel_lens: `[N]` long, frames per chunk; None without audio.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    mels: torch.Tensor | None
    mel_lens: torch.Tensor | None


@dataclass
class PromptBatch(_Movable):
    """A left-padded batch of generation prompts.

    Attributes:
        input_ids: `[B, T]` long, each row padded on the left with `pad_id`.
        attention_mask: `[B, T]` long, 1 on real tokens.
        position_ids: `[B, T]` long, 0 at each row's first real token (`cumsum(mask) - 1`, 0 on the padding), so
            padding does not shift a prompt's rotary positions.
        mels: `[N, n_mels, L_max]` every audio chunk in reading order, right-padded; None without audio.
        mel_lens: `[N]` long, frames per chunk; None without audio.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    mels: torch.Tensor | None
    mel_lens: torch.Tensor | None

    @property
    def prompt_lengths(self) -> torch.Tensor:
        """`[B]` real tokens per prompt."""
        return self.attention_mask.sum(-1)


def collate_sft(examples: Sequence[PromptLike], pad_id: int) -> SFTBatch:
    """Right-pad encoded training chats into one batch with labels.

    Args:
        examples: B `ChatInputs` encoded with `train=True` (each has a `labels_mask` as long as its `input_ids`).
        pad_id: the id written into the padding (never attended to, never a label).
    Returns:
        An `SFTBatch`; see its attributes for shapes.
    Raises:
        ValueError: no examples, an empty example, a missing `labels_mask` or one of another length.
    """
    _check(examples, pad_id)
    for i, ex in enumerate(examples):
        mask = getattr(ex, "labels_mask", None)
        if mask is None:
            raise ValueError(f"example {i} has no labels_mask: encode it with encode_chat(..., train=True)")
        if len(mask) != len(ex.input_ids):
            raise ValueError(f"example {i}: labels_mask has {len(mask)} entries but input_ids {len(ex.input_ids)}")
    ids, attention = _pad([list(ex.input_ids) for ex in examples], pad_id, left=False)
    label_mask, _ = _pad([list(ex.labels_mask) for ex in examples], 0, left=False)
    labels = ids.masked_fill(label_mask == 0, IGNORE_INDEX)
    mels, mel_lens = _stack_mels(examples)
    return SFTBatch(input_ids=ids, attention_mask=attention, labels=labels, mels=mels, mel_lens=mel_lens)


def collate_prompts(prompts: Sequence[PromptLike], pad_id: int) -> PromptBatch:
    """Left-pad encoded prompts into one generation batch.

    Args:
        prompts: B prompts (`ChatInputs` or `Prompt`): token ids with audio blocks, and their mels.
        pad_id: the id written into the padding (masked out, so its value never reaches attention).
    Returns:
        A `PromptBatch`; see its attributes for shapes.
    Raises:
        ValueError: no prompts or an empty prompt.
    """
    _check(prompts, pad_id)
    ids, attention = _pad([list(p.input_ids) for p in prompts], pad_id, left=True)
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    mels, mel_lens = _stack_mels(prompts)
    return PromptBatch(input_ids=ids, attention_mask=attention, position_ids=positions, mels=mels, mel_lens=mel_lens)


def _check(examples: Sequence[PromptLike], pad_id: int) -> None:
    if len(examples) == 0:
        raise ValueError("collate needs at least one example")
    if not isinstance(pad_id, int) or pad_id < 0:
        raise ValueError(f"pad_id must be a non-negative token id, got {pad_id!r}")
    for i, ex in enumerate(examples):
        if len(ex.input_ids) == 0:
            raise ValueError(f"example {i} has no tokens")


def _pad(rows: list[list[int]], value: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """`[B, T]` long rows padded with `value` on the left or right, and the `[B, T]` long mask of real entries."""
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        span = slice(width - len(r), width) if left else slice(0, len(r))
        out[i, span] = torch.tensor(r, dtype=torch.long)
        mask[i, span] = 1
    return out, mask


def _stack_mels(examples: Sequence[PromptLike]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    chunks = [m for ex in examples for m in ex.mels]
    if not chunks:
        return None, None
    bins = {tuple(m.shape[:-1]) for m in chunks}
    if len(bins) != 1 or any(m.dim() != 2 for m in chunks):
        raise ValueError(f"every audio chunk must be [n_mels, L] with the same n_mels, got shapes {sorted(bins)}")
    return pad_mels([m.detach().cpu() for m in chunks])
