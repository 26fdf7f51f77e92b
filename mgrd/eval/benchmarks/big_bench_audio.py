"""Big Bench Audio (ArtificialAnalysis): `metadata.jsonl` + `data/question_<id>.mp3`, judged CORRECT/INCORRECT.

Layout (benchmarks.md §2.1): `DIR/metadata.jsonl` rows `{"file_name": "data/question_0.mp3", "category",
"official_answer", "id"}`; `file_name` may carry the escaped form `data\\/question_3.mp3`. The audio may be mp3
or, for fixtures, any format libsndfile reads. An optional sidecar `DIR/questions.jsonl` (`{"id", "question"}`)
supplies the question text the judge prompt has a slot for; without it the slot is empty and a warning says so.

Scoring:
- official: the Artificial Analysis judge (`mgrd.eval.judges.bba_prompt`) on the answer after `</think>`;
  CORRECT = 1, INCORRECT = 0; a reply with neither is an invalid judge output (counted, left out of the
  official denominator and listed), a judge that cannot be reached is an error. Without a judge the official
  score stays empty.
- normalised (no judge): the answer's own words against the official answer: a number for `object_counting`
  (`grade_numeric`), else the official word (valid/invalid, yes/no) present as a word and its opposite absent.
"""

from __future__ import annotations

from pathlib import Path

from mgrd.eval.benchmarks.base import (
    Benchmark, DataError, EvalItem, LoadedSet, ScoreOptions, Verdict, check_unique, read_json_rows, require,
    sha256_file,
)
from mgrd.eval.benchmarks.prompts import BBA_INSTRUCTION, BBA_TASK
from mgrd.eval.judges import bba_prompt, parse_correct
from mgrd.judge import JudgeError
from mgrd.tasks.grading import extract_answer, grade_numeric, normalize

OPPOSITE = {"valid": "invalid", "invalid": "valid", "yes": "no", "no": "yes"}


def _file_name(value: str) -> str:
    """`data\\/question_3.mp3` (escaped, or Windows separators) -> `data/question_3.mp3`."""
    return value.replace("\\/", "/").replace("\\", "/")


def load(data: Path, questions: str | Path | None = None, **_) -> LoadedSet:
    """Read `DIR/metadata.jsonl` (and `DIR/questions.jsonl` or `questions` when present).

    Raises:
        DataError: a missing metadata file or a row without the official keys (`FILE:LINE: ...`).
    """
    data = Path(data)
    path = data / "metadata.jsonl"
    if not path.is_file():
        raise DataError(f"{path}: not found; Big Bench Audio expects metadata.jsonl (rows with file_name, category, "
                        "official_answer, id) at the dataset root")
    sidecar = Path(questions) if questions else data / "questions.jsonl"
    texts = _questions(sidecar) if sidecar.is_file() else {}
    loaded = LoadedSet(items=[], fingerprints={path.name: sha256_file(path)})
    if not texts:
        loaded.warnings.append(f"no question sidecar ({sidecar}): the judge prompt's question slot is left empty")
    for number, row in read_json_rows(path):
        where = f"{path}:{number}"
        require(row, {"file_name": str, "category": str, "official_answer": (str, int), "id": (int, str)}, where)
        audio = (data / _file_name(row["file_name"])).resolve()
        if not audio.is_file():
            loaded.missing_audio.append(f"{where}: id {row['id']}: audio not found: {audio}")
            continue
        item_id, answer = str(row["id"]), str(row["official_answer"])
        manifest_row = {"id": item_id, "task": BBA_TASK.name, "audio": [str(audio)], "question": BBA_INSTRUCTION,
                        "choices": None, "answer": answer, "meta": {}}
        fields = {"answer": answer, "question": texts.get(item_id, ""), "categories": {"category": row["category"]}}
        loaded.items.append(EvalItem(item_id, len(loaded.items), manifest_row, fields, BBA_TASK.name))
    check_unique(loaded.items, str(path))
    return loaded


def _questions(path: Path) -> dict[str, str]:
    texts = {}
    for number, row in read_json_rows(path):
        require(row, {"id": (int, str), "question": str}, f"{path}:{number}")
        texts[str(row["id"])] = row["question"]
    return texts


# ---------------------------------------------------------------------------------------------- scoring


def rule_score(answer: str, official: str, category: str) -> float:
    """The judge-free normalised verdict (see the module docstring)."""
    if category == "object_counting":
        return grade_numeric(answer, official)
    words = set(normalize(answer).split())
    target = official.strip().lower()
    return float(target in words and OPPOSITE.get(target) not in words)


def score(fields: list[dict], outputs: list[str | None], opts: ScoreOptions) -> list[Verdict]:
    """Judge verdicts (official) and rule verdicts (normalised) per item."""
    literal = opts.options.get("bba_literal_newlines", True)
    verdicts = []
    for f, output in zip(fields, outputs):
        if output is None:
            verdicts.append(Verdict(None, None, None, "no output"))
            continue
        answer = extract_answer(output, require_think=opts.require_think)
        if answer is None:
            verdicts.append(Verdict(0.0, 0.0, None, "no answer: cut off before </think>"))
            continue
        normalised = rule_score(answer, f["answer"], f["categories"]["category"])
        if opts.judge is None:
            verdicts.append(Verdict(None, normalised, answer, "no judge: official score not computed"))
            continue
        try:
            judged = opts.judge.judge(bba_prompt(f.get("question", ""), f["answer"], answer, literal), parse_correct)
        except JudgeError as err:
            verdicts.append(Verdict(None, normalised, answer, "judge error", error=str(err)))
            continue
        reason = f"judge replied {judged.text.strip()[:40]!r}" + (" (cached)" if judged.cached else "")
        verdicts.append(Verdict(judged.verdict, normalised, answer, reason, judge_invalid=judged.invalid))
    return verdicts


BENCHMARK = Benchmark(
    name="big_bench_audio", load=load, score=score, category_keys=("category",), needs_judge=True,
    published={"Step-Audio-R1": 98.7, "Gemini 3 Pro": 92.1, "Gemini 2.5 Pro": 96.1, "Step-Audio 2": 59.1},
)
