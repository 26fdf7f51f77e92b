"""mgrd.train.rewards: the built-ins equal the report's rewards, weights, registration, failures named or counted."""

from __future__ import annotations

import math

import pytest

from mgrd.tasks import get_task
from mgrd.train.rewards import REWARDS, RewardConfig, RewardError, get_reward, register_reward, score

# two audio rows (pitch_compare) and two text rows (text_arithmetic), as manifest columns
COLUMNS = {
    "id": ["a0", "a1", "t0", "t1"],
    "task": ["pitch_compare", "pitch_compare", "text_arithmetic", "text_arithmetic"],
    "audio": [["x.wav"], ["x.wav"], [], []],
    "choices": [["the first", "the second"], ["the first", "the second"], None, None],
    "answer": ["the second", "the second", "12", "12"],
}
COMPLETIONS = [
    "The second tone is higher.\n</think>\nthe second",  # audio, correct, reasons      -> 0.8 + 0.2
    "\n</think>\nthe second",                            # audio, correct, empty think  -> 0.8
    "3 * 4 = 12\n</think>\n12",                          # text, correct                -> 1
    "3 * 4 = 12 and then",                               # text, cut off before </think> -> 0
]


def test_report_reward_is_the_papers_text_and_audio_rewards():
    values = get_reward("report")(COMPLETIONS, **COLUMNS)
    assert values == pytest.approx([1.0, 0.8, 1.0, 0.0])
    # the same numbers as the task's own reward (one grader for RL and evaluation)
    row = {k: [v[1]] for k, v in COLUMNS.items()}
    assert get_task("pitch_compare").reward([COMPLETIONS[1]], **row) == pytest.approx([0.8])


def test_component_functions_and_where_they_apply():
    assert get_reward("correct")(COMPLETIONS, **COLUMNS) == [1.0, 1.0, 1.0, 0.0]
    assert get_reward("reasoning")(COMPLETIONS, **COLUMNS) == [1.0, 0.0, 1.0, 0.0]
    assert get_reward("text")(COMPLETIONS, **COLUMNS) == [None, None, 1.0, 0.0]
    assert get_reward("audio_correct")(COMPLETIONS, **COLUMNS) == [1.0, 1.0, None, None]
    assert get_reward("audio_reasoning")(COMPLETIONS, **COLUMNS) == [1.0, 0.0, None, None]


def test_weights_recompose_the_report_reward_and_change_it():
    report = score(COMPLETIONS, COLUMNS, RewardConfig())
    split = score(COMPLETIONS, COLUMNS, RewardConfig({"text": 1.0, "audio_correct": 0.8, "audio_reasoning": 0.2}))
    assert report.total == pytest.approx([1.0, 0.8, 1.0, 0.0])
    assert split.total == pytest.approx(report.total)
    other = score(COMPLETIONS, COLUMNS, RewardConfig({"text": 1.0, "audio_correct": 0.5, "audio_reasoning": 0.5}))
    assert other.total == pytest.approx([1.0, 0.5, 1.0, 0.0])
    assert split.means() == pytest.approx({"reward/text": 0.5, "reward/audio_correct": 1.0,
                                           "reward/audio_reasoning": 0.5})
    assert split.valid == [True] * 4 and split.skipped == 0


def test_user_registered_function_and_unknown_name():
    name = "test_length_bonus"
    try:
        @register_reward(name)
        def length_bonus(completions, **columns):
            return [min(len(c), 10) / 10 for c in completions]

        got = score(COMPLETIONS, COLUMNS, RewardConfig({"report": 1.0, name: 0.5}))
        assert got.total == pytest.approx([1.5, 0.8 + 0.5, 1.5, 0.5])
        with pytest.raises(ValueError, match="already registered"):
            register_reward(name, length_bonus)
    finally:
        REWARDS.pop(name, None)
    with pytest.raises(ValueError, match="unknown reward function 'reprot'; did you mean report"):
        score(COMPLETIONS, COLUMNS, RewardConfig({"reprot": 1.0}))


def test_a_raising_function_is_a_clear_error():
    REWARDS["test_raises"] = lambda completions, **columns: 1 / 0
    try:
        with pytest.raises(RewardError, match="reward function 'test_raises' raised ZeroDivisionError"):
            score(COMPLETIONS, COLUMNS, RewardConfig({"test_raises": 1.0}))
    finally:
        REWARDS.pop("test_raises")


@pytest.mark.parametrize("returned, message", [
    (lambda n: [1.0] * (n - 1), "returned 3 values for 4 completions"),
    (lambda n: "1.0", "must return a list"),
    (lambda n: ["yes"] * n, "returned 'yes' for completion 0"),
])
def test_malformed_returns_are_clear_errors(returned, message):
    REWARDS["test_bad"] = lambda completions, **columns: returned(len(completions))
    try:
        with pytest.raises(RewardError, match=message):
            score(COMPLETIONS, COLUMNS, RewardConfig({"test_bad": 1.0}))
    finally:
        REWARDS.pop("test_bad")


def test_nan_rows_are_skipped_and_counted():
    REWARDS["test_nan"] = lambda completions, **columns: [float("nan"), 1.0, None, float("inf")]
    try:
        got = score(COMPLETIONS, COLUMNS, RewardConfig({"report": 1.0, "test_nan": 1.0}))
    finally:
        REWARDS.pop("test_nan")
    assert got.valid == [False, True, True, False] and got.skipped == 2
    assert math.isnan(got.total[0]) and math.isnan(got.total[3])
    assert got.total[1:3] == pytest.approx([1.8, 1.0])  # row 2: test_nan does not apply, report alone
    assert got.means()["reward/test_nan"] == 1.0  # the mean of the finite values


def test_a_row_no_function_applies_to_is_an_error():
    with pytest.raises(RewardError, match="no reward function in \\['text'\\] applies to row 0 .*pitch_compare"):
        score(COMPLETIONS, COLUMNS, RewardConfig({"text": 1.0}))


def test_config_checks():
    with pytest.raises(ValueError, match="reward.functions.report must be a finite number"):
        RewardConfig({"report": float("nan")})
    with pytest.raises(ValueError, match="at least one"):
        RewardConfig({})
