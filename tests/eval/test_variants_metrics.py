"""Audio variants (ablations, SNR, speed) measured on real waveforms; the metrics' arithmetic pinned."""

import base64
import io

import numpy as np
import pytest
import soundfile as sf

from mgrd.audio import load_audio
from mgrd.eval import metrics
from mgrd.eval.backends import audio_parts, raw_text
from mgrd.eval.variants import apply, check_variant, think_budget, transform

from . import fixtures as fx


def rms(x):
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def test_ablations_and_corruptions_measured():
    clip = fx.tone(440, 1.0, amp=0.5)
    rng = np.random.default_rng(0)
    assert not transform(clip, "silence", rng).any()
    noise = transform(clip, "noise", rng)
    assert noise.shape == clip.shape and rms(noise) == pytest.approx(rms(clip), rel=0.03)
    assert abs(np.corrcoef(noise, clip)[0, 1]) < 0.05  # nothing of the tone is left
    for snr in (20, 0, -5):
        noisy = transform(clip, f"snr{snr}", rng)
        measured = 20 * np.log10(rms(clip) / rms(noisy - clip))
        assert measured == pytest.approx(snr, abs=0.3)
    fast = transform(clip, "speed1.25", rng)
    assert abs(len(fast) - len(clip) / 1.25) <= 2
    spectrum = np.abs(np.fft.rfft(fast))
    assert np.argmax(spectrum) * 16000 / len(fast) == pytest.approx(440 * 1.25, abs=3)  # pitch moves with speed


def test_apply_is_seeded_by_item_and_leaves_clean_and_think_rows_alone(tmp_path):
    path = fx.write_wav(tmp_path / "a.wav")
    row = {"id": "x", "audio": [str(path)]}
    assert apply(row, "clean") is row and apply(row, "think16") is row and think_budget("think16") == 16
    a, b = apply(row, "snr10"), apply(row, "snr10")
    assert a["audio"][0] == b["audio"][0] and a["audio"][0] != apply(dict(row, id="y"), "snr10")["audio"][0]
    assert load_audio(a["audio"][0]).shape == load_audio(str(path)).shape
    with pytest.raises(ValueError, match="unknown audio variant 'louder'"):
        check_variant("louder")
    with pytest.raises(ValueError):
        check_variant("speed9")


def test_endpoint_audio_parts_chunk_at_25s_and_read_mp3(tmp_path):
    long = fx.write_wav(tmp_path / "long.wav", seconds=26.0)
    parts = audio_parts(long)
    lengths = [len(sf.read(io.BytesIO(base64.b64decode(p["input_audio"]["data"])))[0]) for p in parts]
    assert lengths == [25 * 16000, 16000]
    mp3 = tmp_path / "q.mp3"
    sf.write(mp3, fx.tone(), 16000, format="MP3")
    assert audio_parts(mp3)[0]["input_audio"]["format"] == "wav"


def test_raw_text_rebuilds_the_think_block():
    assert raw_text("B", "low pitch") == "low pitch\n</think>\nB"
    assert raw_text("<think>\nx\n</think>\nB", None) == "<think>\nx\n</think>\nB"
    assert raw_text(None, "cut off") == "cut off" and raw_text(None, None) == ""


def test_aggregate_pinned():
    verdicts = [{"official": 1.0, "normalised": 1.0}, {"official": None, "normalised": 1.0},
                {"official": 0.0, "normalised": 0.0, "judge_invalid": False},
                {"official": None, "normalised": None, "error": "HTTP 503"},
                {"official": None, "normalised": None, "missing": True}]
    assert metrics.aggregate(verdicts) == {"n": 5, "official": 50.0, "official_n": 2, "official_std": 70.7107,
                                           "official_ci95": 635.3, "normalised": 66.6667,
                                           "normalised_n": 3, "excluded": 1, "errors": 1, "judge_invalid": 0,
                                           "missing": 1}
    scores = [{"official": v, "normalised": v} for v in (7.0, 8.0, 6.0, 9.0)]
    agg = metrics.aggregate(scores, scale=10)
    # mean 75, sample std 10 * sqrt(5/3) = 12.9099, half-width t(0.975, 3) = 3.182 times std / 2
    got = (agg["official"], agg["official_std"], agg["official_ci95"])
    assert got == pytest.approx((75.0, 12.9099, 20.5397), abs=2e-4)
    assert metrics.t975(30) == 2.042
    assert metrics.t975(31) == pytest.approx(2.0395, abs=1e-3) and metrics.t975(1000) == pytest.approx(1.9623, abs=1e-3)
    cats = metrics.by_category(verdicts[:3], [{"s": "a"}, {"s": "b"}, {"s": "a"}], ["s"])
    assert cats["s"]["a"]["official"] == 50.0 and cats["s"]["b"]["official"] is None
    assert metrics.macro({"a": {"official": 50.0}, "b": {"official": 100.0}, "c": {"official": None}}) == 75.0


