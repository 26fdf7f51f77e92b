"""Numbers computed from scored sample records: scores per category, grounding, think length, ablation.

- `aggregate`: for a set of verdicts, n, the official score (mean over the items the official scorer counts,
  times the benchmark's scale) with its denominator, the normalised score likewise, and the counts of
  excluded items, errors, invalid judge outputs and missing outputs — per category as well.
- Grounding of the reasoning chains, with the MGRD grounding filter's own checker (`mgrd.grounding`): the
  share of chains that mention an acoustic feature or measurement the question did not already name
  (`lexicon_score(...).score > 0`), the share that reach the filter's lexicon threshold (`PASS_SCORE`), the
  mean acoustic token ratio, and, for items with `meta`, the verified-claim rate: claims the facts support
  over claims the facts can check, pooled over chains (as `mgrd.loop.filters.filter_summary` reports it).
- Think length: quantiles of the reasoning length, and accuracy per length bucket (the inverted-scaling
  curve: accuracy against how long the model thought).
- Audio ablation: for each ablation variant, the share of items whose parsed answer changed from the clean
  run (`sensitivity`); a model that answers the same with silence is not listening.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np



# ---------------------------------------------------------------------------------------------- scores


# two-sided 95 % Student-t quantiles t(0.975, df) for df = 1..30; past 30 the Cornish-Fisher expansion below
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
Z975 = 1.959964


def t975(df: int) -> float:
    """t(0.975, df): the table for df <= 30, else the expansion
    z + (z^3 + z)/(4 df) + (5z^5 + 16z^3 + 3z)/(96 df^2) (error < 1e-4)."""
    if df <= len(T975):
        return T975[df - 1]
    z = Z975
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def mean_ci(values: Sequence[float], scale: float = 1.0) -> dict:
    """Mean, sample standard deviation and the 95 % t-interval half-width (as Wild Speech reports), scaled."""
    arr = np.asarray(values, dtype=float) * scale
    if arr.size < 2:
        return {"std": None, "ci95": None}
    std = float(arr.std(ddof=1))
    return {"std": round(std, 4), "ci95": round(t975(arr.size - 1) * std / math.sqrt(arr.size), 4)}


def aggregate(verdicts: Sequence[dict], scale: float = 100.0) -> dict:
    """Scores of a set of scored items.

    Args:
        verdicts: `Verdict.to_dict()`s, plus `"missing": True` for items that had no output.
        scale: mean item value -> reported score (100: accuracy in %, 10: a 1-10 judge mean as 0-100).
    Returns:
        `{n, official, official_n, official_std, official_ci95, normalised, normalised_n, excluded, errors,
        judge_invalid, missing}`; a score is None when its denominator is 0; std and the 95 % t-interval
        half-width are over the official item values (scaled), None below two items.
    """
    official = [v["official"] for v in verdicts if v.get("official") is not None]
    normalised = [v["normalised"] for v in verdicts if v.get("normalised") is not None]
    return {
        "n": len(verdicts),
        "official": _mean(official, scale), "official_n": len(official),
        **{f"official_{k}": v for k, v in mean_ci(official, scale).items()},
        "normalised": _mean(normalised, scale), "normalised_n": len(normalised),
        "excluded": sum(1 for v in verdicts if v.get("official") is None and not v.get("error")
                        and not v.get("missing")),
        "errors": sum(1 for v in verdicts if v.get("error")),
        "judge_invalid": sum(1 for v in verdicts if v.get("judge_invalid")),
        "missing": sum(1 for v in verdicts if v.get("missing")),
    }


def by_category(verdicts: Sequence[dict], categories: Sequence[dict], keys: Sequence[str],
                scale: float = 100.0) -> dict:
    """`{key: {value: aggregate}}` over the items of each category value (values sorted by name)."""
    out = {}
    for key in keys:
        groups: dict[str, list[dict]] = {}
        for verdict, cats in zip(verdicts, categories):
            groups.setdefault(str(cats.get(key)), []).append(verdict)
        out[key] = {value: aggregate(group, scale) for value, group in sorted(groups.items())}
    return out


def macro(per_category: dict, field: str = "official") -> float | None:
    """The mean of the categories' scores (those that have one)."""
    values = [c[field] for c in per_category.values() if c[field] is not None]
    return round(sum(values) / len(values), 4) if values else None


