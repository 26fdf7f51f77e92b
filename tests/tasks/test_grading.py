"""Pinned cases for answer extraction and the choice / numeric / exact graders."""

import functools

import pytest

from mgrd.tasks.grading import (
    GRADERS,
    extract_answer,
    find_numbers,
    grade as grade_row,
    grade_choice,
    grade_exact,
    grade_numeric,
    resolve_choice,
)

TWO = ["the first", "the second"]
FOUR = ["Man", "Woman", "Child", "Robot"]


@pytest.mark.parametrize("response, expected", [
    ("<think>\nreasoning\n</think>\nthe second", "the second"),
    ("reasoning only after a prefilled think\n</think>\n\nB", "B"),
    ("<think>a</think>first</think>second", "first</think>second"),  # the FIRST </think> splits
    ("<think>\nstill thinking and then the length cap hit", None),  # truncated
    ("  plain answer, no think block \n", "plain answer, no think block"),
    ("<think></think>", ""),
    (None, None),
])
def test_extract_answer(response, expected):
    assert extract_answer(response) == expected


def test_extract_answer_require_think_treats_unclosed_prefilled_think_as_truncated():
    assert extract_answer("reasoning that never ends", require_think=True) is None
    assert extract_answer("reasoning</think>\nB", require_think=True) == "B"


@pytest.mark.parametrize("response", [
    "the second", "The Second.", "  SECOND!! ", "B", "b", "(B)", "B.", "B)", "**B**", "Option B", "choice (b)",
    "The answer is B.", "The answer is: B", "Final answer: (B)", "The answer is (B). The first tone is lower.",
    "Answer: the second",
    "B. the second", "(B) The second", "It is the second one.", "\\boxed{B}",
    "The second tone is higher than the first, so the answer is the second.",
    "<think>the first is 300 Hz, the second 500 Hz</think>\nthe second",
])
def test_grade_choice_accepts_the_right_choice_in_any_form(response):
    assert grade_choice(response, "the second", TWO) == 1.0


@pytest.mark.parametrize("response", [
    "the first", "A", "(A)", "The answer is A.",
    "The second tone is higher than the first.",  # names both choices: ambiguous
    "either the first or the second",
    "A. the second",  # letter and text disagree
    "C",  # no option C
    "", "<think>the second</think>", "<think>the second, surely",  # empty / truncated
    "I cannot hear audio.",
])
def test_grade_choice_rejects_wrong_ambiguous_or_missing_answers(response):
    assert grade_choice(response, "the second", TWO) == 0.0


@pytest.mark.parametrize("response, expected", [
    ("B)the second", "second"), ("(B)the second", "second"), ("**B.** the second", "second"),
    ("**B)** the second", "second"), ("`B`", "second"),
    ("B)the first", None), ("**B)** the first", None), ("**B.** the first", None),  # letter and text disagree
])
def test_letter_markup_glued_or_in_bold_is_still_a_letter(response, expected):
    assert resolve_choice(response, TWO) == expected


def test_grade_choice_prefers_the_longest_named_choice():
    choices = ["present", "not present"]
    assert grade_choice("It is not present.", "not present", choices) == 1.0
    assert grade_choice("It is not present.", "present", choices) == 0.0
    assert grade_choice("present", "present", choices) == 1.0


def test_grade_choice_articles_are_not_option_letters():
    # "A man" must not read as option A; the lone letter A is option A
    choices = ["Woman and child", "A man and a child"]
    assert grade_choice("A man and a child", "A man and a child", choices) == 1.0
    assert grade_choice("A", "Woman and child", choices) == 1.0
    assert resolve_choice("a man and a child", choices) == "man and child"


def test_grade_choice_numbers_as_choices_and_duplicates():
    assert grade_choice("There are 2 speakers.", "2", ["1", "2", "3", "4"]) == 1.0
    assert grade_choice("D", "Robot", FOUR) == 1.0
    # the same choice listed twice is still one choice, not an ambiguity
    assert grade_choice("cough", "cough", ["laugh", "cough", "Cough"]) == 1.0


def test_grade_choice_without_choices_is_exact_match():
    assert grade_choice("Valid.", "valid", None) == 1.0
    assert grade_choice("The answer is yes.", "Yes", None) == 1.0
    assert grade_choice("not valid", "valid", None) == 0.0


