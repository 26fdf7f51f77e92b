"""The contract between synthetic task families and the suite writer.

A family is a named, seeded generator of items. `make(rng, split)` draws one item: its audio clips
(16 kHz float32 waveforms), question, choices, answer, the ground-truth acoustic facts (`meta`) and its
reasoning chains. The writer (`mgrd.data.synth.writer`) turns items into manifest rows and audio files;
families never touch the disk.

Manifest row written for an item (DESIGN.md §3), keys in this order:
    id, task, audio, question, choices, answer, reasoning, reasoning_style, reasonings, meta
    (+ messages for conversation items, which carry no `question`)
- `reasoning` is the chain used by default for SFT and `reasoning_style` says which style it is
  ("grounded", "text_substitute" or "text" for text-only items);
- `reasonings` holds every style available for the item, so the cold start and the grounding metrics
  can pick either.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal, get_args

import numpy as np

SAMPLE_RATE = 16_000
SPLITS = ("train", "test", "ood", "dev", "pool")  # dev, pool: new items drawn like train's (appended: seeds kept)
Kind = Literal["acoustic", "compositional", "speech", "text", "conversation"]
Grader = Literal["choice", "numeric", "exact"]  # "exact": the normalised answer string itself
KINDS: tuple[str, ...] = get_args(Kind)
GRADERS: tuple[str, ...] = get_args(Grader)


@dataclass
class SynthItem:
    """One drawn item, before it gets an id and file paths."""

    question: str | None
    answer: str
    choices: list[str] | None
    audio: list[np.ndarray] = field(default_factory=list)  # each [S] float32 at 16 kHz, peak <= 1
    meta: dict = field(default_factory=dict)  # ground-truth facts, JSON-serialisable
    reasonings: dict[str, str] = field(default_factory=dict)  # style -> chain; grounded first for audio
    default_style: str = "grounded"
    messages: list[dict] | None = None  # conversation items only


@dataclass(frozen=True)
class Family:
    """A task family: its name (the manifest `task`), kind, grader and item generator."""

    name: str
    kind: Kind
    grader: Grader
    make: Callable[[np.random.Generator, str], SynthItem]  # (rng, split) -> item
    description: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"family {self.name!r}: unknown kind {self.kind!r}; expected one of {', '.join(KINDS)}")
        if self.grader not in GRADERS:
            raise ValueError(f"family {self.name!r}: unknown grader {self.grader!r}; "
                             f"expected one of {', '.join(GRADERS)}")
