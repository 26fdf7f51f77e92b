"""Synthetic items and adversarial chains for the grounding and loop tests.

`rows(families, split, n, seed)` draws items exactly as the suite writer does (`item_rng`) and returns
manifest rows (meta rounded like the writer's) together with the drawn clips; no file is written.

`perturb(chain, facts, rng)` changes ONE verifiable claim of a grounded chain so that it becomes false:
a number moves out of tolerance (Hz by a tritone, times and rates by 1.6x, levels by 6 dB away from
zero, percentages by 25 points, counts by one), landing where no fact of its kind lies; a comparison
names the other sound; a trend, contour or category flips. It returns the new chain and the new claim's
text, or None when the chain has no claim it can change. The grounding filter must then fail, naming it.
"""

from __future__ import annotations

import math
import re
import shutil

import numpy as np

from mgrd.data.synth import FAMILIES
from mgrd.data.synth.writer import item_rng, manifest_item
from mgrd.grounding.claims import Claim, extract_claims, fact_dim, facts_from_meta

SPEECH = shutil.which("espeak-ng") is not None  # the speech families need it (tests/data/synth skip likewise)
PERCEPTION_FAMILIES = [name for name, f in FAMILIES.items() if f.kind in ("acoustic", "compositional")] + (
    ["voice_pitch", "speech_rate"] if SPEECH else [])


def rows(families, split: str, n: int, seed: int = 0) -> list[tuple[dict, list[np.ndarray]]]:
    """n items per family as (manifest row without audio paths, clips)."""
    out = []
    for name in families:
        for i in range(n):
            item = FAMILIES[name].make(item_rng(seed, name, split, i), split)
            row = manifest_item(item, f"{name}-{split}-{i:06d}", name, []).to_row(".")
            out.append((row, item.audio))
    return out


_FLIPS = {"higher": "lower", "lower": "higher", "longer": "shorter", "shorter": "longer", "faster": "slower",
          "slower": "faster", "quicker": "slower", "louder": "softer", "softer": "louder", "quieter": "louder",
          "rises": "falls", "falls": "rises", "ascending": "descending", "descending": "ascending",
          "up": "down", "down": "up", "major": "minor", "minor": "major", "sine": "square", "square": "sawtooth",
          "sawtooth": "sine", "noise": "sine", "pure tone": "square wave", "near the beginning": "near the end",
          "in the middle": "near the beginning", "near the end": "in the middle", "first": "second",
          "second": "first"}
_WORD = re.compile(r"\b(" + "|".join(sorted(_FLIPS, key=len, reverse=True)) + r")\b", re.IGNORECASE)
_NUM = re.compile(r"[-+\u2212]?\d+(?:\.\d+)?|\b(?:a single|one|two|three|four|five|six|seven|eight|nine|ten)\b")


def _fmt(value: float, decimals: int, signed: bool) -> str:
    text = f"{value:+.{decimals}f}" if signed else f"{value:.{decimals}f}"
    return text


def _moved(claim: Claim, facts: dict) -> float:
    """A new value for a number claim, out of tolerance and as far as possible from every fact of its kind."""
    v = claim.value
    if claim.dim == "db":
        options = [v + 6.0 if v >= 0 else v - 6.0, v - 6.0 if v >= 0 else v + 6.0]
    elif claim.dim == "percent":
        options = [v + 25.0, v - 25.0]
    elif claim.dim == "count":
        options = [v + 1.0, v - 1.0] if v > 1 else [v + 1.0]
    else:
        factor = 2 ** 0.5 if claim.dim == "hz" else 1.6
        options = [v * factor, v / factor]
    known = [x for k, val in facts.items() if fact_dim(k) == claim.dim for x in _flat(val)]
    known += [abs(x) for x in known] if claim.dim == "db" else []
    options = [o for o in options if claim.dim != "percent" or 0 <= o <= 100]
    if claim.dim in ("db", "percent", "count"):  # scales with a meaningful zero get absolute distances
        return max(options, key=lambda o: min((abs(o - x) for x in known), default=math.inf))
    return max(options, key=lambda o: min((abs(o - x) / max(abs(x), 1e-9) for x in known), default=math.inf))


def _flat(value):
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in _flat(v)]
    return [float(value)] if isinstance(value, (int, float)) and not isinstance(value, bool) else []


def perturb(chain: str, meta: dict, rng: np.random.Generator) -> tuple[str, str] | None:
    """(chain with one claim made false, the changed claim's new text), or None (module docstring)."""
    facts = facts_from_meta(meta)
    claims = [c for c in extract_claims(chain) if c.kind in ("quantity", "count", "compare", "trend", "contour",
                                                             "category")]
    if not claims:
        return None
    claim = claims[int(rng.integers(len(claims)))]
    if claim.kind in ("quantity", "count"):
        number = _NUM.search(claim.text)
        value = _moved(claim, facts)
        if claim.kind == "count":
            new_number = str(int(value))
        else:
            decimals = claim.decimals
            shown = value / (1000.0 if re.search(r"kHz", claim.text) else 1.0)
            shown = shown * (1000.0 if re.search(r"\bms\b", claim.text) else 1.0)
            new_number = _fmt(shown, decimals, number.group(0)[0] in "+-\u2212")
        if number.group(0) == "a single":
            new_number = "two"
        new_text = claim.text[:number.start()] + new_number + claim.text[number.end():]
    else:
        words = list(_WORD.finditer(claim.text))
        if not words:
            return None
        word = words[-1] if claim.kind != "compare" else words[0]  # a comparison: name the other sound
        new_text = claim.text[:word.start()] + _FLIPS[word.group(0).lower()] + claim.text[word.end():]
    return chain[:claim.start] + new_text + chain[claim.end:], new_text
