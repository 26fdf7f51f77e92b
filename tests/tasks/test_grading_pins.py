"""Grading verdicts a benchmark score depends on, pinned, and choice/number round trips over their domain.

The pins name the rule each one holds: the LAST "the answer is" wins, an option letter followed by another
choice's text is a contradiction (never that letter), a lone letter is checked against the options as SHOWN
(duplicates included, so letters keep their positions), and the numeric grader's default tolerance is
1e-6 relative and 1e-6 absolute. The round trips render a choice (or a number) in every accepted style and
grade it back: right for the rendered choice, wrong for every other. They do not reproduce any benchmark's
official scorer.
"""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mgrd.tasks.grading import grade_choice, grade_exact, grade_numeric, normalize, resolve_choice

PROPERTY = settings(max_examples=150, deadline=None, database=None)
TWO = ["the first", "the second"]


# ---------------------------------------------------------------------------------------------- pins


@pytest.mark.parametrize("response, answer", [
    ("The answer is A. Wait, the second tone is higher, so the answer is B.", "the second"),
    ("Answer: the first. On reflection the answer is the second.", "the second"),
    ("The answer is B. Hmm, no. Final answer: (A)", "the first"),
])
def test_the_last_answer_is_wins_for_choices(response, answer):
    """Kills taking the first 'the answer is' instead of the last."""
    assert grade_choice(response, answer, TWO) == 1.0
    other = TWO[1 - TWO.index(answer)]
    assert grade_choice(response, other, TWO) == 0.0


@pytest.mark.parametrize("response, value", [
    ("The answer is -5.", -5), ("The answer is -0.25", -0.25), ("The final answer is -1,000.", -1000),
    ("Answer: -2", -2), ("answer = -7", -7), ("The answer is - 4", 4),  # a spaced dash is a separator
])
def test_a_negative_answer_after_the_trigger_keeps_its_sign(response, value):
    """Was a bug: the trigger's optional "-" separator ate the minus sign ("the answer is -5" graded as 5)."""
    assert grade_numeric(response, str(value)) == 1.0
    assert grade_numeric(response, str(-value)) == 0.0


def test_the_last_answer_is_wins_for_numbers_and_exact():
    assert grade_numeric("The answer is 3. Recounting, the answer is 5.", "5") == 1.0
    assert grade_numeric("The answer is 3. Recounting, the answer is 5.", "3") == 0.0
    assert grade_exact("The answer is no. Listening again, the answer is yes.", "yes") == 1.0
    assert grade_exact("The answer is no. Listening again, the answer is yes.", "no") == 0.0


@pytest.mark.parametrize("lead", ["B.", "B)", "(B)", "B:", "Option B.", "option (B)", "The answer is B)",
                                  "Answer: (B)"])
def test_letter_followed_by_another_choices_text_is_not_that_letter(lead):
    """'B) the first' contradicts itself: neither B nor A (a grader must never pick for the model)."""
    assert resolve_choice(f"{lead} the first", TWO) is None
    assert grade_choice(f"{lead} the first", "the second", TWO) == 0.0
    assert grade_choice(f"{lead} the first", "the first", TWO) == 0.0
    assert grade_choice(f"{lead} the second", "the second", TWO) == 1.0  # letter and text agree


@pytest.mark.parametrize("response", ["B)the first", "**B)** the first", "**B.** the first", "`B)` the first"])
def test_glued_or_bold_letter_with_another_choices_text_is_not_that_choice(response):
    """Was a bug: a letter glued to its text, or in markup, was dropped and the text's choice taken."""
    assert resolve_choice(response, TWO) is None


def test_lone_letter_is_checked_against_the_shown_options_not_the_distinct_ones():
    """Kills indexing letters against the de-duplicated options: C is the third option as shown."""
    shown = ["cough", "Cough", "laugh"]  # two options normalise to the same text
    assert resolve_choice("C", shown) == "laugh"
    assert grade_choice("C", "laugh", shown) == 1.0
    assert grade_choice("The answer is (C).", "laugh", shown) == 1.0
    assert grade_choice("D", "laugh", shown) == 0.0  # past the shown options: no choice at all


@pytest.mark.parametrize("response, reference, verdict", [
    ("1000.0005", "1000", 1.0),  # |diff| 5e-4 <= 1e-6 * 1000
    ("1000.002", "1000", 0.0),  # 2e-3 > 1e-3
    ("0.0000005", "0", 1.0),  # 5e-7 <= the absolute 1e-6
    ("0.000002", "0", 0.0),  # 2e-6 > 1e-6
    ("-3.0000001", "-3", 1.0),
    ("12.0001", "12", 0.0),
])
def test_default_numeric_tolerance_is_pinned(response, reference, verdict):
    """Kills loosening (or tightening) either default tolerance of grade_numeric."""
    assert grade_numeric(response, reference) == verdict


# ---------------------------------------------------------------------------------------------- round trips

WORDS = ["dog", "bell", "rain", "piano", "engine", "crowd", "violin", "whistle", "siren", "thunder", "drum",
         "train", "bird", "wind", "clock", "motor", "rising", "falling", "steady", "two", "three", "seven",
         "loud", "quiet", "low", "high", "short", "long"]


