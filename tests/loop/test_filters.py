"""The four MGRD filters on sampled records: hand-written candidates for one synthetic item (grounded and
correct, a false claim, text-substitute, incoherent conclusion, "I cannot hear", a repetition loop, cut
off), the verdict table and reasons written into the sample-record JSONL, an item without meta checked
against its measured audio, and the LLM judge behind the rules against a real local HTTP server."""

import numpy as np
import pytest
import soundfile as sf
from eval.servers import completion, serve
from fastapi import FastAPI, Request

from grounding.suite import rows
from mgrd.chat import format_completion
from mgrd.data.records import CompletionRecord, SampleRecord, read_records, write_records
from mgrd.judge import Judge, JudgeConfig
from mgrd.loop.filters import (FILTERS, FilterConfig, FilterError, FilterJudge, filter_summary, parse_judge_reply,
                               passes_all, score_records)


@pytest.fixture(scope="module")
def item():
    row, clips = rows(["pitch_compare"], "train", 1, seed=0)[0]
    return row, clips


def _comp(reasoning, answer, finish="stop"):
    text = format_completion(reasoning, answer) if answer is not None else reasoning
    return CompletionRecord.from_text(text, n_tokens=len(text.split()), finish_reason=finish)


def candidates(row):
    """(name, completion) for each kind of candidate, for a pitch_compare item."""
    grounded, answer = row["reasonings"]["grounded"], row["answer"]
    other = "the first" if answer == "the second" else "the second"
    f1, f2 = row["meta"]["f0_hz"]
    return [
        ("grounded", _comp(grounded, answer)),
        ("false_claim", _comp(grounded.replace(f"near {f1:.0f} Hz", f"near {f1 * 1.5:.0f} Hz"), answer)),
        ("substitute", _comp(row["reasonings"]["text_substitute"], row["meta"]["substitute_answer"])),
        ("incoherent", _comp(grounded, other)),
        ("cannot_hear", _comp("I cannot hear audio, but " + grounded[0].lower() + grounded[1:], answer)),
        ("loop", _comp(grounded + " The second is higher." * 4, answer)),
        ("cut_off", _comp(grounded, None, finish="length")),
    ]


# candidate -> expected (correct, grounding, coherence, selfcog)
EXPECTED = {"grounded": (1, 1, 1, 1), "false_claim": (1, 0, 1, 1), "incoherent": (0, 1, 0, 1),
            "cannot_hear": (1, 1, 1, 0), "loop": (1, 1, 0, 1), "cut_off": (0, 1, 0, 1)}


def _record(row, comps):
    return SampleRecord(item_id=row["id"], task=row["task"], prompt="p", completions=[c for _, c in comps])


def test_each_candidate_gets_its_verdicts_and_reasons(item, tmp_path):
    row, _ = item
    comps = candidates(row)
    record = _record(row, comps)
    score_records([record], [row])
    for name, comp in comps:
        got = tuple(int(comp.scores[f]["score"]) for f in FILTERS)
        if name == "substitute":  # right only by chance: its correctness follows its blind pick
            assert got[1:] == (0, 1, 1)
            assert comp.scores["grounding"]["reason"].startswith("too few acoustic features: lexicon 0.")
            continue
        assert got == EXPECTED[name], (name, {f: comp.scores[f] for f in FILTERS})
        assert passes_all(comp) == (name == "grounded")
    by = dict(comps)
    f1 = row["meta"]["f0_hz"][0]
    assert by["false_claim"].scores["grounding"]["reason"].startswith(f"false claim '{f1 * 1.5:.0f} Hz': ")
    assert by["false_claim"].scores["claims"]["score"] == pytest.approx(2 / 3)
    assert by["incoherent"].scores["coherence"]["reason"].startswith("the reasoning concludes 'the")
    assert "denies the audio (cannot hear): 'I cannot hear audio'" == by["cannot_hear"].scores["selfcog"]["reason"]
    assert by["loop"].scores["coherence"]["reason"].startswith("degenerate: the sentence")
    assert by["grounded"].scores["grounding"]["reason"] == ("lexicon 1.00 (2 measurements; no feature terms); "
                                                           "3/3 claims verified (meta)")
    # the verdicts travel through the shared JSONL format and read back unchanged
    path = write_records(tmp_path / "scored.jsonl", [record])
    assert read_records(path)[0].to_dict() == record.to_dict()


def test_summary_pins_the_rates_of_a_verdict_table(item):
    row, _ = item
    comps = [c for name, c in candidates(row) if name != "substitute"]
    record = SampleRecord(item_id=row["id"], task=row["task"], prompt="p", completions=comps)
    summary = filter_summary(score_records([record], {row["id"]: row}))
    assert row["answer"] == "the second"
    # claims: 3 per chain, plus the loop's four "The second is higher" (22 in all); one false (the moved Hz)
    assert summary == pytest.approx({"correct": 4 / 6, "grounding": 5 / 6, "coherence": 3 / 6, "selfcog": 5 / 6,
                                     "all": 1 / 6, "verified_claims": 21 / 22, "mean_lexicon": 1.0, "completions": 6})


