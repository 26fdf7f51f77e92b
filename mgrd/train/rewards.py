"""Reward functions for RL: a registry of `fn(completions, **columns) -> list[float | None]` and the scorer.

A reward function takes R completion texts and the items' manifest columns (each a list of R values: `task`,
`answer`, `choices`, `audio`, `id`, ...) and returns one reward per completion, or None where it does not
apply (TRL's signature). Functions must be pure, synchronous and deterministic. The built-ins stand on the
task graders (`mgrd.tasks`: `Task.reward`, `Task.grade`, `grading.has_reasoning`), so the RL reward, the
distillation filter and the evaluation score cannot drift apart:

- `report`: the report's rewards (Step-Audio-R1 §10.6) through `Task.reward`: an item without audio earns
  `1[correct]`, an item with audio `0.8·1[correct] + 0.2·1[reasoning present]`;
- `correct`: `1[correct]` on every row; `reasoning`: `1[reasoning present]` (a closed, non-empty think block);
- `text`: `1[correct]` on rows without audio (None on audio rows);
- `audio_correct`, `audio_reasoning`: `1[correct]` / `1[reasoning present]` on rows with audio (None elsewhere),
  so `{text: 1, audio_correct: 0.8, audio_reasoning: 0.2}` is `report` with its weights in the config.

A row's total is `Σ_f w_f·r_f` over the configured functions that apply to it. Under GRPO the reasoning term
cancels inside a group whose samples all reason (DESIGN §5); PPO's value baseline keeps it.

Failures are never silent: a function that raises, or returns the wrong number of values or a value that is
not a number, is a `RewardError` naming it; a NaN or infinite value skips that row (it leaves the loss) and is
counted, and the trainer stops once skips pass its limit. `register_reward` adds user functions.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from mgrd.tasks.base import get_task, has_audio
from mgrd.tasks.grading import has_reasoning

RewardFn = Callable[..., list]
REWARDS: dict[str, RewardFn] = {}


class RewardError(ValueError):
    """A reward function failed or returned something that is not one reward per completion."""


@dataclass
class RewardConfig:
    """Which reward functions score a rollout, and their weights in the total."""

    functions: dict[str, float] = field(
        default_factory=lambda: {"report": 1.0},
        metadata={"help": "reward function name -> weight in the total (a row's total is the weighted sum of the "
                          "functions that apply to it); built-ins: report, correct, reasoning, text, "
                          "audio_correct, audio_reasoning; a --set of one key replaces the whole mapping"})
    max_skip_fraction: float = field(
        default=0.25, metadata={"help": "stop the run when more than this share of one step's rows got a NaN or "
                                        "infinite reward (those rows are skipped and counted)"})

    def __post_init__(self):
        if not isinstance(self.functions, dict) or not self.functions:
            raise ValueError(f"reward.functions must map at least one function name to a weight, "
                             f"got {self.functions!r}")
        for name, weight in self.functions.items():
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
                raise ValueError(f"reward.functions.{name} must be a finite number, got {weight!r}")
        if not 0 <= self.max_skip_fraction <= 1:
            raise ValueError(f"reward.max_skip_fraction must be in [0, 1], got {self.max_skip_fraction}")


# ---------------------------------------------------------------------------------------------- registry


def register_reward(name: str, fn: RewardFn | None = None, *, replace: bool = False):
    """Register `fn(completions, **columns) -> list[float | None]` as `name`; usable as a decorator.

    Raises:
        ValueError: an empty name, a name already taken (unless `replace`), or a non-callable.
    """
    def add(f: RewardFn) -> RewardFn:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a reward function needs a non-empty name, got {name!r}")
        if not callable(f):
            raise ValueError(f"reward {name!r} must be callable, got {type(f).__name__}")
        if name in REWARDS and not replace:
            raise ValueError(f"a reward function named {name!r} is already registered (pass replace=True)")
        REWARDS[name] = f
        return f

    return add if fn is None else add(fn)


def get_reward(name: str) -> RewardFn:
    """The registered function called `name`; a ValueError lists close names otherwise."""
    if name not in REWARDS:
        close = difflib.get_close_matches(str(name), REWARDS, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(sorted(REWARDS))}"
        raise ValueError(f"unknown reward function {name!r}; {hint}")
    return REWARDS[name]


# ---------------------------------------------------------------------------------------------- built-ins


def _rows(completions: Sequence[str], columns: dict) -> list[dict]:
    bad = {k: len(v) for k, v in columns.items() if len(v) != len(completions)}
    if bad:
        raise ValueError(f"columns must have one value per completion ({len(completions)}), got {bad}")
    if "task" not in columns:
        raise ValueError("the built-in rewards need a 'task' column (each row's task name)")
    return [{k: v[i] for k, v in columns.items()} for i in range(len(completions))]


def report_reward(completions: list[str], **columns) -> list[float | None]:
    """Step-Audio-R1's reward through each row's `Task.reward`: `1[correct]`, or `0.8·correct + 0.2·reasoning`
    for items with audio."""
    rows = _rows(completions, columns)
    return [get_task(row["task"]).reward([c], **{k: [v] for k, v in row.items()})[0]
            for row, c in zip(rows, completions)]


def correct_reward(completions: list[str], **columns) -> list[float | None]:
    """`1[correct]` by each row's task grader (a completion cut off before `</think>` scores 0)."""
    return [get_task(row["task"]).grade(row, c) for row, c in zip(_rows(completions, columns), completions)]


