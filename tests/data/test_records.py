"""Sample records: round trip, FILE:LINE errors, appends that survive a killed writer, atomic rewrites."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from mgrd.data.records import (
    CompletionRecord,
    RecordError,
    SampleRecord,
    append_records,
    read_records,
    records_from_rollout,
    write_records,
)


def make_record(i: int, k: int = 2) -> SampleRecord:
    completions = []
    for j in range(k):
        comp = CompletionRecord.from_text(f"reasoning {i}.{j}\n</think>\nanswer {j}", n_tokens=7 + j,
                                          finish_reason="stop", logprob_sum=-3.5, logprob_mean=-0.5,
                                          token_ids=[5, 6, 7])
        comp.add_score("correct", j % 2, "choice: correct" if j % 2 else "choice: wrong")
        completions.append(comp)
    completions.append(CompletionRecord.from_text("cut off mid-th", n_tokens=4, finish_reason="length"))
    return SampleRecord(item_id=f"pitch-{i:03d}", task="pitch_compare", prompt="<|BOT|>human\n…", model="tiny",
                        iteration=2, prompt_ids=[1, 2, 3], completions=completions, extra={"temperature": 1.0})


def test_from_text_splits_reasoning_and_answer():
    done = CompletionRecord.from_text("it is high\n</think>\nA", n_tokens=3, finish_reason="stop")
    assert (done.reasoning, done.answer) == ("it is high", "A")
    cut = CompletionRecord.from_text("still thinking", n_tokens=3, finish_reason="length")
    assert (cut.reasoning, cut.answer) == ("still thinking", None)


def test_round_trip_through_write_and_append(tmp_path):
    path = tmp_path / "samples.jsonl"
    records = [make_record(i) for i in range(3)]
    write_records(path, records[:2])
    assert append_records(path, records[2:]) == 1
    assert read_records(path) == records
    assert path.read_text().count("\n") == 3
    assert json.loads(path.read_text().splitlines()[0])["completions"][1]["scores"] == {
        "correct": {"score": 1.0, "reason": "choice: correct"}}


def test_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "samples.jsonl"
    write_records(path, [make_record(0)])
    good = path.read_text()
    path.write_text(good + "\n" + "{not json}\n" + good)  # line 2 blank, line 3 broken
    with pytest.raises(RecordError, match=r"samples.jsonl:3: invalid JSON"):
        read_records(path)


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.pop("task"), r":1: record is missing \['task'\]"),
    (lambda d: d.update(iteration="2"), r":1: record.iteration must be int/null, got str"),
    (lambda d: d.update(colour="red"), r":1: record has unknown key\(s\) \['colour'\]"),
    (lambda d: d["completions"][0].update(finish_reason="eos"), r"completions\[0\].finish_reason must be one of"),
    (lambda d: d["completions"][1].update(n_tokens=True), r"completions\[1\].n_tokens must be int, got bool"),
    (lambda d: d["completions"][1].update(scores={"correct": 1}), r"completions\[1\].scores\['correct'\] must be"),
])
def test_field_errors_are_one_line_with_the_line_number(tmp_path, mutate, message):
    data = make_record(0).to_dict()
    mutate(data)
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(data) + "\n")
    with pytest.raises(RecordError, match=message):
        read_records(path)


def test_a_completion_with_an_unknown_finish_reason_cannot_be_made():
    with pytest.raises(RecordError, match=r"finish_reason must be one of \['stop', 'length'\], got 'eos'"):
        CompletionRecord(text="x", n_tokens=1, finish_reason="eos")


def test_missing_file_and_nan_are_clear_errors(tmp_path):
    with pytest.raises(RecordError, match="records file not found"):
        read_records(tmp_path / "nope.jsonl")
    bad = make_record(0)
    bad.completions[0].logprob_sum = float("nan")
    with pytest.raises(RecordError, match="cannot write record"):
        append_records(tmp_path / "x.jsonl", [make_record(1), bad])
    assert not (tmp_path / "x.jsonl").exists()  # nothing written when one record is bad


def test_torn_last_line_is_skipped_on_read_and_cut_on_append(tmp_path):
    path = tmp_path / "samples.jsonl"
    append_records(path, [make_record(0), make_record(1)])
    line = path.read_bytes().splitlines(keepends=True)[0]
    with open(path, "ab") as f:
        f.write(line[: len(line) // 2])  # what a writer killed mid-line leaves
    assert [r.item_id for r in read_records(path)] == ["pitch-000", "pitch-001"]
    append_records(path, [make_record(2)])
    assert [r.item_id for r in read_records(path)] == ["pitch-000", "pitch-001", "pitch-002"]
    assert path.read_bytes().endswith(b"\n")


def test_a_json_log_line_torn_by_a_kill_is_cut_before_the_next_append(tmp_path):
    from mgrd.data.records import append_json_lines

    path = tmp_path / "stages.jsonl"
    append_json_lines(path, [{"stage": "sft"}, {"stage": "eval"}])
    with open(path, "ab") as f:
        f.write(b'{"stage": "cur')  # a writer killed mid-line
    append_json_lines(path, [{"stage": "curate"}])
    assert [json.loads(line) for line in path.read_text().splitlines()] == \
        [{"stage": "sft"}, {"stage": "eval"}, {"stage": "curate"}]
    path.write_bytes(path.read_bytes().rstrip(b"\n"))  # a whole last object without its newline is kept
    append_json_lines(path, [{"stage": "rl"}])
    assert len(path.read_text().splitlines()) == 4


def test_a_whole_last_record_without_its_newline_is_kept_on_append(tmp_path):
    path = tmp_path / "samples.jsonl"
    write_records(path, [make_record(0), make_record(1)])
    path.write_bytes(path.read_bytes().rstrip(b"\n"))  # as an editor may save it
    append_records(path, [make_record(2)])
    assert [r.item_id for r in read_records(path)] == ["pitch-000", "pitch-001", "pitch-002"]


WRITER = """
import sys
from mgrd.data.records import CompletionRecord, SampleRecord, append_records
comps = [CompletionRecord.from_text("r" * 2000 + "</think>A", n_tokens=900, finish_reason="stop")] * 50
i = 0
while True:  # ~100 kB per record, so the kill often lands inside a write
    append_records(sys.argv[1], [SampleRecord(f"{sys.argv[2]}-{i:03d}", "pitch_compare", "p", comps)])
    i += 1
