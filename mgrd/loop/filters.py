"""The MGRD candidate filters (Step-Audio-R1 §4.2 step 3; DESIGN.md §6), applied to sampled completions.

Each completion of a `mgrd.data.records.SampleRecord` gets four verdicts, written into its `scores` as
`{"score": 1.0 or 0.0, "reason": ...}` under the names of `FILTERS`:

- `correct`: the item's task grader (`Task.score`); kept when the rollout already recorded it;
- `grounding`: the reasoning names perceptual features (`mgrd.grounding.lexicon`, score >=
  `FilterConfig.min_lexicon`) and none of its verifiable claims contradicts the audio
  (`mgrd.grounding.claims`): checked against the item's `meta` or, for an item without meta, against
  measurements of its (single) clip (`mgrd.grounding.measure.clip_facts`);
- `coherence`: `mgrd.grounding.coherence.check_coherence` (conclusion = answer, no contradicting steps, not
  degenerate, length within bounds);
- `selfcog`: `mgrd.grounding.selfcog.check_selfcog` (no "I cannot hear audio").

Three more numbers go beside them for reports (not filters): `lexicon` (the lexicon score), `claims` (the
share of checkable claims that the facts support; 1.0 when none was checkable) and `claims_checked` (how
many were checkable), so a run's verified-claim rate is sum(claims x claims_checked) / sum(claims_checked)
(`filter_summary`).

An optional LLM judge (`mgrd.judge.Judge`, any OpenAI-compatible endpoint, replies cached on disk) can back
the rule-based `grounding`, `coherence` and `selfcog` verdicts (`FilterConfig.judge_criteria`): a
candidate passes only when the rules and the judge agree. When the judge cannot be reached, the run stops
with a clear error if `judge_required`, else it continues on the rules alone and each reason says so.
Build one with `FilterJudge(Judge(JudgeConfig(base_url=..., model=..., cache_dir=...)))` and pass it as
`judge=` to `score_records`.

This module decides verdicts; `mgrd.loop.select` turns them into D_audio-cot and the RL set.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mgrd.data.records import CompletionRecord, SampleRecord
from mgrd.grounding.claims import Check, extract_claims, facts_from_meta, verify_claims
from mgrd.grounding.coherence import CoherenceConfig, check_coherence
from mgrd.grounding.lexicon import PASS_SCORE, lexicon_score
from mgrd.grounding.selfcog import check_selfcog
from mgrd.tasks import Task, get_task
from mgrd.tasks.grading import as_row

if TYPE_CHECKING:
    from mgrd.judge import Judge

log = logging.getLogger(__name__)

FILTERS = ("correct", "grounding", "coherence", "selfcog")
JUDGE_CRITERIA = ("grounding", "coherence", "selfcog")


class FilterError(ValueError):
    """Filtering cannot go on: an item missing for a record, or a required judge that cannot be reached."""


@dataclass
class FilterConfig:
    """How the filters decide (defaults: our documented rules; the report publishes none)."""

    min_lexicon: float = field(default=PASS_SCORE, metadata={"help": "lexicon score a grounded chain needs"})
    claim_tolerance: float = field(default=1.0, metadata={
        "help": "multiplies every claim tolerance of the grounding filter (Hz 3 %, times 5 % or 20 ms, levels 1.5 dB; "
                "counts stay exact); the evaluation's verified-claim rate always uses 1.0"})
    claim_tolerance_by_iteration: tuple[float, ...] = field(default=(), metadata={
        "help": "claim_tolerance for MGRD iterations 1, 2, ... (the last value holds after), e.g. [4, 2, 1] to "
                "select for finer claims once enough candidates pass; empty: claim_tolerance every iteration"})
    measure_audio: bool = field(default=True, metadata={
        "help": "check claims against measurements of the clip when an item has no meta (else they stay unverified)"})
    coherence: CoherenceConfig = field(default_factory=CoherenceConfig, metadata={"help": "coherence bounds"})
    judge_criteria: tuple[str, ...] = field(default=("grounding", "coherence"), metadata={
        "help": "filters the LLM judge also decides, when a judge is given"})
    judge_required: bool = field(default=True, metadata={
        "help": "stop when the judge cannot be reached; false continues on the rule-based filters and says so"})

    def __post_init__(self):
        unknown = sorted(set(self.judge_criteria) - set(JUDGE_CRITERIA))
        if unknown:
            raise ValueError(f"judge_criteria: unknown {unknown}; choose from {list(JUDGE_CRITERIA)}")
        if not 0.0 <= self.min_lexicon <= 1.0:
            raise ValueError(f"min_lexicon must lie in [0, 1], got {self.min_lexicon}")
        for value in (self.claim_tolerance, *self.claim_tolerance_by_iteration):
            if not value >= 1.0:
                raise ValueError(f"claim tolerances must be >= 1 (they only widen the tolerances), got {value}")

    def for_iteration(self, t: int) -> "FilterConfig":
        """The filters of MGRD iteration `t` (1-based): `claim_tolerance` from `claim_tolerance_by_iteration`."""
        if not self.claim_tolerance_by_iteration:
            return self
        schedule = self.claim_tolerance_by_iteration
        return dataclasses.replace(self, claim_tolerance=schedule[min(t, len(schedule)) - 1])


@dataclass(frozen=True)
class Verdict:
    """One filter's decision on one completion."""

    passed: bool
    reason: str


