"""Coherence: the suite's chains are coherent; a conclusion that disagrees with the answer, contradicting
steps, decoding loops, bad lengths and cut-off replies each fail with their reason."""

import pytest

from mgrd.data.synth import FAMILIES
from mgrd.grounding.coherence import CoherenceConfig, check_coherence, contradictions, degenerate, stated_conclusion

from .suite import SPEECH, rows

GOOD = "The first tone sits near 199 Hz and the second near 220 Hz, so the second is higher. The answer is the second."
CHOICES = ["the first", "the second"]


def test_a_grounded_chain_is_coherent():
    verdict = check_coherence(GOOD, "the second", "choice", CHOICES)
    assert verdict.passed, verdict.reason
    assert check_coherence(GOOD, "B", "choice", CHOICES).passed  # the answer as an option letter


@pytest.mark.parametrize("reasoning, answer, grader, choices, reason", [
    (GOOD, "the first", "choice", CHOICES, "the reasoning concludes 'the second' but the answer is 'the first'"),
    ("There are 4 beeps, one after another at regular gaps. The answer is 4.", "5", "numeric", None,
     "the reasoning concludes '4' but the answer is '5'"),
    ("The first tone sits near 199 Hz and the second near 220 Hz, but the first is higher.", "the first", "choice",
     CHOICES, "steps contradict each other: 'the first is higher' vs '199 Hz' and '220 Hz'"),
    ("The second tone is higher. Listening again, the first tone is higher. The answer is the first.", "the first",
     "choice", CHOICES, "steps contradict each other: 'The second tone is higher' vs 'the first tone is higher'"),
    ("I hear 3 beeps spread over the clip, then in all I count 4 beeps. The answer is 4.", "4", "numeric", None,
     "steps contradict each other: '3 beeps' vs '4 beeps'"),
    ("The level rises clearly, so it gets louder; then it is getting softer. The answer is louder.", "louder",
     "choice", ["louder", "softer"], "steps contradict each other: 'level rises' vs 'getting softer'"),
    ("The tones are near 199 Hz and 220 Hz and both are steady and clean.", "the second", "choice", CHOICES,
     "the reasoning states no conclusion"),
    ("Higher.", "the second", "choice", CHOICES, "reasoning has 1 words, outside [8, 1500]"),
    ("", "the second", "choice", CHOICES, "empty reasoning"),
    (GOOD, None, "choice", CHOICES, "no answer: cut off before </think>"),
])
def test_incoherent_chains_fail_with_their_reason(reasoning, answer, grader, choices, reason):
    verdict = check_coherence(reasoning, answer, grader, choices)
    assert not verdict.passed
    assert verdict.reason == reason


@pytest.mark.parametrize("text, reason", [
    ("the tone the tone " + "high " * 6 + "so the answer is high", "degenerate: 'high' repeated 6 times in a row"),
    ("It is high. " * 3 + "So the answer is the second.", "degenerate: the sentence 'it is high' is said 3 times"),
    ("It sounds like " + "a" * 30, "degenerate: 'a' repeated 30 times"),
    ("the first tone and the second tone " * 5, "degenerate: 79% of its word trigrams repeat earlier ones"),
])
def test_repetition_loops_fail(text, reason):
    assert degenerate(text) == reason
    assert check_coherence(text, "the second", "choice", CHOICES).reason == reason


def test_bounds_come_from_the_config():
    cfg = CoherenceConfig(min_words=3, max_words=10)
    assert check_coherence("It is higher, so the second.", "the second", "choice", CHOICES, cfg).passed
    assert "outside [3, 10]" in check_coherence(GOOD, "the second", "choice", CHOICES, cfg).reason


LEVELS = "There are 5 beeps. Taking the first as 0 dB, the others sit at +7 dB, -6 dB, +9 dB and -8 dB, "


