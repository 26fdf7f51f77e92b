"""`mgrd loop`: the MGRD state machine (Step-Audio-R1 §4.2; DESIGN.md §6), built from the existing stages.

Iteration 0 is the cold start, in `runs/<name>/iter_0/`: `perceive` (perception pretraining of a random
encoder, `mgrd.train.perceive`; skipped unless `perceive.steps` > 0, as a real checkpoint's encoder is already
pretrained), `sft` (the cold-start SFT of that model, or of the given model, or of a fresh tiny preset, on the
task data; skipped with `cold_start=false`), then `eval`. Iteration t >= 1 runs these stages, each in its own
folder `runs/<name>/iter_<t>/<stage>/`:

    curate   the audio questions that need perception (`mgrd.loop.select.perception_items`) of the train split,
             or of the pool of new items when one is set (`data.pool`, `data.synth_pool`), a seeded draw of
             `sample.items_per_iteration` of them -> `questions.jsonl`
    sample   K completions per question from the current model (`mgrd.rollout.rollout`), the question
             followed by `sample.prompt_suffix` (a request to reason about acoustic features); each batch
             scored by the four filters (`mgrd.loop.filters.score_records`) and appended to `samples.jsonl`
    select   D_audio-cot(t): the candidates passing every filter, at most M per item, as manifest rows
             (`audio_cot.jsonl`, which `mgrd sft` reads as its `audio_cot` source); the pass@K histogram;
             the RL set (items with pass@K in the band, mixed with text tasks) -> `rl_set.jsonl`; `stats.json`
    sft      `mgrd.train.sft.run` from the current model on D_audio-cot(t) ∪ D_task (the train split's text
             items), skipped (and said so) when no chain was accepted
    rl       `mgrd.train.rl.run` on the RL set (the report's reward by default), skipped when the band is empty
    eval     `mgrd.eval.harness.run` of the new model on the held-out splits `eval.splits` (greedy)

After each iteration `mgrd.loop.report` rebuilds `summary.json`, `report.html` / `report.md` and the plots.

State and resume: a stage is finished when its folder holds `done.json` (the training stages' own `RunDir`
marker, written last). A rerun (or `--resume`) skips finished stages and re-enters the first unfinished one,
which continues from what it left: `sample` keeps every record already appended (each one is written whole,
`mgrd.data.records.append_records`) and asks only the rest; `sft` and `rl` resume from their newest checkpoint
(a folder without one starts again from scratch); `eval` asks only the unanswered items. The model that
iteration t hands on is `iter_t/rl/final`, else `iter_t/sft/final` (RL skipped), else the previous one
(iteration 0: `iter_0/perceive/final`, else the given model).
`runs/<name>/final/` holds a copy of the last model; `stages.jsonl` logs each stage's wall time.

This module orchestrates; it holds no training, sampling or scoring maths of its own.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from mgrd.generate import SamplingConfig
from mgrd.loop.filters import FilterConfig
from mgrd.loop.report import EVAL_SPLITS
from mgrd.loop.select import SelectConfig
from mgrd.train.config import option
from mgrd.train.perceive import PerceiveConfig

log = logging.getLogger(__name__)

DONE = "done.json"
STAGES = ("curate", "sample", "select", "sft", "rl", "eval")
COLD_STAGES = ("perceive", "sft", "eval")
SPLITS = ("train", *EVAL_SPLITS)
PROMPT_SUFFIX = ("Reason step by step about what you hear: the pitch, loudness, duration, rhythm and timbre of "
                 "the sounds, then answer.")


class LoopError(ValueError):
    """The loop cannot go on: bad data, a missing model, or a run folder that holds another run."""


# ---------------------------------------------------------------------------------------------- config


@dataclass
class DataSetup:
    """The suites: given manifests, or a synthetic suite written once into `runs/<name>/data/<split>/`."""

    train: str | None = option(None, "train manifest (or suite folder): audio questions to distil and text "
                                     "tasks (D_task); null: write the synthetic suite")
    dev: str | None = option(None, "held-out manifest (or suite folder) of the training distribution; null: "
                                   "synthetic (new items drawn like the train split's)")
    test: str | None = option(None, "held-out test manifest (or suite folder); null: synthetic (the suite's test "
                                    "split: parameter ranges disjoint from training)")
    ood: str | None = option(None, "out-of-distribution manifest (or suite folder); null: synthetic")
    pool: str | None = option(None, "manifest (or suite folder) the iterations curate their audio questions from "
                                    "instead of the train split: items the cold start never trained on, whose "
                                    "answers reach the model only through the correctness filter and RL's reward; "
                                    "null: the synthetic pool when synth_pool > 0, else the train split")
    synth_families: tuple[str, ...] = option(
        ("pitch_compare", "duration_compare", "higher_longer", "louder_beeps", "text_logic", "text_compare"),
        "families of the synthetic suite (audio questions and text tasks)")
    synth_train: int = option(240, "items of the synthetic train split")
    synth_dev: int = option(48, "items of the synthetic dev split")
    synth_test: int = option(48, "items of the synthetic test split")
    synth_ood: int = option(48, "items of the synthetic ood split")
    synth_pool: int = option(0, "items of the synthetic pool split (new items drawn like the train split's, which "
                                "the iterations sample instead of the cold start's own items); 0: no pool")
    synth_seed: int = option(0, "seed of the synthetic suite")


@dataclass
class StageSetup:
    """One training stage: its own config (a named config or a YAML path) and overrides of it."""

    config: str = option("sft_tiny", "named config or YAML path of the stage")
    overrides: tuple[str, ...] = option((), "key=value overrides of the stage's config, applied after the loop's "
                                              "own (model, data and run folder)")


@dataclass
class SampleSetup:
    """How the candidates of an iteration are sampled."""

    items_per_iteration: int = option(0, "audio questions sampled per iteration, a seeded draw (0: all curated)")
    prompt_suffix: str = option(PROMPT_SUFFIX, "appended to each question when sampling (the report prompts for "
                                               "reasoning about acoustic features); empty: the plain question")
    batch_items: int = option(8, "questions per rollout batch (each batch is scored and appended at once)")
    sampling: SamplingConfig = option(SamplingConfig(max_new_tokens=256, temperature=1.0),
                                      "sampling of the K candidates (seed null: the loop's seed + iteration)")


@dataclass
class EvalSetup:
    """Held-out evaluation after each iteration (greedy, through `mgrd eval`'s harness)."""

    splits: tuple[str, ...] = option(EVAL_SPLITS, "held-out splits to evaluate after each iteration: dev (new "
                                                  "items of the training distribution), test, ood")
    max_items: int = option(0, "items per split (the first N; 0: all)")
    max_new_tokens: int = option(256, "token budget of each answer")
    batch_size: int = option(8, "prompts per generation batch")


@dataclass
class LoopConfig:
    """`mgrd loop`: every setting of an MGRD run (defaults: the report's where it gives them)."""

    name: str = option("loop", "run name: everything goes to <out_dir>/<name>/")
    out_dir: str = option("runs", "folder holding the run folders")
    iterations: int = option(3, "T: MGRD iterations after the cold start")
    seed: int = option(0, "seed of draws, sampling and the stages' runs")
    device: str = option("auto", "cpu, cuda, cuda:N, or auto")
    model: str | None = option(None, "checkpoint folder to start from (null: a fresh tiny preset)")
    cold_start: bool = option(True, "iteration 0 fine-tunes `model` with `cold_sft`; false evaluates it as is "
                                    "(then `model` must be given)")
    data: DataSetup = option(DataSetup(), "train, test and ood suites")
    perceive: PerceiveConfig = option(PerceiveConfig(steps=0), "iteration 0, before the cold start: perception "
                                      "pretraining of a random encoder (`mgrd.train.perceive`; steps=0: none, "
                                      "the start model's encoder is already trained)")
    cold_sft: StageSetup = option(StageSetup(), "the cold-start SFT (iteration 0)")
    cold_audio_cot_weight: float = option(0.5, "cold start: weight of the suite's own grounded audio chains "
                                               "(the report's share of audio CoT); 0: answers only")
    cold_grounded_share: float = option(
        1.0, "cold start: the share of the audio CoT items taught with their grounded chain; the rest get the "
             "suite's text-substitute chain (reasoning from the wording, as the report's cold-start model reasons "
             "before MGRD shifts it to the sound); 1: grounded chains only")
    sample: SampleSetup = option(SampleSetup(), "sampling of the candidates")
    filters: FilterConfig = option(FilterConfig(), "the four filters")
    select: SelectConfig = option(SelectConfig(), "M, K (samples_per_item), the pass@K band, the text mix")
    sft: StageSetup = option(StageSetup(), "the SFT of each iteration on D_audio-cot ∪ D_task")
    audio_cot_weight: float = option(1.0, "SFT mixing weight of D_audio-cot (D_task: the text items, weight 1)")
    sft_chain_epochs: float = option(
        2.0, "the SFT of an iteration ends once D_audio-cot has been drawn this many times over at its mixing share "
             "(at most the sft config's run.max_steps), so a handful of accepted chains is not repeated for hundreds "
             "of draws; 0: always run.max_steps")
    sft_replay: float = option(
        0.0, "the SFT of an iteration also trains on this many reference grounded chains of the train suite per "
             "accepted chain (the cold start's audio CoT, drawn evenly over the families), an anchor against "
             "drifting on the model's own chains; 0: D_audio-cot ∪ D_task only, as the report")
    rl: StageSetup = option(StageSetup(config="rl_tiny"), "the RL of each iteration on the pass@K band")
    rl_enabled: bool = option(True, "run the RL stage (false: the SFT model goes on)")
    rl_reward: dict[str, float] | None = option(
        None, "reward function -> weight for each iteration's RL, replacing the rl config's (null: keep it; rl_tiny: "
              "the report's 0.8·correct + 0.2·reasoning); {text: 1.0, audio_correct: 0.8} drops the 0.2 format term")
    eval: EvalSetup = option(EvalSetup(), "held-out evaluation")
    progress: bool = option(True, "progress bars")

    def __post_init__(self):
        if not self.name or "/" in self.name or self.name in (".", ".."):
            raise ValueError(f"name must be a plain folder name, got {self.name!r}")
        if self.iterations < 0:
            raise ValueError(f"iterations must be >= 0, got {self.iterations}")
        if not self.cold_start and self.model is None:
            raise ValueError("cold_start=false needs a model to start from (set model=DIR)")
        for key in ("items_per_iteration",):
            if getattr(self.sample, key) < 0:
                raise ValueError(f"sample.{key} must be >= 0")
        unknown = [s for s in self.eval.splits if s not in EVAL_SPLITS]
        if unknown or not self.eval.splits:
            raise ValueError(f"eval.splits must name some of {', '.join(EVAL_SPLITS)}, got {list(self.eval.splits)}")
        if self.sample.batch_items < 1:
            raise ValueError("sample.batch_items must be >= 1")
        if not 0.0 <= self.cold_grounded_share <= 1.0:
            raise ValueError(f"cold_grounded_share must lie in [0, 1], got {self.cold_grounded_share}")

    @property
    def path(self) -> Path:
        return Path(self.out_dir) / self.name

    @property
    def k(self) -> int:
        """K: candidates per question (`select.samples_per_item`, which the pass@K band is checked against)."""
        return self.select.samples_per_item


def load(path: str | Path | None = None, overrides: list[str] | None = None) -> LoopConfig:
    """The loop's config from its defaults, a YAML file (path or named config) and `key=value` overrides.

    Raises:
        mgrd.config.ConfigKeyError: an unknown key (named, with the closest known one) or a bad value.
    """
    from mgrd.config import load_config

    return load_config(LoopConfig, path, overrides)


# ---------------------------------------------------------------------------------------------- state


def stage_dir(root: Path, t: int, stage: str) -> Path:
    return root / f"iter_{t}" / stage


def is_done(folder: Path) -> bool:
    return (folder / DONE).is_file()


def read_done(folder: Path) -> dict:
    return json.loads((folder / DONE).read_text()) if is_done(folder) else {}


def mark_done(folder: Path, info: dict | None = None) -> None:
    """Write the stage's done marker (atomically: a kill leaves it whole or absent)."""
    from mgrd.atomic import atomic_write

    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / DONE, (json.dumps(info or {}, indent=2, default=str) + "\n").encode())