"""


@pytest.mark.integration  # real processes killed with SIGKILL (seconds: each child imports torch)
def test_two_writers_killed_mid_append_leave_every_earlier_line(tmp_path):
    path = tmp_path / "samples.jsonl"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), name]) for name in ("a", "b")]
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            lines = path.read_bytes().splitlines() if path.exists() else []
            ids = [line[len(b'{"item_id": "'):][:1] for line in lines]  # the writer's name
            if ids.count(b"a") >= 10 and ids.count(b"b") >= 10:  # both writers are appending
                break
            time.sleep(0.2)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    written = read_records(path)
    for name in ("a", "b"):  # each writer's records are all there, whole and in order
        mine = [r.item_id for r in written if r.item_id.startswith(name)]
        assert len(mine) >= 10 and mine == [f"{name}-{i:03d}" for i in range(len(mine))]
    assert len(written) == len([r for r in written if r.item_id[0] in "ab"])
    append_records(path, [make_record(999)])
    after = read_records(path)
    assert after[:-1] == written and after[-1].item_id == "pitch-999"


def test_write_records_is_atomic_and_readable_by_others(tmp_path):
    path = tmp_path / "samples.jsonl"
    write_records(path, [make_record(0)])
    with pytest.raises(RecordError):
        write_records(path, [make_record(1), "not a record"])
    assert [r.item_id for r in read_records(path)] == ["pitch-000"]  # the old file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["samples.jsonl"]  # no temp file left
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


# ---------------------------------------------------------------- from a rollout

ROWS = [{"id": "t-1", "task": "text_arithmetic", "question": "What is 7 + 5?", "choices": None, "answer": "12"},
        {"id": "t-2", "task": "text_compare", "question": "Which is larger?", "choices": ["3 km", "2600 m"],
         "answer": "3 km"}]


def rollout_batch(group_ids):
    """A hand-filled RolloutBatch: 2 prompts x K=2, pad id 0, prompts left-padded, responses right-padded."""
    import torch

    from mgrd.rollout import RolloutBatch

    return RolloutBatch(
        prompt_ids=torch.tensor([[0, 5, 6], [0, 5, 6], [7, 8, 9], [7, 8, 9]]),
        prompt_mask=torch.tensor([[0, 1, 1], [0, 1, 1], [1, 1, 1], [1, 1, 1]]),
        response_ids=torch.tensor([[11, 12, 2], [13, 0, 0], [14, 15, 2], [16, 17, 18]]),
        response_mask=torch.tensor([[1, 1, 1], [1, 0, 0], [1, 1, 1], [1, 1, 1]]),
        logprobs=torch.tensor([[-1.0, -0.5, -0.25], [-2.0, 0, 0], [-0.1, -0.2, -0.3], [-1.0, -1.0, -1.0]]),
        policy_logprobs=torch.zeros(4, 3),
        group_ids=torch.tensor(group_ids),
        finish_reasons=["stop", "length", "stop", "length"],
        texts=["7+5\n</think>\n12", "7+5 is", "</think>\nB", "so it is"],
    )


def test_records_from_rollout_groups_rows_and_scores_them():
    from mgrd.chat import OFFICIAL_PART_JOIN, render_chat
    from mgrd.tasks import get_task

    records = records_from_rollout(rollout_batch([0, 0, 1, 1]), ROWS, model_name="tiny", iteration=3)
    first, second = records
    assert (first.item_id, first.task, first.model, first.iteration) == ("t-1", "text_arithmetic", "tiny", 3)
    assert first.prompt_ids == [5, 6] and second.prompt_ids == [7, 8, 9]
    assert first.prompt == render_chat(get_task("text_arithmetic").prompt(ROWS[0]), part_join=OFFICIAL_PART_JOIN)
    done, cut = first.completions
    assert (done.token_ids, done.n_tokens, done.finish_reason) == ([11, 12, 2], 3, "stop")
    assert (done.logprob_sum, done.logprob_mean) == (-1.75, pytest.approx(-1.75 / 3))
    assert (done.reasoning, done.answer) == ("7+5", "12")
    assert (cut.token_ids, cut.logprob_sum, cut.answer) == ([13], -2.0, None)
    assert [c.scores["correct"]["score"] for c in first.completions + second.completions] == [1.0, 0.0, 0.0, 0.0]
    assert cut.scores["correct"]["reason"] == "no answer: cut off before </think>"
    assert second.completions[0].scores["correct"]["reason"].startswith("choice: wrong, answered 'B'")


def test_records_from_rollout_rejects_mismatched_groups():
    with pytest.raises(RecordError, match="group id 2, but only 2 item"):
        records_from_rollout(rollout_batch([0, 0, 1, 2]), ROWS)
    with pytest.raises(RecordError, match=r"item\(s\) \[1\] have no rollout rows"):
        records_from_rollout(rollout_batch([0, 0, 0, 0]), ROWS)
