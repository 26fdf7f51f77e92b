"""Task objects: prompts (lettered choices, conversations), targets per reasoning style, rewards, the registry."""

import os
import re
import subprocess
import sys

import pytest

from mgrd.chat import OFFICIAL_PART_JOIN, render_chat, split_reasoning
from mgrd.data.synth import FAMILIES
from mgrd.tasks import TASKS, Task, UnknownTaskError, get_task, register_task, task_names
from mgrd.tasks.base import letter_choices
from mgrd.tasks.grading import grade

CHOICE_ROW = {
    "id": "pitch-1", "task": "pitch_compare", "audio": ["/data/a.wav"],
    "question": "Which tone is higher?", "choices": ["the first", "the second"], "answer": "the second",
    "reasoning": "The second is near 500 Hz. The answer is the second.", "reasoning_style": "grounded",
    "reasonings": {"grounded": "The second is near 500 Hz. The answer is the second.",
                   "text_substitute": "Questions like this usually end on the second. The answer is the second."},
}
TEXT_ROW = {"id": "t-1", "task": "text_arithmetic", "audio": [], "question": "What is 7 + 5?", "choices": None,
            "answer": "12", "reasoning": "7 + 5 = 12. The answer is 12.", "reasoning_style": "text",
            "reasonings": {"text": "7 + 5 = 12. The answer is 12."}}
CONV_ROW = {
    "id": "c-1", "task": "conversation", "audio": [], "choices": None, "answer": "You have 6 stickers now.",
    "reasoning": "4 + 2 = 6.", "reasoning_style": "text", "reasonings": {"text": "4 + 2 = 6."},
    "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "I have 4 stickers."},
        {"role": "assistant", "content": "Nice."},
        {"role": "user", "content": "I get 2 more. How many now?"},
        {"role": "assistant", "content": "You have 6 stickers now."},
    ],
}


@pytest.fixture
def scratch_task():
    """Register throw-away tasks and remove them afterwards."""
    added = []

    def add(task):
        added.append(register_task(task).name)
        return task

    yield add
    for name in added:
        TASKS.pop(name, None)


# ---------------------------------------------------------------- prompt


def test_choice_prompt_is_audio_then_question_then_lettered_choices():
    messages = get_task("pitch_compare").prompt(CHOICE_ROW)
    assert messages == [{"role": "user", "content": [
        {"type": "audio", "audio": "/data/a.wav"},
        {"type": "text", "text": "Which tone is higher?\nA. the first\nB. the second"},
    ]}]


def test_text_first_task_puts_the_question_before_the_audio():
    task = Task("mmau_like", "choice", audio_first=False)
    content = task.prompt(CHOICE_ROW)[0]["content"]
    assert [p["type"] for p in content] == ["text", "audio"]


def test_grading_a_letter_picks_the_choice_shown_under_that_letter():
    task = get_task("pitch_compare")
    shown = task.prompt(CHOICE_ROW)[0]["content"][-1]["text"]
    lettered = dict(re.findall(r"^([A-Z])\. (.+)$", shown, flags=re.MULTILINE))
    assert lettered == {"A": "the first", "B": "the second"}
    assert task.grade(CHOICE_ROW, "near 500 Hz\n</think>\nB") == 1.0  # B is shown as the second = the answer
    assert task.grade(CHOICE_ROW, "near 300 Hz\n</think>\nA") == 0.0
    swapped = dict(CHOICE_ROW, answer="the first")
    assert task.grade(swapped, "near 500 Hz\n</think>\nB") == 0.0


class MCQBenchmark(Task):
    """A benchmark task registered from outside the synthetic suite, with the official MMAU wording."""

    def question_text(self, row):
        options = "".join(f"{chr(65 + i)}. {c}\n" for i, c in enumerate(row["choices"]))
        return (f"{row['question']}\nPlease choose the answer from the following options, do not provide any "
                f"additional explanations or content: \n{options}")


