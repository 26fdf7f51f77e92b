"""Shared fixtures for the eval tests: one tiny random-weight checkpoint and one small synthetic test suite."""

import pytest


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    from mgrd.models.presets import init_checkpoint

    return init_checkpoint("tiny", tmp_path_factory.mktemp("eval") / "tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_suite(tmp_path_factory):
    """Four test-split items, two each of pitch_compare and beep_count."""
    from mgrd.data.synth.writer import synthesize

    return synthesize(tmp_path_factory.mktemp("eval") / "suite", n=4, seed=0, families=["pitch_compare", "beep_count"],
                      split="test", progress=False).parent
