"""`mgrd eval --model` end to end on the tiny random checkpoint and a few synthetic items: batched rollouts,
an ablation variant, forced thinking budgets, the report files, and a resume that does not load the model."""

import json

import pytest

from mgrd.eval import harness
from mgrd.eval.backends import FORCED_CLOSE
from mgrd.eval.cli import main
from mgrd.tokenizer import load_tokenizer

pytestmark = pytest.mark.integration


def test_tiny_model_run_writes_everything_and_resumes_without_the_model(tiny_model, tiny_suite, tmp_path,
                                                                         monkeypatch):
    model, suite = tiny_model, tiny_suite
    args = ["--task", "synthetic", "--data", str(suite), "--model", str(model), "--out", str(tmp_path / "run"),
            "--max-new-tokens", "8", "--temperature", "0", "--batch-size", "4",
            "--variants", "clean,silence,think0,think3", "--answer-tokens", "4",
            "--no-progress"]
    assert main(args) == 0
    run = tmp_path / "run"
    records = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert sorted((r["item_id"], r["extra"]["variant"]) for r in records) == sorted(
        (f"{fam}-00000{i}", v) for fam in ("pitch_compare", "beep_count") for i in (0, 1)
        for v in ("clean", "silence", "think0", "think3"))
    # forced thinking budgets: think0 answers at once, think3 thinks at most 3 tokens before the forced close
    close = len(load_tokenizer(model).encode(FORCED_CLOSE, add_special_tokens=False))  # counted as thinking
    for r in records:
        budget = {"think0": 0, "think3": 3}.get(r["extra"]["variant"])
        if budget is not None:
            assert "</think>" in r["completions"][0]["text"] and r["extra"]["think_tokens"] <= budget + close
            assert r["completions"][0]["n_tokens"] <= budget + close + 4
        if budget == 0:
            assert r["completions"][0]["text"].startswith(FORCED_CLOSE) and r["completions"][0]["reasoning"] == ""
    assert all(r["completions"][0]["n_tokens"] <= 8 + 4 + 5 and r["prompt"].startswith("<|BOT|>human\n<audio_patch>")
               for r in records)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["overall"]["n"] == 4 and summary["overall"]["errors"] == 0
    assert summary["ablation"]["silence"]["n"] == 4 and summary["think"]["unit"] == "tokens"
    assert summary["settings"]["sampling"]["max_new_tokens"] == 8
    assert [c["budget"] for c in summary["budget_curve"]] == [0, 3]
    assert {"report.html", "think_length.png", "variants.png", "think_budget.png"} <= {p.name for p in run.iterdir()}
    page = (run / "report.html").read_text()
    assert "<td>variant silence</td>" in page and 'src="think_budget.png"' in page

    def no_model(cfg):
        raise AssertionError("a finished run must not load the model again")

    monkeypatch.setattr(harness, "make_backend", no_model)
    before = (run / "samples.jsonl").read_text()
    assert main(args) == 0
    assert (run / "samples.jsonl").read_text() == before
    # a narrower rerun (one variant, two items) scores its selection and keeps every other record in the file
    assert main([*args[:-5], "--variants", "clean", "--limit", "2", "--no-progress"]) == 0
    narrow = json.loads((run / "summary.json").read_text())
    assert narrow["overall"]["n"] == 2 and list(narrow["variants"]) == ["clean"]
    assert len((run / "samples.jsonl").read_text().splitlines()) == 16


def test_prompt_past_the_context_is_that_items_error(tiny_model, tiny_suite, tmp_path):
    import shutil

    small = tmp_path / "small"
    shutil.copytree(tiny_model, small)
    config = json.loads((small / "config.json").read_text())
    config["text_config"]["max_position_embeddings"] = 60  # the suite's prompts run 46 to 125 tokens
    (small / "config.json").write_text(json.dumps(config))
    args = ["--task", "synthetic", "--data", str(tiny_suite), "--model", str(small), "--out", str(tmp_path / "run"),
            "--max-new-tokens", "4", "--temperature", "0", "--no-progress", "--no-report"]
    assert main(args) == 1  # finished; the items that do not fit are errors, not wrong answers
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert 0 < summary["overall"]["errors"] < 4
    assert summary["overall"]["errors"] + summary["overall"]["official_n"] == 4
    assert all("does not fit the model's 60 positions" in e for e in summary["errors"])


def test_grounding_numbers_count_only_items_that_came_with_audio():
    """A text task's chain names no acoustic feature by design: the grounding rates leave it out."""
    from mgrd.data.records import SampleRecord

    heard = SampleRecord(item_id="a", task="pitch_compare", prompt="<|BOT|>human\n<audio_patch>Which is higher?",
                         completions=[])
    read = SampleRecord(item_id="t", task="text_logic", prompt="<|BOT|>human\nIs 3 > 2?", completions=[])
    assert harness._hears(heard) and not harness._hears(read)
