"""No shortcut around listening: trivial clip properties and single facts predict answers at chance.

- Trivial features, for every audio family (the speech ones in the integration tier: espeak-ng is slow):
  a clip's duration, RMS, peak and crest factor (peak over RMS). The file size of a
  16-bit mono wav is 44 + 2 x samples bytes, the duration again, so it adds nothing. Two rules are fit on
  one seed's train items and scored on another seed's: a 15-nearest-neighbour vote on the standardised
  features, and the best single feature cut into ten quantile bins (majority answer per bin, the feature
  picked on the fit items). With no information in the features, a rule's accuracy is a binomial draw
  with success rate at most the largest answer share p (the rule's guesses are independent of the truth),
  so it stays below p + 3.5 * sqrt(p (1 - p) / n): at n = 120, 0.66 for yes/no and 0.29 for six counts,
  while the shortcuts this guards against scored 0.78-0.96. (3.5 standard errors: 13 families x 2 rules
  stay well under a 1 % chance of a false alarm.) Before the audit's fixes, voice_pitch scored 0.95 and
  speech_rate 1.00 here (level and crest; clip length).
- Single facts (compositional families): each fact alone, through the majority answer per fact value, is
  at chance, both as stored in `meta` and as measured in the audio by test_compositional's derivers
  (integration tier); the "both conditions hold" rules they replace are shown to fail the same check.
"""

from __future__ import annotations

import numpy as np
import pytest

from mgrd.data.synth import DEFAULT_FAMILIES, speech

from .draws import draw
from .test_compositional import DERIVE as COMPOSITIONAL_DERIVE

N = 120  # items per seed; seed 0's are the ones test_acoustic draws too
Z = 3.5


def _items(family: str, seed: int) -> list:
    return draw(family, "train", N, seed)


def trivial_features(clip: np.ndarray) -> list[float]:
    """[duration s, log RMS, log peak, log crest factor] of a clip."""
    x = clip.astype(np.float64)
    level, peak = np.sqrt(np.mean(x**2)), np.max(np.abs(x))
    return [x.size / 16_000, np.log(level), np.log(peak), np.log(peak / level)]


def knn_rule(fit_x: np.ndarray, fit_y: np.ndarray, test_x: np.ndarray, k: int = 15) -> np.ndarray:
    """Majority answer of the k nearest fit items (features standardised on the fit items)."""
    mean, std = fit_x.mean(axis=0), fit_x.std(axis=0) + 1e-12
    a, b = (fit_x - mean) / std, (test_x - mean) / std
    nearest = np.argsort(((b[:, None, :] - a[None, :, :]) ** 2).sum(axis=-1), axis=1)[:, :k]
    return np.array([_majority(fit_y[row]) for row in nearest])


def _majority(values: np.ndarray):
    options, counts = np.unique(values, return_counts=True)
    return options[np.argmax(counts)]


def binned_rule(fit_x: np.ndarray, fit_y: np.ndarray, test_x: np.ndarray, bins: int = 10) -> np.ndarray:
    """Majority answer per quantile bin of one feature (the one most accurate on the fit items)."""
    def predict(j: int, xs: np.ndarray) -> np.ndarray:
        edges = np.quantile(fit_x[:, j], np.linspace(0, 1, bins + 1)[1:-1])
        fit_bins, bins_of = np.digitize(fit_x[:, j], edges), np.digitize(xs, edges)
        table = {b: _majority(fit_y[fit_bins == b]) for b in np.unique(fit_bins)}
        fallback = _majority(fit_y)
        return np.array([table.get(b, fallback) for b in bins_of])

    best = max(range(fit_x.shape[1]), key=lambda j: np.mean(predict(j, fit_x[:, j]) == fit_y))
    return predict(best, test_x[:, best])


def chance_bound(answers: np.ndarray) -> tuple[float, float]:
    """(p, bound): the largest answer share, and the accuracy a rule with no information stays under."""
    _, counts = np.unique(answers, return_counts=True)
    p = counts.max() / answers.size
    return p, p + Z * np.sqrt(p * (1 - p) / answers.size)


def rule_accuracies(fit_x, fit_y, test_x, test_y) -> dict[str, float]:
    return {name: float(np.mean(rule(fit_x, fit_y, test_x) == test_y))
            for name, rule in (("knn", knn_rule), ("binned", binned_rule))}


@pytest.mark.parametrize("family", DEFAULT_FAMILIES)
def test_trivial_clip_features_predict_the_answer_at_chance(family):
    check_trivial_features(family)


@pytest.mark.integration
@pytest.mark.parametrize("family", sorted(f.name for f in speech.FAMILIES))
def test_trivial_clip_features_predict_speech_answers_at_chance(family):
    if not speech.speech_available():
        pytest.skip(speech.UNAVAILABLE_MESSAGE)
    check_trivial_features(family)


def check_trivial_features(family: str) -> None:
    fit, held = _items(family, 0), _items(family, 1)
    fit_x, test_x = (np.array([trivial_features(it.audio[0]) for it in items]) for items in (fit, held))
    fit_y, test_y = (np.array([it.answer for it in items]) for items in (fit, held))
    p, bound = chance_bound(test_y)
    for name, accuracy in rule_accuracies(fit_x, fit_y, test_x, test_y).items():
        assert accuracy < bound, f"{family}: the {name} rule on trivial features scores {accuracy:.3f} (chance {p:.3f})"


