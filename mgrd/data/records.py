"""Sample records: the one JSONL format for sampled completions and their scores.

Evaluation, RL rollouts and MGRD sampling write one `SampleRecord` per item (one JSON object per line):
the item id and task, the prompt (rendered text and, when known, its token ids), the K completions — text,
reasoning and answer split at the first `</think>`, token count, finish reason, a log-prob summary, scores
per grader or filter with the reason — and which model at which iteration produced them. Filters, pass@K
selection and reports read them back.

Writing: `append_records` adds lines to a growing file (each record one `write` on an `O_APPEND` descriptor,
then fsync), so a writer killed mid-run leaves every earlier record intact; at worst the last line is torn,
and the next append cuts it off. `write_records` replaces a file atomically (temp file + rename).
Reading: `read_records` reports a malformed line as `FILE:LINE: message`; a torn last line (no newline at the
end of the file) is skipped with a warning, since that is what a killed writer leaves.

This module computes no scores and runs no model; `records_from_rollout` only copies what a rollout produced
and what the item's task's grader says.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mgrd.atomic import atomic_write
from mgrd.chat import OFFICIAL_PART_JOIN, render_chat, split_reasoning
from mgrd.tasks import Task, get_task
from mgrd.tasks.grading import as_row

if TYPE_CHECKING:
    from mgrd.rollout import RolloutBatch

log = logging.getLogger(__name__)

FINISH_REASONS = ("stop", "length")


class RecordError(ValueError):
    """A records file or record that cannot be used; file errors start with `FILE:LINE:`."""


@dataclass
class CompletionRecord:
    """One sampled completion of a prompt.

    Attributes:
        text: the generated text after the prompt (special tokens skipped).
        reasoning: the text before the first `</think>` (all of it when there is none).
        answer: the text after the first `</think>`; None when the completion was cut off before it.
        n_tokens: generated tokens, the stop token included.
        finish_reason: "stop" (a stop id was sampled) or "length" (the token budget ran out).
        logprob_sum: sum of the sampled tokens' log-probs under the sampled distribution; None if unknown.
        logprob_mean: `logprob_sum / n_tokens`; None if unknown.
        scores: `{name: {"score": float, "reason": str}}`, one entry per grader or filter.
        token_ids: the generated ids, when kept (so training needs no re-tokenisation).
    """

    text: str
    n_tokens: int
    finish_reason: str
    reasoning: str = ""
    answer: str | None = None
    logprob_sum: float | None = None
    logprob_mean: float | None = None
    scores: dict[str, dict[str, Any]] = field(default_factory=dict)
    token_ids: list[int] | None = None

    def __post_init__(self):
        if self.finish_reason not in FINISH_REASONS:
            raise RecordError(f"finish_reason must be one of {list(FINISH_REASONS)}, got {self.finish_reason!r}")
        for name, verdict in self.scores.items():
            if not (isinstance(verdict, dict) and isinstance(verdict.get("score"), (int, float))
                    and isinstance(verdict.get("reason", ""), str)):
                raise RecordError(f"scores[{name!r}] must be {{'score': number, 'reason': str}}, got {verdict!r:.80}")

    @classmethod
    def from_text(cls, text: str, n_tokens: int, finish_reason: str, **kwargs) -> CompletionRecord:
        """A completion with `reasoning` and `answer` split from `text` by `mgrd.chat.split_reasoning`."""
        reasoning, answer = split_reasoning(text)
        return cls(text=text, n_tokens=n_tokens, finish_reason=finish_reason, reasoning=reasoning, answer=answer,
                   **kwargs)

    def add_score(self, name: str, score: float, reason: str = "") -> None:
        """Record one grader's or filter's verdict under `name` (replacing an earlier one)."""
        self.scores[name] = {"score": float(score), "reason": reason}


@dataclass
class SampleRecord:
    """The K completions sampled for one item, and where they came from.

    Attributes:
        item_id: the manifest `id`.
        task: the manifest `task`.
        prompt: the prompt as text (`mgrd.chat.render_chat`, one placeholder per audio part).
        completions: the K samples.
        model: which model sampled them (a name or checkpoint path).
        iteration: the MGRD iteration (or training step) of that model; None outside a loop.
        prompt_ids: the prompt's token ids, when kept.
        extra: anything else a stage wants to keep (sampling settings, the reference answer, ...).
    """

    item_id: str
    task: str
    prompt: str
    completions: list[CompletionRecord]
    model: str = ""
    iteration: int | None = None
    prompt_ids: list[int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> SampleRecord:
        """A record from its JSON object.

        Raises:
            RecordError: a missing or mistyped field, or an unknown key.
        """
        _check(data, cls, "record")
        parsed = []
        for k, comp in enumerate(data["completions"]):
            _check(comp, CompletionRecord, f"completions[{k}]")
            try:
                parsed.append(CompletionRecord(**comp))
            except RecordError as err:
                raise RecordError(f"completions[{k}].{err}") from None
        return cls(**dict(data, completions=parsed))


# field -> allowed JSON types (None allowed where the field may be null)
_TYPES: dict[type, dict[str, tuple]] = {
    SampleRecord: {"item_id": (str,), "task": (str,), "prompt": (str,), "completions": (list,), "model": (str,),
                   "iteration": (int, type(None)), "prompt_ids": (list, type(None)), "extra": (dict,)},
    CompletionRecord: {"text": (str,), "n_tokens": (int,), "finish_reason": (str,), "reasoning": (str,),
                       "answer": (str, type(None)), "logprob_sum": (int, float, type(None)),
                       "logprob_mean": (int, float, type(None)), "scores": (dict,),
                       "token_ids": (list, type(None))},
}
_REQUIRED = {SampleRecord: ("item_id", "task", "prompt", "completions"),
             CompletionRecord: ("text", "n_tokens", "finish_reason")}


def _check(data: Any, cls: type, where: str) -> None:
    if not isinstance(data, dict):
        raise RecordError(f"{where} must be a JSON object, got {type(data).__name__}")
    missing = [k for k in _REQUIRED[cls] if k not in data]
    if missing:
        raise RecordError(f"{where} is missing {missing}")
    unknown = sorted(set(data) - set(_TYPES[cls]))
    if unknown:
        raise RecordError(f"{where} has unknown key(s) {unknown}")
    for key, value in data.items():
        types = _TYPES[cls][key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            names = "/".join("null" if t is type(None) else t.__name__ for t in types)
            raise RecordError(f"{where}.{key} must be {names}, got {type(value).__name__}")


# ---------------------------------------------------------------------------------------------- writing


def _line(record: SampleRecord) -> bytes:
    if not isinstance(record, SampleRecord):
        raise RecordError(f"expected a SampleRecord, got {type(record).__name__}")
    return (json.dumps(record.to_dict(), ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")


def _mend_tail(fd: int, path: Path, whole: Callable[[Any], Any] | None = None) -> None:
    """Make an append start on a new line: a last line without its newline is finished when it holds a whole
    row (a hand-edited file; `whole` raises on a row that is not one) and cut off otherwise (a writer killed
    mid-line)."""
    size = os.lseek(fd, 0, os.SEEK_END)
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    keep = _last_line_start(fd, size)
    try:
        row = json.loads(os.pread(fd, size - keep, keep).decode("utf-8"))
        (whole or SampleRecord.from_dict)(row)
    except (UnicodeDecodeError, json.JSONDecodeError, RecordError, TypeError):
        log.warning("%s: dropping a torn last line (%d bytes) left by an interrupted writer", path, size - keep)
        os.ftruncate(fd, keep)
    else:
        os.write(fd, b"\n")


def _last_line_start(fd: int, size: int, block: int = 65536) -> int:
    """The offset just after the last newline before `size` (0 when there is none)."""
    end = size
    while end > 0:
        start = max(0, end - block)
        cut = os.pread(fd, end - start, start).rfind(b"\n")
        if cut >= 0:
            return start + cut + 1
        end = start
    return 0


def append_records(path: str | os.PathLike, records: Iterable[SampleRecord]) -> int:
    """Append records to a JSONL file (created if absent), each as one line, then fsync.

    Each record is one `write` on an `O_APPEND` descriptor, so a kill leaves the earlier lines whole; a torn
    last line from an earlier kill is cut off first (a whole record that only lacks its newline is kept).
    Writers in several processes take turns (an exclusive `flock` while appending).

    Returns:
        How many records were appended.
    Raises:
        RecordError: something other than a SampleRecord, or a value JSON cannot hold (NaN).
    """
    path = Path(path)
    try:
        lines = [_line(r) for r in records]  # serialise everything before touching the file
    except ValueError as err:
        raise RecordError(f"{path}: cannot write record: {err}") from None
    return _append_lines(path, lines)


def append_json_lines(path: str | os.PathLike, rows: Iterable[dict]) -> int:
    """Append JSON objects to a JSONL log as `append_records` appends records (one write each, fsync, a torn
    last line from an earlier kill cut off first, writers taking turns); returns how many were appended."""
    path = Path(path)
    lines = [(json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8") for row in rows]
    return _append_lines(path, lines, whole=_json_object)


def _json_object(row: Any) -> None:
    if not isinstance(row, dict):
        raise RecordError("not a JSON object")


def _append_lines(path: Path, lines: list[bytes], whole: Callable[[Any], Any] | None = None) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)  # read: to find a torn tail
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # several writers (ranks, workers) never interleave or mend each other
        _mend_tail(fd, path, whole)
        for line in lines:
            os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    return len(lines)


def write_records(path: str | os.PathLike, records: Iterable[SampleRecord]) -> Path:
    """Replace `path` with these records atomically (temp file in the same folder, fsync, rename).

    Raises:
        RecordError: as `append_records`; the target is left untouched.
    """
    path = Path(path)
    try:
        data = b"".join(_line(r) for r in records)
    except ValueError as err:
        raise RecordError(f"{path}: cannot write record: {err}") from None
    atomic_write(path, data)
    return path


# ---------------------------------------------------------------------------------------------- reading


def iter_records(path: str | os.PathLike) -> Iterable[SampleRecord]:
    """Yield the records of a JSONL file in order; blank lines are skipped.

    Raises:
        RecordError: `FILE:LINE: message` for a line that is not a valid record (bad UTF-8 or JSON, wrong
            fields), or `FILE: not found`.
    """
    path = Path(path)
    if not path.is_file():
        raise RecordError(f"{path}: records file not found")
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                yield SampleRecord.from_dict(json.loads(raw.decode("utf-8")))
            except (UnicodeDecodeError, json.JSONDecodeError, RecordError) as err:
                if not raw.endswith(b"\n"):  # only the last line can lack its newline: a torn write
                    log.warning("%s:%d: skipping a torn last line left by an interrupted writer", path, number)
                    return
                raise RecordError(f"{path}:{number}: {_describe(err)}") from None


def read_records(path: str | os.PathLike) -> list[SampleRecord]:
    """All records of a JSONL file (see `iter_records`)."""
    return list(iter_records(path))


def _describe(err: Exception) -> str:
    if isinstance(err, UnicodeDecodeError):
        return f"not UTF-8 text ({err.reason} at byte {err.start})"
    if isinstance(err, json.JSONDecodeError):
        return f"invalid JSON: {err.msg} (column {err.colno})"
    return str(err)


# ---------------------------------------------------------------------------------------------- rollouts


def records_from_rollout(
    batch: RolloutBatch,
    items: Sequence[Any],
    task_of: Callable[[Any], Task] | None = None,
    model_name: str = "",
    iteration: int | None = None,
) -> list[SampleRecord]:
    """One record per prompt of a rollout, each completion scored by its item's task (score name "correct").

    Args:
        batch: a `mgrd.rollout.RolloutBatch` over `len(items)` prompts: `prompt_ids [R, P]` left-padded with
            `prompt_mask`, `response_ids [R, T]` with `response_mask`, `logprobs [R, T]` of the sampled
            distribution, `group_ids [R]` (the prompt index of each row), `finish_reasons`, `texts`.
        items: the items the prompts were built from (manifest rows or `Item`s), in prompt order.
        task_of: item -> `mgrd.tasks.Task`; default `mgrd.tasks.get_task` of the item's task.
        model_name: recorded as `model`.
        iteration: recorded as `iteration`.
    Returns:
        `len(items)` records; record i holds the rows whose group id is i, in row order.
    Raises:
        RecordError: a group id outside `range(len(items))`, or a prompt without rows.
    """
    task_of = task_of or (lambda item: get_task(as_row(item)["task"]))
    rows = _rollout_rows(batch, len(items))
    records = []
    for i, item in enumerate(items):
        task, row = task_of(item), as_row(item)
        completions = [_completion(batch, r, task, row) for r in rows[i]]
        prompt_ids = batch.prompt_ids[rows[i][0]][batch.prompt_mask[rows[i][0]].bool()].tolist()
        records.append(SampleRecord(
            item_id=str(row["id"]), task=task.name, completions=completions, model=model_name, iteration=iteration,
            prompt=render_chat(task.prompt(row), part_join=OFFICIAL_PART_JOIN), prompt_ids=prompt_ids))
    return records


def _rollout_rows(batch: RolloutBatch, n_items: int) -> list[list[int]]:
    """The rollout rows of each prompt, in row order."""
    rows: list[list[int]] = [[] for _ in range(n_items)]
    for r, group in enumerate(batch.group_ids.tolist()):
        if not 0 <= group < n_items:
            raise RecordError(f"rollout row {r} has group id {group}, but only {n_items} item(s) were given")
        rows[group].append(r)
    empty = [i for i, r in enumerate(rows) if not r]
    if empty:
        raise RecordError(f"item(s) {empty[:5]} have no rollout rows")
    return rows


def _completion(batch: RolloutBatch, r: int, task: Task, row: dict) -> CompletionRecord:
    """Row `r` of a rollout as a completion record, scored by `task`."""
    mask = batch.response_mask[r].bool()
    n_tokens = int(mask.sum())
    logprob_sum = float(batch.logprobs[r][mask].double().sum())
    comp = CompletionRecord.from_text(
        batch.texts[r], n_tokens=n_tokens, finish_reason=batch.finish_reasons[r], logprob_sum=logprob_sum,
        logprob_mean=logprob_sum / n_tokens if n_tokens else None, token_ids=batch.response_ids[r][mask].tolist())
    verdict = task.score(row, batch.texts[r])
    comp.add_score("correct", verdict.score, verdict.reason)
    return comp