# ---------------------------------------------------------------------------------------------- facts


def item_facts(item: dict | Any, measure_audio: bool = True) -> tuple[dict, bool]:
    """The facts an item's claims are checked against, and whether they were measured.

    Args:
        item: a manifest row or `Item`.
        measure_audio: measure an item without meta (its only clip; items with several clips get none).
    Returns:
        (`claims.facts_from_meta(meta)`, False) when the item has meta, else (`measure.clip_facts(clip)`, True),
        or ({}, False) when there is nothing to measure.
    """
    row = as_row(item)
    if row.get("meta"):
        return facts_from_meta(row["meta"]), False
    clips = row.get("audio") or []
    if not measure_audio or len(clips) != 1:
        return {}, False
    from mgrd.audio import load_audio  # lazy: decoding is only needed for items without meta
    from mgrd.grounding.measure import clip_facts

    return clip_facts(load_audio(clips[0])), True


def question_text(task: Task, item: dict | Any) -> str:
    """The text the model was asked (question and lettered choices, or the conversation's last user turn)."""
    texts = []
    for message in task.prompt(as_row(item))[-1:]:
        content = message.get("content")
        parts = content if isinstance(content, list) else [{"type": "text", "text": content or ""}]
        texts += [p.get("text", "") for p in parts if isinstance(p, dict) and p.get("type") == "text"]
    return "\n".join(texts)


# ---------------------------------------------------------------------------------------------- one completion


def grounding_verdict(reasoning: str, question: str, facts: Mapping[str, Any], measured: bool,
                      min_lexicon: float = PASS_SCORE, tolerance: float = 1.0) -> tuple[Verdict, float, list[Check]]:
    """The rule-based grounding verdict of one chain.

    Returns:
        (verdict, lexicon score, claim checks). It fails when the lexicon score is under `min_lexicon` or a
        claim is contradicted; the reason names the first false claim and what the facts say.
    """
    lexicon = lexicon_score(reasoning, question)
    checks = verify_claims(extract_claims(reasoning), facts, measured=measured, tolerance=tolerance)
    false = [c for c in checks if c.status == "contradicted"]
    checked = [c for c in checks if c.status != "unverifiable"]
    source = "measured audio" if measured else "meta"
    summary = f"{lexicon.describe()}; {len(checked) - len(false)}/{len(checked)} claims verified ({source})"
    if false:
        return Verdict(False, f"false claim {false[0].describe()}; {summary}"), lexicon.score, checks
    if lexicon.score < min_lexicon:
        return Verdict(False, f"too few acoustic features: {summary}"), lexicon.score, checks
    return Verdict(True, summary), lexicon.score, checks


