"""What every benchmark module provides: items read from the official on-disk format, and a scorer.

An `EvalItem` carries two views of one benchmark row:
- `row`: a manifest-style dict (`id`, `task`, `audio`, `question`, `choices`, `answer`, `meta`) that the
  benchmark's registered `mgrd.tasks.Task` turns into the report's prompt (`Task.prompt`, `Task.encode_prompt`);
  `audio` holds file paths or, for parquet data with embedded audio, the file bytes;
- `fields`: the JSON-safe facts its scorer needs (reference answer, choices, categories, judge inputs), kept
  in every sample record so scoring, rescoring and merging need neither the data folder nor the model.

A `Benchmark` reads a folder (`load`) and scores outputs in dataset order (`score`): official scorers have
order-dependent quirks (a stale prediction reused after an empty one), so scoring is one sequential pass.
Each item gets a `Verdict`: the official value (None = the official scorer leaves it out of its
denominator), the normalised value (None = not scorable: no output), the parsed answer and a reason.
This module holds no benchmark-specific rule.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any




class DataError(ValueError):
    """A data folder or row that is not in the benchmark's official format (message names file and line)."""


@dataclass
class EvalItem:
    """One benchmark item.

    Attributes:
        id: the item id (unique within the benchmark).
        index: its position in dataset order (the order official scorers walk).
        row: the manifest-style row the benchmark's Task prompts from (audio as paths or file bytes).
        fields: JSON-safe scoring inputs: `answer`, `choices`, `categories` (name -> value), and whatever the
            benchmark's scorer or judge reads.
        task: the registered task name that prompts and grades this item.
    """

    id: str
    index: int
    row: dict
    fields: dict
    task: str


@dataclass
class LoadedSet:
    """A benchmark folder read into items, with what was left out and why."""

    items: list[EvalItem]
    missing_audio: list[str] = field(default_factory=list)  # "FILE:LINE: id X: audio not found: PATH"
    warnings: list[str] = field(default_factory=list)
    fingerprints: dict[str, str] = field(default_factory=dict)  # data file -> sha256


@dataclass
class Verdict:
    """How one output scored.

    Attributes:
        official: the official scorer's value for the item (1/0 for accuracy benchmarks, 1-10 for a judge
            score); None when the official scorer excludes it from its denominator.
        normalised: the normalised scorer's value; None when the item cannot be scored (no output).
        parsed: the answer the scorer read (after think-stripping and its own parsing), if any.
        reason: one line on how the verdict came about.
        judge_invalid: the judge replied but its reply held no verdict (counted, never dropped silently).
        error: the item could not be scored (judge unreachable, ...): counted apart from wrong answers.
    """

    official: float | None
    normalised: float | None
    parsed: str | None
    reason: str
    judge_invalid: bool = False
    error: str | None = None

    def to_dict(self) -> dict:
        return {"official": self.official, "normalised": self.normalised, "parsed": self.parsed,
                "reason": self.reason, "judge_invalid": self.judge_invalid, "error": self.error}


@dataclass
class ScoreOptions:
    """Scoring choices, recorded in every summary.

    Attributes:
        exact_bugs: reproduce the official scorers' quirks (stale predictions, raw-output matching, legacy
            parsers) instead of the documented fixes; off by default.
        require_think: an output without `</think>` was cut off before its answer (the prompt opened the
            think block); False treats such an output as all answer (endpoints that do not think).
        judge: a `mgrd.judge.Judge` for the benchmarks scored by an LLM; None leaves their official score empty.
        options: benchmark-specific choices (e.g. `mmsu_scorer`, `bba_literal_newlines`).
    """

    exact_bugs: bool = False
    require_think: bool = True
    judge: Any = None
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Benchmark:
    """A benchmark: its name, loader, scorer and how its per-item values add up.

    Attributes:
        name: the `--task` name.
        load: `(data_dir, **options) -> LoadedSet`.
        score: `(fields, outputs, ScoreOptions) -> [Verdict]` over items in dataset order; `outputs[i]` is the
            raw text (None = no output).
        category_keys: which `fields["categories"]` to break the summary down by.
        scale: the factor from the mean item value to the reported score (100 for accuracy in %, 10 for a
            1-10 judge mean reported as 0-100).
        needs_judge: the official score needs an LLM judge.
        judge_params: the judge's sampling as the official pipeline sets it (`temperature`, `top_p`,
            `max_tokens`); empty = mgrd's deterministic default (temperature 0).
        published: the report's published scores (model -> value), for `eval compare`.
    """

    name: str
    load: Callable[..., LoadedSet]
    score: Callable[[Sequence[dict], Sequence[str | None], ScoreOptions], list[Verdict]]
    category_keys: tuple[str, ...] = ()
    scale: float = 100.0
    needs_judge: bool = False
    judge_params: dict[str, float] = field(default_factory=dict)
    published: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- helpers


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_json_rows(path: Path) -> list[tuple[int, dict]]:
    """(line, row) for a JSON array file (line = 1-based index in the array) or a JSON Lines file.

    Raises:
        DataError: `FILE:LINE: ...` for a line that is not a JSON object, or a file that is neither format.
    """
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    text = path.read_text(encoding="utf-8-sig")
    if text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{err.lineno}: invalid JSON array: {err.msg} (column {err.colno})") from None
        rows = list(enumerate(data, start=1))
    else:
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append((number, json.loads(line)))
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{number}: invalid JSON: {err.msg} (column {err.colno})") from None
    for number, row in rows:
        if not isinstance(row, dict):
            raise DataError(f"{path}:{number}: a row must be a JSON object, got {type(row).__name__}")
    return rows


def require(row: dict, keys: dict[str, type | tuple], where: str) -> None:
    """Raise `DataError(where: ...)` when a key is missing or has the wrong JSON type."""
    for key, types in keys.items():
        if key not in row:
            raise DataError(f"{where}: missing key {key!r} (expected keys: {', '.join(keys)})")
        if not isinstance(row[key], types) or isinstance(row[key], bool):
            names = "/".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
            raise DataError(f"{where}: {key!r} must be {names}, got {type(row[key]).__name__} {row[key]!r:.60}")


def read_parquet_rows(path: Path) -> list[dict]:
    """The rows of a parquet file as dicts (pyarrow)."""
    try:
        import pyarrow.parquet as pq
    except ImportError as err:  # pragma: no cover - pyarrow ships with the dependencies
        raise DataError(f"{path}: reading parquet needs pyarrow ({err})") from None
    try:
        return pq.read_table(path).to_pylist()
    except Exception as err:  # pyarrow raises many types for a corrupt file
        raise DataError(f"{path}: not a readable parquet file: {err}") from None


def embedded_audio(value: Any, where: str) -> bytes:
    """The file bytes of an HF audio struct `{bytes, path}`.

    Raises:
        DataError: not a struct with bytes.
    """
    if isinstance(value, dict) and isinstance(value.get("bytes"), (bytes, bytearray)) and value["bytes"]:
        return bytes(value["bytes"])
    raise DataError(f"{where}: expected an audio struct {{bytes, path}} with the file's bytes, got {str(value)[:60]!r}")


def check_unique(items: list[EvalItem], where: str) -> None:
    seen: dict[str, int] = {}
    for item in items:
        if item.id in seen:
            raise DataError(f"{where}: duplicate id {item.id!r} (items {seen[item.id] + 1} and {item.index + 1})")
        seen[item.id] = item.index
