"""Perception pretraining of the audio encoder: the tiny preset's stand-in for a pretrained encoder.

Step-Audio-R1 starts from an encoder pretrained on a very large amount of audio and keeps it frozen. The tiny
preset's encoder is random, and frozen random features stop the miniature from hearing anything: a model
trained on top of them answers the suite's pitch questions with one constant answer (benchmarks/RESULTS.md).
This stage trains the encoder alone, before any question is seen, to predict what is in a sound frame by frame
(`mgrd.data.synth.scenes`: note activity, log-pitch, relative level, onsets) through a linear head that is
thrown away afterwards; the cold-start SFT and the MGRD loop then keep the encoder frozen, as the recipe does.

    scenes (random notes over noise) -> log-mel -> encoder [N, P, D] -> head [N, P, 4] -> `perception_loss`

One process (CPU or one GPU); a checkpoint every `save_every` steps in the usual run folder (`RunDir`), and the
scene stream is a pure function of (seed, step), so a resumed run sees exactly the batches it would have seen.
The output is a whole model (`final/`, official layout + tokenizer) with the trained encoder and the starting
model's other weights untouched. Evaluation (`evaluate`): on fresh two-note scenes, how often the head's mean
pitch over each note orders the two notes correctly, in a low and a high register (`EVAL_REGISTERS_HZ`).
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mgrd.data.synth.scenes import DEFAULT_FREQ_HZ, FRAME_S, TARGETS, Scene, draw_scene
from mgrd.train.config import OptimConfig, option

EVAL_REGISTERS_HZ = {"low": (100.0, 500.0), "high": (500.0, 2000.0)}


@dataclass
class PerceiveConfig:
    """`perceive` stage: perception pretraining of the encoder (module docstring)."""

    steps: int = option(500, "optimiser steps (0: skip the stage; the start model goes on unchanged)")
    batch_size: int = option(16, "scenes per step")
    freq_min_hz: float = option(DEFAULT_FREQ_HZ[0], "lowest note frequency of the scenes")
    freq_max_hz: float = option(DEFAULT_FREQ_HZ[1], "highest note frequency of the scenes")
    optim: OptimConfig = option(OptimConfig(lr=2e-3, warmup_steps=20, min_lr_ratio=0.1, grad_clip=1.0),
                                "AdamW on the encoder and the probe head (micro_batch_size/grad_accum unused)")
    save_every: int = option(100, "checkpoint every N steps (0: only at the end)")
    eval_pairs: int = option(64, "two-note scenes per register in the final evaluation (0: none)")

    def __post_init__(self):
        if self.steps < 0 or self.batch_size < 1 or self.save_every < 0 or self.eval_pairs < 0:
            raise ValueError("perceive: steps, save_every and eval_pairs must be >= 0 and batch_size >= 1")
        if not 0 < self.freq_min_hz < self.freq_max_hz < 8000:
            raise ValueError(f"perceive: need 0 < freq_min_hz < freq_max_hz < 8000 Hz, got "
                             f"{self.freq_min_hz}..{self.freq_max_hz}")


class PerceptionProbe(nn.Module):
    """The model's encoder with a linear head over its 25 Hz features: `[N, P, D] -> [N, P, len(TARGETS)]`.

    Holds the whole `AudioReasoner` (as `reasoner`) so checkpoints and `final/` use the model's own names; only
    the encoder and the head train.
    """

    def __init__(self, reasoner):
        super().__init__()
        self.reasoner = reasoner
        self.head = nn.Linear(reasoner.config.audio.n_audio_state, len(TARGETS))
        reasoner.requires_grad_(False)
        reasoner.freeze_encoder = False
        reasoner.encoder.requires_grad_(True)
        reasoner.encoder.positional_embedding.requires_grad_(False)  # fixed sinusoids, as in the encoder

    @property
    def config(self):  # `model_fingerprint` reads it
        return self.reasoner.config

    def forward(self, mels: torch.Tensor, mel_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Predictions `[N, P, 4]` and the frames each clip really has `[N]` (its own pooled length)."""
        from mgrd.audio import encoder_frames

        feats, _ = self.reasoner.encoder(mels, mel_lens)
        return self.head(feats), encoder_frames(mel_lens, "vllm").to(feats.device)


