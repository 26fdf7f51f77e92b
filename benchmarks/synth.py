"""Benchmark: how fast `mgrd data synth` writes the synthetic suite (items per second, end to end).

Writes `--n` items of the default (non-speech) families with `synthesize()` into a temporary folder -
drawing, rendering, 16-bit wav encoding, manifest and the final rename all included - and reports items/s,
seconds, hours of audio and the size on disk. The target is 10,000 items in under 60 s on 2 CPU cores.

Run: `python benchmarks/synth.py` (10,000 items), `--n 2000 --split ood`, `--workers 1` for one core.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from mgrd.data.synth import DEFAULT_FAMILIES
from mgrd.data.synth.writer import synthesize


def folder_stats(folder: Path) -> tuple[float, int]:
    """(hours of audio, bytes on disk) of a written suite."""
    seconds = sum(sf.info(str(p)).duration for p in (folder / "audio").glob("*.wav"))
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    return seconds / 3600, size


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000, help="items to write (default 10000)")
    parser.add_argument("--seed", type=int, default=0, help="suite seed (default 0)")
    parser.add_argument("--split", default="train", choices=("train", "test", "ood"),
                        help="split to write (default train)")
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: the writer's choice)")
    parser.add_argument("--progress", action="store_true", help="show the progress bar while timing")
    args = parser.parse_args(argv)

    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"numpy {np.__version__}")
    print(f"suite: {args.n} {args.split} items over {len(DEFAULT_FAMILIES)} families, seed {args.seed}, "
          f"workers {args.workers or 'auto'}")
    scratch = Path(tempfile.mkdtemp(prefix="mgrd-synth-bench-"))
    try:
        start = time.perf_counter()
        manifest = synthesize(scratch / "suite", n=args.n, seed=args.seed, split=args.split,
                              workers=args.workers, progress=args.progress)
        elapsed = time.perf_counter() - start
        hours, size = folder_stats(manifest.parent)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"wrote {args.n} items in {elapsed:.1f} s: {args.n / elapsed:.0f} items/s")
    print(f"audio: {hours:.2f} h ({hours * 3600 / args.n:.2f} s per item), {size / 2**20:.0f} MiB on disk")


if __name__ == "__main__":
    main()
