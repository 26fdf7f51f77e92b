"""The embedded synthetic suite: a registry of task families and the writer that puts them on disk.

`FAMILIES` maps each family name (the manifest `task`) to its `Family`, gathered from the single-fact
acoustic families, the compositional ones, and the speech and text families. `DEFAULT_FAMILIES` names the
non-speech audio families (acoustic + compositional): they need nothing beyond numpy, so `mgrd data synth`
uses them when no `--families` are given. Speech families need espeak-ng and are opt-in by name.
"""

from __future__ import annotations

from mgrd.data.synth import acoustic, compositional, speech, text
from mgrd.data.synth.base import SAMPLE_RATE, SPLITS, Family, SynthItem


def _registry(*groups: list[Family]) -> dict[str, Family]:
    registry: dict[str, Family] = {}
    for group in groups:
        for family in group:
            if family.name in registry:
                raise RuntimeError(f"two synthetic families share the name {family.name!r}")
            registry[family.name] = family
    return registry


FAMILIES: dict[str, Family] = _registry(acoustic.FAMILIES, compositional.FAMILIES, speech.FAMILIES, text.FAMILIES)
DEFAULT_FAMILIES: list[str] = [f.name for f in (*acoustic.FAMILIES, *compositional.FAMILIES)]

__all__ = ["DEFAULT_FAMILIES", "FAMILIES", "SAMPLE_RATE", "SPLITS", "Family", "SynthItem"]
