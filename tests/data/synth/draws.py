"""Items drawn once per test session and shared by the synth test modules (drawing is the slow part).

`draw(family, split, n, seed)` returns the first n items of that family, split and seed, exactly as the
writer would draw them (`item_rng`); a later call for fewer items of the same draw costs nothing.
"""

from __future__ import annotations

import functools

from mgrd.data.synth import FAMILIES
from mgrd.data.synth.writer import item_rng


@functools.cache
def _cached(family: str, split: str, seed: int) -> list:
    return []


def draw(family: str, split: str, n: int, seed: int = 0) -> list:
    """The first `n` items of (family, split, seed), drawing only those not drawn before."""
    items = _cached(family, split, seed)
    for i in range(len(items), n):
        items.append(FAMILIES[family].make(item_rng(seed, family, split, i), split))
    return items[:n]


def clear() -> None:
    """Forget every drawn item (the cache holds about 1 GB of audio by the end of the synth tests)."""
    _cached.cache_clear()
