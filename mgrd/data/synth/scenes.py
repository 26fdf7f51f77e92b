"""Perception scenes: random tone sequences with frame-level ground truth, for pretraining a tiny encoder.

Step-Audio-R1 freezes an audio encoder that was pretrained on a very large amount of audio; it already hears
pitch, loudness and timing when the reasoning recipe starts. The tiny preset's encoder is random, and a random
frozen encoder blocks everything downstream (benchmarks/RESULTS.md, "The speedrun's MGRD loop"). These scenes
are the miniature's stand-in for that pretraining data: no questions, no answers, no task families, only sounds
and what is in them, frame by frame (`mgrd.train.perceive` trains the encoder to predict it).

A scene is 1-6 notes in a row (sine, square or sawtooth; each with its own frequency, length and level, with
gaps between), over white or pink background noise at 20-35 dB SNR, scaled to a random peak - the same blocks
and levels the suite's clips are made of (`mgrd.data.synth.signals`). Frequencies are drawn log-uniformly over
`DEFAULT_FREQ_HZ`, the span every tone of the synthetic suite lies in (train, test and ood ranges alike), as a
pretrained encoder has heard every register; the scene generator shares no code path, seed or item with the
suite's question families.

Targets, one row per encoder output frame (`FRAME_S` = 40 ms, the encoder's 25 Hz), in `TARGETS` order:
    active   the share of the frame a note covers, in [0, 1]
    log2_f0  log2(f0 / 440 Hz) of the note sounding over most of the frame   (where `pitched`)
    level    the note's level in dB relative to the scene's loudest note, / 10 (where `pitched`)
    onset    1 where a note starts inside the frame
`pitched` marks the frames a single note covers for at least half their length (the regression targets are
defined there only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mgrd.data.synth import signals as sig

FRAME_S = 0.04  # one encoder output frame (25 Hz)
TARGETS = ("active", "log2_f0", "level", "onset")
DEFAULT_FREQ_HZ = (100.0, 2000.0)
TIMBRES = ("sine", "square", "sawtooth")
NOTES = (1, 6)  # notes per scene, inclusive
NOTE_S = (0.08, 1.0)
GAP_S = (0.05, 0.5)
GAIN_DB = (-15.0, 0.0)
MAX_SCENE_S = 5.0
BACKGROUND_SNR_DB = (20.0, 35.0)
PEAK = (0.3, 0.95)
LEVEL_SCALE_DB = 10.0


@dataclass(frozen=True)
class Note:
    start_s: float
    end_s: float
    freq_hz: float
    gain_db: float


@dataclass
class Scene:
    """One scene: the waveform and its frame targets.

    Attributes:
        wave: `[S]` float32 at 16 kHz.
        targets: `[F, 4]` float32, columns as `TARGETS`; F covers the clip (frames past the encoder's own
            output length are ignored by the loss).
        pitched: `[F]` bool, where `log2_f0` and `level` are defined.
        notes: the notes, in time order.
    """

    wave: np.ndarray
    targets: np.ndarray
    pitched: np.ndarray
    notes: list[Note]


def frame_targets(notes: list[Note], n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """`[n_frames, 4]` targets and `[n_frames]` pitched mask for non-overlapping `notes` (module docstring)."""
    targets = np.zeros((n_frames, len(TARGETS)), np.float32)
    pitched = np.zeros(n_frames, bool)
    starts = np.arange(n_frames) * FRAME_S
    top = max(n.gain_db for n in notes)
    for note in notes:
        overlap = np.minimum(starts + FRAME_S, note.end_s) - np.maximum(starts, note.start_s)
        cover = np.clip(overlap, 0.0, None) / FRAME_S
        targets[:, 0] = np.maximum(targets[:, 0], cover)
        mine = cover >= 0.5 - 1e-6  # at least half the frame (float slack: 0.3 - 0.28 < 0.02)
        targets[mine, 1] = math.log2(note.freq_hz / 440.0)
        targets[mine, 2] = (note.gain_db - top) / LEVEL_SCALE_DB
        pitched |= mine
        first = math.floor(note.start_s / FRAME_S + 1e-9)  # 0.2 s starts frame 5, though 0.2 // 0.04 == 4.0
        if first < n_frames:
            targets[first, 3] = 1.0
    return targets, pitched


def draw_scene(rng: np.random.Generator, freq_hz: tuple[float, float] = DEFAULT_FREQ_HZ,
               n_notes: int | None = None) -> Scene:
    """One random scene (module docstring); `n_notes` fixes the number of notes (evaluation pairs use 2)."""
    count = n_notes or int(rng.integers(NOTES[0], NOTES[1] + 1))
    t = float(rng.uniform(0.05, 0.4))
    notes, placed = [], []
    for _ in range(count):
        seconds = float(rng.uniform(*NOTE_S))
        freq = float(math.exp(rng.uniform(math.log(freq_hz[0]), math.log(freq_hz[1]))))
        gain = float(rng.uniform(*GAIN_DB))
        timbre = TIMBRES[int(rng.integers(len(TIMBRES)))]
        placed.append((t, sig.note(freq, seconds, timbre, rng, gain)))
        notes.append(Note(t, t + seconds, freq, gain))
        t += seconds + float(rng.uniform(*GAP_S))
    total = min(t + float(rng.uniform(0.0, 0.3)), MAX_SCENE_S)
    clean = sig.place(placed, total)
    kind = ("white", "pink")[int(rng.integers(2))]
    wave = sig.mix_at_snr(clean, sig.noise(kind, clean.size, rng), float(rng.uniform(*BACKGROUND_SNR_DB)))
    wave = sig.peak_normalize(wave, float(rng.uniform(*PEAK)))
    targets, pitched = frame_targets(notes, int(math.ceil(total / FRAME_S)))
    return Scene(wave.astype(np.float32), targets, pitched, notes)
