"""MMAU test-mini (`Sakshi113/MMAU`): the JSON array, `test-mini-audios/`, and the official `string_match`.

Layout: `DIR/mmau-test-mini.json` (a JSON array of `{id, audio_id, question, choices, answer, dataset, task,
split, category, sub-category, difficulty}`) and `DIR/test-mini-audios/<id>.wav` (`audio_id` is
`./test-mini-audios/<id>.wav`, relative to the JSON). `category` is a string or, in 13 real items, a list.

Official scorer (benchmarks.md §4.3): a string's tokens are the set of lower-cased `\\b\\w+\\b` words; with P the
prediction's set and A the answer's, a prediction is correct iff P is non-empty, A ⊆ P, and P shares no token
with any other choice's tokens outside A. Items with no prediction leave the denominator.
- official (default): the matcher reads the output after `</think>` (stripped first, as logged);
  `exact_bugs`: it reads the raw output, think block included (what the script does when handed raw text).
- normalised: the answer after `</think>` with a lone letter, or a leading `X.` / `(X)` / `X)`, replaced by
  that choice's text, then `string_match`; an item without output is an error, not excluded.
"""

from __future__ import annotations

import re
from pathlib import Path

from mgrd.eval.benchmarks.base import (
    Benchmark, DataError, EvalItem, LoadedSet, ScoreOptions, Verdict, check_unique, read_json_rows, require,
    sha256_file,
)
from mgrd.eval.benchmarks.prompts import MMAU_TASK
from mgrd.tasks.grading import extract_answer

FILES = {"test-mini": "mmau-test-mini.json", "test": "mmau-test.json"}
_WORD = re.compile(r"\b\w+\b")
_LETTER_ONLY = re.compile(r"^\(?([A-Za-z])\)?[.:)]?$")
_LETTER_LEAD = re.compile(r"^(?:\(([A-Za-z])\)|([A-Za-z])[.:)])\s*(.*)$", re.DOTALL)


def tokens(text: str) -> set[str]:
    """The official tokenisation: the set of lower-cased `\\b\\w+\\b` words."""
    return set(_WORD.findall(text.lower()))


def string_match(answer: str, prediction: str, choices: list[str]) -> bool:
    """MMAU's official matcher (see the module docstring)."""
    pred, gold = tokens(prediction), tokens(answer)
    if not pred:
        return False
    incorrect: set[str] = set()
    for choice in choices:
        choice_tokens = tokens(choice)
        if choice_tokens != gold:
            incorrect |= choice_tokens - gold
    return gold <= pred and not (pred & incorrect)


def letter_to_choice(answer: str, choices: list[str]) -> str:
    """A lone option letter, or a leading `X.` / `(X)` / `X)`, replaced by that choice's text (else unchanged)."""
    text = answer.strip()
    lone = _LETTER_ONLY.match(text)
    if lone:
        index = ord(lone.group(1).upper()) - 65
        return choices[index] if 0 <= index < len(choices) else text
    lead = _LETTER_LEAD.match(text)
    if lead:
        index = ord((lead.group(1) or lead.group(2)).upper()) - 65
        if 0 <= index < len(choices):
            return choices[index]
    return text


# ---------------------------------------------------------------------------------------------- loading


def load(data: Path, split: str = "test-mini", **_) -> LoadedSet:
    """Read `DIR/mmau-test-mini.json` (or `mmau-test.json` for `split="test"`, answers withheld).

    Raises:
        DataError: a missing file or a row without the official keys (`FILE:LINE: ...`).
    """
    data = Path(data)
    if split not in FILES:
        raise DataError(f"MMAU split must be one of {list(FILES)}, got {split!r}")
    path = data / FILES[split] if data.is_dir() else data
    if not path.is_file():
        raise DataError(f"{path}: not found; MMAU expects {FILES[split]} (a JSON array) in {data}, with audio in "
                        f"{split}-audios/")
    loaded = LoadedSet(items=[], fingerprints={path.name: sha256_file(path)})
    for number, row in read_json_rows(path):
        where = f"{path}:{number}"
        require(row, {"id": str, "audio_id": str, "question": str, "choices": list}, where)
        if split == "test-mini":
            require(row, {"answer": str}, where)
        choices = [str(c) for c in row["choices"]]
        audio = (path.parent / row["audio_id"]).resolve()
        if not audio.is_file():
            loaded.missing_audio.append(f"{where}: id {row['id']}: audio not found: {audio}")
            continue
        category = row.get("category")
        category = category[0] if isinstance(category, list) and category else category
        categories = {"task": row.get("task"), "difficulty": row.get("difficulty"),
                      "category": category, "sub-category": row.get("sub-category")}
        answer = row.get("answer", "")
        manifest_row = {"id": row["id"], "task": MMAU_TASK.name, "audio": [str(audio)], "question": row["question"],
                        "choices": choices, "answer": answer, "meta": {}}
        fields = {"answer": answer, "choices": choices, "categories": categories, "original": row}
        loaded.items.append(EvalItem(row["id"], len(loaded.items), manifest_row, fields, MMAU_TASK.name))
    check_unique(loaded.items, str(path))
    return loaded


# ---------------------------------------------------------------------------------------------- scoring


def score(fields: list[dict], outputs: list[str | None], opts: ScoreOptions) -> list[Verdict]:
    """Official and normalised verdicts for each item (see the module docstring)."""
    return [_score_one(f, out, opts) for f, out in zip(fields, outputs)]


def _score_one(fields: dict, output: str | None, opts: ScoreOptions) -> Verdict:
    answer, choices = fields["answer"], fields["choices"]
    if output is None:
        return Verdict(None, None, None, "no output: excluded from the official denominator")
    stripped = extract_answer(output, require_think=opts.require_think)
    if not answer:  # the test split withholds answers: it is scored by the leaderboard from the submission
        return Verdict(None, None, stripped, "no reference answer (test split): written to the submission only")
    official_input = output if opts.exact_bugs else (stripped or "")
    official = float(string_match(answer, official_input, choices))
    if stripped is None:
        return Verdict(official, 0.0, None, "no answer: cut off before </think>")
    mapped = letter_to_choice(stripped, choices)
    normalised = float(string_match(answer, mapped, choices))
    note = "" if mapped == stripped else f" (letter mapped to {mapped!r})"
    reason = f"string_match official={official:.0f} normalised={normalised:.0f}{note}"
    return Verdict(official, normalised, mapped, reason)


def submission(fields: list[dict], outputs: list[str | None], require_think: bool = True) -> list[dict]:
    """The test-split submission: each original row with `model_prediction`, the answer after `</think>`."""
    return [dict(f["original"], model_prediction=extract_answer(out, require_think=require_think) or "")
            for f, out in zip(fields, outputs)]


BENCHMARK = Benchmark(
    name="mmau", load=load, score=score, category_keys=("task", "difficulty", "category", "sub-category"),
    published={"Step-Audio-R1": 77.7, "Gemini 3 Pro": 78.9, "Gemini 2.5 Pro": 77.4, "Step-Audio 2": 78.0},
)