def test_a_benchmark_task_renders_the_official_mmau_prompt(scratch_task):
    task = scratch_task(MCQBenchmark("scratch_mmau", "choice", audio_first=False))
    row = {"id": "m-1", "task": "scratch_mmau", "audio": ["mmau_test.wav"], "answer": "Whispering",
           "question": "Which of the following best describes the male vocal in the audio?",
           "choices": ["Soft and melodic", "Aggressive and talking", "High-pitched and singing", "Whispering"]}
    assert render_chat(get_task("scratch_mmau").prompt(row), part_join=OFFICIAL_PART_JOIN) == (
        "<|BOT|>human\nWhich of the following best describes the male vocal in the audio?\n"
        "Please choose the answer from the following options, do not provide any additional explanations or "
        "content: \nA. Soft and melodic\nB. Aggressive and talking\nC. High-pitched and singing\nD. Whispering\n"
        "\n<audio_patch><|EOT|><|BOT|>assistant\n<think>\n")
    assert task.grade(row, "\n</think>\nD") == grade(row, "\n</think>\nD") == 1.0


def test_text_item_without_choices_shows_only_the_question():
    assert get_task("text_arithmetic").prompt(TEXT_ROW) == [
        {"role": "user", "content": [{"type": "text", "text": "What is 7 + 5?"}]}]


def test_conversation_prompt_stops_at_the_last_user_turn():
    messages = get_task("conversation").prompt(CONV_ROW)
    assert messages == CONV_ROW["messages"][:4]
    assert messages[-1]["role"] == "user"


def test_letter_choices_format_and_limit():
    assert letter_choices(["x", "y", "z"]) == "A. x\nB. y\nC. z"
    with pytest.raises(ValueError, match="at most 26"):
        letter_choices([str(i) for i in range(27)])


def test_prompt_rejects_an_item_without_question_or_user_turn():
    with pytest.raises(ValueError, match="needs a string 'question'"):
        get_task("pitch_compare").prompt({"id": "x", "answer": "a"})
    with pytest.raises(ValueError, match="needs a user turn"):
        get_task("conversation").prompt({"id": "x", "answer": "a", "messages": [{"role": "system", "content": "s"}]})


# ---------------------------------------------------------------- target


@pytest.mark.parametrize("style, chain", [
    ("grounded", CHOICE_ROW["reasonings"]["grounded"]),
    ("text_substitute", CHOICE_ROW["reasonings"]["text_substitute"]),
    (None, CHOICE_ROW["reasoning"]),  # the item's own style
    ("none", ""),
])
def test_target_is_the_formatted_chain_and_answer(style, chain):
    target = get_task("pitch_compare").target(CHOICE_ROW, style)
    assert target == f"<think>\n{chain}\n</think>\nthe second"
    assert split_reasoning(target) == (chain, "the second")


def test_target_of_a_conversation_ends_on_the_last_assistant_reply():
    assert get_task("conversation").target(CONV_ROW) == "<think>\n4 + 2 = 6.\n</think>\nYou have 6 stickers now."


def test_target_errors_name_the_missing_or_unknown_style():
    task = get_task("text_arithmetic")
    with pytest.raises(ValueError, match=r"no 'grounded' reasoning; it has \['text'\]"):
        task.target(TEXT_ROW, "grounded")
    with pytest.raises(ValueError, match="unknown reasoning style 'cot'"):
        task.target(TEXT_ROW, "cot")
    bare = {k: v for k, v in TEXT_ROW.items() if k not in ("reasoning", "reasoning_style", "reasonings")}
    assert task.target(bare) == "<think>\n\n</think>\n12"  # no chain: the empty think block


def test_a_loaded_manifest_item_works_like_its_row(tmp_path):
    from mgrd.data.manifest import Item

    item = Item(id="t-1", task="text_arithmetic", answer="12", question="What is 7 + 5?",
                reasoning="7 + 5 = 12.", reasoning_style="text", reasonings={"text": "7 + 5 = 12."})
    task = get_task("text_arithmetic")
    assert task.prompt(item) == task.prompt(dict(TEXT_ROW))
    assert task.target(item) == "<think>\n7 + 5 = 12.\n</think>\n12"
    assert task.grade(item, "so\n</think>\ntwelve") == 1.0