def score_completion(completion: CompletionRecord, item: dict | Any, task: Task, facts: Mapping[str, Any],
                     measured: bool = False, cfg: FilterConfig | None = None,
                     judge: FilterJudge | None = None) -> dict[str, Verdict]:
    """Run the four filters on one completion and write their scores into `completion.scores`.

    Args:
        completion: the sampled completion (its `reasoning`/`answer` split already made).
        item: its manifest row or `Item`.
        task: the item's task (grader and prompt).
        facts, measured: from `item_facts`.
        cfg: thresholds; None = `FilterConfig()`.
        judge: optional LLM judge backing `cfg.judge_criteria`.
    Returns:
        {filter name: Verdict} for the names in `FILTERS`.
    """
    cfg = cfg or FilterConfig()
    row = as_row(item)
    question = question_text(task, row)
    if "correct" not in completion.scores:
        graded = task.score(row, completion.text)
        completion.add_score("correct", graded.score, graded.reason)
    correct = completion.scores["correct"]
    verdicts = {"correct": Verdict(correct["score"] >= 1.0, correct["reason"])}
    grounding, lexicon, checks = grounding_verdict(completion.reasoning, question, facts, measured, cfg.min_lexicon,
                                                   cfg.claim_tolerance)
    coherent = check_coherence(completion.reasoning, completion.answer, task.grader, row.get("choices"),
                               cfg.coherence)
    selfcog = check_selfcog(completion.text)
    verdicts["grounding"] = grounding
    verdicts["coherence"] = Verdict(coherent.passed, coherent.reason)
    verdicts["selfcog"] = Verdict(selfcog.passed, selfcog.reason)
    if judge is not None:
        for name in cfg.judge_criteria:
            verdicts[name] = judge.back(name, verdicts[name], question, completion, cfg.judge_required)
    for name in FILTERS[1:]:
        completion.add_score(name, float(verdicts[name].passed), verdicts[name].reason)
    checked = [c for c in checks if c.status != "unverifiable"]
    supported = sum(c.status == "supported" for c in checked)
    completion.add_score("lexicon", lexicon)
    completion.add_score("claims", supported / len(checked) if checked else 1.0,
                         "; ".join(c.describe() for c in checked)[:500])
    completion.add_score("claims_checked", float(len(checked)))
    return verdicts


def passes_all(completion: CompletionRecord, names: Sequence[str] = FILTERS) -> bool:
    """Whether a scored completion passed every filter in `names`.

    Raises:
        FilterError: a filter's score is missing (the completion was not scored).
    """
    missing = [n for n in names if n not in completion.scores]
    if missing:
        raise FilterError(f"completion has no {missing} score(s); run the filters first")
    return all(completion.scores[n]["score"] >= 1.0 for n in names)


# ---------------------------------------------------------------------------------------------- records


def score_records(records: Iterable[SampleRecord], items: Mapping[str, Any] | Sequence[Any],
                  cfg: FilterConfig | None = None, judge: FilterJudge | None = None,
                  progress: bool = False) -> list[SampleRecord]:
    """Score every completion of every record (in place) and return the records.

    Args:
        records: sampled records (`mgrd.data.records`).
        items: the items they were sampled from, as {id: item} or a sequence of rows / `Item`s.
        cfg: thresholds; judge: optional LLM judge.
        progress: show a tqdm bar.
    Raises:
        FilterError: a record whose item is not among `items`.
    """
    cfg = cfg or FilterConfig()
    by_id = items if isinstance(items, Mapping) else {str(as_row(i)["id"]): i for i in items}
    records = list(records)
    from tqdm import tqdm

    for record in tqdm(records, desc="filters", unit="item", disable=not progress, dynamic_ncols=True):
        if record.item_id not in by_id:
            raise FilterError(f"record {record.item_id!r} ({record.task}) has no item in the manifest given")
        item = by_id[record.item_id]
        task = get_task(as_row(item)["task"])
        facts, measured = item_facts(item, cfg.measure_audio)
        for completion in record.completions:
            score_completion(completion, item, task, facts, measured, cfg, judge)
    return records


