"""The evaluation run: items -> prompts -> model outputs (`samples.jsonl`) -> scores -> `summary.json` + report.

`run(EvalConfig)` is `mgrd eval`:
1. load the benchmark folder (`mgrd.eval.benchmarks`), keep the item range of this shard (`start`/`end`,
   `shard=(i, n)`, `limit`), and write `RUN/config.json` (a rerun into the same RUN must ask the same thing);
2. read `RUN/samples.jsonl` if it exists (resume): every (item, variant) with an answer is kept, and only the
   rest — never asked, or failed with an error — is asked, each finished batch appended at once
   (`mgrd.data.records.append_records`);
3. score every record in dataset order (`finalize`): the benchmark's official and normalised verdicts and the
   parsed answer go into each record (`extra["verdict"]`, and `scores` of its completion), then
   `samples.jsonl` is rewritten atomically and `summary.json` written: per task and category n, official and
   normalised scores, excluded items, errors, invalid judge outputs; think length, grounding, ablation and
   variant numbers; the settings and data fingerprints.

Each record keeps the item's scoring fields (`extra["fields"]`) and dataset position (`extra["benchmark_index"]`),
so `score_predictions` (outputs made elsewhere), `rescore` (other scoring settings) and `merge` (shards) need no
model and no data.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from mgrd.chat import OFFICIAL_PART_JOIN, render_chat
from mgrd.data.records import CompletionRecord, SampleRecord, append_records, read_records, write_records
from mgrd.eval import metrics
from mgrd.eval.backends import Job, Output
from mgrd.eval.benchmarks import EvalItem, LoadedSet, ScoreOptions, get_benchmark
from mgrd.eval.variants import ABLATIONS, check_variant, think_budget
from mgrd.generate import SamplingConfig
from mgrd.tasks import get_task

log = logging.getLogger(__name__)
SAMPLES, SUMMARY, CONFIG = "samples.jsonl", "summary.json", "config.json"
EXTRACTION = "the text after the first </think>, stripped (mgrd.tasks.grading.extract_answer)"
REPORT_SAMPLING = {"temperature": 0.7, "max_new_tokens": 32000}  # Step-Audio-R1's settings (reference §1.2)


@dataclass
class EvalConfig:
    """One evaluation run (the flags of `mgrd eval`).

    Attributes:
        task: the benchmark (`mgrd.eval.benchmarks.BENCHMARKS`).
        data: the benchmark's folder in its official layout.
        out: the run folder (samples.jsonl, summary.json, report).
        model / endpoint: a local checkpoint folder, or an OpenAI-compatible base URL (exactly one).
        start, end, shard, limit: which items (dataset order): `[start, end)`, then shard i of n (contiguous
            ranges), then the first `limit`.
        variants: audio variants to ask (`clean`, `silence`, `noise`, `snr10`, `speed1.25`, ...).
        sampling: the model's sampling (the report's: temperature 0.7, 32000 new tokens, capped to the context).
        exact_bugs, require_think, options: scoring choices (`ScoreOptions`); require_think None = True for a
            local model or `think_prefix` (the prompt opens the think block), False for an endpoint.
        judge_*: the LLM judge for Big Bench Audio and Wild Speech (`mgrd.judge`).
    """

    task: str
    data: Path
    out: Path
    model: Path | None = None
    endpoint: str | None = None
    api_key: str = "EMPTY"
    served_model: str = "default"
    start: int = 0
    end: int | None = None
    shard: tuple[int, int] | None = None
    limit: int | None = None
    variants: tuple[str, ...] = ("clean",)
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(**REPORT_SAMPLING))
    batch_size: int = 8
    device: str = "cpu"
    dtype: str = "auto"
    think_budget: int | None = None
    answer_tokens: int = 64
    concurrency: int = 4
    timeout_s: float = 600.0
    max_retries: int = 3
    think_prefix: bool = False
    exact_bugs: bool = False
    require_think: bool | None = None
    options: dict = field(default_factory=dict)
    judge_endpoint: str | None = None
    judge_model: str = "gpt-4o-mini"
    judge_api_key: str = "EMPTY"
    judge_cache: Path | None = None
    judge_replay: bool = False
    report: bool = True
    progress: bool = True


# ---------------------------------------------------------------------------------------------- selection


def select_items(items: Sequence[EvalItem], start: int = 0, end: int | None = None,
                 shard: tuple[int, int] | None = None, limit: int | None = None) -> list[EvalItem]:
    """The items of `[start, end)`, then of contiguous shard `i` of `n`, then the first `limit`."""
    end = len(items) if end is None else min(end, len(items))
    if start < 0 or start > end:
        raise ValueError(f"item range [{start}, {end}) is empty or negative (the data has {len(items)} items)")
    chosen = list(items[start:end])
    if shard is not None:
        i, n = shard
        if not (n >= 1 and 0 <= i < n):
            raise ValueError(f"shard must be i/n with 0 <= i < n, got {i}/{n}")
        bounds = [round(k * len(chosen) / n) for k in range(n + 1)]
        chosen = chosen[bounds[i]:bounds[i + 1]]
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        chosen = chosen[:limit]
    return chosen


def parse_shard(text: str) -> tuple[int, int]:
    """`"i/n"` -> (i, n)."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"--shard i/n needs 0 <= i < n, got {text}")
    return i, n


