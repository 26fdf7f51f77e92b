"""MMSU (Wang et al. 2025, `ddwang2000/MMSU`): JSONL / JSON array / parquet rows, and the official letter parser.

Layouts (benchmarks.md §5.1): `DIR/question/mmsu.jsonl` (or any `.jsonl` / `.json` file given directly) with
`audio_path` relative to `DIR`, or parquet files under `DIR` (e.g. `data/*.parquet`) with an embedded `audio`
struct. Row keys: `id`, `question`, `choice_a`..`choice_d`, `answer_gt` (the text of the right choice),
`task_name`, `category`, `sub-category`, `sub-sub-category`; choices and `answer_gt` are coerced to str
(some are numbers).

Official parser (§5.3): the response, stripped and with newlines removed; if it is non-empty and not "None",
its first character, else its second-to-last character, names the letter when in ABCD; a response with
neither is skipped and leaves the denominator. The item is right iff that choice's text equals `answer_gt`.
- official (default, the authors' current scorer `dingdongwang/MMSU@217d1d3`): the parsed letter is reset
  for every record, so an empty or "None" response is wrong; the parser reads the text after `</think>`.
- `exact_bugs` (the legacy `MMSU_Bench@f0ef334` scorer): an empty or "None" response reuses the previous
  record's letter (on the first record the script crashes; here the item is excluded with that reason).
- normalised: the answer after `</think>` resolved to a choice by `mgrd.tasks.grading.resolve_choice` (letter,
  "B. text", the choice text, "the answer is X"); every item counts, a response naming no choice is wrong.
"""

from __future__ import annotations

from pathlib import Path

from mgrd.eval.benchmarks.base import (
    Benchmark, DataError, EvalItem, LoadedSet, ScoreOptions, Verdict, check_unique, embedded_audio,
    read_json_rows, read_parquet_rows, require, sha256_file,
)
from mgrd.eval.benchmarks.prompts import MMSU_TASK
from mgrd.tasks.grading import extract_answer, normalize, resolve_choice

LETTERS = "ABCD"
CHOICE_KEYS = ("choice_a", "choice_b", "choice_c", "choice_d")
ROW_KEYS = {"id": (str, int), "question": str, "answer_gt": (str, int, float)}


def parse_letter(response: str | None) -> str | None:
    """The official parser: first character, else second-to-last character, when in ABCD; else None."""
    predict = (response or "").strip().replace("\n", "")
    if not predict or predict == "None":
        return None
    if predict[0] in LETTERS:
        return predict[0]
    if len(predict) > 1 and predict[-2] in LETTERS:
        return predict[-2]
    return None


# ---------------------------------------------------------------------------------------------- loading


def _find_source(data: Path) -> tuple[str, list[Path]]:
    if data.is_file():
        return ("parquet" if data.suffix == ".parquet" else "json"), [data]
    for name in ("question/mmsu.jsonl", "question/mmsu.json", "mmsu.jsonl", "mmsu.json"):
        if (data / name).is_file():
            return "json", [data / name]
    parquet = sorted(data.rglob("*.parquet"))
    if parquet:
        return "parquet", parquet
    raise DataError(f"{data}: no MMSU data found; expected question/mmsu.jsonl (rows with audio_path relative to "
                    f"{data}) or parquet files with an embedded audio column")


def load(data: Path, **_) -> LoadedSet:
    """Read MMSU rows (see the module docstring for the layouts).

    Raises:
        DataError: no data file, or a row without the official keys (`FILE:LINE: ...`).
    """
    data = Path(data)
    kind, files = _find_source(data)
    root = data if data.is_dir() else data.parent.parent if data.parent.name == "question" else data.parent
    loaded = LoadedSet(items=[], fingerprints={f.name: sha256_file(f) for f in files})
    for path in files:
        rows = read_json_rows(path) if kind == "json" else list(enumerate(read_parquet_rows(path), start=1))
        for number, row in rows:
            where = f"{path}:{number}"
            require(row, ROW_KEYS, where)
            if kind == "json":
                require(row, {"audio_path": str}, where)
                audio = (root / row["audio_path"]).resolve()
                if not audio.is_file():
                    loaded.missing_audio.append(f"{where}: id {row['id']}: audio not found: {audio}")
                    continue
                source: str | bytes = str(audio)
            else:
                source = embedded_audio(row.get("audio"), f"{where}: 'audio'")
            _add(loaded, row, source)
    check_unique(loaded.items, str(files[0]))
    return loaded


def _add(loaded: LoadedSet, row: dict, source: str | bytes) -> None:
    """Coerce a row's choices and answer to str (as the reference loaders do) and add it as an item."""
    choices = [str(row[k]) for k in CHOICE_KEYS if row.get(k) is not None]
    answer = str(row["answer_gt"])
    item_id = str(row["id"])
    categories = {"category": row.get("category"), "sub-category": row.get("sub-category"),
                  "sub-sub-category": row.get("sub-sub-category"), "task_name": row.get("task_name")}
    letters = {LETTERS[i]: str(row[k]) if row.get(k) is not None else "None" for i, k in enumerate(CHOICE_KEYS)}
    manifest_row = {"id": item_id, "task": MMSU_TASK.name, "audio": [source], "question": row["question"],
                    "choices": choices, "answer": answer, "meta": {}}
    fields = {"answer": answer, "choices": choices, "letters": letters, "categories": categories}
    loaded.items.append(EvalItem(item_id, len(loaded.items), manifest_row, fields, MMSU_TASK.name))


# ---------------------------------------------------------------------------------------------- scoring


def score(fields: list[dict], outputs: list[str | None], opts: ScoreOptions) -> list[Verdict]:
    """Official and normalised verdicts, in dataset order (the legacy scorer carries a letter across records)."""
    verdicts, previous = [], None
    for f, output in zip(fields, outputs):
        verdict, previous = _score_one(f, output, opts, previous)
        verdicts.append(verdict)
    return verdicts


def _score_one(fields: dict, output: str | None, opts: ScoreOptions, previous: str | None):
    if output is None:  # no record for the item: neither scorer sees it
        return Verdict(None, None, None, "no output"), previous
    answer = extract_answer(output, require_think=opts.require_think)
    predict = (answer or "").strip().replace("\n", "")
    empty = not predict or predict == "None"
    if empty and opts.exact_bugs:
        letter, how = previous, "empty response: reuses the previous record's letter (legacy scorer)"
    elif empty:
        letter, how = None, "empty response: wrong"
    else:
        letter = parse_letter(predict)
        how = f"parsed {letter}" if letter else "no letter in first or second-to-last place: skipped"
    if empty and opts.exact_bugs and previous is None:
        official, how = None, "empty first response: the legacy scorer crashes here; excluded"
    elif letter is None and not empty:
        official = None
    else:
        official = float(letter is not None and fields["letters"].get(letter) == fields["answer"])
    named = resolve_choice(answer, fields["choices"]) if answer else None
    normalised = float(named is not None and named == normalize(fields["answer"]))
    parsed = letter if letter else named
    verdict = Verdict(official, normalised, parsed, f"official: {how}; normalised: {named!r}")
    return verdict, letter if letter else previous


BENCHMARK = Benchmark(
    name="mmsu", load=load, score=score, category_keys=("category", "sub-category", "task_name"),
    published={"Step-Audio-R1": 75.9, "Gemini 3 Pro": 82.9, "Gemini 2.5 Pro": 79.3, "Step-Audio 2": 64.3},
)
