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
