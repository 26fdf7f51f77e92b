"""`mgrd eval score`, shards and merge, through the CLI's `main` (no model: predictions made elsewhere)."""

import json

import pytest

from mgrd.eval.cli import main
from mgrd.eval.harness import select_items

from . import fixtures as fx


def write_preds(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


MMSU_PREDS = [{"id": "mmsu-1", "output": "cough"}, {"id": "mmsu-2", "output": "<think>\ntwo voices\n</think>\nB"}]


def test_score_writes_samples_and_summary_with_pinned_numbers(tmp_path, capsys):
    data = fx.write_mmau(tmp_path / "mmau")
    preds = write_preds(tmp_path / "p.jsonl", [
        {"id": "f-001", "output": "<think>\nhmm\n</think>\nA. Man"},
        {"id": "f-003", "output": "A. Woman and child"},
        {"id": "f-004", "output": "No, it is not present."}])
    assert main(["score", "--task", "mmau", "--data", str(data), "--predictions", str(preds), "--out",
                 str(tmp_path / "run"), "--no-progress", "--no-report"]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    overall = summary["overall"]
    # official: f-001 right, f-003 wrong (the "a" token), f-004 right; f-002 has no prediction (missing)
    assert (overall["n"], overall["official_n"], overall["missing"]) == (4, 3, 1)
    assert overall["official"] == pytest.approx(200 / 3, abs=1e-3)
    assert overall["normalised"] == 100.0
    assert summary["categories"]["task"]["speech"]["official"] == 0.0
    assert summary["scoring"]["exact_bugs"] is False and "first </think>" in summary["scoring"]["extraction"]
    assert len(summary["data"]["fingerprints"]["mmau-test-mini.json"]) == 64
    records = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert [r["item_id"] for r in records] == ["f-001", "f-002", "f-003", "f-004"]
    assert records[0]["completions"][0]["scores"]["official"]["score"] == 1.0
    assert records[1]["completions"] == [] and records[1]["extra"]["verdict"]["missing"]
    assert not (tmp_path / "run" / "report.html").exists()
    assert "| overall | 4 | 66.67 | 100.00 |" in capsys.readouterr().out


def test_score_exact_bugs_flag_reaches_the_scorer(tmp_path):
    data = fx.write_mmsu(tmp_path / "mmsu")
    preds = write_preds(tmp_path / "p.jsonl", MMSU_PREDS)
    assert main(["score", "--task", "mmsu", "--data", str(data), "--predictions", str(preds), "--out",
                 str(tmp_path / "run"), "--no-report"]) == 0
    overall = json.loads((tmp_path / "run" / "summary.json").read_text())["overall"]
    # "cough" has no letter: skipped by the official scorer; the normalised scorer reads the choice text
    got = (overall["official"], overall["official_n"], overall["excluded"], overall["normalised"])
    assert got == (100.0, 1, 1, 100.0)


def test_predictions_with_unknown_or_duplicate_ids_are_refused(tmp_path, capsys):
    data = fx.write_mmsu(tmp_path / "mmsu")
    bad = write_preds(tmp_path / "bad.jsonl", [{"id": "nope", "output": "A"}])
    assert main(["score", "--task", "mmsu", "--data", str(data), "--predictions", str(bad), "--out",
                 str(tmp_path / "r1")]) == 2
    assert "1 id(s) not in the mmsu data: nope" in capsys.readouterr().err
    dup = write_preds(tmp_path / "dup.jsonl", MMSU_PREDS + [MMSU_PREDS[0]])
    assert main(["score", "--task", "mmsu", "--data", str(data), "--predictions", str(dup), "--out",
                 str(tmp_path / "r2")]) == 2
    assert "dup.jsonl:3: duplicate id 'mmsu-1' (first on line 1)" in capsys.readouterr().err


def test_wrong_data_folder_is_a_clear_error(tmp_path, capsys):
    preds = write_preds(tmp_path / "p.jsonl", MMSU_PREDS)
    assert main(["score", "--task", "mmau", "--data", str(tmp_path), "--predictions", str(preds), "--out",
                 str(tmp_path / "r")]) == 2
    assert "mmau-test-mini.json" in capsys.readouterr().err


def test_shards_merge_into_the_unsharded_result(tmp_path):
    data = fx.write_spoken_mqa(tmp_path / "mqa")
    preds = write_preds(tmp_path / "p.jsonl", [
        {"id": "short_digit-00000", "output": "x</think>\n\\boxed{1,002}"},
        {"id": "long_digit-00000", "output": "x</think>\n80.94"},
        {"id": "single_step_reasoning-00000", "output": "still thinking"},
        {"id": "multi_step_reasoning-00000", "output": "x</think>\nThe answer is 70,000"}])
    common = ["--task", "spoken_mqa", "--data", str(data), "--predictions", str(preds), "--exact-bugs",
              "--require-think", "--no-report"]
    assert main(["score", *common, "--out", str(tmp_path / "whole")]) == 0
    for i in range(2):
        assert main(["score", *common, "--shard", f"{i}/2", "--out", str(tmp_path / f"s{i}")]) == 0
    assert main(["merge", str(tmp_path / "s1"), str(tmp_path / "s0"), "--out", str(tmp_path / "merged")]) == 0
    whole = json.loads((tmp_path / "whole" / "summary.json").read_text())
    merged = json.loads((tmp_path / "merged" / "summary.json").read_text())
    assert merged["overall"] == whole["overall"] and merged["categories"] == whole["categories"]
    # the merge scores in dataset order: the stale-prediction quirk reaches across the shard boundary
    assert whole["categories"]["split"]["single_step_reasoning"]["official"] == 0.0
    assert main(["merge", str(tmp_path / "s0"), str(tmp_path / "whole"), "--out", str(tmp_path / "bad")]) == 2


def test_compare_prints_runs_and_the_published_reference(tmp_path, capsys):
    data = fx.write_mmsu(tmp_path / "mmsu")
    preds = write_preds(tmp_path / "p.jsonl", MMSU_PREDS)
    main(["score", "--task", "mmsu", "--data", str(data), "--predictions", str(preds), "--out", str(tmp_path / "a"),
          "--no-report"])
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "| Step-Audio-R1 (published) |  | 75.90 |" in out and f"| {tmp_path / 'a'} | 2 | 100.00 |" in out


def test_select_items_ranges_and_shards():
    items = list(range(10))
    assert select_items(items, 2, 8) == [2, 3, 4, 5, 6, 7]
    assert [select_items(items, shard=(i, 3)) for i in range(3)] == [[0, 1, 2], [3, 4, 5, 6], [7, 8, 9]]
    assert select_items(items, 1, shard=(1, 2), limit=2) == [5, 6]
    with pytest.raises(ValueError):
        select_items(items, 5, 3)


def test_mmau_test_split_writes_a_submission(tmp_path):
    root = tmp_path / "mmau"
    rows = [{k: v for k, v in r.items() if k != "answer"} | {"audio_id": r["audio_id"].replace("test-mini", "test")}
            for r in fx.MMAU_ROWS[:2]]
    root.mkdir()
    (root / "mmau-test.json").write_text(json.dumps(rows))
    for r in rows:
        fx.write_wav(root / r["audio_id"])
    preds = write_preds(tmp_path / "p.jsonl", [{"id": "f-001", "output": "<think>\nlow\n</think>\nMan"}])
    assert main(["score", "--task", "mmau", "--split", "test", "--data", str(root), "--predictions", str(preds),
                 "--out", str(tmp_path / "run"), "--no-report"]) == 0
    submission = json.loads((tmp_path / "run" / "submission.json").read_text())
    assert [(s["id"], s["model_prediction"]) for s in submission] == [("f-001", "Man"), ("f-002", "")]
    assert set(rows[0]) <= set(submission[0])


def test_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--task", "--data", "--model", "--endpoint", "--api-key", "--out", "--limit", "--shard", "--variants",
                 "--exact-bugs", "--judge-endpoint", "--predictions", "--think-budget"):
        assert flag in text


def test_rescore_with_the_quirks_on_leaves_the_run_alone(tmp_path):
    data = fx.write_mmsu(tmp_path / "mmsu")
    preds = write_preds(tmp_path / "p.jsonl", [{"id": "mmsu-1", "output": "B"}, {"id": "mmsu-2", "output": ""}])
    assert main(["score", "--task", "mmsu", "--data", str(data), "--predictions", str(preds), "--out",
                 str(tmp_path / "run"), "--no-report"]) == 0
    before = (tmp_path / "run" / "summary.json").read_text()
    # current scorer: "B" (burp) is wrong and the empty response is wrong: 0 %
    assert json.loads(before)["overall"]["official"] == 0.0
    assert main(["rescore", str(tmp_path / "run"), "--exact-bugs", "--out", str(tmp_path / "legacy"),
                 "--no-report"]) == 0
    legacy = json.loads((tmp_path / "legacy" / "summary.json").read_text())
    # legacy scorer: the empty response reuses B, and mmsu-2's choice B ("2") is its answer: 50 %
    assert legacy["overall"]["official"] == 50.0 and legacy["scoring"]["exact_bugs"]
    assert legacy["settings"]["rescored_from"] == str(tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "legacy" / "samples.jsonl").read_text().splitlines()]
    assert "reuses the previous record's letter" in records[1]["extra"]["verdict"]["reason"]
    assert (tmp_path / "run" / "summary.json").read_text() == before
    assert main(["rescore", str(tmp_path / "nothing")]) == 2
