"""A model that reads only the question text must score at chance on every audio family.

Three text-only baselines answer held-out items of each audio family in the registry
(`mgrd.data.synth.FAMILIES`, kinds acoustic / compositional / speech):
- `overlap`: the choice sharing the most words with the question (ties: the first listed);
- `first`: always the first choice (catches position bias);
- `prior`: the most frequent training answer for the same question text and choices (catches answers
  that the wording, the choice list or an unbalanced answer distribution give away).
Chance is the mean of 1/len(choices) for choice items, and for numeric items the held-out share of the
training set's most common answer (what a text-blind prior reaches). Each baseline must land within
3 standard errors of chance, per family and pooled.
"""

import functools
import re
import zlib
from collections import Counter

import numpy as np
import pytest

from mgrd.data.synth import FAMILIES
from mgrd.data.synth.speech import UNAVAILABLE_MESSAGE, speech_available
from mgrd.data.synth.writer import manifest_item
from mgrd.tasks.grading import grade

AUDIO_FAMILIES = sorted(name for name, f in FAMILIES.items() if f.kind not in ("text", "conversation"))
N_TRAIN, N_TEST = 240, 240


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def overlap_baseline(row: dict, _prior: dict) -> str | None:
    if not row["choices"]:
        return None
    question = _words(row["question"])
    return max(row["choices"], key=lambda c: len(_words(c) & question))  # max keeps the first of ties


def first_baseline(row: dict, _prior: dict) -> str | None:
    return row["choices"][0] if row["choices"] else None


def prior_baseline(row: dict, prior: dict) -> str:
    key = (row["question"], tuple(row["choices"] or ()))
    return prior.get(key, prior[None])


BASELINES = {"overlap": overlap_baseline, "first": first_baseline, "prior": prior_baseline}


def fit_prior(rows: list[dict]) -> dict:
    """Most common answer per (question, choices), plus the overall most common under key None."""
    by_key: dict = {}
    for row in rows:
        by_key.setdefault((row["question"], tuple(row["choices"] or ())), Counter())[row["answer"]] += 1
    prior = {key: counts.most_common(1)[0][0] for key, counts in by_key.items()}
    prior[None] = Counter(row["answer"] for row in rows).most_common(1)[0][0]
    return prior


def chance(train: list[dict], test: list[dict]) -> float:
    if test[0]["choices"]:
        return float(np.mean([1 / len(row["choices"]) for row in test]))
    answers = Counter(row["answer"] for row in train + test)
    if len(answers) <= 10:  # a small answer set (counts): chance is a uniform guess over it
        return 1 / len(answers)
    mode = answers.most_common(1)[0][0]  # open-ended numbers: the best prior guess
    return float(np.mean([row["answer"] == mode for row in test]))


def score(baseline, train: list[dict], test: list[dict]) -> float | None:
    prior = fit_prior(train)
    answers = [baseline(row, prior) for row in test]
    if any(a is None for a in answers):
        return None  # baseline does not apply (numeric family)
    return float(np.mean([grade(row, a, require_think=False) for row, a in zip(test, answers)]))


def within_chance(acc: float, p: float, n: int) -> bool:
    return abs(acc - p) < 3 * np.sqrt(max(p * (1 - p), 1e-12) / n)


def _rows(name: str, split: str, n: int, seed: int) -> list[dict]:
    family = FAMILIES[name]
    rows = []
    for i in range(n):
        # the family name is in the seed, so families do not share their draws (pooled test independence)
        item = family.make(np.random.default_rng([seed, zlib.crc32(name.encode()), i]), split)
        rows.append(manifest_item(item, f"{name}-{i:06d}", name, [f"audio/{i}.wav"] * len(item.audio)).to_row("."))
    return rows


@functools.cache
def _family_rows(name: str) -> tuple[list[dict], list[dict]]:
    """(train rows, held-out test rows) of one family, drawn once per session."""
    return _rows(name, "train", N_TRAIN, seed=11), _rows(name, "test", N_TEST, seed=12)


def _available(name: str) -> bool:
    return FAMILIES[name].kind != "speech" or speech_available()


@pytest.mark.integration
@pytest.mark.parametrize("name", AUDIO_FAMILIES)
def test_text_only_baselines_score_at_chance(name):
    if not _available(name):
        pytest.skip(UNAVAILABLE_MESSAGE)
    train, test = _family_rows(name)
    p = chance(train, test)
    for baseline_name, baseline in BASELINES.items():
        acc = score(baseline, train, test)
        if acc is not None:
            assert within_chance(acc, p, len(test)), f"{name}: {baseline_name} scores {acc:.3f}, chance {p:.3f}"


@pytest.mark.integration
def test_text_only_baseline_pooled_over_audio_families():
    names = [name for name in AUDIO_FAMILIES if _available(name)]
    accs = [score(prior_baseline, *_family_rows(name)) for name in names]
    p = float(np.mean([chance(*_family_rows(name)) for name in names]))
    assert len(names) >= 3
    assert within_chance(float(np.mean(accs)), p, N_TEST * len(names)), (np.mean(accs), p)


def test_the_baselines_catch_a_leaky_family():
    """The check can fail: answers named in the question, first-position answers, a skewed prior."""
    rng = np.random.default_rng(0)

    def leaky(i: int, how: str) -> dict:
        answer = ["high", "low"][int(rng.integers(2))]
        question = f"Is it {answer}?" if how == "wording" else "Is it high or low?"
        choices = ["high", "low"]
        if how == "position":
            choices = [answer, "low" if answer == "high" else "high"]
        if how == "prior":
            answer = "low" if rng.random() < 0.8 else "high"
        return {"id": str(i), "task": "leaky", "question": question, "choices": choices, "answer": answer}

    for how, baseline in [("wording", overlap_baseline), ("position", first_baseline), ("prior", prior_baseline)]:
        train, test = [leaky(i, how) for i in range(200)], [leaky(i, how) for i in range(200)]
        assert not within_chance(score(baseline, train, test), chance(train, test), len(test)), how
    fair = [leaky(i, "none") for i in range(400)]
    assert within_chance(score(prior_baseline, fair[:200], fair[200:]), 0.5, 200)