def test_grounding_uses_the_filters_checker():
    meta = {"f0_hz": [901.563, 834.115], "durations_s": [0.384, 0.674]}
    question = "Listen to the two tones. Which one is higher in pitch?"
    chains = [("The first tone sits near 902 Hz and the second near 834 Hz, so the first is higher.", question, meta),
              ("The first tone sits near 902 Hz and the second near 600 Hz.", question, meta),
              ("I think the answer is B.", question, meta), ("", question, meta)]
    g = metrics.grounding(chains)
    assert (g["chains"], g["empty_chains"]) == (3, 1)
    assert (g["acoustic_mention_rate"], g["lexicon_pass_rate"]) == (0.6667, 0.6667)
    # chain 1: both frequencies and the comparison supported; chain 2: 902 Hz supported, 600 Hz contradicted
    assert (g["claims_checked"], g["verified_claim_rate"]) == (5, 0.8)
    assert metrics.grounding([("Higher, 900 Hz.", "", None)])["verified_claim_rate"] is None


def test_think_length_and_sensitivity_pinned():
    buckets = metrics.length_buckets([10, 20, 30, 40], [1.0, 1.0, 0.0, 0.0], n_buckets=2)
    assert buckets == [{"lo": 10, "hi": 20, "n": 2, "accuracy": 100.0}, {"lo": 30, "hi": 40, "n": 2, "accuracy": 0.0}]
    ties = metrics.length_buckets([4, 4, 4, 4, 9, 20, 30, 31], [1, 1, 1, 1, 0, 0, 1, 0], n_buckets=4)
    assert [(b["lo"], b["hi"], b["n"], b["accuracy"]) for b in ties] == [(4, 4, 4, 100.0), (9, 20, 2, 0.0),
                                                                         (30, 31, 2, 50.0)]
    assert metrics.think_length_stats([1, 2, 3])["p50"] == 2.0
    s = metrics.sensitivity({"a": "B", "b": "A", "c": None}, {"a": "B", "b": "B", "c": None})
    assert s == {"n": 3, "changed": 1, "sensitivity": 0.3333}


def test_think_prefix_request_is_the_official_clients(tmp_path):
    from mgrd.eval.backends import Endpoint, Job
    from mgrd.generate import SamplingConfig

    path = fx.write_wav(tmp_path / "a.wav")
    row = {"id": "x", "task": "big_bench_audio", "audio": [str(path)], "question": "Q", "choices": None, "answer": "1"}
    client = Endpoint("http://127.0.0.1:9/v1", SamplingConfig(temperature=0.7, max_new_tokens=32000),
                      think_prefix=True)
    body = client._request(Job(("x", "noise"), row, "big_bench_audio"))
    user, assistant = body["messages"]
    assert [p["type"] for p in user["content"]] == ["input_audio", "text"]  # BBA: audio first
    assert assistant == {"role": "assistant", "content": "<think>\n"}
    assert body["extra_body"] == {"continue_final_message": True, "add_generation_prompt": False,
                                  "skip_special_tokens": False, "stop_token_ids": [151665]}
    # the variant's audio went out, not the clean clip
    clean = Endpoint("http://127.0.0.1:9/v1", SamplingConfig())._request(Job(("x", "clean"), row, "big_bench_audio"))
    assert clean["messages"][0]["content"][0] != user["content"][0] and "extra_body" not in clean