# ---------------------------------------------------------------- grade, score, reward


def test_score_gives_a_reason():
    task = get_task("pitch_compare")
    assert task.score(CHOICE_ROW, "x\n</think>\nB").reason == "choice: correct, answered 'B', reference 'the second'"
    cut = task.score(CHOICE_ROW, "still thinking")
    assert (cut.score, cut.reason) == (0.0, "no answer: cut off before </think>")


AUDIO_CASES = [
    ("near 500 Hz\n</think>\nthe second", 1.0),  # correct, reasoning present
    ("\n</think>\nthe second", 0.8),  # correct, empty think block
    ("near 300 Hz\n</think>\nthe first", 0.2),  # wrong, reasoning present
    ("near 500 Hz and still going", 0.0),  # cut off: no answer, no finished reasoning
]


def test_audio_reward_is_point_eight_correct_plus_point_two_reasoning():
    completions = [c for c, _ in AUDIO_CASES]
    columns = {k: [CHOICE_ROW[k]] * len(completions) for k in ("task", "audio", "choices", "answer")}
    rewards = get_task("pitch_compare").reward(completions, **columns)
    assert rewards == pytest.approx([r for _, r in AUDIO_CASES], abs=1e-12)


def test_text_reward_is_correctness_only():
    rewards = get_task("text_arithmetic").reward(
        ["7+5\n</think>\n12", "\n</think>\n12", "x\n</think>\n13"], answer=["12"] * 3, audio=[[]] * 3)
    assert rewards == [1.0, 1.0, 0.0]


def test_reward_is_none_for_rows_of_other_tasks_and_checks_column_lengths():
    task = get_task("text_arithmetic")
    assert task.reward(["\n</think>\n12", "\n</think>\n12"], answer=["12", "12"],
                       task=["text_arithmetic", "beep_count"]) == [1.0, None]
    with pytest.raises(ValueError, match="one value per completion"):
        task.reward(["a", "b"], answer=["12"])
    with pytest.raises(ValueError, match="'answer' column"):
        task.reward(["a"], question=["q"])


def test_audio_inside_conversation_messages_counts_as_audio():
    row = dict(CONV_ROW, messages=[{"role": "user", "content": [{"type": "audio", "audio": "a.wav"}]}],
               answer="6")
    assert get_task("conversation").reward(["\n</think>\n6"], **{k: [v] for k, v in row.items()}) == [0.8]


# ---------------------------------------------------------------- registry


def test_every_synthetic_family_has_a_task_with_its_grader():
    for name, family in FAMILIES.items():
        task = get_task(name)
        assert (task.name, task.grader, task.audio_first) == (name, family.grader, True)
    assert set(FAMILIES) <= set(task_names())


def test_register_rejects_duplicates_and_bad_graders(scratch_task):
    with pytest.raises(ValueError, match="'pitch_compare' is already registered"):
        register_task(Task("pitch_compare", "choice"))
    with pytest.raises(ValueError, match="unknown grader 'fuzzy'"):
        Task("bench", "fuzzy")
    scratch_task(Task("scratch_bench", "exact"))
    with pytest.raises(ValueError, match="already registered"):
        register_task(Task("scratch_bench", "exact"))


def test_get_task_unknown_name_lists_close_matches():
    with pytest.raises(UnknownTaskError, match="unknown task 'pitch_compar'; did you mean pitch_compare"):
        get_task("pitch_compar")
    with pytest.raises(KeyError, match="known tasks: .*beep_count"):
        get_task("zzzz")