def reasoning_reward(completions: list[str], **columns) -> list[float | None]:
    """`1[reasoning present]`: a closed, non-empty think block (`grading.has_reasoning`)."""
    _rows(completions, columns)
    return [float(has_reasoning(c)) for c in completions]


def _only(fn: RewardFn, audio: bool) -> RewardFn:
    """`fn` on rows with (or without) audio, None on the others."""

    def restricted(completions: list[str], **columns) -> list[float | None]:
        values = fn(completions, **columns)
        return [v if has_audio(row) == audio else None for v, row in zip(values, _rows(completions, columns))]

    restricted.__doc__ = f"{fn.__name__} on rows {'with' if audio else 'without'} audio; None on the others."
    return restricted


register_reward("report", report_reward)
register_reward("correct", correct_reward)
register_reward("reasoning", reasoning_reward)
register_reward("text", _only(correct_reward, audio=False))
register_reward("audio_correct", _only(correct_reward, audio=True))
register_reward("audio_reasoning", _only(reasoning_reward, audio=True))


# ---------------------------------------------------------------------------------------------- scoring


@dataclass
class Scores:
    """The rewards of R completions.

    Attributes:
        total: R weighted totals; NaN for skipped rows.
        valid: R flags, False for rows skipped because a function gave NaN or an infinite value.
        per_function: each function's R raw values (None where it does not apply, NaN where it failed).
    """

    total: list[float]
    valid: list[bool]
    per_function: dict[str, list[float | None]]

    @property
    def skipped(self) -> int:
        return sum(not v for v in self.valid)

    def means(self) -> dict[str, float]:
        """`reward/<name>`: each function's mean over the rows it applies to (finite values only)."""
        out = {}
        for name, values in self.per_function.items():
            finite = [v for v in values if v is not None and math.isfinite(v)]
            out[f"reward/{name}"] = sum(finite) / len(finite) if finite else float("nan")
        return out


def score(completions: Sequence[str], columns: dict[str, list], cfg: RewardConfig) -> Scores:
    """Score R completions with the configured functions.

    Args:
        completions: R completion texts (what the model wrote after the `<think>\\n` prompt).
        columns: manifest columns, each a list of R values (one item's row repeated for its K samples).
        cfg: the functions and their weights.
    Returns:
        `Scores`; a row with a NaN or infinite value from any applicable function is skipped (`valid` False).
    Raises:
        RewardError: a function raised, returned a non-list, the wrong count or a non-number; or no configured
            function applies to some row.
    """
    per_function = {name: _call(name, list(completions), columns) for name in cfg.functions}
    total, valid = [], []
    for r in range(len(completions)):
        applicable = [(cfg.functions[n], v[r]) for n, v in per_function.items() if v[r] is not None]
        if not applicable:
            task = columns.get("task", ["?"] * len(completions))[r]
            raise RewardError(f"no reward function in {sorted(cfg.functions)} applies to row {r} (task {task!r}); "
                              "add one that does to reward.functions")
        ok = all(math.isfinite(v) for _, v in applicable)
        total.append(sum(w * v for w, v in applicable) if ok else float("nan"))
        valid.append(ok)
    return Scores(total=total, valid=valid, per_function=per_function)


def _call(name: str, completions: list[str], columns: dict[str, list]) -> list[float | None]:
    """One function's values, checked: a list of R numbers or None."""
    fn = get_reward(name)
    try:
        values = fn(completions, **columns)
    except Exception as err:  # a user's function may raise anything; say whose it was
        raise RewardError(f"reward function {name!r} raised {type(err).__name__}: {err}") from err
    if not isinstance(values, (list, tuple)):
        raise RewardError(f"reward function {name!r} must return a list, got {type(values).__name__}")
    if len(values) != len(completions):
        raise RewardError(f"reward function {name!r} returned {len(values)} values for {len(completions)} completions")
    out = []
    for i, v in enumerate(values):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            if hasattr(v, "item") and getattr(v, "ndim", 1) == 0:  # a 0-d tensor or numpy scalar
                v = v.item()
            else:
                raise RewardError(f"reward function {name!r} returned {v!r} for completion {i}; "
                                  "expected a number or None")
        out.append(None if v is None else float(v))
    return out
