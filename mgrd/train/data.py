"""The SFT data: manifests -> encoded examples per source -> a weighted, resumable mixture -> micro-batches.

Sources (Step-Audio-R1's cold start, DESIGN §5), each a list of manifests with a mixing weight:

- `task_cot`: text-only question items, `q -> <think>chain</think> answer` (the item's own chain);
- `conversation`: items with `messages`, `context -> <think>chain</think> reply`;
- `audio_qa`: audio question items, `audio, q -> <think>\\n\\n</think>\\n answer` (the empty think block);
- `audio_cot`: audio question items with their chain (MGRD's distilled D_audio-cot; weight 0 by default).

A source takes only the items of its kind from its manifests, so one mixed manifest (the synthetic suite) may be
listed under several sources. Every example is built through the shared path: `Task.encode_example` (prompt and
target tokens, audio features, the label mask on the assistant's reply) and, per micro-batch,
`mgrd.data.collate.collate_sft`. Items whose task is not registered get a task with the grader their row implies.

`Mixture.draw(step, n)` picks each example's source with probability weight / sum of weights and walks each source
through seeded per-epoch permutations; the only state is how many examples each source has handed out, so a
checkpoint holding it (with the step) resumes the same order. `micro_batches` sorts a step's examples by length
(length bucketing: little padding) and splits them per rank and micro-batch.

This module holds no model and no loss.
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from mgrd.data.manifest import Item, load_manifest
from mgrd.train.config import option

if TYPE_CHECKING:  # the chat encoder and the tasks load torch and transformers: imported where used
    from mgrd.chat import ChatInputs
    from mgrd.tasks import Task

log = logging.getLogger(__name__)

SOURCES = ("task_cot", "conversation", "audio_qa", "audio_cot")


@dataclass
class SourceConfig:
    """One SFT source: its manifests, its mixing weight and the reasoning style of its targets."""

    manifests: tuple[str, ...] = option((), "JSONL manifests (only the items of this source's kind are taken)")
    weight: float = option(1.0, "mixing weight: a drawn example comes from this source with probability weight / sum")
    style: str | None = option(None, "target chain: grounded, text_substitute, text, none (empty think), or null "
                                 "(the item's own reasoning_style)")

    def __post_init__(self):
        if not self.weight >= 0:
            raise ValueError(f"a source weight must be >= 0, got {self.weight}")


@dataclass
class SFTDataConfig:
    """The training mixture and its limits."""

    task_cot: SourceConfig = option(SourceConfig(), "text-only question items: q -> think, answer")
    conversation: SourceConfig = option(SourceConfig(), "conversation items (messages): context -> think, reply")
    audio_qa: SourceConfig = option(SourceConfig(style="none"), "audio question items: audio, q -> empty think, answer")
    audio_cot: SourceConfig = option(SourceConfig(weight=0.0), "audio question items with their chain (MGRD's "
                                                           "D_audio-cot): audio, q -> think, answer")
    max_length: int = option(0, "longest example in tokens (audio slots included); longer ones are skipped and "
                            "counted; 0 = the model's max_position_embeddings")
    cache_features: bool = option(True, "keep every example's log-mels in memory (fast steps); false computes "
                                         "them again from the audio files for each batch (large audio sets)")

    def __post_init__(self):
        if self.max_length < 0:
            raise ValueError(f"data.max_length must be >= 0, got {self.max_length}")

    def sources(self) -> dict[str, SourceConfig]:
        return {name: getattr(self, name) for name in SOURCES}

    def check(self) -> None:
        """Raise ValueError for a source style the tasks do not know (checked when a run or plan starts: the
        task module loads torch, which building the config and `--help` do not need)."""
        from mgrd.tasks.base import STYLES

        for name, src in self.sources().items():
            if src.style is not None and src.style not in STYLES:
                raise ValueError(f"data.{name}.style must be one of {', '.join(STYLES)} or null, got {src.style!r}")


@dataclass
class Example:
    """One encoded SFT example and where it came from.

    Attributes:
        inputs: `ChatInputs` with `input_ids` `[T]`, `labels_mask` `[T]` and one `[n_mels, L]` mel per audio chunk.
        item: the manifest item it was built from.
        source: its source name.
    """

    inputs: ChatInputs
    item: Item
    source: str
    refeaturize: Any = None  # () -> mels, when the mels are not kept in memory (`cache_features: false`)

    @property
    def length(self) -> int:
        return len(self.inputs.input_ids)

    @property
    def target_tokens(self) -> int:
        return int(sum(self.inputs.labels_mask))

    # the attributes collate_sft reads
    @property
    def input_ids(self):
        return self.inputs.input_ids

    @property
    def labels_mask(self):
        return self.inputs.labels_mask

    @property
    def mels(self):
        """One `[n_mels, L]` log-mel per audio chunk: kept, or computed again from the audio files."""
        return self.inputs.mels if self.refeaturize is None else self.refeaturize()


def kind_of(item: Item | dict) -> str:
    """The kind of an item: "conversation" (has messages), "audio" (has clips) or "text"."""
    from mgrd.tasks.base import has_audio

    row = item if isinstance(item, dict) else vars(item)
    if row.get("messages") is not None:
        return "conversation"
    return "audio" if has_audio(item) else "text"


SOURCE_KIND = {"task_cot": "text", "conversation": "conversation", "audio_qa": "audio", "audio_cot": "audio"}


def task_for(item: Item) -> Task:
    """The item's registered task, or a task with the grader its row implies (a user's own task names)."""
    from mgrd.tasks import Task, find_task
    from mgrd.tasks.grading import infer_grader

    task = find_task(item.task)
    if task is not None:
        return task
    return Task(name=item.task, grader=infer_grader(vars(item)))


def load_items(manifests: Sequence[str | Path]) -> list[Item]:
    """Every item of the manifests, in order (bad rows raise `ManifestError` with FILE:LINE)."""
    items: list[Item] = []
    for path in manifests:
        if not Path(path).is_file():
            raise FileNotFoundError(f"manifest not found: {path}")
        items.extend(load_manifest(path))
    return items


def encode_item(item: Item, tokenizer, audio_config, style: str | None) -> ChatInputs:
    """One item through the shared path: `Task.encode_example` with its clips featurised once."""
    from mgrd.tasks.base import clip_features

    task = task_for(item)
    try:
        return task.encode_example(item, tokenizer, style=style, audio_config=audio_config,
                                   features=clip_features(item, audio_config))
    except ValueError as err:
        raise ValueError(f"{item.source or item.id}: {err}") from None


def encode_source(items: Sequence[Item], source: str, style: str | None, tokenizer, audio_config,
                  max_length: int, progress: bool = False, cache_features: bool = True) -> tuple[list[Example], int]:
    """The examples of one source from `items` (only its kind), and how many were too long.

    Args:
        cache_features: keep each example's log-mels; False drops them and computes them again, by the same
            function, whenever a batch needs them (memory stays at the token ids).
    Returns:
        (examples, n_too_long): examples longer than `max_length` tokens are left out and counted.
    """
    from tqdm.auto import tqdm

    mine = [item for item in items if kind_of(item) == SOURCE_KIND[source]]
    examples, too_long = [], 0
    for item in tqdm(mine, desc=f"encode {source}", unit="item", disable=not progress or not mine, leave=False):
        inputs = encode_item(item, tokenizer, audio_config, style)
        if len(inputs.input_ids) > max_length:
            too_long += 1
            continue
        again = None
        if not cache_features and inputs.mels:
            inputs.mels = []
            again = functools.partial(_features_again, item, tokenizer, audio_config, style)
        examples.append(Example(inputs, item, source, again))
    return examples, too_long


def _features_again(item: Item, tokenizer, audio_config, style: str | None) -> list:
    """The mels of `item`'s example, made again by the same shared path (`encode_item`)."""
    return encode_item(item, tokenizer, audio_config, style).mels