def test_an_item_without_meta_is_checked_against_its_measured_audio(item, tmp_path):
    row, clips = item
    path = tmp_path / "clip.wav"
    sf.write(path, clips[0], 16000, subtype="PCM_16")
    bare = dict(row, meta={}, audio=[str(path)])
    comps = candidates(row)[:2]
    score_records([_record(bare, comps)], [bare])
    assert comps[0][1].scores["grounding"]["score"] == 1.0
    assert comps[0][1].scores["grounding"]["reason"].endswith("claims verified (measured audio)")
    assert comps[1][1].scores["grounding"]["score"] == 0.0
    assert "false claim" in comps[1][1].scores["grounding"]["reason"]
    off = FilterConfig(measure_audio=False)  # nothing to check against: claims stay unverified
    score_records([_record(bare, comps)], [bare], off)
    assert comps[1][1].scores["claims_checked"]["score"] == 0.0


def test_bad_input_is_refused(item):
    row, _ = item
    with pytest.raises(FilterError, match="record 'nope' .* has no item"):
        score_records([SampleRecord(item_id="nope", task="pitch_compare", prompt="", completions=[])], [row])
    with pytest.raises(ValueError, match="judge_criteria: unknown"):
        FilterConfig(judge_criteria=("grounding", "style"))
    with pytest.raises(FilterError, match="no .*'grounding'.* score"):
        passes_all(_comp("x", "y"))


def test_parse_judge_reply():
    assert parse_judge_reply("Grounded in pitch. PASS") is True
    assert parse_judge_reply("pass at first, but on reflection: FAIL") is False
    assert parse_judge_reply("no verdict") is None


@pytest.fixture(scope="module")
def judge_url():
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        prompt = (await request.json())["messages"][-1]["content"]
        # a judge that fails every chain on grounding and passes every chain on coherence
        verdict = "Only the wording. FAIL" if prompt.startswith("Does this reasoning rest on") else "Fine. PASS"
        return completion(verdict)

    with serve(app) as url:
        yield url


def test_the_judge_backs_the_rules_and_its_replies_are_cached(item, judge_url, tmp_path):
    row, _ = item
    judge = FilterJudge(Judge(JudgeConfig(base_url=judge_url, model="judge", cache_dir=tmp_path / "cache")))
    comps = candidates(row)[:2]
    score_records([_record(row, comps)], [row], judge=judge)
    grounded = comps[0][1].scores
    assert grounded["grounding"]["score"] == 0.0  # the rules pass it, the judge vetoes
    assert grounded["grounding"]["reason"].endswith("claims verified (meta); judge FAIL: Only the wording. FAIL")
    assert grounded["coherence"]["score"] == 1.0
    assert grounded["coherence"]["reason"].endswith("= the answer; judge PASS: Fine. PASS")
    assert comps[1][1].scores["grounding"]["reason"].startswith("false claim")  # a judge only vetoes
    assert judge.judge.stats.calls == 4
    score_records([_record(row, candidates(row)[:2])], [row], judge=judge)
    assert judge.judge.stats.calls == 4 and judge.judge.stats.cache_hits == 4


def test_an_unreachable_judge_stops_the_run_or_is_skipped_and_said(item, tmp_path):
    row, _ = item
    dead = JudgeConfig(base_url="http://127.0.0.1:9/v1", model="judge", max_retries=0, timeout_s=2)
    with pytest.raises(FilterError, match="judge at http://127.0.0.1:9/v1 failed: .*judge_required=false"):
        score_records([_record(row, candidates(row)[:1])], [row], judge=FilterJudge(Judge(dead)))
    judge = FilterJudge(Judge(dead))
    comps = candidates(row)[:1]
    score_records([_record(row, comps)], [row], FilterConfig(judge_required=False), judge=judge)
    assert comps[0][1].scores["grounding"]["score"] == 1.0
    assert comps[0][1].scores["grounding"]["reason"].endswith("; judge unavailable, rules only")
    assert judge.unavailable == 2


def test_config_loads_with_nested_overrides():
    from mgrd.config import ConfigKeyError, load_config

    cfg = load_config(FilterConfig, overrides=["coherence.min_words=3", "judge_criteria=[selfcog]", "min_lexicon=0.75"])
    assert (cfg.coherence.min_words, cfg.judge_criteria, cfg.min_lexicon) == (3, ("selfcog",), 0.75)
    with pytest.raises(ConfigKeyError, match="did you mean coherence.max_words"):
        load_config(FilterConfig, overrides=["coherence.max_word=3"])


def test_claim_tolerance_schedule_tightens_the_grounding_filter_by_iteration(item):
    """A pitch 8 % off passes at x4 (12 %) and fails at x1 (3 %): with the schedule [4, 1] iteration 1 keeps the
    chain, iterations 2 and 3 (the last value holds) reject it; no schedule keeps claim_tolerance throughout."""
    from mgrd.config import ConfigKeyError, load_config

    row, _ = item
    f1 = row["meta"]["f0_hz"][0]
    chain = row["reasonings"]["grounded"].replace(f"near {f1:.0f} Hz", f"near {f1 * 1.08:.0f} Hz")
    cfg = load_config(FilterConfig, overrides=["claim_tolerance_by_iteration=[4, 1]"])
    verdicts = []
    for t in (1, 2, 3):
        comp = _comp(chain, row["answer"])
        score_records([_record(row, [("c", comp)])], [row], cfg.for_iteration(t))
        verdicts.append(comp.scores["grounding"]["score"])
    assert verdicts == [1.0, 0.0, 0.0]
    assert [cfg.for_iteration(t).claim_tolerance for t in (1, 2, 5)] == [4.0, 1.0, 1.0]
    assert FilterConfig(claim_tolerance=2.0).for_iteration(3).claim_tolerance == 2.0
    with pytest.raises((ValueError, ConfigKeyError), match="claim tolerances must be >= 1"):
        load_config(FilterConfig, overrides=["claim_tolerance_by_iteration=[4, 0.5]"])
