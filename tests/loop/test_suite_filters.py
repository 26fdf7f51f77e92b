"""The filters measured on a few hundred synthetic items (integration): each item's own grounded chain as a
candidate must pass all four filters, the same chain with one claim made false must fail grounding by
name, its text-substitute chain must fail grounding; and with the meta removed, the grounded chains are
checked against measurements of the written audio. The rates are printed (run with -s to see them)."""

from collections import Counter, defaultdict

import numpy as np
import pytest

from grounding.suite import PERCEPTION_FAMILIES, perturb, rows
from mgrd.chat import format_completion
from mgrd.data.manifest import load_manifest
from mgrd.data.records import CompletionRecord, SampleRecord
from mgrd.data.synth import DEFAULT_FAMILIES
from mgrd.data.synth.writer import synthesize
from mgrd.loop.filters import passes_all, score_records

pytestmark = pytest.mark.integration


def _comp(chain, answer):
    return CompletionRecord.from_text(format_completion(chain, answer), n_tokens=len(chain.split()),
                                      finish_reason="stop")


def _rate(counts, key):
    return counts[key] / counts["n"]


def test_grounded_pass_perturbed_and_substitute_chains_fail_with_meta():
    rng = np.random.default_rng(0)
    counts: dict[str, Counter] = defaultdict(Counter)
    items = [row for split, n in (("train", 8), ("test", 5), ("ood", 7)) for row, _ in rows(PERCEPTION_FAMILIES,
                                                                                          split, n, seed=101)]
    records = []
    for row in items:
        chain, new = perturb(row["reasonings"]["grounded"], row["meta"], rng)
        comps = [_comp(row["reasonings"]["grounded"], row["answer"]), _comp(chain, row["answer"]),
                 _comp(row["reasonings"]["text_substitute"], row["meta"]["substitute_answer"])]
        records.append((SampleRecord(item_id=row["id"], task=row["task"], prompt="", completions=comps), new))
    score_records([r for r, _ in records], items)
    for record, new in records:
        grounded, perturbed, substitute = record.completions
        for c in (counts[record.task], counts["all"]):
            c["n"] += 1
            c["grounded_pass"] += passes_all(grounded)
            c["perturbed_caught"] += (perturbed.scores["grounding"]["score"] == 0.0
                                      and new in perturbed.scores["grounding"]["reason"])
            c["substitute_fail"] += substitute.scores["grounding"]["score"] == 0.0
    print(f"\n{'family':18s} {'n':>4s} {'grounded pass':>14s} {'perturbed caught':>17s} {'substitute fail':>16s}")
    for name, c in sorted(counts.items()):
        print(f"{name:18s} {c['n']:4d} {_rate(c, 'grounded_pass'):14.3f} {_rate(c, 'perturbed_caught'):17.3f} "
              f"{_rate(c, 'substitute_fail'):16.3f}")
    total = counts["all"]
    assert total["n"] == 20 * len(PERCEPTION_FAMILIES) >= 260  # 13 families, 15 with espeak-ng (the speech ones)
    assert _rate(total, "grounded_pass") == 1.0
    assert _rate(total, "perturbed_caught") >= 0.98
    assert _rate(total, "substitute_fail") == 1.0


@pytest.mark.parametrize("split, least", [("train", 0.95), ("ood", 0.75)])
def test_grounded_chains_against_measured_audio(tmp_path, split, least):
    """ood clips carry noise down to 0 dB SNR or a speed change: measurements there are weaker."""
    manifest = synthesize(tmp_path / "suite", n=13 * 8, seed=7, families=DEFAULT_FAMILIES, split=split,
                          progress=False)
    items = [item for item in load_manifest(manifest)]
    for item in items:
        item.meta = {}
    records = [SampleRecord(item_id=i.id, task=i.task, prompt="", completions=[_comp(i.reasonings["grounded"],
                                                                                     i.answer)]) for i in items]
    score_records(records, items)
    by_family: dict[str, Counter] = defaultdict(Counter)
    for r in records:
        scores = r.completions[0].scores
        for c in (by_family[r.task], by_family["all"]):
            c["n"] += 1
            c["pass"] += scores["grounding"]["score"] == 1.0
            c["checked"] += scores["claims_checked"]["score"]
            c["supported"] += scores["claims"]["score"] * scores["claims_checked"]["score"]
    print(f"\n{'no meta, ' + split:18s} {'n':>4s} {'grounding pass':>15s} {'claims checked':>15s} {'verified':>9s}")
    for name, c in sorted(by_family.items()):
        verified = f"{c['supported'] / c['checked']:9.3f}" if c["checked"] else f"{'-':>9s}"
        print(f"{name:18s} {c['n']:4d} {c['pass'] / c['n']:15.3f} {c['checked'] / c['n']:15.1f} {verified}")
    assert by_family["all"]["pass"] / by_family["all"]["n"] >= least
