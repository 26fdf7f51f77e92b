"""Selection after the filters, pinned on hand-made verdict tables: pass@K histogram and band (3..6 of 8),
bad K and bands refused in one line, D_audio-cot (all filters, at most M distinct chains per item, in
sampling order) as SFT rows, and the RL mix with text tasks."""

import dataclasses
from pathlib import Path

import pytest

from mgrd.data.records import CompletionRecord, SampleRecord
from mgrd.loop.filters import FILTERS
from mgrd.loop.select import (SelectConfig, audio_cot_items, band_items, check_band, mix_rl_set, pass_count,
                              pass_histogram, select_audio_cot)
from mgrd.tasks import get_task


def _comp(reasoning, verdicts):
    """A completion with a verdict (1/0) per filter, in `FILTERS` order."""
    comp = CompletionRecord.from_text(f"{reasoning}\n</think>\nthe second", n_tokens=5, finish_reason="stop")
    for name, passed in zip(FILTERS, verdicts):
        comp.add_score(name, float(passed), "")
    return comp


def _record(item_id, correct_flags):
    comps = [_comp(f"chain {k}", (c, 1, 1, 1)) for k, c in enumerate(correct_flags)]
    return SampleRecord(item_id=item_id, task="pitch_compare", prompt="", completions=comps)


# item -> correct flags of its 8 samples: pass@8 = 0, 2, 3, 5, 6, 7, 8
TABLE = {"p0": [0] * 8, "p2": [1, 0, 1, 0, 0, 0, 0, 0], "p3": [0, 1, 1, 0, 1, 0, 0, 0], "p5": [1, 1, 0, 1, 0, 1, 1, 0],
         "p6": [1, 1, 1, 0, 1, 1, 0, 1], "p7": [1] * 7 + [0], "p8": [1] * 8}


def test_pass_counts_histogram_and_band():
    records = [_record(i, flags) for i, flags in TABLE.items()]
    assert [pass_count(r) for r in records] == [0, 2, 3, 5, 6, 7, 8]
    assert pass_histogram(records, 8) == [1, 0, 1, 1, 0, 1, 1, 1, 1]
    assert band_items(records, 8, 3, 6) == ["p3", "p5", "p6"]
    assert band_items(records, 8, 0, 0) == ["p0"]
    assert band_items(records, 8, 0, 8) == list(TABLE)


@pytest.mark.parametrize("k, low, high, message", [
    (0, 0, 0, "K \\(samples per item\\) must be an integer >= 1, got 0"),
    (8, 3, 9, "0 <= low <= high <= K=8, got \\[3, 9\\]"),
    (8, -1, 6, "got \\[-1, 6\\]"),
    (8, 6, 3, "got \\[6, 3\\]"),
])
def test_bad_k_and_bands_are_refused(k, low, high, message):
    with pytest.raises(ValueError, match=message):
        check_band(k, low, high)
    with pytest.raises(ValueError, match=message):
        SelectConfig(samples_per_item=k, band_low=low, band_high=high)


def test_a_record_without_k_completions_is_refused():
    with pytest.raises(ValueError, match="record 'p3' has 7 completions, expected K=8"):
        band_items([_record("p3", [1, 1, 1, 0, 0, 0, 0])], 8, 3, 6)
    bare = SampleRecord(item_id="x", task="t", prompt="", completions=[
        CompletionRecord.from_text("a</think>b", n_tokens=1, finish_reason="stop")])
    with pytest.raises(ValueError, match="record 'x': completions \\[0\\] have no 'correct' score"):
        pass_count(bare)


def test_audio_cot_takes_at_most_m_distinct_chains_passing_every_filter():
    a = SampleRecord(item_id="a", task="pitch_compare", prompt="", completions=[
        _comp("fails grounding", (1, 0, 1, 1)), _comp("good one", (1, 1, 1, 1)), _comp("good  one", (1, 1, 1, 1)),
        _comp("wrong", (0, 1, 1, 1)), _comp("good two", (1, 1, 1, 1)), _comp("good three", (1, 1, 1, 1))])
    b = SampleRecord(item_id="b", task="pitch_compare", prompt="", completions=[_comp("denies", (1, 1, 1, 0))])
    chosen = select_audio_cot([a, b], max_per_item=2)
    assert [(r.item_id, c.reasoning) for r, c in chosen] == [("a", "good one"), ("a", "good two")]
    assert len(select_audio_cot([a, b], max_per_item=5)) == 3
    with pytest.raises(ValueError, match="max_per_item must be >= 1"):
        select_audio_cot([a], 0)


