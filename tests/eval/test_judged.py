"""Big Bench Audio and Wild Speech scored through a judge on a real local HTTP server: verdicts, invalid judge
outputs counted in the summary (never dropped silently), a rescore answered from the cache."""

import json
import re

from fastapi import FastAPI, Request

from mgrd.eval.cli import main

from . import fixtures as fx
from .servers import completion, serve


class RuleJudge:
    """A deterministic judge: for BBA, CORRECT when the candidate equals the official answer (case-blind),
    "maybe" (invalid) for the candidate "unsure", else INCORRECT; for Wild Speech, a score from the length of
    the response, or no score for a response containing "noscore"."""

    def __init__(self):
        self.prompts, self.bodies = [], []
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            body = await request.json()
            prompt = body["messages"][-1]["content"]
            self.prompts.append(prompt)
            self.bodies.append(body)
            if prompt.startswith("Assess whether"):
                official = re.search(r"The OFFICIAL ANSWER:(.*)\n", prompt).group(1)
                candidate = prompt.split("BEGIN CANDIDATE ANSWER TO ASSESS\n\n")[1].split("\n\nEND CANDIDATE")[0]
                reply = "maybe" if candidate == "unsure" else \
                    "CORRECT" if candidate.lower() == official.lower() else "INCORRECT - no"
            else:
                response = prompt.split("[Assistant response]\n")[1].split("\n\n[Checklist]")[0]
                reply = "no idea" if "noscore" in response else f"Fine.\nScore: [{min(10, len(response.split()))}]"
            return completion(reply)

        self.app = app


def run_score(task, data, preds, out, url, *extra):
    return main(["score", "--task", task, "--data", str(data), "--predictions", str(preds), "--out", str(out),
                 "--judge-endpoint", url, "--judge-model", "rule", "--no-report", *extra])


def test_bba_judge_verdicts_and_invalid_outputs_in_the_summary(tmp_path):
    data = fx.write_bba(tmp_path / "bba")
    preds = tmp_path / "p.jsonl"
    preds.write_text("".join(json.dumps(r) + "\n" for r in [
        {"id": "0", "output": "<think>\nThe argument is flawed.\n</think>\ninvalid"},
        {"id": "250", "output": "unsure"}, {"id": "500", "output": "17"}, {"id": "750", "output": "no"}]))
    judge = RuleJudge()
    with serve(judge.app) as url:
        assert run_score("big_bench_audio", data, preds, tmp_path / "run", url) == 0
        assert len(judge.prompts) == 4 and judge.bodies[0]["temperature"] == 0.0
        assert "START QUESTION I have four oranges, a peach, ... How many fruits do I have? \\n\\nEND QUESTION" in \
            judge.prompts[2]
        summary = json.loads((tmp_path / "run" / "summary.json").read_text())
        o = summary["overall"]
        assert (o["official"], o["official_n"], o["judge_invalid"], o["normalised"]) == (66.6667, 3, 1, 50.0)
        assert summary["judge_invalid_items"] == ["250"]
        assert summary["scoring"]["judge"]["stats"]["invalid"] == 1
        assert summary["categories"]["category"]["object_counting"]["official"] == 0.0
        # rescoring the same outputs asks the judge nothing new
        assert run_score("big_bench_audio", data, preds, tmp_path / "run", url) == 0
        assert len(judge.prompts) == 4
        again = json.loads((tmp_path / "run" / "summary.json").read_text())
        assert again["scoring"]["judge"]["stats"]["cache_hits"] == 4


def test_wildspeech_judge_scores_times_ten_with_invalid_counted(tmp_path):
    data = fx.write_wildspeech(tmp_path / "ws")
    preds = tmp_path / "p.jsonl"
    preds.write_text("".join(json.dumps(r) + "\n" for r in [
        {"id": "h1", "output": "</think>\nThe capital of France is Paris, a city."},  # 8 words -> 8
        {"id": "h2", "output": "</think>\nThis reply has noscore in it"},  # judge gives no score: invalid
        {"id": "h3", "output": "</think>\n雨が降る。静かな夜。"}]))  # not English: scores 1 without the judge
    judge = RuleJudge()
    with serve(judge.app) as url:
        assert run_score("wildspeech", data, preds, tmp_path / "run", url) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert len(judge.prompts) == 2
    # WildSpeech's official judge sampling; Big Bench Audio's is unstated, so it stays deterministic
    assert {(b["temperature"], b["top_p"], b["max_tokens"]) for b in judge.bodies} == {(0.5, 0.95, 1024)}
    assert (summary["overall"]["official"], summary["overall"]["judge_invalid"]) == (45.0, 1)
    assert summary["categories"]["noise"]["human_noise"]["official"] == 10.0
    assert "Does the response follow" in judge.prompts[0] and "- Names Paris." in judge.prompts[0]


def test_merged_shards_rescore_from_the_judge_caches_without_asking(tmp_path):
    data = fx.write_bba(tmp_path / "bba")
    preds = tmp_path / "p.jsonl"
    preds.write_text("".join(json.dumps(r) + "\n" for r in [
        {"id": "0", "output": "invalid"}, {"id": "250", "output": "unsure"}, {"id": "500", "output": "18"},
        {"id": "750", "output": "yes"}]))
    judge = RuleJudge()
    with serve(judge.app) as url:
        for i in range(2):
            assert run_score("big_bench_audio", data, preds, tmp_path / f"s{i}", url, "--shard", f"{i}/2") == 0
    asked = len(judge.prompts)
    assert main(["merge", str(tmp_path / "s0"), str(tmp_path / "s1"), "--out", str(tmp_path / "m"), "--no-report"]) == 0
    merged = json.loads((tmp_path / "m" / "summary.json").read_text())
    assert len(judge.prompts) == asked == 4
    assert (merged["overall"]["official"], merged["overall"]["judge_invalid"]) == (66.6667, 1)
    assert merged["scoring"]["judge"]["replay"] and merged["scoring"]["judge"]["stats"]["cache_hits"] == 4
