"""The acoustic-feature lexicon: pinned weights on hand-written chains, question echoes earn nothing, and on
the synthetic suite every grounded chain passes while every text-substitute chain scores low."""

import pytest

from mgrd.grounding.lexicon import LEXICON, PASS_SCORE, QUANTITY_WEIGHT, TERM_WEIGHT, lexicon_score
from mgrd.tasks import get_task

from .suite import PERCEPTION_FAMILIES, rows


def test_weights_are_pinned():
    assert (QUANTITY_WEIGHT, TERM_WEIGHT, PASS_SCORE) == (0.5, 0.25, 0.5)
    assert set(LEXICON) == {"pitch", "rhythm", "timbre", "loudness", "duration", "spectral", "prosodic"}


@pytest.mark.parametrize("text, score, quantities, terms", [
    ("The tone is near 440 Hz.", 0.75, ("440 Hz",), ("tone",)),
    ("Near 440 Hz, lasting 0.50 s.", 1.0, ("440 Hz", "0.50 s"), ("lasts",)),
    ("It has a bright timbre with strong overtones.", 0.75, (), ("timbre", "overtone", "bright")),
    ("I count three beeps.", 0.5, ("three beeps",), ("beep",)),
    ("The answer is the second.", 0.0, (), ()),
])
def test_scores_of_hand_written_chains(text, score, quantities, terms):
    got = lexicon_score(text)
    assert got.score == pytest.approx(score)
    assert got.quantities == quantities
    assert set(got.terms) == set(terms)
    assert 0.0 <= got.ratio <= 1.0


def test_echoing_the_question_earns_nothing():
    question = "Which of the two tones is higher?\nA. the first\nB. the second"
    echo = "The question asks which of the two tones is higher; the second tone is higher, so the second."
    assert lexicon_score(echo, question).score == 0.0
    assert lexicon_score(echo).score > 0  # the same words count when the question did not say them
    # the two ends of one scale are one term: "lower" answers the question's "higher"
    assert lexicon_score("The first one is lower.", question).terms == ()


def test_quoted_speech_and_reference_values_are_not_evidence():
    text = 'The speaker says "the pitch was 300 Hz and loud". A typical man speaks near 120 Hz.'
    got = lexicon_score(text, "Is the speaker's voice high or low?")
    assert got.quantities == () and got.terms == ()


def test_grounded_chains_pass_and_text_substitute_chains_score_low_on_the_suite():
    for split in ("train", "ood"):
        for row, _ in rows(PERCEPTION_FAMILIES, split, 3, seed=21):
            question = get_task(row["task"]).question_text(row)
            grounded = lexicon_score(row["reasonings"]["grounded"], question)
            substitute = lexicon_score(row["reasonings"]["text_substitute"], question)
            assert grounded.score >= PASS_SCORE, (row["id"], grounded)
            assert substitute.score <= 0.25, (row["id"], substitute)
            assert grounded.ratio > substitute.ratio
