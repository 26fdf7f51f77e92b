"""Fixtures shared across test files: the tiny offline tokenizer and its special token ids."""

import pytest

from mgrd.tokenizer import build_tiny_tokenizer, special_token_ids


@pytest.fixture(scope="session")
def tok():
    return build_tiny_tokenizer()


@pytest.fixture(scope="session")
def ids(tok):
    return special_token_ids(tok)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module's tests (the training and loop tests use it): on a CPU shared with other
    jobs two OpenMP threads per process made a tiny training step ~10x slower (measured 0.4 s vs 5 s), and the
    numbers those tests compare do not depend on the thread count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def mixed_prompts(ids):
    """Three prompts of different lengths (left padding in a batch): one 1 s chunk, two chunks (0.5 s, 0.7 s) in
    one prompt, and none. Shared by the rollout engine's and the serving scheduler's batch == single tests."""
    import numpy as np

    from mgrd.audio import audio_token_count, log_mel
    from mgrd.generate import Prompt

    def sine(freq_hz: float, seconds: float):
        t = np.arange(int(16_000 * seconds)) / 16_000
        return log_mel((0.5 * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32))

    def block(mel):
        return [ids.audio_start] + [ids.audio_patch] * audio_token_count(mel.shape[-1]) + [ids.audio_end]

    a, b, c = sine(440, 1.0), sine(300, 0.5), sine(600, 0.7)
    return [
        Prompt([ids.bot, 10, 11] + block(a) + [12, 13, ids.eot, ids.bot, 14], [a]),
        Prompt([ids.bot, 20] + block(b) + [21] + block(c) + [22, ids.eot, ids.bot], [b, c]),
        Prompt([ids.bot, 30, 31, 32, ids.eot, ids.bot, 33], []),
    ]
