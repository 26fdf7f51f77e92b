"""Wild Speech (`tencent/WildSpeech-Bench`): parquet rows of spoken queries, judged 1-10 against a checklist.

Layout: parquet file(s) under `DIR` with columns `audio` (`{bytes, path}`), `user_query`, `taskType`,
`checklist`, `conversation_hash` (the item id; the row number when empty), `modification_type`,
`additional_info`. The prompt is the audio alone.

Scoring (benchmarks.md §6.2, the speech-to-text reading the report most likely used): the answer after
`</think>` is the one response the judge rates (`mgrd.eval.judges.wildspeech_prompt`); a reply without
"Score: N" is an invalid judge output (counted, left out, listed). The official rule "a response that is not
English scores 1" is applied first, with `langdetect` (seeded) when installed, else a script test (under half
of the letters Latin); the summary names the detector. The reported score is 10 x the mean (so 0-100).
Categories: `taskType` (a `prosodical` item by its `additional_info`, any "stuttering" sub-type as
"stuttering") and the noise condition (`natural_noise`, `human_noise`, anything else "clean").
The normalised value equals the official one (there is no second scorer); an item with no output is an error.
"""

from __future__ import annotations

from pathlib import Path

from mgrd.eval.benchmarks.base import (
    Benchmark, DataError, EvalItem, LoadedSet, ScoreOptions, Verdict, check_unique, embedded_audio,
    read_parquet_rows, sha256_file,
)
from mgrd.eval.benchmarks.prompts import WILDSPEECH_TASK
from mgrd.eval.judges import parse_score, read_template, wildspeech_prompt
from mgrd.judge import JudgeError
from mgrd.tasks.grading import extract_answer

COLUMNS = ("audio", "user_query", "taskType", "checklist")
NON_ENGLISH_SCORE = 1.0


def task_type(row: dict) -> str:
    kind = str(row.get("taskType") or "unknown")
    if kind == "prosodical":
        sub = str(row.get("additional_info") or "")
        return "prosodical/stuttering" if "stuttering" in sub else f"prosodical/{sub or 'unknown'}"
    return kind


def noise_condition(row: dict) -> str:
    value = row.get("modification_type")
    return value if value in ("natural_noise", "human_noise") else "clean"


def load(data: Path, **_) -> LoadedSet:
    """Read every parquet file under `DIR` (see the module docstring).

    Raises:
        DataError: no parquet file, or a row without the official columns (`FILE:ROW: ...`).
    """
    data = Path(data)
    files = sorted(data.rglob("*.parquet")) if data.is_dir() else [data]
    if not files:
        raise DataError(f"{data}: no Wild Speech parquet files (columns {', '.join(COLUMNS)}, conversation_hash, ...)")
    loaded = LoadedSet(items=[], fingerprints={f.name: sha256_file(f) for f in files})
    for path in files:
        for number, row in enumerate(read_parquet_rows(path), start=1):
            where = f"{path}:{number}"
            missing = [c for c in COLUMNS if c not in row]
            if missing:
                raise DataError(f"{where}: missing column(s) {', '.join(missing)}")
            audio = embedded_audio(row["audio"], f"{where}: 'audio'")
            item_id = str(row.get("conversation_hash") or f"row-{len(loaded.items):05d}")
            manifest_row = {"id": item_id, "task": WILDSPEECH_TASK.name, "audio": [audio], "question": None,
                            "choices": None, "answer": "", "meta": {}}
            fields = {"answer": "", "query": str(row["user_query"] or ""), "checklist": str(row["checklist"] or ""),
                      "categories": {"taskType": task_type(row), "noise": noise_condition(row)}}
            loaded.items.append(EvalItem(item_id, len(loaded.items), manifest_row, fields, WILDSPEECH_TASK.name))
    check_unique(loaded.items, str(files[0]))
    return loaded


# ---------------------------------------------------------------------------------------------- language


def detector_name() -> str:
    try:
        import langdetect  # noqa: F401
    except ImportError:
        return "latin-script share"
    return "langdetect"


def is_english(text: str) -> bool:
    """Whether a response is English: `langdetect` (seed 0) when installed, else at least half of its letters
    are Latin. Text without letters counts as English (nothing to rule on)."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return True
    try:
        from langdetect import DetectorFactory, detect
    except ImportError:
        latin = sum(1 for c in letters if c.isascii() or "LATIN" in _name(c))
        return latin >= len(letters) / 2
    DetectorFactory.seed = 0
    try:
        return detect(text) == "en"
    except Exception:  # langdetect raises on text with no features
        return True


def _name(char: str) -> str:
    import unicodedata

    return unicodedata.name(char, "")


# ---------------------------------------------------------------------------------------------- scoring


def score(fields: list[dict], outputs: list[str | None], opts: ScoreOptions) -> list[Verdict]:
    """The judge's 1-10 score per item (official and normalised alike; see the module docstring)."""
    template = read_template(opts.options.get("judge_template"))
    verdicts = []
    for f, output in zip(fields, outputs):
        if output is None:
            verdicts.append(Verdict(None, None, None, "no output"))
            continue
        answer = extract_answer(output, require_think=opts.require_think)
        if not answer:
            verdicts.append(Verdict(NON_ENGLISH_SCORE, NON_ENGLISH_SCORE, answer, "no answer: lowest score"))
            continue
        if not is_english(answer):
            verdicts.append(Verdict(NON_ENGLISH_SCORE, NON_ENGLISH_SCORE, answer, "not English: scores 1"))
            continue
        if opts.judge is None:
            verdicts.append(Verdict(None, None, answer, "no judge: not scored"))
            continue
        try:
            judged = opts.judge.judge(wildspeech_prompt(f["query"], answer, f["checklist"], template), parse_score)
        except JudgeError as err:
            verdicts.append(Verdict(None, None, answer, "judge error", error=str(err)))
            continue
        reason = f"judge score {judged.verdict}" + (" (cached)" if judged.cached else "")
        verdicts.append(Verdict(judged.verdict, judged.verdict, answer, reason, judge_invalid=judged.invalid))
    return verdicts


BENCHMARK = Benchmark(
    name="wildspeech", load=load, score=score, category_keys=("taskType", "noise"), scale=10.0, needs_judge=True,
    judge_params={"temperature": 0.5, "top_p": 0.95, "max_tokens": 1024},  # tools/api_judge.py's settings
    published={"Step-Audio-R1": 70.6, "Gemini 3 Pro": 76.4, "Gemini 2.5 Pro": 60.0, "Step-Audio 2": 51.1},
)

