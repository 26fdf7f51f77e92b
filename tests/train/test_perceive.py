"""Perception pretraining of the encoder (`mgrd.train.perceive`) and its scenes (`mgrd.data.synth.scenes`):
targets pinned on hand-made notes, the loss pinned on hand-made tensors, a deterministic scene stream, the
scenes' targets checked against the audio, and a short real run: only the encoder moves, the folder resumes to
the same weights as an uninterrupted run, and `final/` loads as a model."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from mgrd.data.synth import scenes
from mgrd.data.synth.scenes import FRAME_S, Note, draw_scene, frame_targets
from mgrd.train import perceive
from mgrd.train.config import OptimConfig

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: why one thread


def test_frame_targets_of_two_hand_made_notes():
    notes = [Note(0.0, 0.1, 440.0, 0.0), Note(0.2, 0.3, 880.0, -10.0)]
    targets, pitched = frame_targets(notes, 9)
    # frames of 40 ms: the first note covers frames 0, 1 and half of 2; the second frames 5, 6 and half of 7
    np.testing.assert_allclose(targets[:, 0], [1, 1, 0.5, 0, 0, 1, 1, 0.5, 0], atol=1e-6)
    assert pitched.tolist() == [True, True, True, False, False, True, True, True, False]
    np.testing.assert_allclose(targets[pitched, 1], [0, 0, 0, 1, 1, 1], atol=1e-6)  # log2(f / 440)
    np.testing.assert_allclose(targets[pitched, 2], [0, 0, 0, -1, -1, -1], atol=1e-6)  # -10 dB below the loudest
    assert targets[:, 3].tolist() == [1, 0, 0, 0, 0, 1, 0, 0, 0]  # onsets at 0.0 s and 0.2 s (frame 5)


def test_perception_loss_is_pinned():
    pred = torch.tensor([[[0.0, 1.0, 0.5, 0.0], [0.0, 3.0, 0.0, 0.0]]])  # [1, 2, 4]
    targets = torch.tensor([[[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 1.0, 0.0]]])
    valid = torch.tensor([[True, True]])
    pitched = torch.tensor([[True, False]])
    loss, parts = perceive.perception_loss(pred, targets, valid, pitched)
    assert parts["active"] == pytest.approx(math.log(2))  # a 0 logit costs ln 2 whatever the target
    assert parts["onset"] == pytest.approx(math.log(2))
    assert parts["log2_f0"] == pytest.approx(1.0)  # (1 - 0)^2 on the one pitched frame; frame 1 is not pitched
    assert parts["level"] == pytest.approx(0.25)
    assert float(loss) == pytest.approx(2 * math.log(2) + 1.25)


def test_scene_stream_is_a_function_of_seed_and_step():
    cfg = perceive.PerceiveConfig(batch_size=2)
    a, b = perceive.scene_batch(3, 7, cfg), perceive.scene_batch(3, 7, cfg)
    assert all(np.array_equal(x.wave, y.wave) for x, y in zip(a, b))
    other = perceive.scene_batch(3, 8, cfg)
    assert not np.array_equal(a[0].wave[:100], other[0].wave[:100])


def test_scene_targets_agree_with_the_audio():
    """Frames marked active are much louder than silent ones, and a sine note's spectral peak is at its pitch."""
    rng = np.random.default_rng(0)
    louder = []
    for _ in range(10):
        scene = draw_scene(rng)
        n = int(FRAME_S * 16_000)
        frames = [scene.wave[i * n:(i + 1) * n] for i in range(len(scene.targets))]
        energy = np.array([10 * np.log10(np.mean(f.astype(np.float64) ** 2) + 1e-12) if f.size else -120.0
                           for f in frames])
        on, off = scene.targets[:, 0] == 1.0, scene.targets[:, 0] == 0.0
        if on.any() and off.any():
            louder.append(np.median(energy[on]) - np.median(energy[off]))
        assert all(scenes.DEFAULT_FREQ_HZ[0] <= note.freq_hz <= scenes.DEFAULT_FREQ_HZ[1] for note in scene.notes)
        assert len(scene.wave) / 16_000 <= scenes.MAX_SCENE_S + 1e-6
    assert min(louder) > 10.0  # notes sit 20-35 dB over the background, less the 15 dB level spread


def _cfg(**extra) -> perceive.PerceiveConfig:
    optim = OptimConfig(lr=2e-3, warmup_steps=0, schedule="constant", grad_clip=1.0)
    return dataclasses.replace(perceive.PerceiveConfig(steps=6, batch_size=2, save_every=3, eval_pairs=0, optim=optim),
                               **extra)


def test_a_short_run_trains_the_encoder_only_and_resumes_to_the_same_weights(tmp_path):
    from mgrd.models import load_pretrained
    from mgrd.train.sft import load_model_and_tokenizer
    from mgrd.train.config import ModelSetup

    final = perceive.run(_cfg(), tmp_path / "whole", seed=0, progress=False)
    start, _ = load_model_and_tokenizer(ModelSetup(), torch.device("cpu"), 0)
    trained = load_pretrained(final)
    assert trained.freeze_encoder and not any(p.requires_grad for p in trained.encoder.parameters())
    before, after = start.state_dict(), trained.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(k.startswith("encoder.") for k in moved)
    assert "encoder.positional_embedding.weight" not in moved
    rows = [json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert json.loads((tmp_path / "whole" / "done.json").read_text())["steps"] == 6

    # "killed" after the step-3 checkpoint: a run of 3 steps, then the same folder continued to 6
    perceive.run(_cfg(steps=3), tmp_path / "split", seed=0, progress=False)
    for leftover in ("done.json",):
        (tmp_path / "split" / leftover).unlink()
    with pytest.warns(UserWarning, match="changed config"):  # the 3-step run's config said steps=3
        resumed = load_pretrained(perceive.run(_cfg(), tmp_path / "split", seed=0, progress=False)).state_dict()
    for key, value in after.items():
        torch.testing.assert_close(resumed[key], value, rtol=0, atol=1e-6, msg=key)
    rows = [json.loads(line) for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]


def test_the_loss_falls_and_pitch_order_is_reported(tmp_path):
    cfg = _cfg(steps=40, batch_size=4, save_every=0, eval_pairs=8)
    perceive.run(cfg, tmp_path / "run", seed=1, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert np.mean(losses[-8:]) < 0.6 * np.mean(losses[:4])
    done = json.loads((tmp_path / "run" / "done.json").read_text())
    assert set(done) >= {"pitch_order/low", "pitch_order/high"} and 0 <= done["pitch_order/low"] <= 1


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="batch_size"):
        perceive.PerceiveConfig(batch_size=0)
    with pytest.raises(ValueError, match="freq_min_hz"):
        perceive.PerceiveConfig(freq_min_hz=3000.0, freq_max_hz=2000.0)
