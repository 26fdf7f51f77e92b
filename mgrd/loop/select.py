"""Selection around the filters: which items to sample, D_audio-cot for SFT and the pass@K band for RL
(Step-Audio-R1 §3.2, §4.2).

- `needs_perception` / `perception_items`: step 1 of an MGRD iteration keeps the audio questions whose
  answer needs acoustic analysis, so that a transcript alone is not enough: an item's own flag
  (`meta["needs_perception"]` or a `needs_perception` manifest column) wins; otherwise a synthetic family
  of kind acoustic or compositional, or one of `PERCEPTION_SPEECH_FAMILIES` (voice pitch, speech rate,
  not spoken arithmetic, which a transcript solves), needs perception, and any other item with audio is
  kept (a benchmark's own categories are unknown here; flag them to exclude);
- `select_audio_cot`: the completions that pass every filter (`mgrd.loop.filters.FILTERS`), at most
  `max_per_item` per item, distinct chains only, in sampling order (no ranking, so selection adds no bias of
  its own); `audio_cot_items` turns them into manifest rows whose grounded chain is the sampled one.
- `pass_count` / `pass_histogram` / `band_items`: pass@K is the number of correct completions out of K;
  the RL set keeps items with `low <= pass@K <= high` (the report: 3..6 of 8; above is too easy, below
  "potentially harmful or nonsensical").
- `mix_rl_set`: the banded audio items mixed with text tasks at `text_per_audio` (the report's 2,000 text
  : 3,000 audio = 2/3), drawn and shuffled by a seed.

Pure functions over records and items; nothing here samples, trains or writes files.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mgrd.data.records import CompletionRecord, SampleRecord
from mgrd.data.synth import FAMILIES
from mgrd.loop.filters import FILTERS, passes_all
from mgrd.tasks.base import has_audio
from mgrd.tasks.grading import as_row

PERCEPTION_KINDS = ("acoustic", "compositional")
PERCEPTION_SPEECH_FAMILIES = ("voice_pitch", "speech_rate")


@dataclass
class SelectConfig:
    """Selection settings (the report's where it gives them)."""

    max_per_item: int = field(default=2, metadata={"help": "M: most accepted chains per item in D_audio-cot"})
    samples_per_item: int = field(default=8, metadata={"help": "K: completions sampled per item (pass@K)"})
    band_low: int = field(default=3, metadata={"help": "RL keeps items with at least this many correct of K"})
    band_high: int = field(default=6, metadata={"help": "... and at most this many (report: 3..6 of 8)"})
    text_per_audio: float = field(default=2 / 3, metadata={"help": "text items per audio item in the RL set"})
    seed: int = field(default=0, metadata={"help": "seed of the text draw and the shuffle"})

    def __post_init__(self):
        check_band(self.samples_per_item, self.band_low, self.band_high)
        if self.max_per_item < 1:
            raise ValueError(f"max_per_item must be >= 1, got {self.max_per_item}")
        if self.text_per_audio < 0:
            raise ValueError(f"text_per_audio must be >= 0, got {self.text_per_audio}")


def check_band(k: int, low: int, high: int) -> None:
    """Raise a one-line ValueError unless K >= 1 and 0 <= low <= high <= K."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"K (samples per item) must be an integer >= 1, got {k!r}")
    if not (isinstance(low, int) and isinstance(high, int) and 0 <= low <= high <= k):
        raise ValueError(f"the pass@K band must satisfy 0 <= low <= high <= K={k}, got [{low}, {high}]")


# ---------------------------------------------------------------------------------------------- curation


def needs_perception(item: dict | Any) -> bool:
    """Whether an item is an audio question that needs acoustic analysis (module docstring's rule)."""
    row = as_row(item)
    if not has_audio(row):
        return False
    for source in (row.get("meta") or {}, row.get("extra") or {}, row):  # meta, an Item's extra column, a row's
        if source.get("needs_perception") is not None:
            return bool(source["needs_perception"])
    family = FAMILIES.get(row.get("task"))
    if family is None:
        return True
    return family.kind in PERCEPTION_KINDS or family.name in PERCEPTION_SPEECH_FAMILIES


def perception_items(items: Sequence[Any], source: str = "the manifest") -> list[Any]:
    """The items that need perception, in order.

    Raises:
        ValueError: none does (a manifest of text tasks, or of questions a transcript answers).
    """
    kept = [item for item in items if needs_perception(item)]
    if not kept:
        raise ValueError(f"{source} has no audio questions that need perception ({len(items)} item(s): text-only, "
                         "transcript-solvable or flagged needs_perception=false); MGRD has nothing to distil")
    return kept


# ---------------------------------------------------------------------------------------------- D_audio-cot


def select_audio_cot(records: Iterable[SampleRecord], max_per_item: int,
                     names: Sequence[str] = FILTERS) -> list[tuple[SampleRecord, CompletionRecord]]:
    """The accepted candidates: per record, the first `max_per_item` distinct chains passing every filter.

    Args:
        records: scored records (`mgrd.loop.filters.score_records`).
        max_per_item: M.
        names: the filters a candidate must pass.
    Returns:
        (record, completion) pairs in record order, then sampling order.
    """
    if max_per_item < 1:
        raise ValueError(f"max_per_item must be >= 1, got {max_per_item}")
    chosen = []
    for record in records:
        seen: set[str] = set()
        for completion in record.completions:
            chain = " ".join(completion.reasoning.split())
            if chain in seen or not passes_all(completion, names):
                continue
            seen.add(chain)
            chosen.append((record, completion))
            if len(seen) == max_per_item:
                break
    return chosen


def audio_cot_items(selected: Sequence[tuple[SampleRecord, CompletionRecord]], items: dict[str, Any]) -> list[dict]:
    """Manifest rows for SFT on D_audio-cot: each item with the accepted chain as its grounded reasoning.

    Row j of an item gets the id `<item id>#cot<j>`, `reasoning` = the sampled chain, `reasoning_style` =
    "grounded", `reasonings` = {"grounded": chain}; everything else (audio, question, choices, the
    reference answer, meta) is the item's, so `Task.target(row)` trains the chain followed by the answer.

    Args:
        selected: from `select_audio_cot`.
        items: {item id: manifest row or `Item`}.
    """
    rows, per_item = [], {}
    for record, completion in selected:
        j = per_item[record.item_id] = per_item.get(record.item_id, -1) + 1
        row = dict(as_row(items[record.item_id]))
        row.update(id=f"{record.item_id}#cot{j}", reasoning=completion.reasoning, reasoning_style="grounded",
                   reasonings={"grounded": completion.reasoning})
        rows.append(row)
    return rows


def replay_items(items: Sequence[Any], n: int, seed: int = 0) -> list[Any]:
    """`n` perception items that carry a reference grounded chain (`reasonings["grounded"]`), drawn evenly over
    their tasks: round robin over the tasks in name order, each task's items in a seeded order, so a family the
    model's own chains rarely pass still gets its share. Deterministic for a seed; fewer when fewer exist."""
    rng = np.random.default_rng(seed)
    by_task: dict[str, list[Any]] = {}
    for item in items:
        row = as_row(item)
        if needs_perception(item) and (row.get("reasonings") or {}).get("grounded"):
            by_task.setdefault(row["task"], []).append(item)
    queues = [[group[i] for i in rng.permutation(len(group))] for _, group in sorted(by_task.items())]
    out: list[Any] = []
    while len(out) < n and any(queues):
        for queue in queues:
            if queue and len(out) < n:
                out.append(queue.pop(0))
    return out


# ---------------------------------------------------------------------------------------------- pass@K


def pass_count(record: SampleRecord, name: str = "correct") -> int:
    """How many of a record's completions passed `name` (score 1.0)."""
    missing = [i for i, c in enumerate(record.completions) if name not in c.scores]
    if missing:
        raise ValueError(f"record {record.item_id!r}: completions {missing[:5]} have no {name!r} score")
    return sum(c.scores[name]["score"] >= 1.0 for c in record.completions)


def _check_k(record: SampleRecord, k: int) -> None:
    if len(record.completions) != k:
        raise ValueError(f"record {record.item_id!r} has {len(record.completions)} completions, expected K={k}")


def pass_histogram(records: Iterable[SampleRecord], k: int) -> list[int]:
    """`[K + 1]` counts: entry c is how many items had exactly c correct of K."""
    check_band(k, 0, k)
    hist = [0] * (k + 1)
    for record in records:
        _check_k(record, k)
        hist[pass_count(record)] += 1
    return hist


def band_items(records: Iterable[SampleRecord], k: int, low: int, high: int) -> list[str]:
    """Ids of the items whose pass@K lies in [low, high], in record order.

    Raises:
        ValueError: a bad band (`check_band`) or a record without exactly K completions.
    """
    check_band(k, low, high)
    kept = []
    for record in records:
        _check_k(record, k)
        if low <= pass_count(record) <= high:
            kept.append(record.item_id)
    return kept


def mix_rl_set(audio_items: Sequence[Any], text_items: Sequence[Any], text_per_audio: float,
               seed: int = 0) -> list[Any]:
    """The RL set: every audio item plus round(text_per_audio x len(audio)) text items (all of them when
    there are fewer), drawn without replacement, then shuffled; deterministic for a seed.

    Raises:
        ValueError: a negative ratio.
    """
    if text_per_audio < 0:
        raise ValueError(f"text_per_audio must be >= 0, got {text_per_audio}")
    rng = np.random.default_rng(seed)
    n_text = min(len(text_items), int(round(text_per_audio * len(audio_items))))
    picked = [text_items[i] for i in sorted(rng.choice(len(text_items), n_text, replace=False))] if n_text else []
    mixed = list(audio_items) + picked
    return [mixed[i] for i in rng.permutation(len(mixed))]