# ---------------------------------------------------------------------------------------------- running


def run(cfg: EvalConfig, backend=None) -> dict:
    """Evaluate (resuming from `cfg.out/samples.jsonl`), score, and write the summary; returns it.

    Args:
        cfg: the run's settings.
        backend: a ready `LocalModel` / `Endpoint` (tests, benchmarks); None builds one from `cfg`.
    Raises:
        ValueError: bad settings or data (one line naming what and where).
    """
    if (cfg.model is None) == (cfg.endpoint is None) and backend is None:
        raise ValueError("give exactly one of --model DIR and --endpoint URL")
    variants = tuple(check_variant(v) for v in cfg.variants)
    bench = get_benchmark(cfg.task)
    loaded = bench.load(cfg.data, **cfg.options)
    _warn_data(loaded)
    items = select_items(loaded.items, cfg.start, cfg.end, cfg.shard, cfg.limit)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    _check_config(out, cfg)
    samples = out / SAMPLES
    done = _answered(samples)
    jobs = [Job((item.id, v), item.row, item.task) for v in variants for item in items if (item.id, v) not in done]
    by_id = {item.id: item for item in items}
    if jobs:
        backend = backend or make_backend(cfg)
        model_name = getattr(backend, "name", "")
        log.info("%s: asking %d of %d prompts (%d answered before)", out, len(jobs), len(items) * len(variants),
                 len(items) * len(variants) - len(jobs))
        with tqdm(total=len(jobs), desc=f"eval {cfg.task}", disable=not cfg.progress, unit="item") as bar:
            for outputs in backend.generate(jobs):
                append_records(samples, [_record(by_id[o.key[0]], o, model_name) for o in outputs])
                bar.update(len(outputs))
    latest = _latest(read_records(samples))
    ids = {item.id for item in items}
    chosen = [r for r in latest if r.item_id in ids and r.extra.get("variant", "clean") in variants]
    others = [r for r in latest if not (r.item_id in ids and r.extra.get("variant", "clean") in variants)]
    return finalize(out, cfg.task, chosen, score_options(cfg), data=_data_info(loaded, len(items)),
                    settings=_settings(cfg), report=cfg.report, keep=others)


def make_backend(cfg: EvalConfig):
    from mgrd.eval.backends import Endpoint, LocalModel

    if cfg.model is not None:
        return LocalModel(cfg.model, cfg.sampling, device=cfg.device, dtype=cfg.dtype, batch_size=cfg.batch_size,
                          think_budget=cfg.think_budget, answer_tokens=cfg.answer_tokens)
    return Endpoint(cfg.endpoint, cfg.sampling, api_key=cfg.api_key, model=cfg.served_model, timeout_s=cfg.timeout_s,
                    max_retries=cfg.max_retries, concurrency=cfg.concurrency, think_prefix=cfg.think_prefix)


def _record(item: EvalItem, output: Output, model_name: str) -> SampleRecord:
    """The sample record of one answered (or failed) prompt, before scoring."""
    task = get_task(item.task)
    completions = [] if output.text is None else [
        CompletionRecord.from_text(output.text, output.n_tokens, output.finish_reason)]
    extra = {"benchmark_index": item.index, "variant": output.key[1], "fields": item.fields, "error": output.error,
             "think_tokens": output.think_tokens}
    return SampleRecord(item_id=item.id, task=item.task, prompt=render_chat(task.prompt(item.row),
                                                                             part_join=OFFICIAL_PART_JOIN),
                        completions=completions, model=model_name, extra=extra)