def _nested(texts: list[str]) -> bool:
    """True when one option's words appear inside another's ("dog" in "loud dog": the longest-name rule)."""
    norms = [f" {normalize(t)} " for t in texts]
    return any(a != b and a in b for a in norms for b in norms)


# 2-5 options of 1-3 words, distinct after normalisation, none inside another
CHOICE_SETS = st.lists(
    st.lists(st.sampled_from(WORDS), min_size=1, max_size=3, unique=True).map(" ".join),
    min_size=2, max_size=5, unique_by=normalize,
).filter(lambda texts: not _nested(texts))


STYLES = [
    "{text}", "{Text}.", "It is {text}.", "The answer is {text}.", "Answer: {text}", "{letter}", "({letter})",
    "{letter}.", "{letter})", "**{letter}**", "Option {letter}", "choice ({lower})", "The answer is {letter}.",
    "The answer is ({letter}).", "Final answer: {letter}", "\\boxed{{{letter}}}", "{letter}. {text}",
    "({letter}) {text}", "{letter}) {text}",
]


@PROPERTY
@given(CHOICE_SETS, st.data(), st.sampled_from(STYLES), st.booleans())
def test_choice_round_trip(choices, data, style, with_think):
    """Render option i in each accepted style; it grades right for option i and wrong for every other."""
    i = data.draw(st.integers(0, len(choices) - 1))
    letter = string.ascii_uppercase[i]
    answer = style.format(text=choices[i], Text=choices[i].capitalize(), letter=letter, lower=letter.lower())
    if with_think:  # reasoning may name every option; only the answer after </think> counts
        answer = f"<think>\nI compare {' and '.join(choices)}.\n</think>\n{answer}"
    for j, choice in enumerate(choices):
        assert grade_choice(answer, choice, choices) == float(i == j), (answer, choice)


def _words(n: int) -> str:
    units = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen " \
            "sixteen seventeen eighteen nineteen".split()
    tens = "twenty thirty forty fifty sixty seventy eighty ninety".split()
    return units[n] if n < 20 else tens[n // 10 - 2] + ("" if n % 10 == 0 else "-" + units[n % 10])


NUMBER_STYLES = ["{n}", "The answer is {n}.", "There are {n} beeps.", "\\boxed{{{n}}}", "Answer: {n}", "{sep}"]


@PROPERTY
@given(st.integers(-2_000_000, 2_000_000), st.sampled_from(NUMBER_STYLES))
def test_integer_round_trip(n, style):
    """Whole numbers compare exactly: 999,999 is not 1,000,000 (the relative tolerance would say it is)."""
    answer = style.format(n=n, sep=f"{n:,}")
    assert grade_numeric(answer, str(n)) == 1.0, answer
    assert grade_numeric(answer, str(n + 1)) == 0.0, answer


@PROPERTY
@given(st.integers(0, 99), st.booleans())
def test_number_words_round_trip(n, negative):
    answer = ("negative " if negative else "") + _words(n)
    value = -n if negative else n
    assert grade_numeric(f"I hear {answer} beeps.", str(value)) == 1.0, answer
    assert grade_numeric(f"I hear {answer} beeps.", str(value + 1)) == 0.0, answer


@PROPERTY
@given(st.integers(-99_999, 99_999), st.integers(1, 4))
def test_decimal_round_trip(cents, places):
    value = cents / 10**places
    text = f"{value:.{places}f}"
    assert grade_numeric(f"The answer is {text}.", repr(value)) == 1.0, text
    assert grade_numeric(f"The answer is {text}.", repr(value + 10 ** -places)) == 0.0, text


# ---------------------------------------------------------------------------------------------- mutmut survivors
# Found by a mutmut 3.8.1 run over grading.py with test_grading.py + this file (see tests/README.md).


def test_thousands_separators_do_not_change_a_choice():
    assert grade_choice("1000", "1,000", ["1,000", "2,000"]) == 1.0
    assert grade_choice("The answer is 2000.", "1,000", ["1,000", "2,000"]) == 0.0


def test_empty_or_missing_answers_score_zero_for_every_grader():
    for response in ["", "<think>\nall reasoning\n</think>\n", None]:
        assert grade_exact(response, "yes") == 0.0
        assert grade_choice(response, "the second", TWO) == 0.0
        assert grade_numeric(response, "3") == 0.0


def test_quoted_answers_resolve():
    assert grade_choice("'B'", "the second", TWO) == 1.0
    assert grade_choice('The answer is "the second".', "the second", TWO) == 1.0


@pytest.mark.parametrize("response, reference, verdict", [
    ("The answer is 1/0.", "1", 0.0),  # a zero denominator is no number, never an error
    ("6/1", "6", 1.0),
    ("\\boxed{2 + 3 = 5}", "5", 1.0),  # boxed: its last number
    ("The answer is 5, not 7.", "5", 1.0),  # after the trigger: its first number
])
def test_fractions_boxes_and_triggers_pick_the_committed_number(response, reference, verdict):
    assert grade_numeric(response, reference) == verdict


def test_an_option_that_normalises_to_nothing_is_ignored():
    choices = ["dog", "cat", "..."]  # "..." has no words left after normalisation
    assert grade_choice("dog", "dog", choices) == 1.0
    assert grade_choice("The cat.", "cat", choices) == 1.0