def stages_of(t: int) -> tuple[str, ...]:
    return COLD_STAGES if t == 0 else STAGES


def model_after(root: Path, cfg: LoopConfig, t: int) -> Path:
    """The model iteration t hands on (module docstring); raises LoopError when it does not exist yet."""
    for stage in ("rl", "sft", "perceive"):
        folder = stage_dir(root, t, stage)
        if is_done(folder) and not read_done(folder).get("skipped"):
            return folder / "final"
    if t > 0:
        return model_after(root, cfg, t - 1)
    if cfg.model is None:
        raise LoopError("iteration 0 has no model: the cold start has not run")
    return Path(cfg.model)


def progress_of(root: Path, cfg: LoopConfig) -> list[tuple[int, str, bool]]:
    """(iteration, stage, finished) for every stage of the run, in order."""
    return [(t, s, is_done(stage_dir(root, t, s))) for t in range(cfg.iterations + 1) for s in stages_of(t)]


# ---------------------------------------------------------------------------------------------- context


@dataclass
class Context:
    """What every stage reads: the config, the run folder and the suites' manifests."""

    cfg: LoopConfig
    root: Path
    manifests: dict[str, Path]  # split -> manifest path

    def items(self, split: str) -> list:
        from mgrd.data.manifest import load_manifest

        return list(load_manifest(self.manifests[split]))


