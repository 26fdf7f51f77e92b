"""Tests for mgrd.data.collate: pinned padding, labels, positions and audio stacking for SFT and prompt batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mgrd.chat import encode_chat
from mgrd.data.collate import IGNORE_INDEX, collate_prompts, collate_sft
from mgrd.generate import Prompt

PAD = 9


def mel(frames: int, value: float) -> torch.Tensor:
    return torch.full((4, frames), value)


@pytest.fixture
def examples():
    """Three hand-made examples: 3 tokens + one 5-frame chunk, 5 tokens + two chunks, 2 tokens and no audio."""

    class Ex:
        def __init__(self, ids, mels, labels_mask):
            self.input_ids, self.mels, self.labels_mask = ids, mels, labels_mask

    return [
        Ex([1, 2, 3], [mel(5, 1.0)], [0, 1, 1]),
        Ex([4, 5, 6, 7, 8], [mel(2, 2.0), mel(7, 3.0)], [0, 0, 0, 1, 1]),
        Ex([10, 11], [], [0, 1]),
    ]


def test_sft_right_pads_and_masks_labels(examples):
    batch = collate_sft(examples, PAD)
    assert batch.input_ids.tolist() == [[1, 2, 3, PAD, PAD], [4, 5, 6, 7, 8], [10, 11, PAD, PAD, PAD]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
    x = IGNORE_INDEX
    assert batch.labels.tolist() == [[x, 2, 3, x, x], [x, x, x, 7, 8], [x, 11, x, x, x]]
    assert batch.input_ids.dtype == batch.labels.dtype == torch.long


def test_audio_chunks_stack_in_reading_order(examples):
    for batch in (collate_sft(examples, PAD), collate_prompts(examples, PAD)):
        assert batch.mels.shape == (3, 4, 7)
        assert batch.mel_lens.tolist() == [5, 2, 7]
        assert batch.mels[:, 0, 0].tolist() == [1.0, 2.0, 3.0]  # example 0's chunk, then example 1's two
        assert batch.mels[0, :, 5:].abs().sum() == 0 and batch.mels[1, :, 2:].abs().sum() == 0  # zero padding


def test_prompts_left_pad_with_positions_from_zero(examples):
    batch = collate_prompts(examples, PAD)
    assert batch.input_ids.tolist() == [[PAD, PAD, 1, 2, 3], [4, 5, 6, 7, 8], [PAD, PAD, PAD, 10, 11]]
    assert batch.attention_mask.tolist() == [[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 1, 1]]
    assert batch.position_ids.tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4], [0, 0, 0, 0, 1]]
    assert batch.prompt_lengths.tolist() == [3, 5, 2]


def test_text_only_batches_have_no_mels():
    batch = collate_prompts([Prompt(input_ids=[1, 2])], PAD)
    assert batch.mels is None and batch.mel_lens is None
    assert batch.to("cpu").input_ids.tolist() == [[1, 2]]


def test_chat_inputs_collate_to_their_own_ids(tok, ids):
    """Real encoded chats: each row's unpadded ids and label positions are the encoder's own."""
    tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(8000) / 16_000)).astype(np.float32)
    chat = [
        {"role": "user", "content": [{"type": "audio", "audio": tone}, {"type": "text", "text": "Which tone?"}]},
        {"role": "assistant", "content": "It is high.\n</think>\nhigh"},
    ]
    short = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok\n</think>\nok"}]
    encoded = [encode_chat(tok, chat, train=True), encode_chat(tok, short, train=True)]
    batch = collate_sft(encoded, ids.pad)
    for row, enc in enumerate(encoded):
        n = len(enc.input_ids)
        assert batch.input_ids[row, :n].tolist() == enc.input_ids
        kept = (batch.labels[row] != IGNORE_INDEX).nonzero().squeeze(-1).tolist()
        assert kept == [t for t, m in enumerate(enc.labels_mask) if m]
    assert torch.equal(batch.mels[0, :, : encoded[0].mels[0].shape[-1]], encoded[0].mels[0])


def test_bad_input_raises(examples):
    with pytest.raises(ValueError, match="at least one example"):
        collate_sft([], PAD)
    with pytest.raises(ValueError, match="at least one example"):
        collate_prompts([], PAD)
    with pytest.raises(ValueError, match="example 0 has no tokens"):
        collate_prompts([Prompt(input_ids=[])], PAD)
    with pytest.raises(ValueError, match="pad_id"):
        collate_prompts(examples, -1)
    with pytest.raises(ValueError, match="example 1 has no labels_mask"):
        collate_sft([examples[0], Prompt(input_ids=[1])], PAD)
    examples[2].labels_mask = [1]
    with pytest.raises(ValueError, match="example 2: labels_mask has 1 entries but input_ids 2"):
        collate_sft(examples, PAD)
    with pytest.raises(ValueError, match="same n_mels"):
        collate_prompts([Prompt([1], [torch.zeros(4, 3)]), Prompt([2], [torch.zeros(5, 3)])], PAD)