def test_audio_cot_rows_train_the_sampled_chain():
    item = {"id": "a", "task": "pitch_compare", "audio": ["a.wav"], "question": "Which tone is higher?",
            "choices": ["the first", "the second"], "answer": "the second", "reasoning": "its own chain",
            "reasoning_style": "grounded", "reasonings": {"grounded": "its own chain"}, "meta": {"f0_hz": [1, 2]}}
    a = SampleRecord(item_id="a", task="pitch_compare", prompt="", completions=[
        _comp("sampled one", (1, 1, 1, 1)), _comp("sampled two", (1, 1, 1, 1))])
    rows = audio_cot_items(select_audio_cot([a], 2), {"a": item})
    assert [r["id"] for r in rows] == ["a#cot0", "a#cot1"]
    assert rows[1]["reasonings"] == {"grounded": "sampled two"} and rows[1]["meta"] == item["meta"]
    assert get_task("pitch_compare").target(rows[0]) == "<think>\nsampled one\n</think>\nthe second"
    assert item["reasoning"] == "its own chain"  # the item itself is untouched


def test_rl_mix_with_text_tasks():
    audio, text = [f"a{i}" for i in range(6)], [f"t{i}" for i in range(10)]
    mixed = mix_rl_set(audio, text, 2 / 3, seed=0)
    assert len(mixed) == 10 and set(audio) <= set(mixed) and len(set(mixed) & set(text)) == 4
    assert mixed == mix_rl_set(audio, text, 2 / 3, seed=0) != mix_rl_set(audio, text, 2 / 3, seed=1)
    assert sorted(mix_rl_set(audio, text[:2], 2 / 3)) == sorted(audio + text[:2])  # fewer text items than asked
    assert sorted(mix_rl_set(audio, text, 0.0)) == sorted(audio)
    with pytest.raises(ValueError, match="text_per_audio must be >= 0"):
        mix_rl_set(audio, text, -1)


def test_curation_keeps_audio_questions_that_need_perception():
    from mgrd.data.manifest import Item
    from mgrd.loop.select import needs_perception, perception_items

    def row(task, audio=True, **extra):
        return {"id": task, "task": task, "audio": ["x.wav"] if audio else [], "answer": "1", **extra}

    kept = [row("pitch_compare"), row("louder_beeps"), row("voice_pitch"), row("mmau"),
            row("spoken_arithmetic", meta={"needs_perception": True})]
    dropped = [row("spoken_arithmetic"), row("text_arithmetic", audio=False), row("mmau", needs_perception=False),
               row("pitch_compare", meta={"needs_perception": False})]
    assert [needs_perception(r) for r in kept] == [True] * 5
    assert [needs_perception(r) for r in dropped] == [False] * 4
    item = Item(id="i", task="mmau", answer="a", audio=[Path("x.wav")])
    assert needs_perception(item)
    assert not needs_perception(dataclasses.replace(item, extra={"needs_perception": False}))
    assert perception_items(kept + dropped) == kept
    with pytest.raises(ValueError, match="data/m.jsonl has no audio questions that need perception \\(4 item"):
        perception_items(dropped, "data/m.jsonl")


def test_replay_draws_reference_chains_evenly_over_the_families():
    from mgrd.loop.select import replay_items

    def row(i, task, grounded=True, audio=True):
        return {"id": f"{task}-{i}", "task": task, "audio": ["x.wav"] if audio else [], "answer": "1",
                "reasonings": {"grounded": f"chain {i}"} if grounded else {}}

    items = ([row(i, "pitch_compare") for i in range(10)] + [row(i, "louder_beeps") for i in range(2)]
             + [row(i, "higher_longer", grounded=False) for i in range(5)]  # no reference chain: never drawn
             + [row(i, "text_logic", audio=False) for i in range(5)])  # no audio: not a perception item
    got = replay_items(items, 5, seed=3)
    assert [r["task"] for r in got] == ["louder_beeps", "pitch_compare"] * 2 + ["pitch_compare"]
    assert len({r["id"] for r in got}) == 5
    assert got == replay_items(items, 5, seed=3) and got != replay_items(items, 5, seed=4)
    assert len(replay_items(items, 50)) == 12  # every drawable item, once
    assert replay_items(items, 0) == []