def _manifest(path: str | Path, what: str) -> Path:
    path = Path(path)
    path = path / "manifest.jsonl" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"data.{what}: {path} not found (a manifest or a suite folder with manifest.jsonl)")
    return path


def prepare_data(cfg: LoopConfig, root: Path) -> dict[str, Path]:
    """The manifests of train, the evaluated splits and the pool (when one is set): the given ones, or the
    synthetic suite written once into `root/data/`."""
    sizes = {"train": cfg.data.synth_train, "dev": cfg.data.synth_dev, "test": cfg.data.synth_test,
             "ood": cfg.data.synth_ood, "pool": cfg.data.synth_pool}
    pool = ("pool",) if cfg.data.pool is not None or cfg.data.synth_pool > 0 else ()
    out = {}
    for split in ("train", *cfg.eval.splits, *pool):
        given = getattr(cfg.data, split)
        if given is not None:
            out[split] = _manifest(given, split)
            continue
        folder = root / "data" / split
        if not (folder / "manifest.jsonl").is_file():
            from mgrd.data.synth.writer import synthesize

            # the writer builds the suite in a temp folder and swaps it in: a kill leaves no half suite
            synthesize(folder, n=sizes[split], seed=cfg.data.synth_seed, families=list(cfg.data.synth_families),
                       split=split, overwrite=True, workers=1, progress=cfg.progress)
        out[split] = folder / "manifest.jsonl"
    return out


