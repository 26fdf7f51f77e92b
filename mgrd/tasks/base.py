"""Task: how one item becomes a prompt, an SFT target, a grade and a reward — and the registry of tasks.

Every stage walks the same path from an item (a manifest row or a loaded `mgrd.data.manifest.Item`):

- `Task.prompt(item)`: the messages shown to the model. A question item is one user turn holding its audio
  clips, then its question, then — when it has choices — the options lettered in order ("A. the first\\nB. the
  second"), the order the choice grader reads letters in. A conversation item (`messages`) is its messages up
  to the last user turn.
- `Task.target(item, style)`: the assistant content for SFT, `mgrd.chat.format_reasoning(chain, answer)`.
- `Task.encode_prompt` / `Task.encode_example`: those messages through `mgrd.chat.encode_chat` with the
  official server's part join, so generation, rollouts, evaluation and SFT build the same prompt tokens;
  `clip_features(item)` featurises an item's clips once for both.
- `Task.grade(item, completion)`: 1.0 / 0.0 from the task's grader (`mgrd.tasks.grading`).
- `Task.reward(completions, **columns)`: the report's rewards built from `grade` (Step-Audio-R1 §10.6): an
  item without audio earns `1[correct]`, an item with audio `0.8·1[correct] + 0.2·1[reasoning present]`.

`register_task` adds a task to `TASKS`; `get_task(name)` finds it. The synthetic families' tasks
(`mgrd.tasks.synthetic`) are registered on the first lookup; benchmarks register theirs the same way. This
module holds no task-specific wording, no model and no file I/O beyond what `encode_chat` reads.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from mgrd.audio import features_for_clip
from mgrd.chat import OFFICIAL_PART_JOIN, ChatInputs, Message, encode_chat, format_reasoning
from mgrd.models.config import AudioEncoderConfig
from mgrd.tasks.grading import GRADERS, as_row, extract_answer, grade, has_reasoning

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase


Style = Literal["grounded", "text_substitute", "text", "none"]
STYLES = ("grounded", "text_substitute", "text", "none")
Features = Mapping[str, Sequence["torch.Tensor"]]  # clip path -> one [n_mels, L] log-mel per chunk
AUDIO_REWARD_WEIGHTS = (0.8, 0.2)  # (correct, reasoning present): Step-Audio-R1 §10.6 audio reward


@dataclass(frozen=True)
class Score:
    """One grade with the reason it was given (what filters and reports show)."""

    score: float
    reason: str


@dataclass(frozen=True)
class Task:
    """One task family or benchmark: prompt, target, grade and reward of its items.

    Attributes:
        name: the manifest `task` value of its items.
        grader: "choice", "numeric" or "exact" (`mgrd.tasks.grading.GRADERS`).
        audio_first: put the audio parts before the question text (the synthetic suite; Big Bench Audio);
            False puts the text first (the official MMAU / MMSU / Spoken MQA prompts).
        description: one line for listings.
    """

    name: str
    grader: str
    audio_first: bool = True
    description: str = ""

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a task needs a non-empty name, got {self.name!r}")
        if self.grader not in GRADERS:
            raise ValueError(f"task {self.name!r}: unknown grader {self.grader!r}; choose one of {sorted(GRADERS)}")

    # ------------------------------------------------------------------------------------------ prompt

    def question_text(self, row: dict) -> str:
        """The user text of a question item: the question, then the lettered choices when it has any."""
        question = row.get("question")
        if not isinstance(question, str):
            raise ValueError(f"item {row.get('id')!r}: a question item needs a string 'question'")
        choices = row.get("choices")
        return f"{question}\n{letter_choices(choices)}" if choices else question

    def prompt(self, item: dict | Any, features: Features | None = None) -> list[Message]:
        """The messages shown to the model for an item (no assistant turn).

        Args:
            item: a manifest row or `Item`; audio paths are used as given (an `Item`'s are absolute).
            features: precomputed log-mels per clip path (`clip_features`); an audio part whose path is in it
                carries them as `"mels"`, so `encode_chat` does not decode the clip again.
        Returns:
            OpenAI-style messages: one user turn `[audio parts..., question text]` (text first when not
            `audio_first`), or a conversation's messages up to its last user turn.
        """
        row = as_row(item)
        if row.get("messages") is not None:
            return _with_features(_up_to_last_user(row), features)
        audio = [{"type": "audio", "audio": os.fspath(path)} for path in row.get("audio") or []]
        text = [{"type": "text", "text": self.question_text(row)}]
        messages = [{"role": "user", "content": audio + text if self.audio_first else text + audio}]
        return _with_features(messages, features)

    # ------------------------------------------------------------------------------------------ target

    def target(self, item: dict | Any, style: Style | None = None) -> str:
        """The assistant content to train on: `<think>\\n{chain}\\n</think>\\n{answer}`.

        Args:
            item: a manifest row or `Item`.
            style: which chain: "grounded", "text_substitute", "text", or "none" (the empty think block the
                report gives samples without a chain); None = the item's own `reasoning_style`, or "none"
                when it has no chain.
        Raises:
            ValueError: an unknown style, or a style the item has no chain for.
        """
        row = as_row(item)
        style = style if style is not None else (row.get("reasoning_style") or "none")
        if style not in STYLES:
            raise ValueError(f"unknown reasoning style {style!r}; choose one of {list(STYLES)}")
        return format_reasoning(_chain(row, style), row["answer"])

    # ------------------------------------------------------------------------------------------ encoding

    def encode_prompt(
        self,
        item: dict | Any,
        tokenizer: PreTrainedTokenizerBase,
        audio_config: AudioEncoderConfig | None = None,
        features: Features | None = None,
    ) -> ChatInputs:
        """The generation prompt's ids and audio features (ends with `<|BOT|>assistant\\n<think>\\n`).

        Args:
            item: a manifest row or `Item`.
            tokenizer: a tokenizer with the control tokens.
            audio_config: the model's encoder config (mel bins, token rule); None = the defaults.
            features: precomputed log-mels per clip path (`clip_features`); None decodes the clips.
        Returns:
            `ChatInputs` with `input_ids` `[T]` and one `[n_mels, L]` mel per audio chunk.
        """
        return _encode(tokenizer, self.prompt(item, features), audio_config, add_generation_prompt=True)

    def encode_example(
        self,
        item: dict | Any,
        tokenizer: PreTrainedTokenizerBase,
        style: Style | None = None,
        audio_config: AudioEncoderConfig | None = None,
        features: Features | None = None,
    ) -> ChatInputs:
        """An SFT example: the prompt plus `target(item, style)`; its ids before the first label equal
        `encode_prompt(item, ...)`'s ids.

        `style` as in `target`; `audio_config` and `features` as in `encode_prompt`. Only the final reply is learned: a conversation's earlier assistant turns are context, as the prompt
        shows them, and carry no labels.

        Returns:
            `ChatInputs` with `input_ids` `[T]`, mels, and `labels_mask` `[T]` on the target and its `<|EOT|>`.
        """
        messages = self.prompt(item, features) + [{"role": "assistant", "content": self.target(item, style)}]
        inputs = _encode(tokenizer, messages, audio_config, train=True)
        mask = inputs.labels_mask
        # the final turn's content and <|EOT|> are the last run of 1s; every label before it is context
        start = len(mask) - next(i for i, m in enumerate(reversed(mask)) if not m)
        inputs.labels_mask = [0] * start + mask[start:]
        return inputs

    # ------------------------------------------------------------------------------------------ scoring

    def grade(self, item: dict | Any, completion: str | None, require_think: bool = True) -> float:
        """1.0 when the completion's answer is right by this task's grader, else 0.0.

        Args:
            item: a manifest row or `Item`.
            completion: the text generated after the `<think>\\n` prompt (or a full `<think>…` text).
            require_think: a completion without `</think>` was cut off and scores 0.
        """
        return grade(item, completion, require_think=require_think, grader=self.grader)

    def score(self, item: dict | Any, completion: str | None, require_think: bool = True) -> Score:
        """`grade` with a one-line reason (for sample records, filters and reports)."""
        row = as_row(item)
        value = self.grade(row, completion, require_think)
        answer = extract_answer(completion, require_think=require_think)
        if answer is None:
            reason = "no answer: cut off before </think>" if completion else "no answer: empty completion"
        else:
            verdict = "correct" if value else "wrong"
            reason = f"{self.grader}: {verdict}, answered {_clip(answer)!r}, reference {_clip(row['answer'])!r}"
        return Score(value, reason)

    def reward(self, completions: list[str], **columns: list) -> list[float | None]:
        """Rewards for completions of this task (TRL's reward signature: dataset columns as lists).

        An item with audio earns `0.8·1[correct] + 0.2·1[reasoning present]`, one without `1[correct]`;
        "reasoning present" is a closed, non-empty think block (`grading.has_reasoning`). A row whose
        `task` column names another task gets None (not applicable), so several tasks' rewards can share a
        mixed batch.

        Args:
            completions: `[N]` completion texts.
            columns: manifest columns, each a list of N values (`answer` is required; `choices`, `audio`,
                `messages`, `task` when present).
        Returns:
            `[N]` rewards in [0, 1], or None for rows of other tasks.
        Raises:
            ValueError: a column whose length differs from the completions', or no `answer` column.
        """
        if "answer" not in columns:
            raise ValueError("reward needs an 'answer' column")
        bad = {k: len(v) for k, v in columns.items() if len(v) != len(completions)}
        if bad:
            raise ValueError(f"columns must have one value per completion ({len(completions)}), got {bad}")
        rows = [{k: v[i] for k, v in columns.items()} for i in range(len(completions))]
        return [self._reward_one(row, c) for row, c in zip(rows, completions)]

    def _reward_one(self, row: dict, completion: str) -> float | None:
        if row.get("task", self.name) != self.name:
            return None
        correct = self.grade(row, completion)
        if not has_audio(row):
            return correct
        w_correct, w_reasoning = AUDIO_REWARD_WEIGHTS
        return w_correct * correct + w_reasoning * float(has_reasoning(completion))


# ---------------------------------------------------------------------------------------------- helpers


def _encode(tokenizer, messages: list[Message], audio_config, **kwargs) -> ChatInputs:
    """`encode_chat` with the official server's part join and the model's audio config."""
    return encode_chat(tokenizer, messages, part_join=OFFICIAL_PART_JOIN, audio_config=audio_config, **kwargs)


def clip_features(
    item: dict | Any, audio_config: AudioEncoderConfig | None = None, channel: str = "first"
) -> Features:
    """The log-mels of every clip of an item, computed once, for `prompt(item, features=...)` and the encoders.

    Args:
        item: a manifest row or `Item` (its `audio` paths and the audio parts of its messages).
        audio_config: the model's encoder config (mel bins, token rule); None = the defaults.
        channel: "first" or "mean" for multi-channel files.
    Returns:
        `{path: [mel [n_mels, L] per <= 25 s chunk]}`.
    """
    config = audio_config or AudioEncoderConfig()
    row = as_row(item)
    paths = [os.fspath(p) for p in row.get("audio") or []]
    paths += [os.fspath(p["audio"]) for p in _message_audio_parts(row) if p["type"] == "audio"]
    return {path: features_for_clip(path, config.n_mels, channel=channel, token_count=config.token_count)
            for path in dict.fromkeys(paths)}


def _with_features(messages: list[Message], features: Features | None) -> list[Message]:
    """`messages` with `"mels"` added to each audio part whose path has precomputed features."""
    if not features:
        return messages

    def part(p):
        has = isinstance(p, dict) and p.get("type") == "audio" and os.fspath(p.get("audio", "")) in features
        return dict(p, mels=features[os.fspath(p["audio"])]) if has else p

    return [dict(m, content=[part(p) for p in m["content"]]) if isinstance(m.get("content"), list) else m
            for m in messages]


def letter_choices(choices: list[str]) -> str:
    """Choices as lettered lines, in order: `A. the first\\nB. the second` (at most 26)."""
    if len(choices) > 26:
        raise ValueError(f"at most 26 choices can be lettered, got {len(choices)}")
    return "\n".join(f"{chr(ord('A') + i)}. {choice}" for i, choice in enumerate(choices))


def has_audio(item: dict | Any) -> bool:
    """Whether an item carries audio: a clip in `audio`, or an audio part in a message."""
    row = as_row(item)
    return bool(row.get("audio")) or any(True for _ in _message_audio_parts(row))


def _message_audio_parts(row: dict) -> Iterator[dict]:
    """The audio and input_audio parts of a conversation item's messages, in order."""
    for message in row.get("messages") or []:
        content = message.get("content")
        for part in content if isinstance(content, list) else []:
            if isinstance(part, dict) and part.get("type") in ("audio", "input_audio"):
                yield part


def _up_to_last_user(row: dict) -> list[Message]:
    messages = row["messages"]
    last_user = max((i for i, m in enumerate(messages) if m.get("role") in ("user", "human")), default=None)
    if last_user is None:
        raise ValueError(f"item {row.get('id')!r}: a conversation needs a user turn")
    return [dict(m) for m in messages[: last_user + 1]]


def _chain(row: dict, style: str) -> str:
    """The item's reasoning in `style` ("" for "none")."""
    if style == "none":
        return ""
    chains = dict(row.get("reasonings") or {})
    if row.get("reasoning") is not None and row.get("reasoning_style") is not None:
        chains.setdefault(row["reasoning_style"], row["reasoning"])
    if style not in chains:
        raise ValueError(f"item {row.get('id')!r} has no {style!r} reasoning; it has {sorted(chains) or 'none'}")
    return chains[style]


def _clip(text: str, limit: int = 60) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------------------------------------- registry

TASKS: dict[str, Task] = {}
_builtin_loaded = False


class UnknownTaskError(KeyError):
    """`get_task` of a name nobody registered; the message names close matches."""

    def __str__(self) -> str:
        return str(self.args[0])


def _load_builtin() -> None:
    """Register the package's own tasks (the synthetic families) once, on the first registry access."""
    global _builtin_loaded
    if not _builtin_loaded:
        _builtin_loaded = True
        import mgrd.tasks.synthetic  # noqa: F401  (registers on import)


def register_task(task: Task) -> Task:
    """Add a task to `TASKS` and return it.

    Raises:
        ValueError: a task of that name is already registered.
    """
    _load_builtin()
    if not isinstance(task, Task):
        raise ValueError(f"register_task takes a Task, got {type(task).__name__}")
    if task.name in TASKS:
        raise ValueError(f"a task named {task.name!r} is already registered")
    TASKS[task.name] = task
    return task


def find_task(name: str | None) -> Task | None:
    """The registered task called `name`, or None."""
    _load_builtin()
    return TASKS.get(name) if isinstance(name, str) else None


def get_task(name: str) -> Task:
    """The registered task called `name`.

    Raises:
        UnknownTaskError: (a KeyError) no such task; the message lists close names (or all of them).
    """
    task = find_task(name)
    if task is None:
        close = difflib.get_close_matches(str(name), TASKS, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else f"known tasks: {', '.join(sorted(TASKS))}"
        raise UnknownTaskError(f"unknown task {name!r}; {hint}")
    return task


def task_names() -> list[str]:
    """Every registered task name, sorted."""
    _load_builtin()
    return sorted(TASKS)

