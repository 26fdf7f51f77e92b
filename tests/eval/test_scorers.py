"""The official scorers' verdicts on hand-made outputs, pinned to what the official code gives (benchmarks.md §7),
with the quirks off (default) and on (`exact_bugs`), and the normalised score beside them."""

import pytest

from mgrd.eval.benchmarks import ScoreOptions, get_benchmark
from mgrd.eval.benchmarks.mmau import letter_to_choice, string_match
from mgrd.eval.benchmarks.mmsu import parse_letter
from mgrd.eval.benchmarks.spoken_mqa import clean_prediction, delete_extra_zero
from mgrd.eval.judges import bba_prompt, parse_correct, parse_score

from . import fixtures as fx

MMAU = {r["id"]: r for r in fx.MMAU_ROWS}
DEFAULT, BUGS = ScoreOptions(), ScoreOptions(exact_bugs=True)


def _mmau_fields(item_id):
    row = MMAU[item_id]
    return {"answer": row["answer"], "choices": row["choices"], "categories": {}}


@pytest.mark.parametrize("item_id, output, official", [
    ("f-001", "A. Man", True),
    ("f-001", "A", False),
    ("f-003", "A. Woman and child", False),  # "a" is a token of the distractor "A man and a child"
    ("f-003", "Woman and child", True),
    ("f-004", "No", False),
])
def test_mmau_string_match_pins(item_id, output, official):
    row = MMAU[item_id]
    assert string_match(row["answer"], output, row["choices"]) is official


def test_mmau_official_strips_think_and_exact_bugs_reads_raw_output():
    fields = [_mmau_fields("f-001")]
    raw = "<think>\nit sounds like a woman, no, a man\n</think>\nMan"
    assert get_benchmark("mmau").score(fields, [raw], DEFAULT)[0].official == 1.0
    assert get_benchmark("mmau").score(fields, [raw], BUGS)[0].official == 0.0  # "woman" is a distractor token


def test_mmau_normalised_maps_letters_and_missing_output_leaves_the_official_denominator():
    fields = [_mmau_fields("f-001"), _mmau_fields("f-003"), _mmau_fields("f-004")]
    outputs = ["x\n</think>\nA", "x\n</think>\nA. Woman and child", None]
    v = get_benchmark("mmau").score(fields, outputs, DEFAULT)
    assert [x.official for x in v] == [0.0, 0.0, None]
    assert [x.normalised for x in v] == [1.0, 1.0, None]
    assert letter_to_choice("(B)", ["x", "y"]) == "y" and letter_to_choice("Z", ["x", "y"]) == "Z"


def test_mmau_output_cut_off_in_think_is_wrong_not_excluded():
    v = get_benchmark("mmau").score([_mmau_fields("f-001")], ["the answer is Man but I keep thinking"], DEFAULT)[0]
    assert (v.official, v.normalised, v.parsed) == (0.0, 0.0, None)


MMSU_FIELDS = {"answer": "cough", "choices": ["laugh", "burp", "cough", "yawn"],
               "letters": {"A": "laugh", "B": "burp", "C": "cough", "D": "yawn"}, "categories": {}}


@pytest.mark.parametrize("response, letter", [
    ("C", "C"), ("The answer is C.", "C"), ("Based on the audio it is C", "B"), ("cough", None), ("", None),
    ("None", None), ("After listening: C", "A"),
])
def test_mmsu_official_parser_pins(response, letter):
    assert parse_letter(response) == letter


def test_mmsu_current_scorer_counts_empty_as_wrong_and_skips_unparseable():
    outputs = ["</think>\nC", "</think>\nThe answer is C.", "</think>\nBased on the audio it is C",
               "</think>\ncough", "</think>\n"]
    v = get_benchmark("mmsu").score([MMSU_FIELDS] * 5, outputs, ScoreOptions(require_think=False))
    assert [x.official for x in v] == [1.0, 1.0, 0.0, None, 0.0]
    assert [x.normalised for x in v] == [1.0, 1.0, 0.0, 1.0, 0.0]


def test_mmsu_legacy_scorer_reuses_the_previous_letter_after_an_empty_response():
    outputs = ["</think>\n", "</think>\nC", "</think>\nNone", "</think>\nB", "</think>\n"]
    v = get_benchmark("mmsu").score([MMSU_FIELDS] * 5, outputs, BUGS)
    # first empty: the legacy script crashes (excluded); then C; "None" reuses C; B; empty reuses B
    assert [x.official for x in v] == [None, 1.0, 1.0, 0.0, 0.0]


