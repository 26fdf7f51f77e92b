"""Benchmark: the cost of the float64 log-mel front end (microseconds per second of audio).

Times `mgrd.audio.log_mel` (STFT, power, mel product and log in float64, cast to float32 at the end) against
the same steps in float32, the front end before issue 6 §4, on a clip of noise; best of `--repeat` runs on
one thread, the two taking turns (the noise of a shared machine only ever adds time). Also prints the largest difference between
the two, which is float32 STFT noise in low-energy bins.

Run: `python benchmarks/frontend.py` (30 s clip), `--seconds 10 --repeat 50`, `--threads 2`.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from mgrd.audio import HOP_LENGTH, N_FFT, RIGHT_PAD, SAMPLE_RATE, log_mel, mel_filters


def log_mel_float32(wave: np.ndarray, n_mels: int = 128) -> torch.Tensor:
    """The previous front end: every step in float32 (for timing and comparison only)."""
    x = torch.nn.functional.pad(torch.as_tensor(wave, dtype=torch.float32), (0, RIGHT_PAD))
    stft = torch.stft(x, N_FFT, HOP_LENGTH, window=torch.hann_window(N_FFT), return_complex=True)
    mel = mel_filters(n_mels).float() @ (stft[..., :-1].abs() ** 2)
    log_spec = torch.clamp(mel, min=1e-10).log10()
    return (torch.maximum(log_spec, log_spec.max() - 8.0) + 4.0) / 4.0


def best_times(fns, wave: np.ndarray, repeat: int) -> list[float]:
    """Best wall time of each function, the functions taking turns so that load changes hit them alike."""
    for fn in fns:
        fn(wave)  # warm up (mel filters, FFT plans)
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn(wave)
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0, help="clip length (default 30)")
    parser.add_argument("--repeat", type=int, default=25, help="timed runs per variant (default 25)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    wave = (0.1 * np.random.default_rng(0).standard_normal(int(args.seconds * SAMPLE_RATE))).astype(np.float32)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.backends.cpu.get_cpu_capability()}, {args.threads} thread(s), {args.seconds:g} s clip")
    names = ("float32 (before)", "float64 (now)")
    for name, best in zip(names, best_times((log_mel_float32, log_mel), wave, args.repeat)):
        print(f"  {name:<17} {best / args.seconds * 1e6:8.0f} us per second of audio")
    diff = (log_mel(wave) - log_mel_float32(wave)).abs().max()
    print(f"  max |float64 - float32| = {float(diff):.1e}")


if __name__ == "__main__":
    main()
