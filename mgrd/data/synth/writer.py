"""Write a synthetic suite to disk: `manifest.jsonl`, `audio/<id>.wav` (16-bit PCM) and `suite.json`.

`n` is the total number of items, spread round-robin over the chosen families: item j belongs to family
j mod F and is that family's item number j // F, so every family gets n // F items (the first n mod F
families one more). Each item draws from its own generator, `default_rng([seed, crc32(family), split, k])`,
so an item depends only on (seed, family, split, its index) - not on which other families are chosen,
on the worker count or on the order in which workers finish. Same arguments, byte-identical files.

Nothing is half-written: the suite is built in a temporary folder beside the target and swapped into
place at the end (`mgrd.atomic`); a failure or Ctrl-C removes the temporary folder (the `mgrd` command turns
SIGTERM into the same path), and temporary folders that a killed run left are swept by the next run on the
same target. A non-empty target is refused unless `overwrite=True`. Bad arguments raise `SynthError` before
any work starts.

Ctrl-C reaches the whole process group, workers too, but only the parent reacts: it stops the pool and
removes the temporary folder. Workers are started with SIGINT blocked, a signal mask they inherit through
exec, so it holds from their first instruction (a spawned worker spends its first second importing, where a
KeyboardInterrupt would print a traceback); their initializer then ignores SIGINT for good. While the pool
starts, the parent holds a Ctrl-C back and raises it once the pool is set to be cleaned up.
"""

from __future__ import annotations

import contextlib
import io
import json
import multiprocessing
import os
import shutil
import signal
import threading
import zlib
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from mgrd.atomic import TargetError, check_target, swap_in, sweep_stale, temp_beside
from mgrd.data.synth import DEFAULT_FAMILIES, FAMILIES
from mgrd.data.synth.acoustic import round_floats
from mgrd.data.manifest import Item
from mgrd.data.synth.base import SAMPLE_RATE, SPLITS, SynthItem

MANIFEST_NAME = "manifest.jsonl"
SUITE_NAME = "suite.json"
AUDIO_DIR = "audio"
PARALLEL_FROM = 256  # below this many items, worker start-up costs more than it saves


class SynthError(ValueError):
    """Arguments the suite cannot be written with: unknown family, bad count/seed/split, unusable folder."""


def item_rng(seed: int, family: str, split: str, index: int) -> np.random.Generator:
    """The generator for one item: a pure function of (seed, family name, split, index in the family)."""
    return np.random.default_rng([seed, zlib.crc32(family.encode()), SPLITS.index(split), index])


def item_id(family: str, index: int) -> str:
    return f"{family}-{index:06d}"