@pytest.mark.parametrize("prediction, cleaned", [
    ("so the total is \\boxed{1,002}.", "1002"),
    ("The answer is 70,000 dollars", "70000"),
    ("He earns 42 dollars every 2 hours", "2"),
    ("The answer is: $70,000", "70000"),
    ("7.50", "7.5"),
    ("nothing numeric", "empty"),
    ("The answer is 3 apples. The answer is 4.\n\nThe answer is 9", "4"),  # repeated trigger: first paragraph
])
def test_spoken_mqa_cleaner_pins(prediction, cleaned):
    assert clean_prediction(prediction) == cleaned


def test_delete_extra_zero():
    assert [delete_extra_zero(s) for s in ("7.50", "70000.0", "3/4", "-2", "abc", "5.")] == \
        ["7.5", "70000", "0.75", "-2", "abc", "5"]


def test_spoken_mqa_official_and_exact_bugs_stale_prediction():
    fields = [{"answer": "1002", "categories": {"split": "short_digit"}},
              {"answer": "70000", "categories": {"split": "multi_step_reasoning"}},
              {"answer": "70000", "categories": {"split": "multi_step_reasoning"}}]
    outputs = ["x</think>\n\\boxed{1,002}", "x</think>\nThe answer is 70,000 dollars", "still thinking"]
    mqa = get_benchmark("spoken_mqa")
    assert [v.official for v in mqa.score(fields, outputs, DEFAULT)] == [1.0, 1.0, 0.0]
    # the missing answer reuses the previous cleaned prediction, "70000", and scores right
    assert [v.official for v in mqa.score(fields, outputs, BUGS)] == [1.0, 1.0, 1.0]
    first = mqa.score(fields[2:], outputs[2:], BUGS)[0]
    assert first.official is None and "raises" in first.reason


@pytest.mark.parametrize("reply, verdict", [
    ("CORRECT", 1.0), ("INCORRECT", 0.0), ("Correct.", 1.0), ("INCORRECT - the answer is 17", 0.0),
    ("I think it is right", None), ("", None),
])
def test_bba_judge_reply_pins(reply, verdict):
    assert parse_correct(reply) == verdict


def test_bba_prompt_is_byte_exact_with_the_literal_newline_choice():
    prompt = bba_prompt("How many fruits?", "18", "eighteen")
    assert "START QUESTION How many fruits? \\n\\nEND QUESTION\n\nThe OFFICIAL ANSWER:18\n" in prompt
    assert prompt.endswith("\n\neighteen\n\nEND CANDIDATE ANSWER TO ASSESS\n\nReply only with CORRECT or INCORRECT.")
    newlines = bba_prompt("How many fruits?", "18", "x", literal_newlines=False)
    assert "START QUESTION How many fruits? \n\nEND" in newlines


def test_bba_normalised_without_a_judge():
    fields = [{"answer": "invalid", "categories": {"category": "formal_fallacies"}},
              {"answer": "Yes", "categories": {"category": "navigate"}},
              {"answer": "18", "categories": {"category": "object_counting"}},
              {"answer": "valid", "categories": {"category": "formal_fallacies"}}]
    outputs = ["</think>\ninvalid", "</think>\nyes.", "</think>\neighteen", "</think>\ninvalid"]
    v = get_benchmark("big_bench_audio").score(fields, outputs, DEFAULT)
    assert [x.normalised for x in v] == [1.0, 1.0, 1.0, 0.0]
    assert all(x.official is None for x in v)


@pytest.mark.parametrize("reply, score", [("Fine.\nScore: 7", 7.0), ("ok\nScore: [8]", 8.0), ("no score", None)])
def test_wildspeech_score_pins(reply, score):
    assert parse_score(reply) == score


def test_wildspeech_non_english_scores_one_without_asking_the_judge():
    fields = [{"query": "q", "checklist": "", "categories": {}}]
    v = get_benchmark("wildspeech").score(fields, ["</think>\n巴黎是法国的首都。"], DEFAULT)[0]
    assert (v.official, v.reason) == (1.0, "not English: scores 1")
