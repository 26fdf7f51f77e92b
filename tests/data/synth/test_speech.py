"""Speech families: the audio says what the item claims, measured independently of the generator.

Pitch is measured by autocorrelation over voiced frames and speaking rate from the active (non-silent)
duration; both live here, not in the generator. Skipped with the generator's message without espeak-ng.
"""

import numpy as np
import pytest

from mgrd.data.synth import speech
from mgrd.data.synth.base import SAMPLE_RATE
from mgrd.data.synth.speech import FAMILIES, SpeechSynthUnavailable
from mgrd.data.synth.writer import manifest_item
from mgrd.tasks.grading import find_numbers, grade

FAMILY = {f.name: f for f in FAMILIES}
FRAME, HOP = 640, 160  # 40 ms frames, 10 ms hop


@pytest.fixture(autouse=True)
def espeak(request):
    """Skip, with the generator's own message, every test that synthesises when espeak-ng is missing."""
    needs_espeak = request.function not in (test_missing_espeak_raises_a_clear_error,
                                            test_substitute_guess_is_right_at_chance_rate)
    if needs_espeak and not speech.speech_available():
        pytest.skip(speech.UNAVAILABLE_MESSAGE)


def _frames(wav: np.ndarray) -> np.ndarray:
    n = 1 + max(0, (len(wav) - FRAME) // HOP)
    return np.stack([wav[i * HOP: i * HOP + FRAME] for i in range(n)])


def _active(frames: np.ndarray) -> np.ndarray:
    rms = np.sqrt((frames ** 2).mean(axis=1))
    return rms > 0.1 * rms.max()


def measure_f0(wav: np.ndarray, fmin: float = 60.0, fmax: float = 450.0) -> tuple[float, float]:
    """(median F0 in Hz over voiced frames, fraction of the active frames that are voiced), from the
    normalised autocorrelation of 40 ms frames."""
    frames = _frames(wav)
    frames = frames - frames.mean(axis=1, keepdims=True)
    spec = np.fft.rfft(frames, n=2 * FRAME, axis=1)
    ac = np.fft.irfft(np.abs(spec) ** 2, axis=1)[:, :FRAME]
    ac = ac * FRAME / (FRAME - np.arange(FRAME))  # unbiased: long lags (low voices) overlap less
    lo, hi = int(SAMPLE_RATE / fmax), int(SAMPLE_RATE / fmin)
    lags = lo + np.argmax(ac[:, lo:hi], axis=1)
    strength = ac[np.arange(len(ac)), lags] / np.maximum(ac[:, 0], 1e-12)
    active = _active(frames)
    voiced = active & (strength > 0.5)
    if not voiced.any():
        return 0.0, 0.0
    return float(np.median(SAMPLE_RATE / lags[voiced])), float(voiced.sum() / active.sum())


def active_seconds(wav: np.ndarray) -> float:
    """Seconds of frames louder than a tenth of the loudest frame."""
    return float(_active(_frames(wav)).sum() * HOP / SAMPLE_RATE)


def _items(name: str, n: int, split: str = "test", seed: int = 0):
    rng = np.random.default_rng(seed)
    return [FAMILY[name].make(rng, split) for _ in range(n)]


def _row(item, name: str, i: int = 0) -> dict:
    return manifest_item(item, f"{name}-{i:06d}", name, [f"audio/{i}.wav"]).to_row(".")


# ---------------------------------------------------------------- spoken arithmetic


def _left_to_right(values: list[int], ops: list[str]) -> float:
    total = float(values[0])
    for op, v in zip(ops, values[1:]):
        total = {"+": total + v, "-": total - v, "*": total * v, "/": total / v if v else float("nan")}[op]
    return total


@pytest.mark.parametrize("split", ["train", "ood"])
def test_spoken_arithmetic_answer_transcript_and_audio(split):
    for item in _items("spoken_arithmetic", 12, split):
        meta = item.meta
        assert item.question == speech.ARITHMETIC_QUESTION and item.choices is None
        # the answer is the arithmetic of the operands, and the transcript speaks those operands
        assert float(item.answer) == _left_to_right(meta["operands"], meta["operators"])
        assert find_numbers(meta["transcript"]) == meta["operands"]
        assert not any(str(v) in item.question for v in meta["operands"])
        # non-silent, voiced speech of plausible length for its words
        wav = item.audio[0]
        assert wav.dtype == np.float32 and np.abs(wav).max() <= 1.0
        seconds = len(wav) / SAMPLE_RATE
        words = len(meta["transcript"].split())
        assert 0.15 < seconds / words < 0.8, (seconds, meta["transcript"])
        f0, voiced = measure_f0(wav)
        assert voiced > 0.25 and 60 < f0 < 400
        # the grounded chain quotes the problem and ends on the answer; the grader agrees
        grounded = item.reasonings["grounded"]
        assert meta["transcript"] in grounded and grounded.endswith(f"The answer is {item.answer}.")
        assert grade(_row(item, "spoken_arithmetic"), f"<think>\n{grounded}\n</think>\n{item.answer}") == 1.0


def test_spoken_arithmetic_answers_are_spread_out():
    answers = [it.answer for it in _items("spoken_arithmetic", 30, seed=1)]
    top = max(answers.count(a) for a in set(answers))
    assert len(set(answers)) > 15 and top / len(answers) < 0.2


# ---------------------------------------------------------------- voice pitch


@pytest.mark.parametrize("split", ["test", "ood"])
def test_voice_pitch_high_items_measure_higher_than_low_items(split):
    measured = {"high": [], "low": []}
    for item in _items("voice_pitch", 16, split, seed=2):
        f0, voiced = measure_f0(item.audio[0])
        assert voiced > 0.25
        assert abs(f0 / item.meta["f0_hz"] - 1) < 0.15, (f0, item.meta)  # the grounded F0 claim holds
        assert item.choices == ["high", "low"] and item.answer == item.meta["pitch_class"]
        assert f"{item.meta['f0_hz']:.0f} Hz" in item.reasonings["grounded"]
        measured[item.answer].append(f0)
    assert measured["high"] and measured["low"]
    assert max(measured["low"]) * 1.2 < min(measured["high"])
    assert max(measured["low"]) < speech.PITCH_SPLIT_HZ < min(measured["high"])


@pytest.mark.integration
@pytest.mark.parametrize("voice, pitch, f0_hz", speech.LOW_VOICES + speech.HIGH_VOICES
                         + speech.OOD_LOW_VOICES + speech.OOD_HIGH_VOICES)
def test_every_voice_preset_has_its_nominal_f0(voice, pitch, f0_hz):
    for sentence in speech.SENTENCES[:3] + speech.OOD_SENTENCES[:2]:
        f0, _ = measure_f0(speech.synthesize(sentence, voice, pitch, 175))
        assert abs(f0 / f0_hz - 1) < 0.12, (voice, pitch, sentence, f0)


# ---------------------------------------------------------------- speech rate


def _rate_facts(item) -> tuple[str, float]:
    """(sentence, measured words per minute of active speech); checks the item's own claims on the way."""
    wav, meta = item.audio[0], item.meta
    assert item.answer == meta["rate_class"] and item.choices == ["fast", "slow"]
    # the grounded chain's duration and rate describe the speech as written, on the right side of the norm:
    # the clip is silent outside [onset, onset + duration] and not silent at either end of it
    start, stop = round(meta["onset_s"] * SAMPLE_RATE), round((meta["onset_s"] + meta["duration_s"]) * SAMPLE_RATE)
    assert not wav[: start - 16].any() and not wav[stop + 16 :].any()
    assert np.abs(wav[start + 16 : start + 160]).max() > 0 and np.abs(wav[stop - 160 : stop - 16]).max() > 0
    assert abs(meta["clip_s"] - len(wav) / SAMPLE_RATE) < 1e-3
    if item.answer == "fast":
        assert meta["words_per_minute"] > speech.BRISK_WPM
    else:
        assert meta["words_per_minute"] < speech.RELAXED_WPM
    return meta["transcript"], 60 * len(meta["transcript"].split()) / active_seconds(wav)


def test_speech_rate_fast_items_measure_faster_than_slow_items():
    rates = {"fast": [], "slow": []}
    for item in _items("speech_rate", 20, seed=3):
        rates[item.answer].append(_rate_facts(item)[1])
    assert rates["fast"] and rates["slow"]
    assert 1.5 * max(rates["slow"]) < min(rates["fast"])


@pytest.mark.integration
def test_speech_rate_slow_words_last_longer_but_clips_do_not():
    """Slow speech spends over 1.5x as long on each word as fast speech, while the clip lengths overlap."""
    per_word = {"fast": [], "slow": []}
    clip_s = {"fast": [], "slow": []}
    for item in _items("speech_rate", 60, seed=5):
        transcript, _ = _rate_facts(item)
        per_word[item.answer].append(active_seconds(item.audio[0]) / len(transcript.split()))
        clip_s[item.answer].append(len(item.audio[0]) / SAMPLE_RATE)
    assert min(per_word["slow"]) > 1.5 * max(per_word["fast"])
    assert min(clip_s["slow"]) < np.median(clip_s["fast"]) < max(clip_s["slow"])


@pytest.mark.integration
def test_rate_claims_hold_for_every_sentence_and_voice_at_the_range_ends():
    for sentence in speech.SENTENCES + speech.OOD_SENTENCES:
        words = len(sentence.split())
        for voice in speech.VOICES + speech.OOD_VOICES:
            slow = speech.synthesize(sentence, voice, 65, speech.SLOW_WPM[1])
            fast = speech.synthesize(sentence, voice, 35, speech.FAST_WPM[0])
            assert 60 * words / (len(slow) / SAMPLE_RATE) < speech.RELAXED_WPM, (sentence, voice)
            assert 60 * words / (len(fast) / SAMPLE_RATE) > speech.BRISK_WPM, (sentence, voice)


# ---------------------------------------------------------------- all families


@pytest.mark.parametrize("name", sorted(FAMILY))
def test_deterministic_for_a_seed(name):
    first, second = _items(name, 3, seed=7), _items(name, 3, seed=7)
    for a, b in zip(first, second):
        assert _row(a, name) == _row(b, name)
        assert np.array_equal(a.audio[0], b.audio[0])
    assert _row(_items(name, 1, seed=8)[0], name) != _row(first[0], name)


@pytest.mark.parametrize("name", sorted(FAMILY))
def test_items_have_both_chains_and_a_chance_level_substitute(name):
    items = _items(name, 24, seed=4)
    for item in items:
        assert set(item.reasonings) == {"grounded", "text_substitute"}
        assert item.reasonings["text_substitute"].endswith(f"The answer is {item.meta['substitute_answer']}.")
        assert FAMILY[name].kind == "speech" and len(item.audio) == 1
    if items[0].choices:
        share = sum(it.answer == items[0].choices[0] for it in items) / len(items)
        assert 0.25 < share < 0.75  # both answers occur, no position bias to speak of


N_GUESSES = 400


@pytest.mark.parametrize("name", sorted(FAMILY))
def test_substitute_guess_is_right_at_chance_rate(name, monkeypatch):
    """The text-substitute pick is independent of the answer: its hit count is a binomial draw at chance.

    Chance p is 1/len(choices), or for a numeric item (guess uniform over 0-40) the share of answers in 0-40
    over 41. The hits must lie within 3.5 standard errors of n p on either side: at n = 400 and p = 0.5,
    0.41-0.59 (a guess that copied the answer a fifth of the time would land near 0.6). Synthesis is
    replaced by silence: the guess and the answer are drawn before the audio, which plays no part here.
    """
    monkeypatch.setattr(speech, "synthesize", lambda *args, **kwargs: np.zeros(SAMPLE_RATE, dtype=np.float32))
    items = _items(name, N_GUESSES, seed=9)
    hits = sum(it.meta["substitute_answer"] == it.answer for it in items)
    if items[0].choices:
        p = 1 / len(items[0].choices)
    else:
        p = np.mean([0 <= int(it.answer) <= 40 for it in items]) / 41
    spread = 3.5 * np.sqrt(N_GUESSES * p * (1 - p))
    assert abs(hits - N_GUESSES * p) < spread, f"{name}: {hits}/{N_GUESSES} right, chance {p:.3f}"


def test_missing_espeak_raises_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH without espeak-ng
    assert not speech.speech_available()
    with pytest.raises(SpeechSynthUnavailable, match="espeak-ng not found: the speech families need it; install it with `apt-get install espeak-ng`"):
        FAMILY["voice_pitch"].make(np.random.default_rng(0), "train")
