"""Logical coherence of a reasoning chain: the MGRD filter's second criterion (Step-Audio-R1 §4.2).

A chain is coherent when all of these hold (checked in this order; the first failure is the reason):
1. it has an answer (not cut off before `</think>`) and non-empty reasoning;
2. it is not degenerate: no token repeated `max_token_run` times in a row, no sentence said
   `max_sentence_repeats` times or more, no character run of `max_char_run`, and at most `max_ngram_repeat`
   of its word trigrams repeats of earlier ones (a decoding loop);
3. its length is within bounds (`CoherenceConfig.min_words` .. `max_words`);
4. no step contradicts another: two claims about the same thing that disagree ("the first is higher" and
   "the second is higher"; "gets louder" and "gets softer"; "3 beeps" and "4 beeps"; the first tone near
   300 Hz and near 500 Hz), or stated numbers that contradict a stated comparison ("the first near 300 Hz,
   the second near 500 Hz, so the first is higher"), using `mgrd.grounding.claims` (no audio needed);
5. the conclusion the reasoning states (after its last "the answer is", "so", "therefore", "thus" or
   "hence") names the same answer as the final answer, read by the task's grader ("choice": the same
   option; "numeric": the same number; "exact": the same normalised text).

The rules are deterministic and need no model; `mgrd.loop.filters` can back them with an LLM judge.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass, field

from mgrd.grounding.claims import TOLERANCES, Claim, blank_quotes, extract_claims
from mgrd.tasks.grading import normalize, parse_final_number, resolve_choice


@dataclass(frozen=True)
class CoherenceConfig:
    """Bounds of the coherence check (module docstring)."""

    min_words: int = field(default=8, metadata={"help": "fewest words of reasoning (suite chains have 20-70)"})
    max_words: int = field(default=1500, metadata={"help": "most words of reasoning"})
    max_token_run: int = field(default=6, metadata={"help": "a token repeated this often in a row is a loop"})
    max_sentence_repeats: int = field(default=3, metadata={"help": "a sentence said this often is a loop"})
    max_char_run: int = field(default=24, metadata={"help": "a character repeated this often in a row is a loop"})
    max_ngram_repeat: float = field(default=0.5, metadata={
        "help": "largest share of word trigrams that repeat earlier ones"})


@dataclass(frozen=True)
class Coherence:
    """The verdict: `passed`, and the reason (what failed, or a one-line summary when it passed)."""

    passed: bool
    reason: str


_WORD = re.compile(r"[\w'.+-]+|[^\w\s]")
_CONCLUSION = re.compile(r"\b(?:answer\s*(?:is|would be|:|=)|so|therefore|thus|hence|which means)\b", re.IGNORECASE)


def degenerate(text: str, cfg: CoherenceConfig = CoherenceConfig()) -> str | None:
    """Why `text` looks like a decoding loop, or None when it does not."""
    runs = re.search(r"(.)\1{%d,}" % (cfg.max_char_run - 1), text)
    if runs:
        return f"degenerate: {runs.group(1)!r} repeated {len(runs.group(0))} times"
    tokens = [t.lower() for t in _WORD.findall(text)]
    run = 1
    for a, b in zip(tokens, tokens[1:]):
        run = run + 1 if a == b else 1
        if run >= cfg.max_token_run:
            return f"degenerate: {a!r} repeated {run} times in a row"
    sentences = [" ".join(s.lower().split()) for s in re.split(r"(?<!\d)[.!?\n]+(?!\d)", text)]
    counts: dict[str, int] = defaultdict(int)
    for s in sentences:
        if len(s.split()) >= 3:
            counts[s] += 1
            if counts[s] >= cfg.max_sentence_repeats:
                return f"degenerate: the sentence {s[:60]!r} is said {counts[s]} times"
    words = [t for t in tokens if t.isalnum() or any(c.isalnum() for c in t)]
    grams = list(zip(words, words[1:], words[2:]))
    if len(grams) >= 12:
        repeated = 1 - len(set(grams)) / len(grams)
        if repeated > cfg.max_ngram_repeat:
            return f"degenerate: {repeated:.0%} of its word trigrams repeat earlier ones"
    return None


def contradictions(text: str) -> list[str]:
    """Pairs of steps in `text` that cannot both be true, each as one line (empty when there are none)."""
    claims = extract_claims(text)
    found = []
    groups: dict[tuple, list[Claim]] = defaultdict(list)
    for c in claims:
        if c.kind in ("compare", "trend", "contour", "category", "count"):
            groups[(c.kind, c.role)].append(c)
        elif c.kind == "quantity" and c.index is not None:
            groups[(c.kind, c.dim, c.index, c.role)].append(c)
    for key, group in groups.items():
        first = group[0]
        for other in group[1:]:
            if _disagree(first, other):
                found.append(f"{first.text!r} vs {other.text!r}")
                break
    found += _numbers_vs_comparisons(claims)
    return found


def _disagree(a: Claim, b: Claim) -> bool:
    if a.kind == "compare":
        return a.index != b.index
    if a.kind == "quantity":
        rel, abs_tol = TOLERANCES[a.dim]
        tol = max(rel * max(abs(a.value), abs(b.value)), abs_tol, 0.5 * 10.0 ** -min(a.decimals, b.decimals))
        return abs(a.value - b.value) > tol
    return a.value != b.value


# compare feature -> (dimension, role) of the numbers that decide it
_DECIDING = {"pitch": ("hz", None), "duration": ("s", "duration"), "tempo": ("bpm", None)}


def _numbers_vs_comparisons(claims: list[Claim]) -> list[str]:
    found = []
    for c in claims:
        if c.kind != "compare" or c.role not in _DECIDING:
            continue
        dim, role = _DECIDING[c.role]
        by_index = {q.index: q for q in claims if q.kind == "quantity" and q.dim == dim and q.role == role
                    and q.index in (0, 1)}
        if len(by_index) == 2 and not math.isclose(by_index[0].value, by_index[1].value):
            larger = 0 if by_index[0].value > by_index[1].value else 1
            if larger != c.index:
                found.append(f"{c.text!r} vs {by_index[0].text!r} and {by_index[1].text!r}")
    return found


def stated_conclusion(reasoning: str) -> str | None:
    """The text after the reasoning's last conclusion marker ("the answer is", "so", ...), or None."""
    plain = blank_quotes(reasoning)
    marks = list(_CONCLUSION.finditer(plain))
    if not marks:
        return None
    return reasoning[marks[-1].end():].strip(" \t\n:.,") or None