def _answered(samples: Path) -> set[tuple[str, str]]:
    """(id, variant) of the records in an earlier run's file that hold an answer (errors are asked again)."""
    if not samples.is_file():
        return set()
    return {(r.item_id, r.extra.get("variant", "clean")) for r in read_records(samples)
            if r.completions and not r.extra.get("error")}


def _latest(records: list[SampleRecord]) -> list[SampleRecord]:
    """The last record of each (id, variant) (an answer beats a later error)."""
    latest: dict[tuple[str, str], SampleRecord] = {}
    for r in records:
        key = (r.item_id, r.extra.get("variant", "clean"))
        if key in latest and latest[key].completions and not r.completions:
            continue
        latest[key] = r
    return list(latest.values())


def _warn_data(loaded: LoadedSet) -> None:
    for message in loaded.missing_audio[:5]:
        log.warning("excluded: %s", message)
    if len(loaded.missing_audio) > 5:
        log.warning("... %d items without audio excluded in all", len(loaded.missing_audio))
    for message in loaded.warnings:
        log.warning(message)


def _data_info(loaded: LoadedSet, n_selected: int) -> dict:
    return {"fingerprints": loaded.fingerprints, "n_loaded": len(loaded.items), "n_selected": n_selected,
            "missing_audio": loaded.missing_audio, "warnings": loaded.warnings}


def _settings(cfg: EvalConfig) -> dict:
    return {"model": str(cfg.model) if cfg.model else None, "endpoint": cfg.endpoint, "served_model": cfg.served_model,
            "sampling": asdict(cfg.sampling), "think_budget": cfg.think_budget, "think_prefix": cfg.think_prefix,
            "range": {"start": cfg.start, "end": cfg.end, "shard": cfg.shard, "limit": cfg.limit},
            "variants": list(cfg.variants)}


def _check_config(out: Path, cfg: EvalConfig) -> None:
    """Write RUN/config.json, or check that a resumed run asks the same task of the same data."""
    key = {"task": cfg.task, "data": str(Path(cfg.data).resolve()), "model": str(cfg.model) if cfg.model else None,
           "endpoint": cfg.endpoint}
    path = out / CONFIG
    if path.is_file():
        old = json.loads(path.read_text())
        diff = [k for k in key if old.get(k) != key[k]]
        if diff:
            settings = ", ".join(f"{k}: {old.get(k)!r}" for k in diff)
            raise ValueError(f"{out} holds a run with other settings ({settings}); use another --out")
        return
    write_json(path, key)


def score_options(cfg: EvalConfig) -> ScoreOptions:
    """The scoring choices of a run, with its judge when one is configured."""
    from mgrd.judge import Judge, JudgeConfig

    judge = None
    if cfg.judge_endpoint or cfg.judge_replay:
        cache = cfg.judge_cache or Path(cfg.out) / "judge_cache"
        params = get_benchmark(cfg.task).judge_params  # the official judge sampling where the benchmark names one
        judge = Judge(JudgeConfig(base_url=cfg.judge_endpoint, model=cfg.judge_model, api_key=cfg.judge_api_key,
                                  cache_dir=cache, replay=cfg.judge_replay, **params))
    # a local model's prompt (or the official client's prefix) opens the think block: no </think>, no answer
    require_think = cfg.require_think if cfg.require_think is not None else cfg.endpoint is None or cfg.think_prefix
    return ScoreOptions(exact_bugs=cfg.exact_bugs, require_think=require_think, judge=judge, options=dict(cfg.options))


# ---------------------------------------------------------------------------------------------- scoring


