"""Self-cognition: replies denying the audio fail, ordinary chains and quoted speech pass."""

import pytest

from mgrd.grounding.selfcog import check_selfcog

from .suite import PERCEPTION_FAMILIES, rows


@pytest.mark.parametrize("text", [
    "I cannot hear audio, so I will guess. The answer is the first.",
    "I'm unable to listen to the recording.",
    "As a text-based AI, I have no access to sound. The answer is 3.",
    "As an AI language model I can only guess.",
    "I can only process text, so please describe the sound for me.",
    "No audio was provided with the question.",
    "I don't have access to the audio file.",
    "Sorry, I can't play audio clips.",
    "I am not able to hear the clip, but tones like this are usually high.",
    "I don't have ears.",
])
def test_denials_fail_and_name_the_phrase(text):
    verdict = check_selfcog(text)
    assert not verdict.passed
    assert verdict.reason.startswith("denies the audio (")


@pytest.mark.parametrize("text", [
    "I can hear two tones; the second is higher.",
    'The speaker says "I cannot hear you, can you repeat that?" in a high voice.',
    "The model of the sound is a square wave near 300 Hz.",
    "As a listener I notice the level falls by 10 dB.",
])
def test_ordinary_chains_pass(text):
    assert check_selfcog(text).passed


def test_every_chain_of_the_suite_passes():
    for row, _ in rows(PERCEPTION_FAMILIES, "train", 2, seed=4):
        for chain in row["reasonings"].values():
            assert check_selfcog(chain).passed, chain
