"""The JSONL manifest: schema, validation, loading and atomic writing (DESIGN.md §3).

One row per line; audio paths are relative to the manifest's folder. A row holds
`id, task, audio, question | messages, choices, answer, reasoning, reasoning_style, reasonings, meta`
(the row contract of `mgrd.data.synth.base`). Every problem is reported as `FILE:LINE: message`;
rows are never dropped silently: `load_manifest(strict=False)` skips bad rows, logs how many and keeps
the report. Blank lines are ignored.

Unknown keys are allowed (user manifests often carry extra columns such as benchmark categories): they
are kept in `Item.extra` and reported once per key as a warning, not as an error.

This module does not decode audio (only checks that each file exists and is non-empty) and knows nothing
about tasks or graders.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mgrd.atomic import atomic_write

log = logging.getLogger(__name__)

REASONING_STYLES = ("grounded", "text_substitute", "text")
ROLES = ("system", "user", "assistant")
KNOWN_KEYS = ("id", "task", "audio", "question", "choices", "answer", "reasoning", "reasoning_style",
              "reasonings", "meta", "messages")


class ManifestError(ValueError):
    """A manifest that cannot be used; the message starts with `FILE:LINE:` (or `FILE:`)."""


@dataclass
class Item:
    """One validated manifest row. `audio` paths (and audio parts inside `messages`) are absolute."""

    id: str
    task: str
    answer: str
    audio: list[Path] = field(default_factory=list)
    question: str | None = None
    choices: list[str] | None = None
    reasoning: str | None = None
    reasoning_style: str | None = None
    reasonings: dict[str, str] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    messages: list[dict] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # unknown keys, kept as read
    source: str = ""  # "FILE:LINE" the row came from

    def to_row(self, manifest_dir: str | os.PathLike) -> dict:
        """The row to write into a manifest stored in `manifest_dir` (audio paths made relative)."""

        def rel(p: str | os.PathLike) -> str:
            return Path(os.path.relpath(Path(p), Path(manifest_dir))).as_posix()

        row: dict[str, Any] = {"id": self.id, "task": self.task, "audio": [rel(p) for p in self.audio]}
        if self.messages is None:
            row["question"] = self.question
        row.update(choices=self.choices, answer=self.answer, reasoning=self.reasoning,
                   reasoning_style=self.reasoning_style, reasonings=dict(self.reasonings), meta=self.meta)
        if self.messages is not None:
            row["messages"] = _map_audio_parts(self.messages, rel)
        row.update(self.extra)
        return row


@dataclass
class ManifestReport:
    """What `check_manifest` found. `errors` and `warnings` are `FILE:LINE: message` strings."""

    path: Path
    n_rows: int = 0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    bad_lines: list[int] = field(default_factory=list)  # line numbers of rows with errors

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def n_bad(self) -> int:
        return len(self.bad_lines)

    def summary(self) -> str:
        state = "ok" if self.ok else f"{len(self.errors)} error(s) in {self.n_bad} row(s)"
        return f"{self.path}: {self.n_rows} row(s), {state}, {len(self.warnings)} warning(s)"


class LoadedManifest(list):
    """The items of a manifest (a plain `list[Item]`) plus the report of what was skipped."""

    def __init__(self, items: Iterable[Item], report: ManifestReport):
        super().__init__(items)
        self.report = report

    @property
    def n_skipped(self) -> int:
        return self.report.n_bad


# ---------------------------------------------------------------- row validation


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _map_audio_parts(messages: list[dict], fn) -> list[dict]:
    """A copy of `messages` with `fn` applied to the path of every `{"type": "audio"}` content part."""
    out = []
    for msg in messages:
        content = msg.get("content")
        if isinstance(content, list):
            content = [dict(p, audio=fn(p["audio"])) if isinstance(p, dict) and p.get("type") == "audio"
                       else p for p in content]
        out.append(dict(msg, content=content))
    return out


def _check_messages(messages: Any, answer: Any) -> tuple[list[str], list[str]]:
    """Errors in a conversation, and the audio paths its content parts name."""
    if not isinstance(messages, list) or not messages:
        return ["'messages' must be a non-empty list of {role, content}"], []
    errors, paths = [], []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or msg.get("role") not in ROLES:
            errors.append(f"messages[{i}] must be an object with role in {list(ROLES)}")
            continue
        content = msg.get("content")
        if isinstance(content, str):
            continue
        if not isinstance(content, list):
            errors.append(f"messages[{i}].content must be a string or a list of parts")
            continue
        for j, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                continue
            if kind == "audio" and isinstance(part.get("audio"), str):
                paths.append(part["audio"])
                continue
            errors.append(f"messages[{i}].content[{j}] must be {{type: text, text}} or {{type: audio, audio: PATH}}")
    last = messages[-1]
    if isinstance(last, dict) and last.get("role") != "assistant":
        errors.append("the last message must be the assistant's target reply")
    elif isinstance(last, dict) and isinstance(last.get("content"), str) and last["content"] != answer:
        errors.append("'answer' must equal the last (assistant) message's content")
    return errors, paths


def _check_reasoning(row: dict) -> list[str]:
    errors = []
    reasoning, style, reasonings = row.get("reasoning"), row.get("reasoning_style"), row.get("reasonings")
    if reasoning is not None and not isinstance(reasoning, str):
        errors.append("'reasoning' must be a string or null")
    if style is not None and style not in REASONING_STYLES:
        errors.append(f"'reasoning_style' must be one of {list(REASONING_STYLES)} or null, got {style!r}")
    if style is not None and reasoning is None:
        errors.append("'reasoning_style' is set but 'reasoning' is null")
    if reasonings is None:
        return errors
    if not isinstance(reasonings, dict) or not all(isinstance(v, str) for v in reasonings.values()):
        return errors + ["'reasonings' must be an object of style -> chain (strings)"]
    bad = sorted(set(reasonings) - set(REASONING_STYLES))
    if bad:
        errors.append(f"'reasonings' has unknown style(s) {bad}; allowed {list(REASONING_STYLES)}")
    if style in reasonings and reasonings[style] != reasoning:
        errors.append(f"'reasoning' differs from reasonings[{style!r}]")
    return errors


def _check_fields(row: dict) -> list[str]:
    """Schema errors of one parsed row (types and cross-field rules; no file system access)."""
    errors = []
    for key in ("id", "task"):
        if not isinstance(row.get(key), str) or not row.get(key):
            errors.append(f"'{key}' must be a non-empty string")
    answer = row.get("answer")
    if not isinstance(answer, str):
        hint = f" (got {type(answer).__name__} {answer!r}; quote it)" if answer is not None else ""
        errors.append(f"'answer' must be a string{hint}")
    audio = row.get("audio", [])
    if not _is_str_list(audio):
        errors.append("'audio' must be a list of paths (relative to the manifest), e.g. [\"a.wav\"]")
    has_q, has_m = row.get("question") is not None, row.get("messages") is not None
    if has_q == has_m:
        errors.append("a row needs exactly one of 'question' and 'messages'")
    elif has_q and not isinstance(row["question"], str):
        errors.append("'question' must be a string")
    elif has_m:
        errors.extend(_check_messages(row["messages"], answer)[0])
    choices = row.get("choices")
    if choices is not None:
        if not _is_str_list(choices) or len(choices) < 2:
            errors.append("'choices' must be a list of at least 2 strings, or null")
        elif len(set(choices)) != len(choices):
            errors.append("'choices' must be distinct")
        elif answer not in choices:
            errors.append(f"'answer' {answer!r} is not one of 'choices'")
    if not isinstance(row.get("meta", {}), dict):
        errors.append("'meta' must be an object")
    return errors + _check_reasoning(row)


def _check_files(row: dict, base: Path) -> list[str]:
    """Errors for audio files (top-level and inside messages) that are missing or empty."""
    paths = list(row.get("audio") or [])
    if isinstance(row.get("messages"), list):
        paths += _check_messages(row["messages"], row.get("answer"))[1]
    errors = []
    for rel in paths:
        full = base / rel
        if not full.is_file():
            errors.append(f"audio file not found: {rel} (looked at {full})")
        elif full.stat().st_size == 0:
            errors.append(f"audio file is empty: {rel}")
    return errors


# ---------------------------------------------------------------- scanning


@dataclass
class _Row:
    line: int
    data: dict | None
    errors: list[str]


BINARY_SNIFF_BYTES = 8192  # how much of a file is looked at for binary data before reading it as lines


def _open_lines(path: Path) -> Iterator[tuple[int, str | None, str | None]]:
    """(line number, text, decode error) for every non-blank line."""
    if not path.exists():
        raise ManifestError(f"{path}: manifest not found")
    if path.is_dir():
        raise ManifestError(f"{path}: is a folder, not a manifest file")
    with open(path, "rb") as f:
        head = f.read(BINARY_SNIFF_BYTES)
        if b"\0" in head:  # JSON text never holds a NUL byte; wav, zip, gzip, safetensors do at once
            raise ManifestError(f"{path}: binary data (a NUL byte at offset {head.index(0)}), not a JSON Lines manifest")
        f.seek(0)
        for number, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as e:
                yield number, None, f"not UTF-8 text ({e.reason} at byte {e.start})"
                continue
            if text.strip():
                yield number, text, None


def _scan(path: Path) -> Iterator[_Row]:
    """Parse and validate every row of a manifest, in file order."""
    base = path.parent
    first_line: dict[str, int] = {}
    for number, text, decode_error in _open_lines(path):
        if decode_error:
            yield _Row(number, None, [decode_error])
            continue
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            yield _Row(number, None, [f"invalid JSON: {e.msg} (column {e.colno})"])
            continue
        if not isinstance(data, dict):
            yield _Row(number, None, [f"a row must be a JSON object, got {type(data).__name__}"])
            continue
        errors = _check_fields(data)
        if not errors:
            errors = _check_files(data, base)
        row_id = data.get("id")
        if isinstance(row_id, str):
            if row_id in first_line:
                errors.append(f"duplicate id {row_id!r} (first on line {first_line[row_id]})")
            else:
                first_line[row_id] = number
        yield _Row(number, data, errors)


def _unknown_key_warnings(path: Path, unknown: dict[str, list[int]]) -> list[str]:
    return [f"{path}:{lines[0]}: unknown key {key!r} in {len(lines)} row(s); kept in Item.extra"
            for key, lines in unknown.items()]


def _to_item(data: dict, base: Path, source: str) -> Item:
    def resolve(rel: str) -> str:
        return str((base / rel).resolve())

    messages = data.get("messages")
    return Item(
        id=data["id"], task=data["task"], answer=data["answer"],
        audio=[Path(resolve(p)) for p in data.get("audio") or []],
        question=data.get("question"), choices=data.get("choices"),
        reasoning=data.get("reasoning"), reasoning_style=data.get("reasoning_style"),
        reasonings=dict(data.get("reasonings") or {}), meta=dict(data.get("meta") or {}),
        messages=_map_audio_parts(messages, resolve) if messages is not None else None,
        extra={k: v for k, v in data.items() if k not in KNOWN_KEYS}, source=source,
    )


def _read(path: Path, strict: bool) -> tuple[list[Item], ManifestReport]:
    report = ManifestReport(path=path)
    items, unknown = [], {}
    for row in _scan(path):
        report.n_rows += 1
        if row.errors:
            report.bad_lines.append(row.line)
            report.errors.extend(f"{path}:{row.line}: {msg}" for msg in row.errors)
            if strict:
                raise ManifestError(report.errors[-len(row.errors)])
            continue
        for key in row.data:
            if key not in KNOWN_KEYS:
                unknown.setdefault(key, []).append(row.line)
        items.append(_to_item(row.data, path.parent, f"{path}:{row.line}"))
    if report.n_rows == 0:
        report.errors.append(f"{path}: manifest has no rows")
        if strict:
            raise ManifestError(report.errors[-1])
    report.warnings = _unknown_key_warnings(path, unknown)
    return items, report


# ---------------------------------------------------------------- public API


def check_manifest(path: str | os.PathLike) -> ManifestReport:
    """Validate every row of a manifest.

    Checks: valid UTF-8 JSON object per non-blank line; `id`, `task`, `answer` strings; `id` unique;
    exactly one of `question` / `messages` (OpenAI-style, last message the assistant's reply = `answer`);
    `choices` null or >= 2 distinct strings containing `answer`; `audio` a list of existing, non-empty
    files relative to the manifest; `reasoning_style` in REASONING_STYLES; `meta` an object.

    Raises:
        ManifestError: the file does not exist, is a folder, or holds binary data (a NUL byte in its first 8 KiB).
    """
    return _read(Path(path), strict=False)[1]


def load_manifest(path: str | os.PathLike, strict: bool = True) -> LoadedManifest:
    """Load a manifest into `Item`s, audio paths resolved against the manifest's folder.

    Args:
        path: the JSONL file.
        strict: raise on the first bad row; when False, skip bad rows, log how many were skipped and
            keep every error in `result.report`.
    Returns:
        A `list[Item]` with `.report` (a ManifestReport) and `.n_skipped`.
    Raises:
        ManifestError: `FILE:LINE: message` for the first bad row (strict), or a missing file.
    """
    path = Path(path)
    items, report = _read(path, strict)
    if report.n_bad:
        log.warning("%s: skipped %d bad row(s) of %d; first: %s", path, report.n_bad, report.n_rows,
                    report.errors[0])
    for warning in report.warnings:
        log.warning(warning)
    return LoadedManifest(items, report)


def write_manifest(rows: Iterable[dict | Item], path: str | os.PathLike) -> Path:
    """Write rows as JSONL atomically (temp file in the same folder, then `os.replace`).

    Rows are schema-checked before anything is written (audio files are not looked at: they may be
    written afterwards). `Item`s are turned into rows with paths relative to the manifest's folder.

    Raises:
        ManifestError: `FILE:ROW: message` for the first row that breaks the schema (ROW is 1-based).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines, seen = [], set()
    for number, row in enumerate(rows, start=1):
        if isinstance(row, Item):
            row = row.to_row(path.parent)
        errors = _check_fields(row) if isinstance(row, dict) else ["a row must be a dict"]
        if not errors and row["id"] in seen:
            errors = [f"duplicate id {row['id']!r}"]
        if errors:
            raise ManifestError(f"{path}:{number}: {errors[0]}")
        seen.add(row["id"])
        lines.append(json.dumps(row, ensure_ascii=False) + "\n")
    atomic_write(path, "".join(lines).encode("utf-8"))
    return path