def test_the_trivial_baseline_catches_a_length_shortcut():
    """The check can fail: clips whose length follows the answer (as beep_count's once did)."""
    rng = np.random.default_rng(0)

    def clip(count: int) -> np.ndarray:
        wave = 0.1 * rng.standard_normal(int(16_000 * (0.4 + 0.3 * count + rng.uniform(0, 0.2))))
        return wave * rng.uniform(0.5, 2.0)

    answers = [rng.integers(1, 7, N) for _ in range(2)]
    fit_x, test_x = (np.array([trivial_features(clip(c)) for c in a]) for a in answers)
    _, bound = chance_bound(answers[1])
    accuracies = rule_accuracies(fit_x, answers[0], test_x, answers[1])
    assert min(accuracies.values()) > bound, accuracies


# ---- compositional families: every single fact is uninformative on its own ---------------------------------

SINGLE_FACTS = {
    "higher_longer": {"which is higher": lambda m: int(np.argmax(m["f0_hz"])),
                      "which is longer": lambda m: int(np.argmax(m["durations_s"]))},
    "contour_tempo": {"ends higher": lambda m: m["notes_hz"][-1] > m["notes_hz"][0],
                      "fast": lambda m: m["note_rate_hz"] > 4.0},
    "chord_louder": {"major": lambda m: m["quality"] == "major", "louder": lambda m: m["change_db"] > 0},
    "louder_beeps": {"beep count": lambda m: m["count"]},
}


def single_fact_accuracy(fit_facts, fit_y, test_facts, test_y) -> float:
    """Accuracy of the majority answer per value of one fact, fit on one draw and scored on another."""
    table = {v: _majority(fit_y[fit_facts == v]) for v in np.unique(fit_facts)}
    fallback = _majority(fit_y)
    return float(np.mean([table.get(v, fallback) == y for v, y in zip(test_facts, test_y)]))


@pytest.mark.parametrize("family", sorted(SINGLE_FACTS))
def test_each_single_fact_predicts_the_answer_at_chance(family):
    fit, held = _items(family, 0), _items(family, 1)
    test_y = np.array([it.answer for it in held])
    p, bound = chance_bound(test_y)
    for name, fact in SINGLE_FACTS[family].items():
        fit_f, test_f = (np.array([fact(it.meta) for it in items]) for items in (fit, held))
        accuracy = single_fact_accuracy(fit_f, np.array([it.answer for it in fit]), test_f, test_y)
        assert accuracy < bound, f"{family}: {name!r} alone gives {accuracy:.3f} (chance {p:.3f})"


@pytest.mark.parametrize("family", ["contour_tempo", "chord_louder"])
def test_a_both_conditions_rule_fails_the_single_fact_check(family):
    """The check can fail: "yes only if both hold", balanced on the answer, leaks through either fact."""
    rng = np.random.default_rng(1)

    def sample() -> tuple[np.ndarray, np.ndarray]:
        both = rng.random(N) < 0.5
        first = np.where(both, True, rng.random(N) < 1 / 3)  # the rest: each other combination a third
        return first, np.where(both, "yes", "no")

    (fit_f, fit_y), (test_f, test_y) = sample(), sample()
    _, bound = chance_bound(test_y)
    assert single_fact_accuracy(fit_f, fit_y, test_f, test_y) > bound


MEASURED_FACTS = {  # the same facts, from what test_compositional's derivers measure in the audio
    "higher_longer": {"which is higher": lambda f: int(np.argmax(f["f0_hz"])),
                      "which is longer": lambda f: int(np.argmax(f["durations_s"]))},
    "contour_tempo": {"ends higher": lambda f: f["notes_hz"][-1] > f["notes_hz"][0],
                      "fast": lambda f: f["note_rate_hz"] > 4.0},
    "chord_louder": {"major": lambda f: f["quality"] == "major", "louder": lambda f: f["slope_db_per_s"] > 0},
    "louder_beeps": {"beep count": lambda f: len(f["levels_db"])},
}


@pytest.mark.integration
@pytest.mark.parametrize("family", sorted(MEASURED_FACTS))
def test_each_single_fact_measured_in_the_audio_predicts_the_answer_at_chance(family):
    derive, _ = COMPOSITIONAL_DERIVE[family]
    fit, held = _items(family, 0), _items(family, 1)
    measured = [[derive(it.audio[0].astype(np.float64))[1] for it in items] for items in (fit, held)]
    test_y = np.array([it.answer for it in held])
    p, bound = chance_bound(test_y)
    for name, fact in MEASURED_FACTS[family].items():
        fit_f, test_f = (np.array([fact(f) for f in facts]) for facts in measured)
        accuracy = single_fact_accuracy(fit_f, np.array([it.answer for it in fit]), test_f, test_y)
        assert accuracy < bound, f"{family}: measured {name!r} alone gives {accuracy:.3f} (chance {p:.3f})"
