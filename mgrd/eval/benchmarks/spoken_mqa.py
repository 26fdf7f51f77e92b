"""Spoken MQA (`amao0o0/spoken-mqa`, scored as AudioBench does): parquet splits and the GSM8K answer cleaner.

Layout: one parquet file per split under `DIR` (HF's `data/<split>-00000-of-00001.parquet`; any file whose name
starts with the split name), splits `short_digit`, `long_digit`, `single_step_reasoning`, `multi_step_reasoning`.
Columns: `context` (audio struct `{bytes, path}`), `context_transcript`, `instruction` (`{text}`), `answer`
(`{text}`: a string for the arithmetic splits, a list of strings for the reasoning splits). Item ids are
`<split>-<row:05d>` (the data has no id column).

Official scorer (benchmarks.md §3.3), reproduced from its description:
- cleaning (`clean_prediction`): strip newlines; if a trigger ("The answer is:", "The answer is", "the answer
  is", "####") occurs more than once keep the text before the first blank line; split on the triggers and keep
  what follows the last one ("flagged"); strip trailing `.`, `/` and spaces, drop commas; number candidates
  `-?\\d+/?\\.?\\d*`, each through `delete_extra_zero`; the first candidate when flagged, else the last; strip
  `.` and `/`; "" becomes "empty"; at most 100 characters;
- references: an arithmetic reference as is; a reasoning reference with "#### " split off, then
  `delete_extra_zero`; the comparison is case-insensitive equality with the first reference, `\\text{` removed.
- official (default): the cleaner reads the text after `</think>`; a missing answer cleans to "empty" (wrong).
- `exact_bugs`: a missing answer (None) reuses the previous item's cleaned prediction (on the first item the
  reference code raises; here it is excluded with that reason), and the cleaner reads the raw output.
- normalised: `mgrd.tasks.grading.grade_numeric` (the answer's final number against the reference number).
Per-split accuracy, with the micro (all items) and macro (mean of splits) averages beside each other.
"""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

from mgrd.eval.benchmarks.base import (
    Benchmark, DataError, EvalItem, LoadedSet, ScoreOptions, Verdict, embedded_audio, read_parquet_rows,
    sha256_file,
)
from mgrd.eval.benchmarks.prompts import MQA_INSTRUCTION, SPOKEN_MQA_TASK
from mgrd.tasks.grading import extract_answer, grade_numeric

SPLITS = ("short_digit", "long_digit", "single_step_reasoning", "multi_step_reasoning")
TRIGGERS = ("The answer is:", "The answer is", "the answer is", "####")
_TRIGGER_SPLIT = re.compile("|".join(re.escape(t) for t in TRIGGERS))
_CANDIDATE = re.compile(r"-?\d+/?\.?\d*")
MAX_CLEANED_CHARS = 100


def delete_extra_zero(text: str) -> str:
    """A number written without trailing zeros: "7.50" -> "7.5", "70000.0" -> "70000", "3/4" -> "0.75".

    Text that is no number (nor a fraction of two) comes back unchanged, as in the reference helper.
    """
    try:
        value = float(text)
    except ValueError:
        try:
            value = _fraction(text)
        except (ValueError, ZeroDivisionError):
            return text
    if value.is_integer() and "e" not in str(value):
        return str(int(value))
    return str(value).rstrip("0").rstrip(".") if "e" not in str(value) else str(value)


def _fraction(text: str) -> float:
    num, slash, den = text.partition("/")
    if not slash:
        raise ValueError(text)
    return float(Fraction(num) / Fraction(den))


def clean_prediction(prediction: str) -> str:
    """AudioBench's `answer_clean` for GSM8K-style answers (see the module docstring)."""
    pred = prediction.strip("\n")
    if any(pred.count(t) > 1 for t in TRIGGERS):
        pred = pred.split("\n\n")[0]
    pieces = _TRIGGER_SPLIT.split(pred)
    flagged = len(pieces) > 1
    pred = pieces[-1] if flagged else pred
    pred = pred.strip("\n").rstrip(".").rstrip("/").strip(" ").replace(",", "")
    candidates = [delete_extra_zero(c) for c in _CANDIDATE.findall(pred)]
    pred = (candidates[0] if flagged else candidates[-1]) if candidates else ""
    pred = pred.rstrip(".").rstrip("/")
    return (pred or "empty")[:MAX_CLEANED_CHARS]