@pytest.mark.parametrize("response, answer", [
    ("12", "12"), ("The answer is 12.", "12"), ("The answer is: 12", "12"), ("7 + 5 = 12", "12"), ("twelve", "12"),
    ("1,234", "1234"), ("It costs 1,234.50 dollars", "1234.5"), ("-5", "-5"), ("\u22125", "-5"),
    ("negative 7", "-7"), ("3/4", "0.75"), ("0.75", "3/4"), ("12.50", "12.5"), (".5", "0.5"),
    ("twenty-one apples", "21"), ("\\boxed{1,002}", "1002"), ("The answer is 70,000 dollars", "#### 70000"),
    ("The answer is 12 because 3 times 4 is 12", "12"), ("The answer is 12, since 3 times 4", "12"),
    ("<think>5 + 7 is 13? no, 12</think>\nYou have 12 apples.", "You have 12 apples now."),
    ("1e3", "1000"), (12, 12.0),
])
def test_grade_numeric_matches(response, answer):
    assert grade_numeric(str(response), answer) == 1.0


@pytest.mark.parametrize("response, answer", [
    ("13", "12"), ("He earns 42 dollars every 2 hours", "42"),  # the LAST number counts
    ("12.001", "12"), ("", "12"), ("no idea", "12"), ("<think>it is 12", "12"), ("5-3", "-3"),
])
def test_grade_numeric_rejects(response, answer):
    assert grade_numeric(response, answer) == 0.0


@pytest.mark.parametrize("response, answer, verdict", [
    ("999999", "1000000", 0.0), ("1,000,001", "1000000", 0.0), ("1e6", "1000000", 1.0),  # whole: exact
    ("1000000.5", "1000000", 1.0),  # fractional: within rel_tol 1e-6
    ("-2000000", "-1999999", 0.0),
])
def test_whole_numbers_compare_exactly_fractions_within_tolerance(response, answer, verdict):
    assert grade_numeric(response, answer) == verdict


def test_grade_numeric_tolerance_is_configurable():
    assert grade_numeric("3.14", "3.14159", rel_tol=1e-3) == 1.0
    assert grade_numeric("3.14", "3.14159") == 0.0
    assert grade_numeric("0.0000001", "0") == 1.0  # absolute tolerance 1e-6
    assert grade_numeric("10.5", "10", abs_tol=0.5) == 1.0


def test_grade_numeric_reference_without_number_is_an_error():
    with pytest.raises(ValueError, match="no number"):
        grade_numeric("12", "unknown")


def test_find_numbers_order_and_forms():
    assert find_numbers("from 3 to -4.5, then 1,000 and 2/5 of seven") == [3, -4.5, 1000, 0.4, 7]
    assert find_numbers("range 3-5") == [3, 5]  # a dash between numbers is not a sign


def test_grade_exact():
    assert grade_exact("Invalid.", "invalid") == 1.0
    assert grade_exact("invalid", "valid") == 0.0


def test_grade_requires_the_think_block_to_close_by_default():
    row = {"task": "pitch_compare", "choices": ["the first", "the second"], "answer": "the second"}
    truncated = "The first tone sits near 300 Hz and the answer is the second"  # cut off before </think>
    assert grade_row(row, truncated) == 0.0
    assert grade_row(row, truncated + "\n</think>\nthe second") == 1.0
    assert grade_row(row, "<think>\nthe second</think>\nthe first") == 0.0  # the answer counts, not the chain
    assert grade_row(row, "the second", require_think=False) == 1.0


def test_grade_dispatches_on_family_choices_and_answer_type():
    grade = functools.partial(grade_row, require_think=False)  # bare answers, no think block
    # a known family: its grader (numeric) even though the answer is not a bare number
    assert grade({"task": "conversation", "answer": "You have 6 stickers now."}, "6") == 1.0
    assert grade({"task": "voice_pitch", "answer": "high", "choices": ["high", "low"]}, "A") == 1.0
    # unknown tasks: choices -> choice, numeric answer -> numeric, else exact
    assert grade({"task": "mmau", "answer": "Man", "choices": FOUR}, "A. Man") == 1.0
    assert grade({"task": "spoken_mqa", "answer": "1002"}, "\\boxed{1,002}") == 1.0
    assert grade({"task": "bba", "answer": "valid"}, "The answer is valid.") == 1.0
    assert grade({"task": "bba", "answer": "valid"}, "invalid") == 0.0
    assert set(GRADERS) >= {"choice", "numeric"}