def finalize(out: Path, task: str, records: list[SampleRecord], opts: ScoreOptions, *, data: dict | None = None,
             settings: dict | None = None, report: bool = True, keep: Sequence[SampleRecord] = ()) -> dict:
    """Score records in dataset order, rewrite `samples.jsonl` with the verdicts, write `summary.json`.

    `keep`: records of the run folder outside this selection (other items or variants asked earlier), written
    back unchanged after the scored ones, so a narrower rerun loses nothing.

    Returns:
        The summary.
    """
    bench = get_benchmark(task)
    records = sorted(records, key=lambda r: (r.extra.get("variant", "clean") != "clean", r.extra.get("variant", ""),
                                             r.extra["benchmark_index"]))
    variants: dict[str, list[SampleRecord]] = {}
    for r in records:
        variants.setdefault(r.extra.get("variant", "clean"), []).append(r)
    for group in variants.values():
        _score_group(bench, group, opts)
    write_records(Path(out) / SAMPLES, records + list(keep))
    summary = summarize(bench, variants, opts, data or {}, settings or {})
    write_json(Path(out) / SUMMARY, summary)
    if report:
        from mgrd.eval.report import write_report

        write_report(Path(out), summary, records)
    return summary


def _score_group(bench, group: list[SampleRecord], opts: ScoreOptions) -> None:
    outputs = [r.completions[0].text if r.completions and not r.extra.get("error") else None for r in group]
    verdicts = bench.score([r.extra["fields"] for r in group], outputs, opts)
    for r, verdict in zip(group, verdicts):
        v = verdict.to_dict()
        if r.extra.get("error"):
            v["error"] = r.extra["error"]
        elif not r.completions:
            v["missing"] = True
        r.extra["verdict"] = v
        if r.completions:
            comp = r.completions[0]
            for name in ("official", "normalised"):
                if v[name] is not None:
                    comp.add_score(name, v[name], v["reason"])


def summarize(bench, variants: dict[str, list[SampleRecord]], opts: ScoreOptions, data: dict, settings: dict) -> dict:
    """The summary of scored records (see the module docstring)."""
    clean = variants.get("clean") or next(iter(variants.values()), [])
    verdicts = [r.extra["verdict"] for r in clean]
    categories = [r.extra["fields"].get("categories", {}) for r in clean]
    per_category = metrics.by_category(verdicts, categories, bench.category_keys, bench.scale)
    summary = {
        "task": bench.name,
        "overall": metrics.aggregate(verdicts, bench.scale),
        "categories": per_category,
        "macro": {key: {"official": metrics.macro(groups), "normalised": metrics.macro(groups, "normalised")}
                  for key, groups in per_category.items()},
        "variants": {name: metrics.aggregate([r.extra["verdict"] for r in group], bench.scale)
                     for name, group in variants.items()},
        "ablation": _ablation(variants),
        "budget_curve": _budget_curve(variants, bench.scale),
        "think": _think(clean),
        "grounding": metrics.grounding([(r.completions[0].reasoning, _question(r), r.extra["fields"].get("meta"))
                                        for r in clean if r.completions and r.completions[0].answer is not None
                                        and _hears(r)]),
        "errors": [f"{r.item_id} [{r.extra.get('variant', 'clean')}]: {r.extra['verdict']['error']}"
                   for group in variants.values() for r in group if r.extra["verdict"].get("error")],
        "judge_invalid_items": [r.item_id for r in clean if r.extra["verdict"].get("judge_invalid")],
        "scoring": {"exact_bugs": opts.exact_bugs, "require_think": opts.require_think, "extraction": EXTRACTION,
                    "options": opts.options, "judge": _judge_info(opts)},
        "published": bench.published,
        "data": data,
        "settings": settings,
    }
    return summary


def _hears(record: SampleRecord) -> bool:
    """Whether the item came with audio: grounding numbers describe reasoning about sound, so a text-only item's
    chain (which names no acoustic feature by design) is left out of them."""
    from mgrd.tokenizer import AUDIO_PATCH_TOKEN

    return AUDIO_PATCH_TOKEN in record.prompt


def _question(record: SampleRecord) -> str:
    """The user text of a record's prompt (question and choices): evidence it names is not the model's own."""
    return record.prompt.split("<|BOT|>assistant")[0]


def _ablation(variants: dict[str, list[SampleRecord]]) -> dict:
    if "clean" not in variants:
        return {}
    answers = {name: {r.item_id: r.extra["verdict"].get("parsed") for r in group if r.completions}
               for name, group in variants.items()}
    return {name: metrics.sensitivity(answers["clean"], answers[name]) for name in variants if name in ABLATIONS}