def _mean(values: Sequence[float], scale: float) -> float | None:
    return round(scale * sum(values) / len(values), 4) if values else None


# ---------------------------------------------------------------------------------------------- grounding


def grounding(chains: Sequence[tuple[str, str, dict | None]]) -> dict:
    """Grounding numbers over finished reasoning chains.

    Args:
        chains: (reasoning, question as shown, item meta or None) per answered item.
    Returns:
        `{chains, empty_chains, acoustic_mention_rate, lexicon_pass_rate, acoustic_token_ratio,
        verified_claim_rate, claims_checked}`; rates None without chains (the claim rate without checkable
        claims).
    """
    from mgrd.grounding.claims import extract_claims, facts_from_meta, verify_claims
    from mgrd.grounding.lexicon import PASS_SCORE, lexicon_score

    texts = [(r, q, m) for r, q, m in chains if r and r.strip()]
    scores = [lexicon_score(r, q) for r, q, _ in texts]
    checked = supported = 0
    for reasoning, _, meta in texts:
        facts = facts_from_meta(meta) if meta else {}
        if not facts:
            continue
        statuses = [c.status for c in verify_claims(extract_claims(reasoning), facts)]
        checked += sum(s != "unverifiable" for s in statuses)
        supported += statuses.count("supported")

    def share(flags) -> float | None:
        flags = list(flags)
        return round(sum(flags) / len(flags), 4) if flags else None

    return {"chains": len(texts), "empty_chains": len(chains) - len(texts),
            "acoustic_mention_rate": share(s.score > 0 for s in scores),
            "lexicon_pass_rate": share(s.score >= PASS_SCORE for s in scores),
            "acoustic_token_ratio": round(float(np.mean([s.ratio for s in scores])), 4) if scores else None,
            "verified_claim_rate": round(supported / checked, 4) if checked else None,
            "claims_checked": checked}


# ---------------------------------------------------------------------------------------------- think length


def think_length_stats(lengths: Sequence[int]) -> dict:
    """n, mean and the 10/50/90th percentiles of the reasoning lengths."""
    if not lengths:
        return {"n": 0}
    arr = np.asarray(lengths, dtype=float)
    return {"n": int(arr.size), "mean": round(float(arr.mean()), 2),
            **{f"p{q}": round(float(np.percentile(arr, q)), 2) for q in (10, 50, 90)}}


def length_buckets(lengths: Sequence[int], correct: Sequence[float], n_buckets: int = 5) -> list[dict]:
    """Accuracy per think-length bucket: about equal-count buckets over the sorted lengths, a boundary moved
    forward past equal lengths so that one length never lands in two buckets (fewer buckets when ties merge).

    Returns:
        `[{lo, hi, n, accuracy}]` in increasing length, accuracy in %.
    """
    pairs = sorted(zip(lengths, correct))
    if not pairs:
        return []
    cuts = [round(k * len(pairs) / n_buckets) for k in range(1, n_buckets)]
    bounds = [0]
    for cut in cuts:
        while 0 < cut < len(pairs) and pairs[cut][0] == pairs[cut - 1][0]:
            cut += 1  # keep equal lengths together
        if bounds[-1] < cut < len(pairs):
            bounds.append(cut)
    bounds.append(len(pairs))
    out = []
    for start, end in zip(bounds, bounds[1:]):
        group = pairs[start:end]
        out.append({"lo": group[0][0], "hi": group[-1][0], "n": len(group),
                    "accuracy": round(100 * sum(c for _, c in group) / len(group), 2)})
    return out


# ---------------------------------------------------------------------------------------------- ablation


def sensitivity(clean: dict[str, str | None], ablated: dict[str, str | None]) -> dict:
    """Share of items (answered in both runs) whose parsed answer changed under the ablation."""
    both = [k for k in clean if k in ablated]
    changed = sum(1 for k in both if _norm(clean[k]) != _norm(ablated[k]))
    return {"n": len(both), "changed": changed,
            "sensitivity": round(changed / len(both), 4) if both else None}


def _norm(answer: str | None) -> str:
    return " ".join((answer or "").lower().split())


def finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