def plan(n: int, families: list[str]) -> list[tuple[str, int]]:
    """(family, index in family) for each of the n items, round-robin over `families`."""
    return [(families[j % len(families)], j // len(families)) for j in range(n)]


def _write_wav(path: str, clip: np.ndarray) -> None:
    """16-bit PCM wav. Encoded in memory first: closing a soundfile on disk fsyncs it, which costs more
    than making the item; the rename at the end is what makes the suite appear whole."""
    buffer = io.BytesIO()
    sf.write(buffer, clip, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    with open(path, "wb") as f:
        f.write(buffer.getvalue())


def render_row(task: tuple[str, int, int, str, str]) -> str:
    """Draw one item, write its wav file(s) and return its manifest line (runs in the workers).

    Args:
        task: (family, index, seed, split, audio folder).
    Returns:
        The row as one line of JSON (no newline).
    """
    family, index, seed, split, audio_dir = task
    item = FAMILIES[family].make(item_rng(seed, family, split, index), split)
    ident = item_id(family, index)
    names = [f"{ident}.wav"] if len(item.audio) == 1 else [f"{ident}-{k}.wav" for k in range(len(item.audio))]
    paths = [os.path.join(audio_dir, name) for name in names]
    for path, clip in zip(paths, item.audio):
        _write_wav(path, clip)
    row = manifest_item(item, ident, family, paths).to_row(os.path.dirname(audio_dir))
    return json.dumps(row, ensure_ascii=False, allow_nan=False)


def manifest_item(item: SynthItem, ident: str, family: str, audio_paths: list[str]) -> Item:
    """A drawn item as a manifest `Item` (the one row schema, `mgrd.data.manifest`), meta floats rounded.

    The reasoning shown in the row is the item's default style; every style stays in `reasonings`.
    """
    return Item(
        id=ident, task=family, answer=item.answer, audio=[Path(p) for p in audio_paths],
        question=item.question if item.messages is None else None, choices=item.choices,
        reasoning=item.reasonings.get(item.default_style),
        reasoning_style=item.default_style if item.reasonings else None,
        reasonings=dict(item.reasonings), meta=round_floats(item.meta), messages=item.messages,
    )


def _check_families(families) -> list[str]:
    if families is None:
        return list(DEFAULT_FAMILIES)
    names = list(dict.fromkeys(families))  # drop repeats, keep order
    if not names:
        raise SynthError("no families given")
    unknown = [name for name in names if name not in FAMILIES]
    if unknown:
        raise SynthError(f"unknown famil{'y' if len(unknown) == 1 else 'ies'} {', '.join(map(repr, unknown))}; "
                         f"known: {', '.join(FAMILIES)}")
    return names


def _check_number(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise SynthError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_args(n, seed, families, split, workers) -> tuple[int, int, list[str], int]:
    n = _check_number(n, "n (number of items)", 1)
    seed = _check_number(seed, "seed", 0)
    if split not in SPLITS:
        raise SynthError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    names = _check_families(families)
    if workers is None:
        workers = 1 if n < PARALLEL_FROM else min(os.cpu_count() or 1, 8)
    return n, seed, names, _check_number(workers, "workers", 1)


def _prepare_target(out: Path, overwrite: bool) -> Path:
    """Check the target, sweep temp folders that killed runs left beside it, and make our own temp folder."""
    try:
        check_target(out, overwrite)
        sweep_stale(out)
        return temp_beside(out)
    except TargetError as err:
        raise SynthError(str(err)) from None
    except OSError as err:
        raise SynthError(f"cannot write the output folder {out}: {err.strerror or err}") from err


def _ignore_sigint() -> None:
    """Worker initializer: ignore SIGINT for good (it arrives blocked, `_sigint_held`): only the parent reacts to
    Ctrl-C; workers printing KeyboardInterrupt tracebacks is noise. SIGTERM still stops them (`Pool.terminate`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def _sigint_held():
    """Block SIGINT while worker processes start (module docstring): the workers, and the pool's threads that
    start more of them, inherit the mask (CPython starts its resource tracker the same way). In the main
    thread, a Ctrl-C that arrives meanwhile (perhaps through another thread) is recorded and raised again on
    the way out."""
    # signal handlers are set in the main thread only, and one set outside Python (None) cannot be put back
    in_main = threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is not None
    held: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum)) if in_main else None
    can_mask = hasattr(signal, "pthread_sigmask")
    mask = None
    if can_mask:
        from multiprocessing import resource_tracker

        resource_tracker.ensure_running()  # the pool would start it, and that start unblocks SIGINT again
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        if can_mask:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a pending SIGINT lands in `held` now
        if in_main:
            signal.signal(signal.SIGINT, previous)
            if held:
                signal.raise_signal(signal.SIGINT)


def _write_rows(tmp: Path, tasks: list[tuple], workers: int, progress: bool, desc: str) -> None:
    bar = tqdm(total=len(tasks), desc=desc, unit="item", disable=not progress, dynamic_ncols=True)
    with open(tmp / MANIFEST_NAME, "w", encoding="utf-8") as manifest, bar:
        if workers == 1:
            rows = map(render_row, tasks)
            for line in rows:
                manifest.write(line + "\n")
                bar.update()
            return
        # spawn: fresh interpreters, no inherited threads or locks; imap keeps the manifest in item order.
        with contextlib.ExitStack() as stack:
            with _sigint_held():  # a Ctrl-C held here is raised once the pool is on the stack: it gets terminated
                pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_ignore_sigint)
                stack.enter_context(pool)
            for line in pool.imap(render_row, tasks, chunksize=max(1, min(64, len(tasks) // (workers * 8)))):
                manifest.write(line + "\n")
                bar.update()


def _suite_summary(seed: int, split: str, names: list[str], tasks: list[tuple]) -> dict:
    counts = {name: 0 for name in names}
    for task in tasks:
        counts[task[0]] += 1
    families = [{"name": name, "kind": FAMILIES[name].kind, "grader": FAMILIES[name].grader,
                 "count": counts[name], "description": FAMILIES[name].description} for name in names]
    return {"seed": seed, "split": split, "n": len(tasks), "sample_rate": SAMPLE_RATE,
            "manifest": MANIFEST_NAME, "families": families}


def synthesize(out_dir, n: int, seed: int, families=None, split: str = "train", overwrite: bool = False,
               workers: int | None = None, progress: bool = True) -> Path:
    """Write a synthetic suite of `n` items.

    Args:
        out_dir: the folder to create (it may exist if empty, or with `overwrite`).
        n: total number of items, spread round-robin over the families.
        seed: non-negative integer; the whole suite is a pure function of (seed, families, split, n).
        families: family names; None means `DEFAULT_FAMILIES` (every non-speech audio family).
        split: "train", "dev" or "pool" (new items drawn like train's), "test" (disjoint parameter ranges) or
            "ood" (test ranges + corruption).
        overwrite: replace a non-empty `out_dir`.
        workers: processes; None picks 1 for small suites, else the CPU count (at most 8).
        progress: show a tqdm progress bar on stderr.
    Returns:
        The manifest path, `out_dir/manifest.jsonl`.
    Raises:
        SynthError: bad arguments or an unusable output folder (nothing is written).
    """
    n, seed, names, workers = _check_args(n, seed, families, split, workers)
    out = Path(out_dir).expanduser().absolute()
    tmp = _prepare_target(out, overwrite)
    tasks = [(name, index, seed, split, str(tmp / AUDIO_DIR)) for name, index in plan(n, names)]
    try:
        (tmp / AUDIO_DIR).mkdir()
        _write_rows(tmp, tasks, workers, progress, desc=f"synth {split}")
        summary = _suite_summary(seed, split, names, tasks)
        (tmp / SUITE_NAME).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / MANIFEST_NAME