def filter_summary(records: Iterable[SampleRecord]) -> dict[str, float]:
    """Pass rates over every scored completion: one per filter, `all` (every filter), `verified_claims`
    (supported over checkable claims, pooled), `mean_lexicon`, and `completions` (how many)."""
    comps = [c for r in records for c in r.completions]
    if not comps:
        return {"completions": 0}
    out: dict[str, float] = {name: sum(c.scores[name]["score"] >= 1.0 for c in comps) / len(comps) for name in FILTERS}
    out["all"] = sum(passes_all(c) for c in comps) / len(comps)
    checked = sum(c.scores["claims_checked"]["score"] for c in comps)
    supported = sum(c.scores["claims"]["score"] * c.scores["claims_checked"]["score"] for c in comps)
    out["verified_claims"] = supported / checked if checked else 1.0
    out["mean_lexicon"] = sum(c.scores["lexicon"]["score"] for c in comps) / len(comps)
    out["completions"] = len(comps)
    return out


# ---------------------------------------------------------------------------------------------- judge

JUDGE_SYSTEM = "You check reasoning written by an audio-language model. Reply with a short reason, then PASS or FAIL."
JUDGE_PROMPTS = {
    "grounding": "Does this reasoning rest on what is heard in the audio (pitch, rhythm, timbre, loudness, duration, "
                 "spectral or prosodic cues) rather than on the wording of the question alone?",
    "coherence": "Does this reasoning follow step by step without contradicting itself, and does it conclude the "
                 "same answer as the final answer?",
    "selfcog": "Does the model avoid claiming it cannot hear or process audio (it was given the audio)?",
}
_VERDICT = re.compile(r"\b(PASS|FAIL)\b")


def parse_judge_reply(text: str) -> bool | None:
    """PASS -> True, FAIL -> False (the last one in the reply wins), None when the reply holds neither."""
    found = _VERDICT.findall(text.upper())
    return found[-1] == "PASS" if found else None


@dataclass
class FilterJudge:
    """An LLM judge backing rule-based verdicts; `judge` is a `mgrd.judge.Judge` (cached, retried)."""

    judge: Judge
    unavailable: int = 0  # requests that failed and fell back to the rules

    def back(self, criterion: str, rule: Verdict, question: str, completion: CompletionRecord,
             required: bool) -> Verdict:
        """The combined verdict: the rule's, vetoed by the judge's FAIL; the judge's reason is appended."""
        from mgrd.judge import JudgeError

        prompt = (f"{JUDGE_PROMPTS[criterion]}\n\nQuestion:\n{question}\n\nReasoning:\n{completion.reasoning}\n\n"
                  f"Final answer:\n{completion.answer or '(none)'}")
        try:
            judged = self.judge.judge(prompt, parse_judge_reply, system=JUDGE_SYSTEM)
        except JudgeError as err:
            if required:
                raise FilterError(f"{err} (set judge_required=false to continue on the rule-based filters)") from None
            if not self.unavailable:
                log.warning("judge unavailable (%s); continuing on the rule-based filters", err)
            self.unavailable += 1
            return Verdict(rule.passed, f"{rule.reason}; judge unavailable, rules only")
        if judged.verdict is None:
            return Verdict(rule.passed, f"{rule.reason}; judge reply had no PASS/FAIL, rules only")
        said = " ".join(judged.text.split())[:160]
        return Verdict(rule.passed and judged.verdict, f"{rule.reason}; judge {'PASS' if judged.verdict else 'FAIL'}: "
                                                      f"{said}")
