"""Fixtures shared across test files: the tiny offline tokenizer and its special token ids."""

import pytest

from mgrd.tokenizer import build_tiny_tokenizer, special_token_ids


@pytest.fixture(scope="session")
def tok():
    return build_tiny_tokenizer()


@pytest.fixture(scope="session")
def ids(tok):
    return special_token_ids(tok)