def _budget_curve(variants: dict[str, list[SampleRecord]], scale: float) -> list[dict]:
    """Accuracy per forced thinking budget (`think<N>` variants), in increasing budget."""
    curve = []
    for name, group in variants.items():
        budget = think_budget(name)
        if budget is not None:
            agg = metrics.aggregate([r.extra["verdict"] for r in group], scale)
            curve.append({"budget": budget, "n": agg["n"], "official": agg["official"],
                          "normalised": agg["normalised"]})
    return sorted(curve, key=lambda c: c["budget"])


def _think(records: list[SampleRecord]) -> dict:
    """Think-length distribution and accuracy per length bucket (tokens when the backend counted them, else words)."""
    rows = [(r.extra.get("think_tokens"), r.completions[0].reasoning, r.extra["verdict"]) for r in records
            if r.completions]
    unit = "tokens" if rows and all(t is not None for t, _, _ in rows) else "words"
    lengths = [t if unit == "tokens" else len(reasoning.split()) for t, reasoning, _ in rows]
    scored = [(n, v["normalised"]) for n, (_, _, v) in zip(lengths, rows) if v.get("normalised") is not None]
    return {"unit": unit, "stats": metrics.think_length_stats(lengths),
            "buckets": metrics.length_buckets([n for n, _ in scored], [c for _, c in scored])}


def _judge_info(opts: ScoreOptions) -> dict | None:
    if opts.judge is None:
        return None
    c = opts.judge.config
    return {"model": c.model, "base_url": c.base_url, "replay": c.replay, "params": opts.judge.params(),
            "stats": opts.judge.stats.to_dict()}


# ---------------------------------------------------------------------------------------------- no model


def read_predictions(path: Path) -> dict[str, str | None]:
    """`{"id", "output"}` per line -> {id: output}.

    Raises:
        ValueError: `FILE:LINE: ...` for a bad line, a missing key, or a duplicate id.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: predictions file not found")
    predictions: dict[str, str | None] = {}
    first: dict[str, int] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number}: invalid JSON: {err.msg}") from None
        if not isinstance(row, dict) or "id" not in row or "output" not in row:
            raise ValueError(f"{path}:{number}: each line must be an object with 'id' and 'output'")
        if row["output"] is not None and not isinstance(row["output"], str):
            raise ValueError(f"{path}:{number}: 'output' must be a string or null")
        key = str(row["id"])
        if key in first:
            raise ValueError(f"{path}:{number}: duplicate id {key!r} (first on line {first[key]})")
        first[key] = number
        predictions[key] = row["output"]
    return predictions


def score_predictions(cfg: EvalConfig, predictions: Path) -> dict:
    """`mgrd eval score`: score an existing predictions file by the benchmark's rules (no model).

    Items without a prediction are recorded as missing (not scored); unknown ids are an error.
    """
    bench = get_benchmark(cfg.task)
    loaded = bench.load(cfg.data, **cfg.options)
    items = select_items(loaded.items, cfg.start, cfg.end, cfg.shard, cfg.limit)
    preds = read_predictions(predictions)
    known = {item.id for item in loaded.items}
    unknown = [k for k in preds if k not in known]
    if unknown:
        raise ValueError(f"{predictions}: {len(unknown)} id(s) not in the {cfg.task} data: {', '.join(unknown[:5])}"
                         f"{' ...' if len(unknown) > 5 else ''}")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for item in items:
        text = preds.get(item.id)
        output = Output((item.id, "clean"), text, 0, "stop") if item.id in preds else Output((item.id, "clean"), None)
        records.append(_record(item, output, f"predictions:{predictions}"))
    if cfg.require_think is None:
        cfg.require_think = False  # outputs made elsewhere may carry no think block at all
    summary = finalize(out, cfg.task, records, score_options(cfg), data=_data_info(loaded, len(items)),
                       settings={"predictions": str(predictions)}, report=cfg.report)
    if cfg.task == "mmau" and cfg.options.get("split") == "test":
        from mgrd.eval.benchmarks.mmau import submission

        write_json(out / "submission.json", submission([i.fields for i in items], [preds.get(i.id) for i in items],
                                                       require_think=cfg.require_think))
    return summary


def merge(runs: Sequence[Path], out: Path, report: bool = True) -> dict:
    """`mgrd eval merge`: join shard runs' samples into one run and score it as a whole, in dataset order, with
    the shards' scoring settings; judged benchmarks are rescored from the shards' judge caches (copied into
    `OUT/judge_cache`, replayed: no judge is asked).

    Raises:
        ValueError: runs of different tasks or scoring settings, or an (item, variant) in two shards.
    """
    if not runs:
        raise ValueError("merge needs at least one run folder")
    records, seen, summaries = [], {}, []
    for run_dir in map(Path, runs):
        if not (run_dir / SUMMARY).is_file():
            raise ValueError(f"{run_dir}: no {SUMMARY} (not a finished eval run)")
        summaries.append(json.loads((run_dir / SUMMARY).read_text()))
        for r in read_records(run_dir / SAMPLES):
            key = (r.item_id, r.extra.get("variant", "clean"))
            if key in seen:
                raise ValueError(f"{run_dir}: item {key[0]} [{key[1]}] is also in {seen[key]}; shards must not overlap")
            seen[key] = run_dir
            records.append(r)
    tasks = {s["task"] for s in summaries}
    if len(tasks) != 1:
        raise ValueError(f"cannot merge runs of different tasks: {sorted(tasks)}")
    scoring = [{k: s["scoring"][k] for k in ("exact_bugs", "require_think", "options")} for s in summaries]
    if any(x != scoring[0] for x in scoring):
        raise ValueError(f"cannot merge runs scored with different settings: {scoring[0]} vs "
                         f"{next(x for x in scoring if x != scoring[0])}")
    out = Path(out)
    judge = _merged_judge(runs, summaries, out)
    opts = ScoreOptions(exact_bugs=scoring[0]["exact_bugs"], require_think=scoring[0]["require_think"], judge=judge,
                        options=scoring[0]["options"])
    data = dict(summaries[0].get("data", {}), n_selected=len({r.item_id for r in records}))
    return finalize(out, tasks.pop(), records, opts, data=data, settings={"merged": [str(r) for r in runs]},
                    report=report)


def _merged_judge(runs: Sequence[Path], summaries: list[dict], out: Path):
    """A replaying judge over the shards' judge caches (copied into OUT), or None when no shard was judged."""
    import shutil

    from mgrd.judge import Judge, JudgeConfig

    info = next((s["scoring"]["judge"] for s in summaries if s["scoring"].get("judge")), None)
    if info is None:
        return None
    for run_dir in map(Path, runs):
        if (run_dir / "judge_cache").is_dir():
            shutil.copytree(run_dir / "judge_cache", out / "judge_cache", dirs_exist_ok=True)
    params = info.get("params", {})
    return Judge(JudgeConfig(model=info["model"], cache_dir=out / "judge_cache", replay=True, **params))