def clean_reference(answer: str | list, split: str) -> str:
    """The reference the comparison uses: arithmetic as is; reasoning "#### X" -> `delete_extra_zero(X)`."""
    if isinstance(answer, list):
        if not 1 <= len(answer) <= 2:
            raise DataError(f"a reasoning reference must hold 1 or 2 strings, got {len(answer)}")
        return delete_extra_zero(str(answer[0]).split("#### ")[-1].strip())
    if split in ("single_step_reasoning", "multi_step_reasoning"):
        return delete_extra_zero(str(answer).split("#### ")[-1].strip())
    return str(answer)


def answers_match(cleaned: str, reference: str) -> bool:
    """Case-insensitive equality after removing `\\text{`."""
    return cleaned.replace("\\text{", "").lower() == reference.replace("\\text{", "").lower()


# ---------------------------------------------------------------------------------------------- loading


def load(data: Path, **_) -> LoadedSet:
    """Read every split's parquet file found under `DIR` (see the module docstring).

    Raises:
        DataError: no split file, or a row without the official columns (`FILE:ROW: ...`).
    """
    data = Path(data)
    files = sorted(data.rglob("*.parquet")) if data.is_dir() else [data]
    by_split = {s: [f for f in files if f.name.startswith(s)] for s in SPLITS}
    if not any(by_split.values()):
        raise DataError(f"{data}: no Spoken MQA parquet files; expected files named <split>-*.parquet for splits "
                        f"{', '.join(SPLITS)}")
    loaded = LoadedSet(items=[], fingerprints={f.name: sha256_file(f) for fs in by_split.values() for f in fs})
    for split, paths in by_split.items():
        row_number = 0
        for path in paths:
            for number, row in enumerate(read_parquet_rows(path), start=1):
                where = f"{path}:{number}"
                audio = embedded_audio(row.get("context"), f"{where}: 'context'")
                answer = (row.get("answer") or {}).get("text") if isinstance(row.get("answer"), dict) else None
                if answer is None:
                    raise DataError(f"{where}: 'answer' must be a struct with 'text' (a string or list of strings)")
                reference = clean_reference(answer, split)
                item_id = f"{split}-{row_number:05d}"
                row_number += 1
                manifest_row = {"id": item_id, "task": SPOKEN_MQA_TASK.name, "audio": [audio],
                                "question": MQA_INSTRUCTION, "choices": None, "answer": reference, "meta": {}}
                fields = {"answer": reference, "raw_answer": answer, "categories": {"split": split},
                          "transcript": row.get("context_transcript")}
                loaded.items.append(EvalItem(item_id, len(loaded.items), manifest_row, fields, SPOKEN_MQA_TASK.name))
    return loaded


# ---------------------------------------------------------------------------------------------- scoring


def score(fields: list[dict], outputs: list[str | None], opts: ScoreOptions) -> list[Verdict]:
    """Official and normalised verdicts in dataset order (the quirk carries a prediction across items)."""
    verdicts, previous = [], None
    for f, output in zip(fields, outputs):
        if output is None:
            verdicts.append(Verdict(None, None, None, "no output"))
            continue
        answer = extract_answer(output, require_think=opts.require_think)
        if opts.exact_bugs:
            source = output if answer is not None else None
            if source is None and previous is None:
                verdicts.append(Verdict(None, 0.0, None, "no answer on the first item: the reference code raises"))
                continue
            cleaned = clean_prediction(source) if source is not None else previous
        else:
            cleaned = clean_prediction(answer) if answer is not None else "empty"
        previous = cleaned
        official = float(answers_match(cleaned, f["answer"]))
        normalised = grade_numeric(answer, f["answer"]) if answer else 0.0
        verdicts.append(Verdict(official, normalised, cleaned, f"cleaned {cleaned!r} vs reference {f['answer']!r}"))
    return verdicts


BENCHMARK = Benchmark(
    name="spoken_mqa", load=load, score=score, category_keys=("split",),
    published={"Step-Audio-R1": 95.2, "Gemini 3 Pro": 95.3, "Gemini 2.5 Pro": 94.8, "Step-Audio 2": 88.8},
)