def _check_model(cfg: LoopConfig) -> None:
    if cfg.model is not None and not (Path(cfg.model) / "config.json").is_file():
        raise FileNotFoundError(f"model: {cfg.model} is not a checkpoint folder (no config.json there)")


def _prepare_root(cfg: LoopConfig, resume: bool) -> Path:
    """Create the run folder and write `config.yaml`; a rerun with another config needs --resume."""
    root = cfg.path
    resolved = yaml.safe_dump(_plain(cfg), sort_keys=False)
    path = root / "config.yaml"
    if resume and not path.is_file():
        raise LoopError(f"--resume: {root} holds no loop run (no config.yaml)")
    if path.is_file() and path.read_text() != resolved:
        if not resume:
            raise LoopError(f"{root} holds a loop run with another config; pass --resume to continue it with this "
                            "one (unfinished stages use the new settings), or choose another name")
        log.warning("%s: config changed; unfinished stages use the new settings", root)
    root.mkdir(parents=True, exist_ok=True)
    from mgrd.atomic import atomic_write

    atomic_write(path, resolved.encode())
    return root


def _plain(obj) -> Any:
    from mgrd.config import to_dict

    return json.loads(json.dumps(to_dict(obj), default=str))


# ---------------------------------------------------------------------------------------------- the run


def run(cfg: LoopConfig, resume: bool = False, stop_after: tuple[int, str] | None = None) -> Path:
    """Run (or continue) the loop; returns the run folder.

    Args:
        cfg: the loop's settings.
        resume: continue a run whose config changed since (a rerun with the same config always continues).
        stop_after: (iteration, stage): return once that stage is finished (tests of resume; `--stop-after`).
    Raises:
        LoopError / ValueError / FileNotFoundError: bad data, model or settings (one line).
    """
    _check_model(cfg)
    root = _prepare_root(cfg, resume)
    ctx = Context(cfg, root, prepare_data(cfg, root))
    for t in range(cfg.iterations + 1):
        for stage in stages_of(t):
            folder = stage_dir(root, t, stage)
            if not is_done(folder):
                start = time.time()
                print(f"loop {cfg.name}: iteration {t}, {stage}", file=sys.stderr)
                info = STAGE_FNS[stage](ctx, t, folder) or {}
                wall = time.time() - start
                if not is_done(folder):  # the training stages' RunDir has written its own marker
                    mark_done(folder, {**info, "wall_s": round(wall, 2)})
                _log_stage(root, t, stage, wall, info)
            if stop_after == (t, stage):
                return root
        from mgrd.loop.report import write_report

        write_report(root)
    _publish_final(root, cfg)
    return root


def _log_stage(root: Path, t: int, stage: str, wall: float, info: dict) -> None:
    from mgrd.data.records import append_json_lines

    row = {"iteration": t, "stage": stage, "wall_s": round(wall, 2), "time": round(time.time(), 3),
           "skipped": info.get("skipped")}
    append_json_lines(root / "stages.jsonl", [row])  # a line torn by a kill is cut off before the next one


def _publish_final(root: Path, cfg: LoopConfig) -> None:
    """`root/final/`: a copy of the last model (hard links where the file system allows), swapped in atomically."""
    from mgrd.atomic import atomic_folder

    source = model_after(root, cfg, cfg.iterations)
    with atomic_folder(root / "final", overwrite=True) as tmp:
        for path in Path(source).iterdir():
            if path.is_file():
                try:
                    os.link(path, tmp / path.name)
                except OSError:
                    shutil.copy2(path, tmp / path.name)
    (root / "final" / "SOURCE").write_text(f"{source}\n")