def perception_loss(pred: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor,
                    pitched: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """The pretraining loss: BCE on activity and onsets over the valid frames, squared error on log2-pitch and
    level over the pitched frames, each a mean over its frames, summed.

    Args:
        pred: `[N, P, 4]` head outputs (logits for active/onset, values for log2_f0/level).
        targets: `[N, P, 4]` in `TARGETS` order; valid, pitched: `[N, P]` bool.
    Returns:
        (loss, its four parts as floats).
    """
    v, p = valid.to(pred.dtype), (pitched & valid).to(pred.dtype)
    nv, np_ = v.sum().clamp(min=1), p.sum().clamp(min=1)
    bce = F.binary_cross_entropy_with_logits
    parts = {
        "active": (bce(pred[..., 0], targets[..., 0], reduction="none") * v).sum() / nv,
        "log2_f0": (((pred[..., 1] - targets[..., 1]) ** 2) * p).sum() / np_,
        "level": (((pred[..., 2] - targets[..., 2]) ** 2) * p).sum() / np_,
        "onset": (bce(pred[..., 3], targets[..., 3], reduction="none") * v).sum() / nv,
    }
    return sum(parts.values()), {k: float(x.detach()) for k, x in parts.items()}


def collate_scenes(scenes: list[Scene], n_mels: int) -> dict[str, torch.Tensor]:
    """Log-mels `[N, n_mels, T]`, lengths `[N]`, and targets `[N, F, 4]` / pitched `[N, F]` padded to the longest."""
    from mgrd.audio import log_mel, pad_mels

    mels, lens = pad_mels([log_mel(s.wave, n_mels) for s in scenes])
    frames = max(len(s.targets) for s in scenes)
    targets = torch.zeros(len(scenes), frames, len(TARGETS))
    pitched = torch.zeros(len(scenes), frames, dtype=torch.bool)
    for i, s in enumerate(scenes):
        targets[i, : len(s.targets)] = torch.from_numpy(s.targets)
        pitched[i, : len(s.pitched)] = torch.from_numpy(s.pitched)
    return {"mels": mels, "mel_lens": lens, "targets": targets, "pitched": pitched}


def step_loss(probe: PerceptionProbe, batch: dict, device) -> tuple[torch.Tensor, dict[str, float]]:
    """`perception_loss` of one collated batch: frames are cut to what both the encoder and the scene have."""
    pred, own = probe(batch["mels"].to(device), batch["mel_lens"].to(device))
    n = min(pred.shape[1], batch["targets"].shape[1])
    frame = torch.arange(n, device=device)
    valid = (frame[None, :] < own[:, None]) & (frame[None, :] < batch["targets"].shape[1])
    return perception_loss(pred[:, :n], batch["targets"][:, :n].to(device), valid, batch["pitched"][:, :n].to(device))


def scene_batch(seed: int, step: int, cfg: PerceiveConfig) -> list[Scene]:
    """The scenes of optimiser step `step`: a pure function of (seed, step)."""
    rng = np.random.default_rng([seed, 7919, step])
    return [draw_scene(rng, (cfg.freq_min_hz, cfg.freq_max_hz)) for _ in range(cfg.batch_size)]


@torch.no_grad()
def evaluate(probe: PerceptionProbe, cfg: PerceiveConfig, seed: int, device) -> dict[str, float]:
    """Pitch-order accuracy per register: fresh two-note scenes; the head's mean log-pitch over each note's frames
    orders the pair as the notes' frequencies do (chance: 0.5)."""
    probe.eval()
    out = {}
    for k, (name, register) in enumerate(EVAL_REGISTERS_HZ.items()):
        rng = np.random.default_rng([seed, 104729, k])
        scenes = [draw_scene(rng, register, n_notes=2) for _ in range(cfg.eval_pairs)]
        right = 0
        for start in range(0, len(scenes), 16):
            chunk = scenes[start:start + 16]
            batch = collate_scenes(chunk, probe.config.audio.n_mels)
            pred, _ = probe(batch["mels"].to(device), batch["mel_lens"].to(device))
            for i, scene in enumerate(chunk):
                heard = [_mean_pitch(pred[i, :, 1], note.start_s, note.end_s) for note in scene.notes]
                right += (heard[0] > heard[1]) == (scene.notes[0].freq_hz > scene.notes[1].freq_hz)
        out[f"pitch_order/{name}"] = right / max(len(scenes), 1)
    probe.train()
    return out


def _mean_pitch(column: torch.Tensor, start_s: float, end_s: float) -> float:
    first, last = math.ceil(start_s / FRAME_S), max(int(end_s / FRAME_S), math.ceil(start_s / FRAME_S) + 1)
    return float(column[first:min(last, column.shape[0])].mean())


def run(cfg: PerceiveConfig, out: str | Path, *, model: str | Path | None = None, seed: int = 0,
        device: str = "cpu", progress: bool = True) -> Path:
    """Pretrain the encoder of `model` (a checkpoint folder; None: a fresh tiny preset from `seed`); write the
    run folder `out` (metrics.jsonl, checkpoints/, final/, done.json) and return `out/final`. A folder holding
    checkpoints resumes from the newest."""
    from mgrd.train.config import ModelSetup
    from mgrd.train.optim import build_optimizer, build_scheduler, clip_gradients
    from mgrd.train.run import RunDir, model_fingerprint
    from mgrd.train.sft import load_model_and_tokenizer

    dev = torch.device(device)
    run_dir = RunDir(out, tensorboard=False)
    run_dir.prepare({"perceive": dataclasses.asdict(cfg), "model": str(model), "seed": seed}, resume=True)
    torch.manual_seed(seed)
    reasoner, tokenizer = load_model_and_tokenizer(ModelSetup(path=None if model is None else str(model)), dev, seed)
    probe = PerceptionProbe(reasoner).to(dev)
    fingerprint = model_fingerprint(probe)
    optimizer = build_optimizer(probe, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, cfg.steps)
    step = 0
    latest = run_dir.latest_checkpoint()
    if latest is not None:
        step, state = run_dir.load_checkpoint(latest, probe, optimizer, fingerprint)
        scheduler.load_state_dict(state["scheduler"])
        run_dir.truncate_metrics(step)
    probe.train()
    start = time.time()
    bar = run_dir.progress(cfg.steps, initial=step, enabled=progress)
    while step < cfg.steps:
        batch = collate_scenes(scene_batch(seed, step, cfg), reasoner.config.audio.n_mels)
        loss, parts = step_loss(probe, batch, dev)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = clip_gradients(probe, cfg.optim.grad_clip)
        optimizer.step()
        scheduler.step()
        step += 1
        value = float(loss.detach())
        run_dir.log(step, {"loss": value, **{f"loss/{k}": v for k, v in parts.items()},
                           "grad_norm": float(norm), "lr": scheduler.get_last_lr()[0]})
        bar.update(1)
        bar.set_postfix(loss=f"{value:.3f}")
        if (cfg.save_every and step % cfg.save_every == 0) or step == cfg.steps:
            run_dir.save_checkpoint(step, probe, optimizer, {"scheduler": scheduler.state_dict()}, fingerprint, keep=1)
    bar.close()
    scores = evaluate(probe, cfg, seed, dev) if cfg.eval_pairs else {}
    if scores:
        run_dir.log(step, {f"eval/{k}": v for k, v in scores.items()})
        print("perceive: pitch order on fresh note pairs " +
              ", ".join(f"{k.split('/')[-1]} {v:.0%}" for k, v in scores.items()), file=sys.stderr)
    reasoner.freeze_encoder = True
    reasoner.encoder.requires_grad_(False)
    final = run_dir.save_final(reasoner, tokenizer)
    run_dir.finish({"steps": step, "wall_s": round(time.time() - start, 2), **scores})
    return final
