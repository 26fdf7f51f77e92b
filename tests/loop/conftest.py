"""Fixtures of the loop tests: the tiny synthetic suite the driver and kill/resume tests run the loop on."""

import pytest

from mgrd.data.synth.writer import synthesize


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """A tiny synthetic suite: train (audio questions + text tasks), dev, test, ood -> {split: manifest path}."""
    base = tmp_path_factory.mktemp("suite")
    fams = ["pitch_compare", "higher_longer", "text_logic"]
    return {split: synthesize(base / split, n=n, seed=0, families=fams, split=split, workers=1, progress=False)
            for split, n in (("train", 12), ("dev", 6), ("test", 6), ("ood", 6))}