# ---------------------------------------------------------------------------------------------- stages


def _stage_overrides(stage: StageSetup, mine: list[str]) -> list[str]:
    return mine + list(stage.overrides)


def _set(key: str, value) -> str:
    return f"{key}={json.dumps(value)}"


def _fresh_training_folder(folder: Path) -> bool:
    """Whether a training stage's folder can resume: it holds a checkpoint. Without one, whatever a killed
    attempt left (metrics rows, config) is removed so the stage starts cleanly."""
    checkpoints = folder / "checkpoints"
    if checkpoints.is_dir() and any(p.name.startswith("step_") for p in checkpoints.iterdir()):
        return True
    if folder.exists():
        shutil.rmtree(folder)
    return False


def stage_perceive(ctx: Context, t: int, folder: Path) -> dict | None:
    """Iteration 0: perception pretraining of the start model's encoder (`mgrd.train.perceive`); skipped when
    `perceive.steps` is 0. Resumes from its newest checkpoint."""
    from mgrd.train import perceive

    cfg = ctx.cfg
    if cfg.perceive.steps == 0:
        mark_done(folder, {"skipped": "perceive.steps=0"})
        return {"skipped": "perceive.steps=0"}
    _fresh_training_folder(folder)
    perceive.run(cfg.perceive, folder, model=cfg.model, seed=cfg.seed, device=str(_device(cfg.device)),
                 progress=cfg.progress)
    return {}


def stage_cold_sft(ctx: Context, folder: Path) -> dict:
    """Iteration 0: SFT of the start model on the train split (text CoT, audio QA with an empty think, and a
    share of the suite's grounded audio chains); skipped with `cold_start=false`."""
    from mgrd.train import sft

    cfg = ctx.cfg
    if not cfg.cold_start:
        mark_done(folder, {"skipped": "cold_start=false"})
        return {"skipped": "cold_start=false"}
    train = str(ctx.manifests["train"])
    mine = [_set("run.name", folder.name), _set("run.out_dir", str(folder.parent)), _set("run.seed", cfg.seed),
            _set("run.device", cfg.device), _set("run.progress", cfg.progress),
            _set("data.task_cot", {"manifests": [train], "weight": 1.0}),
            _set("data.conversation", {"manifests": [train], "weight": 0.5}),
            _set("data.audio_qa", {"manifests": [train], "weight": 1.0, "style": "none"}),
            _set("data.audio_cot", {"manifests": [train], "weight": cfg.cold_audio_cot_weight, "style": "grounded"}),
            _set("eval.manifests", [])]
    if cfg.cold_grounded_share < 1.0:
        styled = ctx.root / "iter_0" / "cold_audio_cot.jsonl"
        _write_styled_chains(ctx.items("train"), cfg.cold_grounded_share, styled, cfg.seed)
        mine.append(_set("data.audio_cot", {"manifests": [str(styled)], "weight": cfg.cold_audio_cot_weight,
                                            "style": None}))
    perceived = stage_dir(ctx.root, 0, "perceive")
    start = perceived / "final" if is_done(perceived) and not read_done(perceived).get("skipped") else cfg.model
    if start is not None:
        mine.append(_set("model.path", str(start)))
    resume = _fresh_training_folder(folder)
    scfg = sft.load(sft.SFTConfig, cfg.cold_sft.config, _stage_overrides(cfg.cold_sft, mine) +
                    [f"run.resume={str(resume).lower()}"])
    sft.run(scfg)
    return {}


def _write_styled_chains(items: list, share: float, path: Path, seed: int) -> None:
    """The cold start's audio CoT manifest when `cold_grounded_share` < 1: every audio item with both reference
    chains, a seeded `share` of them (per family, rounded) taught with the grounded chain and the true answer, the
    rest with the text-substitute chain and the answer that chain reaches (`meta["substitute_answer"]`, the guess
    from the wording: a chain and answer that agree, as a model reasoning from text alone writes them; the true
    answers stay taught by the audio QA source). Deterministic: a resumed stage writes the same file."""
    import numpy as np

    from mgrd.data.manifest import write_manifest

    rng = np.random.default_rng(seed)
    out, by_task = [], {}
    for item in items:
        if item.audio and {"grounded", "text_substitute"} <= set(item.reasonings):
            by_task.setdefault(item.task, []).append(item)
    for task in sorted(by_task):
        group = by_task[task]
        grounded = set(rng.permutation(len(group))[: round(share * len(group))].tolist())
        for i, item in enumerate(group):
            if i in grounded:
                out.append(dataclasses.replace(item, reasoning=item.reasonings["grounded"], reasoning_style="grounded"))
            else:
                out.append(dataclasses.replace(item, reasoning=item.reasonings["text_substitute"],
                                               reasoning_style="text_substitute",
                                               answer=str(item.meta.get("substitute_answer", item.answer))))
    write_manifest(out, path)