def run_task(run: Path) -> str:
    """The task of a finished run folder (from its summary)."""
    path = Path(run) / SUMMARY
    if not path.is_file():
        raise ValueError(f"{run}: no {SUMMARY} (not a finished eval run)")
    return json.loads(path.read_text())["task"]


def rescore(run: Path, cfg: EvalConfig) -> dict:
    """`mgrd eval rescore RUN`: score a finished run's samples again with other scoring settings (quirks on or
    off, a judge, another extraction rule), into `cfg.out` (RUN itself when it is the same folder). No model.

    `cfg.require_think` None keeps the run's own setting; the task is the run's.
    """
    run = Path(run)
    if not (run / SUMMARY).is_file():
        raise ValueError(f"{run}: no {SUMMARY} (not a finished eval run)")
    old = json.loads((run / SUMMARY).read_text())
    cfg.task = old["task"]
    if cfg.require_think is None:
        cfg.require_think = old["scoring"]["require_think"]
    cfg.options = {**old["scoring"].get("options", {}), **cfg.options}
    records = _latest(read_records(run / SAMPLES))
    out = Path(cfg.out)
    if out.resolve() != run.resolve() and (run / "judge_cache").is_dir() and cfg.judge_cache is None:
        import shutil

        shutil.copytree(run / "judge_cache", out / "judge_cache", dirs_exist_ok=True)  # cached verdicts stay usable
    settings = dict(old.get("settings", {}), rescored_from=str(run))
    return finalize(out, cfg.task, records, score_options(cfg), data=old.get("data"), settings=settings,
                    report=cfg.report)


def write_json(path: Path, data: dict) -> None:
    """Write JSON atomically (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, ensure_ascii=False, indent=2, default=str)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
