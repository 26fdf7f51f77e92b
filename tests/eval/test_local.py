"""`mgrd eval --model` end to end on the tiny random checkpoint and a few synthetic items: batched rollouts,
ablation variants, the report files, resume without the model, and the forced thinking budget."""

import json

import pytest

from mgrd.eval import harness
from mgrd.eval.backends import FORCED_CLOSE, Job, LocalModel
from mgrd.eval.cli import main
from mgrd.generate import SamplingConfig

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from mgrd.data.synth.writer import synthesize
    from mgrd.models.presets import init_checkpoint

    root = tmp_path_factory.mktemp("local")
    model = init_checkpoint("tiny", root / "tiny")
    suite = synthesize(root / "suite", n=4, seed=0, families=["pitch_compare", "beep_count"], split="test",
                       progress=False).parent
    return model, suite


def test_tiny_model_run_writes_everything_and_resumes_without_the_model(setup, tmp_path, monkeypatch):
    model, suite = setup
    args = ["--task", "synthetic", "--data", str(suite), "--model", str(model), "--out", str(tmp_path / "run"),
            "--max-new-tokens", "8", "--temperature", "0", "--batch-size", "4", "--variants", "clean,silence",
            "--no-progress"]
    assert main(args) == 0
    run = tmp_path / "run"
    records = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert sorted((r["item_id"], r["extra"]["variant"]) for r in records) == sorted(
        (f"{fam}-00000{i}", v) for fam in ("pitch_compare", "beep_count") for i in (0, 1) for v in ("clean", "silence"))
    assert all(r["completions"][0]["n_tokens"] <= 8 and r["prompt"].startswith("<|BOT|>human\n<audio_patch>")
               for r in records)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["overall"]["n"] == 4 and summary["overall"]["errors"] == 0
    assert summary["ablation"]["silence"]["n"] == 4 and summary["think"]["unit"] == "tokens"
    assert summary["settings"]["sampling"]["max_new_tokens"] == 8
    assert {"report.html", "think_length.png", "variants.png"} <= {p.name for p in run.iterdir()}

    def no_model(cfg):
        raise AssertionError("a finished run must not load the model again")

    monkeypatch.setattr(harness, "make_backend", no_model)
    before = (run / "samples.jsonl").read_text()
    assert main(args) == 0
    assert (run / "samples.jsonl").read_text() == before


def test_forced_thinking_budget(setup):
    model, suite = setup
    from mgrd.data.manifest import load_manifest

    items = load_manifest(suite / "manifest.jsonl")[:2]
    jobs = [Job((i.id, "clean"), i.to_row(suite), i.task) for i in items]
    for job in jobs:  # to_row makes paths relative to the suite
        job.row["audio"] = [str(suite / p) for p in job.row["audio"]]
    greedy = SamplingConfig(temperature=0, max_new_tokens=8)
    none = [o for batch in LocalModel(model, greedy, think_budget=0, answer_tokens=4).generate(jobs) for o in batch]
    assert all(o.text.startswith(FORCED_CLOSE) and o.think_tokens == 0 for o in none)
    short = [o for batch in LocalModel(model, greedy, think_budget=3, answer_tokens=4).generate(jobs) for o in batch]
    assert all("</think>" in o.text and o.think_tokens <= 4 for o in short)
