"""The synthetic suite (`mgrd data synth`): a manifest of any split, graded by each family's own task.

`DIR` is a suite folder (holding `manifest.jsonl`) or a manifest file. Rows are read with
`mgrd.data.manifest.load_manifest(strict=False)`: a bad row (missing audio included) is skipped and listed with
its FILE:LINE. Each item is prompted and graded by its family's registered `Task` (the same grader the RL
reward and the distillation filters use), so the official and the normalised value are the same number.
`meta` travels with each item for the grounding metrics. Categories: the family and its kind.
"""

from __future__ import annotations

from pathlib import Path

from mgrd.data.manifest import ManifestError, load_manifest
from mgrd.eval.benchmarks.base import Benchmark, DataError, EvalItem, LoadedSet, ScoreOptions, Verdict, sha256_file
from mgrd.tasks import find_task
from mgrd.tasks.grading import as_row, extract_answer, grade


def _kind(task: str) -> str:
    from mgrd.data.synth import FAMILIES

    family = FAMILIES.get(task)
    return family.kind if family is not None else "other"


def load(data: Path, **_) -> LoadedSet:
    """Read a suite's manifest (see the module docstring).

    Raises:
        DataError: no manifest, or one with no usable row.
    """
    data = Path(data)
    path = data / "manifest.jsonl" if data.is_dir() else data
    if not path.is_file():
        raise DataError(f"{path}: not found; the synthetic task expects a suite folder with manifest.jsonl "
                        "(mgrd data synth --out DIR) or a manifest file")
    try:
        items = load_manifest(path, strict=False)
    except ManifestError as err:
        raise DataError(str(err)) from None
    loaded = LoadedSet(items=[], fingerprints={path.name: sha256_file(path)})
    for message in items.report.errors:
        (loaded.missing_audio if "audio file" in message else loaded.warnings).append(message)
    for item in items:
        if find_task(item.task) is None:
            loaded.warnings.append(f"{item.source}: unknown task {item.task!r}; item skipped")
            continue
        row = as_row(item)
        fields = {"answer": item.answer, "choices": item.choices, "task": item.task, "meta": item.meta,
                  "categories": {"family": item.task, "kind": _kind(item.task)}}
        loaded.items.append(EvalItem(item.id, len(loaded.items), row, fields, item.task))
    if not loaded.items:
        raise DataError(f"{path}: no usable rows ({len(items.report.errors)} error(s); first: "
                        f"{items.report.errors[0] if items.report.errors else 'none'})")
    return loaded


def score(fields: list[dict], outputs: list[str | None], opts: ScoreOptions) -> list[Verdict]:
    """Each family's grader, once (official = normalised)."""
    verdicts = []
    for f, output in zip(fields, outputs):
        if output is None:
            verdicts.append(Verdict(None, None, None, "no output"))
            continue
        task = find_task(f["task"])
        row = {"id": "", "task": f["task"], "answer": f["answer"], "choices": f["choices"]}
        value = grade(row, output, require_think=opts.require_think, grader=task.grader if task else None)
        answer = extract_answer(output, require_think=opts.require_think)
        grader = task.grader if task else "grader"
        reason = "no answer: cut off before </think>" if answer is None else f"{grader}: {value:.0f}"
        verdicts.append(Verdict(value, value, answer, reason))
    return verdicts


BENCHMARK = Benchmark(name="synthetic", load=load, score=score, category_keys=("family", "kind"))