@dataclass
class EncodedData:
    """The encoded sources and what was left out."""

    sources: dict[str, list[Example]]
    weights: dict[str, float]
    too_long: dict[str, int]
    longest: int = 0

    @property
    def total(self) -> int:
        return sum(len(v) for v in self.sources.values())


def build_sources(cfg: SFTDataConfig, tokenizer, audio_config, max_length: int, progress: bool = False) -> EncodedData:
    """Load and encode every source with a positive weight.

    Raises:
        ValueError: no source with weight > 0 has manifests; the manifests hold no item of any weighted source's
            kind (an empty dataset); or every item is longer than `max_length` (both named with counts).
    """
    loaded: dict[tuple[str, ...], list[Item]] = {}
    sources, weights, too_long = {}, {}, {}
    for name, src in cfg.sources().items():
        if src.weight <= 0 or not src.manifests:
            continue
        key = tuple(src.manifests)
        if key not in loaded:
            loaded[key] = load_items(key)
        sources[name], too_long[name] = encode_source(loaded[key], name, src.style, tokenizer, audio_config,
                                                      max_length, progress, cfg.cache_features)
        weights[name] = src.weight
    if not weights:
        raise ValueError("empty dataset: no source has manifests and a weight > 0 (set data.<source>.manifests, "
                         f"sources: {', '.join(SOURCES)})")
    for name, n in too_long.items():
        if n:
            log.warning("%s: skipped %d example(s) longer than %d tokens", name, n, max_length)
    if not any(sources.values()):
        skipped = sum(too_long.values())
        if skipped:
            raise ValueError(f"every one of the {skipped} examples is longer than the context of {max_length} "
                             "tokens (data.max_length / the model's max_position_embeddings): shorten the audio or "
                             "raise the limit")
        listed = sorted({m for s in cfg.sources().values() if s.weight > 0 for m in s.manifests})
        raise ValueError(f"empty dataset: the manifests ({', '.join(listed)}) hold no item of the weighted "
                         f"sources' kinds ({', '.join(f'{n}: {SOURCE_KIND[n]}' for n in weights)})")
    return EncodedData({k: v for k, v in sources.items() if v}, {k: w for k, w in weights.items() if sources[k]},
                       too_long)