def test_grade_dispatches_through_a_registered_benchmark_task(scratch_task):
    row = {"task": "scratch_numeric_words", "answer": "7"}
    # inferred from the row alone, a bare number is graded numerically ("seven" == 7)
    assert grade(row, "seven", require_think=False) == 1.0
    scratch_task(Task("scratch_numeric_words", "exact"))
    assert grade(row, "seven", require_think=False) == 0.0  # now the registered task's exact grader
    assert grade(row, "seven", require_think=False, grader="numeric") == 1.0
    with pytest.raises(ValueError, match="unknown grader 'fuzzy'"):
        grade(row, "7", grader="fuzzy")


@pytest.mark.integration  # a fresh interpreter (it imports torch: seconds)
def test_grading_module_does_not_import_the_synthetic_suite():
    code = "import sys, mgrd.tasks.grading; print('mgrd.data.synth' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------- encoding


@pytest.fixture
def audio_row(tmp_path):
    import numpy as np
    import soundfile as sf

    t = np.arange(16_000) / 16_000
    sf.write(tmp_path / "a.wav", (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16_000)
    return dict(CHOICE_ROW, audio=[str(tmp_path / "a.wav")])


def test_sft_example_starts_with_the_generation_prompt(tok, audio_row):
    task = get_task("pitch_compare")
    prompt = task.encode_prompt(audio_row, tok)
    example = task.encode_example(audio_row, tok, "grounded")
    first_label = example.labels_mask.index(1)
    assert example.input_ids[:first_label] == prompt.input_ids
    assert len(prompt.mels) == len(example.mels) == 1 and prompt.mels[0].equal(example.mels[0])
    learned = [t for t, m in zip(example.input_ids, example.labels_mask) if m]
    assert tok.decode(learned) == task.target(audio_row, "grounded").removeprefix("<think>\n") + "<|EOT|>"
    assert "A. the first\nB. the second" in tok.decode(prompt.input_ids)


def test_conversation_example_learns_only_the_final_reply(tok):
    task = get_task("conversation")
    example = task.encode_example(CONV_ROW, tok)
    learned = [t for t, m in zip(example.input_ids, example.labels_mask) if m]
    assert tok.decode(learned) == "4 + 2 = 6.\n</think>\nYou have 6 stickers now.<|EOT|>"
    assert example.input_ids[: example.labels_mask.index(1)] == task.encode_prompt(CONV_ROW, tok).input_ids


def test_precomputed_clip_features_give_the_same_encoding_without_reading_the_clip(tok, audio_row):
    from mgrd.models.config import AudioEncoderConfig
    from mgrd.tasks.base import clip_features

    config = AudioEncoderConfig(n_mels=80, token_rule="vllm")
    task = get_task("pitch_compare")
    fresh = task.encode_example(audio_row, tok, audio_config=config)
    features = clip_features(audio_row, config)
    assert list(features) == audio_row["audio"] and features[audio_row["audio"][0]][0].shape[0] == 80
    os.remove(audio_row["audio"][0])  # from here on only the cached features can supply the audio
    cached = task.encode_example(audio_row, tok, audio_config=config, features=features)
    assert cached.input_ids == fresh.input_ids and cached.labels_mask == fresh.labels_mask
    assert all(a.equal(b) for a, b in zip(cached.mels, fresh.mels)) and len(cached.mels) == len(fresh.mels) == 1
    prompt = task.encode_prompt(audio_row, tok, config, features=features)
    assert cached.input_ids[: cached.labels_mask.index(1)] == prompt.input_ids


def test_clip_features_reach_audio_parts_inside_a_conversation(tok, audio_row):
    from mgrd.tasks.base import clip_features

    path = audio_row["audio"][0]
    row = dict(CONV_ROW, messages=[{"role": "user", "content": [{"type": "audio", "audio": path},
                                                                {"type": "text", "text": "How many beeps?"}]},
                                   {"role": "assistant", "content": "You have 6 stickers now."}])
    features = clip_features(row)
    assert list(features) == [path]
    [user] = get_task("conversation").prompt(row, features)
    assert user["content"][0]["mels"] is features[path] and "mels" not in row["messages"][0]["content"][0]