def same_answer(conclusion: str, answer: str, grader: str, choices: list[str] | None) -> bool:
    """Whether a stated conclusion and a final answer name the same answer under `grader`."""
    if grader == "choice" and choices:
        named = resolve_choice(answer, choices)
        return named is not None and resolve_choice(conclusion, choices) == named
    if grader == "numeric":
        a, c = parse_final_number(answer), parse_final_number(conclusion)
        return a is not None and c is not None and math.isclose(a, c, rel_tol=1e-6, abs_tol=1e-6)
    return bool(normalize(answer)) and normalize(conclusion).endswith(normalize(answer))


def check_coherence(reasoning: str, answer: str | None, grader: str, choices: list[str] | None = None,
                    cfg: CoherenceConfig = CoherenceConfig()) -> Coherence:
    """The coherence verdict of one completion (module docstring).

    Args:
        reasoning: the text before `</think>`.
        answer: the text after it; None when the completion was cut off.
        grader: the task's grader ("choice", "numeric" or "exact").
        choices: the item's options (choice items).
        cfg: the bounds.
    Returns:
        `Coherence(passed, reason)`.
    """
    if answer is None:
        return Coherence(False, "no answer: cut off before </think>")
    if not reasoning.strip():
        return Coherence(False, "empty reasoning")
    loop = degenerate(reasoning, cfg)
    if loop:
        return Coherence(False, loop)
    n_words = len(reasoning.split())
    if not cfg.min_words <= n_words <= cfg.max_words:
        return Coherence(False, f"reasoning has {n_words} words, outside [{cfg.min_words}, {cfg.max_words}]")
    clashes = contradictions(reasoning)
    if clashes:
        return Coherence(False, f"steps contradict each other: {clashes[0]}")
    conclusion = stated_conclusion(reasoning)
    if conclusion is None:
        return Coherence(False, "the reasoning states no conclusion")
    if not same_answer(conclusion, answer, grader, choices):
        return Coherence(False, f"the reasoning concludes {conclusion[:60]!r} but the answer is "
                                f"{answer.strip()[:60]!r}")
    return Coherence(True, f"{n_words} words; concludes {conclusion[:40]!r} = the answer")
