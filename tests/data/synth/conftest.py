"""Fixtures for the synth tests: the shared draw cache lives only as long as this test package."""

import pytest

from . import draws


@pytest.fixture(scope="package", autouse=True)
def _release_drawn_items():
    yield
    draws.clear()