class Mixture:
    """Weighted draws over the sources, reproducible from (seed, step) and the per-source counts.

    Args:
        sources: name -> examples (non-empty lists).
        weights: name -> mixing weight (> 0).
        seed: the run seed.
    """

    def __init__(self, sources: dict[str, list[Any]], weights: dict[str, float], seed: int):
        self.names = [n for n in SOURCES if n in sources] + sorted(set(sources) - set(SOURCES))
        self.sources = sources
        total = sum(weights[n] for n in self.names)
        self.probs = np.array([weights[n] / total for n in self.names])
        self.seed = seed
        self.consumed = {n: 0 for n in self.names}
        self._perm: dict[str, tuple[int, np.ndarray]] = {}

    def draw(self, step: int, n: int) -> list[Any]:
        """The `n` examples of optimiser step `step` (the same on every rank), advancing the counts."""
        rng = np.random.default_rng([self.seed, step])
        picks = rng.choice(len(self.names), size=n, p=self.probs)
        out = []
        for k in picks:
            name = self.names[int(k)]
            out.append(self._next(name))
        return out

    def _next(self, name: str):
        examples = self.sources[name]
        i = self.consumed[name]
        self.consumed[name] += 1
        epoch, pos = divmod(i, len(examples))
        cached = self._perm.get(name)
        if cached is None or cached[0] != epoch:
            source_id = self.names.index(name)
            cached = (epoch, np.random.default_rng([self.seed, 1 + source_id, epoch]).permutation(len(examples)))
            self._perm[name] = cached
        return examples[int(cached[1][pos])]

    def state_dict(self) -> dict:
        return {"consumed": dict(self.consumed)}

    def load_state_dict(self, state: dict) -> None:
        unknown = set(state.get("consumed", {})) - set(self.names)
        if unknown:
            raise ValueError(f"the checkpoint's data position names sources this run does not have: {sorted(unknown)}")
        self.consumed.update({k: int(v) for k, v in state["consumed"].items()})


def micro_batches(examples: Sequence[Any], micro_batch_size: int, rank: int = 0, world_size: int = 1) -> list[list]:
    """This rank's micro-batches of a step: the step's examples sorted by length (longest first), dealt to the
    ranks in turn (rank r takes sorted positions r, r + W, ...), then cut into micro-batches of
    `micro_batch_size` (similar lengths together: little padding).

    Args:
        examples: the step's global batch (the same list on every rank), len = micro x accum x W.
    """
    order = sorted(range(len(examples)), key=lambda i: -_length(examples[i]))
    mine = [examples[i] for i in order[rank::world_size]]
    return [mine[i:i + micro_batch_size] for i in range(0, len(mine), micro_batch_size)]


def _length(example) -> int:
    return len(example.input_ids)


def source_counts(examples: Sequence[Example]) -> dict[str, int]:
    """How many of `examples` came from each source (a step's mix, for the metrics)."""
    return dict(Counter(e.source for e in examples))