def stage_curate(ctx: Context, t: int, folder: Path) -> dict:
    """The audio questions that need perception, of the pool when there is one (else of the train split), a seeded
    draw of `items_per_iteration` -> questions.jsonl."""
    import numpy as np

    from mgrd.data.manifest import write_manifest
    from mgrd.loop.select import perception_items

    cfg = ctx.cfg
    split = "pool" if "pool" in ctx.manifests else "train"
    items = perception_items(ctx.items(split), source=str(ctx.manifests[split]))
    n = cfg.sample.items_per_iteration
    if n and n < len(items):
        picked = np.random.default_rng([cfg.seed, t]).choice(len(items), n, replace=False)
        items = [items[i] for i in sorted(picked)]
    write_manifest(items, folder / "questions.jsonl")
    return {"questions": len(items)}


def with_prompt_suffix(item, suffix: str) -> dict:
    """The item's row with `suffix` after its question (what sampling asks); unchanged when `suffix` is empty."""
    from mgrd.tasks.grading import as_row

    row = dict(as_row(item))
    if suffix and isinstance(row.get("question"), str):
        row["question"] = f"{row['question']} {suffix}"
    return row


def stage_sample(ctx: Context, t: int, folder: Path) -> dict:
    """K candidates per question from the current model, scored by the filters, appended batch by batch to
    samples.jsonl; a resumed stage keeps the records there and asks only the other questions."""
    import torch
    from tqdm import tqdm

    from mgrd.data.manifest import load_manifest
    from mgrd.data.records import append_records, read_records, records_from_rollout
    from mgrd.loop.filters import score_records
    from mgrd.rollout import rollout
    from mgrd.tasks import get_task
    from mgrd.train.config import ModelSetup
    from mgrd.train.sft import load_model_and_tokenizer

    cfg = ctx.cfg
    questions = list(load_manifest(stage_dir(ctx.root, t, "curate") / "questions.jsonl"))
    samples = folder / "samples.jsonl"
    done = {r.item_id for r in read_records(samples)} if samples.is_file() else set()
    todo = [q for q in questions if q.id not in done]
    model_path = model_after(ctx.root, cfg, t - 1)
    device = _device(cfg.device)
    model, tokenizer = load_model_and_tokenizer(ModelSetup(path=str(model_path)), device, cfg.seed)
    model.eval()
    size = cfg.sample.batch_items
    bar = tqdm(total=len(questions), initial=len(done), desc=f"sample iter {t}", unit="item",
               disable=not cfg.progress, dynamic_ncols=True)
    for start in range(0, len(todo), size):
        chunk = todo[start:start + size]
        rows = [with_prompt_suffix(q, cfg.sample.prompt_suffix) for q in chunk]
        prompts = [get_task(r["task"]).encode_prompt(r, tokenizer, model.config.audio) for r in rows]
        # each batch's seed follows from (seed, iteration, first question's position): a resumed stage draws the
        # same candidates for the questions it still has to ask
        position = questions.index(chunk[0])
        sampling = cfg.sample.sampling
        if sampling.seed is None:
            sampling = dataclasses.replace(sampling, seed=cfg.seed * 1_000_003 + t * 10_007 + position)
        with torch.no_grad():
            batch = rollout(model, prompts, sampling, num_samples=cfg.k, tokenizer=tokenizer)
        records = records_from_rollout(batch, rows, model_name=str(model_path), iteration=t)
        score_records(records, rows, cfg.filters.for_iteration(t))
        append_records(samples, records)
        bar.update(len(chunk))
    bar.close()
    return {"questions": len(questions), "resumed_with": len(done), "model": str(model_path)}