@pytest.mark.parametrize("reasoning, answer, grader, choices, reason", [
    ("Beep 2 is at -3 dB and the first at 0 dB, so beep 2 is louder. The answer is the second.", "the second",
     "choice", CHOICES, "steps contradict each other: 'beep 2 is louder' vs '0 dB' and '-3 dB'"),
    ("The first beep is at 0 dB and the second at -3 dB, so the second is louder. The answer is the second.",
     "the second", "choice", CHOICES, "steps contradict each other: 'the second is louder' vs '0 dB' and '-3 dB'"),
    ("The first tone is at 300 Hz and the second at 450 Hz, so the first is higher. The answer is the first.",
     "the first", "choice", CHOICES, "steps contradict each other: 'the first is higher' vs '300 Hz' and '450 Hz'"),
    ("The first tone lasts about 0.30 s and the second about 0.50 s, so the first is longer. The answer is the "
     "first.", "the first", "choice", CHOICES,
     "steps contradict each other: 'the first is longer' vs '0.30 s' and '0.50 s'"),
    ("The first pattern clicks every 0.33 s and the second every 0.44 s, so the second is faster. The answer is "
     "the second.", "the second", "choice", CHOICES,
     "steps contradict each other: 'the second is faster' vs '0.33 s' and '0.44 s'"),
    (LEVELS + "so 3 of them are louder than the first. The answer is 3.", "3", "numeric", None,
     "steps contradict each other: '3 of them are louder than the first' vs the stated levels "
     "(2 of 4 above the first's 0 dB)"),
    (LEVELS + "so two beeps are louder than the first. The answer is 3.", "3", "numeric", None,
     "the reasoning concludes 'two beeps are louder than the first' but the answer is '3'"),
    ("The first beep is at 0 dB, the second at +6 dB and the third at +8 dB, so 1 of them is louder than the "
     "first. The answer is 1.", "1", "numeric", None,
     "steps contradict each other: '1 of them is louder than the first' vs the stated levels "
     "(at least 2 of 2 above the first's 0 dB)"),
])
def test_stated_numbers_that_contradict_the_conclusion_fail(reasoning, answer, grader, choices, reason):
    verdict = check_coherence(reasoning, answer, grader, choices)
    assert not verdict.passed
    assert verdict.reason == reason


@pytest.mark.parametrize("reasoning, answer, grader, choices", [
    (LEVELS + "so 2 of them are louder than the first. The answer is 2.", "2", "numeric", None),
    (LEVELS + "so two beeps are louder than the first. The answer is 2.", "2", "numeric", None),
    ("The first beep is at 0 dB, the second at +6 dB and the third at -8 dB, so 2 of them are louder than the "
     "first. The answer is 2.", "2", "numeric", None),  # some levels unstated: 2 is possible
    ("Beep 2 is at +3 dB and the first at 0 dB, so beep 2 is louder. The answer is the second.", "the second",
     "choice", CHOICES),
    ("The first pattern clicks every 0.33 s and the second every 0.44 s, so the first is faster. The answer is "
     "the first.", "the first", "choice", CHOICES),
    ("The first tone starts at 0.20 s and lasts 0.50 s; the second starts at 0.90 s and lasts 0.30 s, so the "
     "first is longer. The answer is the first.", "the first", "choice", CHOICES),
])
def test_stated_numbers_that_agree_with_the_conclusion_pass(reasoning, answer, grader, choices):
    verdict = check_coherence(reasoning, answer, grader, choices)
    assert verdict.passed, verdict.reason


def test_rules_and_hypotheticals_are_not_contradictions():
    chain = ("The chord is minor and its level rises, so it gets louder. A minor chord should get softer; "
             "this one gets louder, so it does not follow the rule. The answer is no.")
    assert contradictions(chain) == []
    assert stated_conclusion(chain) == "no"


def test_every_chain_of_the_suite_is_coherent():
    skip = {"conversation"} if SPEECH else {"conversation", "speech"}
    families = [name for name, f in FAMILIES.items() if f.kind not in skip]
    for row, _ in rows(families, "train", 3, seed=8):
        for style, chain in row["reasonings"].items():
            answer = row["meta"]["substitute_answer"] if style == "text_substitute" else row["answer"]
            verdict = check_coherence(chain, answer, FAMILIES[row["task"]].grader, row["choices"])
            assert verdict.passed, (row["id"], style, verdict.reason)