def stage_select(ctx: Context, t: int, folder: Path) -> dict:
    """D_audio-cot(t) -> audio_cot.jsonl, the RL set -> rl_set.jsonl, and the iteration's numbers -> stats.json."""
    from mgrd.data.manifest import load_manifest, write_manifest
    from mgrd.data.records import read_records
    from mgrd.loop import select
    from mgrd.loop.filters import filter_summary
    from mgrd.train.data import kind_of

    cfg = ctx.cfg
    questions = {q.id: q for q in load_manifest(stage_dir(ctx.root, t, "curate") / "questions.jsonl")}
    records = read_records(stage_dir(ctx.root, t, "sample") / "samples.jsonl")
    missing = sorted(set(questions) - {r.item_id for r in records})
    if missing:
        raise LoopError(f"iteration {t}: {len(missing)} question(s) have no samples (first {missing[0]!r}); "
                        "rerun the loop to finish sampling")
    chosen = select.select_audio_cot(records, cfg.select.max_per_item)
    replay = select.replay_items(ctx.items("train"), round(cfg.sft_replay * len(chosen)), seed=cfg.seed + t) \
        if chosen else []
    rows = write_chain_manifest(chosen, questions, folder / "audio_cot.jsonl", replay)
    sc = cfg.select
    hist = select.pass_histogram(records, cfg.k)
    band = select.band_items(records, cfg.k, sc.band_low, sc.band_high)
    text = [item for item in ctx.items("train") if kind_of(item) == "text"]
    rl_set = select.mix_rl_set([questions[i] for i in band], text, sc.text_per_audio, seed=cfg.seed + t) \
        if band else []
    write_manifest(rl_set, folder / "rl_set.jsonl")
    comps = [c for r in records for c in r.completions]
    stats = {"iteration": t, "questions": len(questions), "candidates": len(comps), "kept_chains": len(rows),
             "kept_items": len({r["id"].split("#cot")[0] for r in rows}), "filters": filter_summary(records),
             "pass_hist": hist, "band": [sc.band_low, sc.band_high], "band_items": len(band),
             "rl_items": len(rl_set), "rl_text_items": len(rl_set) - len(band), "replay_chains": len(replay),
             "think_words_mean": sum(len(c.reasoning.split()) for c in comps) / max(len(comps), 1),
             "think_tokens_mean": _mean_think_tokens(comps),
             "closed_think": sum(c.answer is not None for c in comps) / max(len(comps), 1),
             "examples": _examples(records)}
    (folder / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    return {k: stats[k] for k in ("kept_chains", "band_items", "rl_items")}


def write_chain_manifest(chosen, questions: dict, path: Path, replay: list | None = None) -> list[dict]:
    """Write D_audio-cot as a manifest `mgrd sft`'s `audio_cot` source reads: each accepted chain as its item
    (`mgrd.loop.select.audio_cot_items`: id `<item>#cot<j>`, the sampled chain as the grounded reasoning), audio
    paths relative to the manifest's folder as every manifest keeps them; then the `replay` items (train items
    with their reference grounded chain, id `<item>#ref`). Returns the rows of the accepted chains."""
    from mgrd.data.manifest import write_manifest
    from mgrd.loop.select import audio_cot_items

    rows = audio_cot_items(chosen, questions)
    items = [dataclasses.replace(questions[record.item_id], id=row["id"], reasoning=row["reasoning"],
                                 reasoning_style=row["reasoning_style"], reasonings=row["reasonings"])
             for (record, _), row in zip(chosen, rows)]
    items += [dataclasses.replace(item, id=f"{item.id}#ref", reasoning=item.reasonings["grounded"],
                                  reasoning_style="grounded", reasonings={"grounded": item.reasonings["grounded"]})
              for item in replay or []]
    write_manifest(items, path)
    return rows


def _mean_think_tokens(comps) -> float:
    return sum(c.n_tokens for c in comps) / max(len(comps), 1)


def _examples(records, n: int = 3) -> dict[str, list[dict]]:
    """A few accepted and rejected candidates with their filters' verdicts (for the report's table)."""
    from mgrd.loop.filters import FILTERS, passes_all

    out: dict[str, list[dict]] = {"accepted": [], "rejected": []}
    for record in records:
        for c in record.completions:
            kind = "accepted" if passes_all(c) else "rejected"
            if len(out[kind]) < n:
                failed = [f"{name}: {c.scores[name]['reason']}" for name in FILTERS if c.scores[name]["score"] < 1]
                out[kind].append({"item": record.item_id, "reasoning": c.reasoning[:400], "answer": c.answer,
                                  "verdict": "; ".join(failed)[:400] if failed else "all four filters pass"})
    return out


def stage_sft(ctx: Context, t: int, folder: Path) -> dict | None:
    """SFT of the current model on D_audio-cot(t) ∪ D_task; skipped when no chain was accepted."""
    from mgrd.train import sft
    from mgrd.train.data import kind_of

    cfg = ctx.cfg
    if t == 0:
        return stage_cold_sft(ctx, folder)
    chains = stage_dir(ctx.root, t, "select") / "audio_cot.jsonl"
    if not chains.read_text().strip():
        mark_done(folder, {"skipped": "no candidate passed every filter: D_audio-cot is empty"})
        return {"skipped": "empty D_audio-cot"}
    train = str(ctx.manifests["train"])
    mine = [_set("run.name", folder.name), _set("run.out_dir", str(folder.parent)), _set("run.seed", cfg.seed + t),
            _set("run.device", cfg.device), _set("run.progress", cfg.progress),
            _set("model.path", str(model_after(ctx.root, cfg, t - 1))),
            _set("data.task_cot", {"manifests": [train], "weight": 1.0}),
            _set("data.conversation", {"manifests": [], "weight": 0.0}),
            _set("data.audio_qa", {"manifests": [], "weight": 0.0}),
            _set("data.audio_cot", {"manifests": [str(chains)], "weight": cfg.audio_cot_weight, "style": None}),
            _set("eval.manifests", [])]
    resume = _fresh_training_folder(folder)
    overrides = _stage_overrides(cfg.sft, mine) + [f"run.resume={str(resume).lower()}"]
    scfg = sft.load(sft.SFTConfig, cfg.sft.config, overrides)
    n_chains = len(chains.read_text().splitlines())
    has_text = any(kind_of(item) == "text" for item in ctx.items("train"))
    steps = chain_limited_steps(n_chains, scfg.optim.micro_batch_size * scfg.optim.grad_accum,
                                cfg.audio_cot_weight / (cfg.audio_cot_weight + 1.0) if has_text else 1.0,
                                cfg.sft_chain_epochs, scfg.run.max_steps)
    if steps != scfg.run.max_steps:
        scfg = sft.load(sft.SFTConfig, cfg.sft.config, overrides + [f"run.max_steps={steps}"])
    sft.run(scfg)
    return {"steps": steps, "chains": n_chains}


def chain_limited_steps(n_chains: int, batch: int, share: float, epochs: float, max_steps: int) -> int:
    """Optimiser steps after which `n_chains` chains drawn at mixing `share` of `batch` examples per step have
    been seen `epochs` times over: `ceil(epochs * n_chains / (batch * share))`, within [1, max_steps]
    (`epochs` 0: max_steps)."""
    if epochs <= 0:
        return max_steps
    return max(1, min(max_steps, math.ceil(epochs * n_chains / (batch * share))))


def stage_rl(ctx: Context, t: int, folder: Path) -> dict | None:
    """RL of the SFT model on the pass@K band mixed with text tasks; skipped when off or the band is empty."""
    from mgrd.train import rl

    cfg = ctx.cfg
    rl_set = stage_dir(ctx.root, t, "select") / "rl_set.jsonl"
    reason = None if cfg.rl_enabled else "rl_enabled=false"
    if reason is None and not rl_set.read_text().strip():
        reason = f"no item with pass@K in [{cfg.select.band_low}, {cfg.select.band_high}]"
    if reason is not None:
        mark_done(folder, {"skipped": reason})
        return {"skipped": reason}
    start = stage_dir(ctx.root, t, "sft")
    model = start / "final" if not read_done(start).get("skipped") else model_after(ctx.root, cfg, t - 1)
    mine = [_set("run.name", folder.name), _set("run.out_dir", str(folder.parent)), _set("run.seed", cfg.seed + t),
            _set("run.device", cfg.device), _set("run.progress", cfg.progress), _set("model.path", str(model)),
            _set("data.manifests", [str(rl_set)]), _set("data.synth_families", [])]
    resume = _fresh_training_folder(folder)
    rl.run(_load_rl(cfg, mine + [f"run.resume={str(resume).lower()}"]))
    return {}


def _load_rl(cfg: LoopConfig, mine: list[str]):
    """The RL stage's config: its named config, the loop's settings (`mine`, then `rl_reward`), its overrides."""
    from mgrd.config import load_config
    from mgrd.train.rl import RLConfig

    reward = [_set("reward.functions", dict(cfg.rl_reward))] if cfg.rl_reward is not None else []
    return load_config(RLConfig, cfg.rl.config, _stage_overrides(cfg.rl, mine + reward))


def stage_eval(ctx: Context, t: int, folder: Path) -> dict:
    """Greedy evaluation of the iteration's model on `eval.splits` (`mgrd eval`'s harness)."""
    from mgrd.eval.harness import EvalConfig
    from mgrd.eval.harness import run as run_eval

    cfg = ctx.cfg
    model = model_after(ctx.root, cfg, t)
    out = {}
    for split in cfg.eval.splits:
        ecfg = EvalConfig(task="synthetic", data=ctx.manifests[split], out=folder / split, model=model,
                          limit=cfg.eval.max_items or None, batch_size=cfg.eval.batch_size,
                          device=str(_device(cfg.device)),
                          sampling=SamplingConfig(max_new_tokens=cfg.eval.max_new_tokens, temperature=0.0),
                          report=False, progress=cfg.progress)
        summary = run_eval(ecfg)
        out[split] = summary["overall"]["normalised"]
    return {"model": str(model), "accuracy": out}


STAGE_FNS: dict[str, Callable[[Context, int, Path], dict | None]] = {
    "perceive": stage_perceive, "curate": stage_curate, "sample": stage_sample, "select": stage_select,
    "sft": stage_sft, "rl": stage_rl,
    "eval": stage_eval}


def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
