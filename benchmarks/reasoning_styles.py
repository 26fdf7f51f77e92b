"""Benchmark: direct answers vs text-substitute chains vs grounded chains at matched training compute.

The report's central finding in miniature (DESIGN §6): on compositional listening items, reasoning that states
what was heard should beat a direct answer, and reasoning that argues from the wording alone should do worse
than both, i.e. (ii) text_substitute < (i) direct < (iii) grounded. For each seed this script

1. perception-pretrains a fresh tiny model's encoder (`mgrd.train.perceive`, once per seed: the common start
   model of that seed's three arms);
2. fine-tunes three arms from it with the same optimiser steps, batch, learning rate and schedule, on the same
   training items, differing only in the target's think block:
   (i)   direct:          `audio_qa`,  style none            (`<think>\\n\\n</think>\\n answer`)
   (ii)  text_substitute: `audio_cot`, style text_substitute (argues from the wording, picks blind to the audio)
   (iii) grounded:        `audio_cot`, style grounded        (cites the measured pitches, durations, levels)
3. answers the held-out `dev` items (new items of the training distribution: the main number) and the `test`
   items (disjoint parameter ranges) greedily with `mgrd eval`'s local-model path.

The data suites are written once (fixed suite seeds); the seed changes the model init, the perception scenes
and the SFT data order. Printed and written to `--out`: per arm and split, accuracy mean and spread (sample
std) over seeds, per family too; the mean think length; accuracy by think-length bucket (equal-count buckets
over the arm's answers, all seeds pooled); how often a chain's own "The answer is X" agrees with the final
answer; the grounding filter's share of verified claims; the target tokens each arm trained on. Files:
`results.json` (all numbers), `think_length.png` (accuracy vs think length per arm, dev and test).

Run: `python benchmarks/reasoning_styles.py` (defaults sized for ~20-25 min on a shared 2-core CPU);
smoke: `--steps 10 --perceive-steps 10 --n-train 40 --n-dev 8 --n-test 8 --out /tmp/rs`. A rerun into the same
`--out` skips finished stages (delete the folder to start over).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import multiprocessing as mp
import os
import platform
import re
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ARMS = {  # arm -> (SFT source, think style); the report's labels (i), (ii), (iii)
    "direct": ("audio_qa", "none"),
    "text_substitute": ("audio_cot", "text_substitute"),
    "grounded": ("audio_cot", "grounded"),
}
ARM_LABEL = {"direct": "(i) direct", "text_substitute": "(ii) text_substitute", "grounded": "(iii) grounded"}
SPLITS = ("dev", "test")
CONCLUSION = re.compile(r"the answer is\s+([^\s.]+)", re.IGNORECASE)


# ---------------------------------------------------------------------------------------------- arguments

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (module docstring)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/reasoning_styles", help="output folder (default runs/reasoning_styles)")
    p.add_argument("--seeds", default="0,1", help="comma-separated training seeds (default 0,1)")
    p.add_argument("--families", default="higher_longer,louder_beeps",
                   help="comma-separated families, compositional or single-fact (default higher_longer,louder_beeps)")
    p.add_argument("--n-train", type=int, default=2000, help="training items over all families (default 2000)")
    p.add_argument("--n-dev", type=int, default=120, help="dev items (training distribution, held out; default 120)")
    p.add_argument("--n-test", type=int, default=60, help="test items (disjoint parameter ranges; default 60)")
    p.add_argument("--steps", type=int, default=500, help="SFT optimiser steps, every arm (default 500)")
    p.add_argument("--batch", type=int, default=8, help="sequences per optimiser step, every arm (default 8)")
    p.add_argument("--micro-batch", type=int, default=8, help="sequences per forward (performance only; default 8)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak SFT learning rate, cosine to 10%% (default 1e-3)")
    p.add_argument("--warmup", type=int, default=20, help="SFT warm-up steps (default 20)")
    p.add_argument("--perceive-steps", type=int, default=500, help="perception pretraining steps (default 500)")
    p.add_argument("--max-new-tokens", type=int, default=160,
                   help="answer budget at evaluation (chains are 65-95 tokens; default 160)")
    p.add_argument("--buckets", type=int, default=4, help="think-length buckets per arm (default 4)")
    p.add_argument("--device", default="cpu", help="torch device for training and evaluation (default cpu)")
    p.add_argument("--jobs", type=int, default=2, help="processes in parallel (default 2)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the train/dev/test suites (default 0)")
    args = p.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    args.families = [f.strip() for f in args.families.split(",") if f.strip()]
    if args.batch % args.micro_batch:
        p.error("--batch must be a multiple of --micro-batch")
    return args


# ---------------------------------------------------------------------------------------------- stages

def _init_worker(threads: int) -> None:
    """Pin each worker process to `threads` torch threads (the machine is shared)."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)


def make_suites(args: argparse.Namespace, out: Path) -> dict[str, Path]:
    """Write (or reuse) the train, dev and test suites; returns split -> suite folder."""
    from mgrd.data.synth.writer import synthesize

    sizes = {"train": args.n_train, "dev": args.n_dev, "test": args.n_test}
    suites = {}
    for split, n in sizes.items():
        folder = out / "data" / split
        if not (folder / "manifest.jsonl").is_file():
            synthesize(folder, n=n, seed=args.data_seed, families=args.families, split=split, progress=False)
        suites[split] = folder
    return suites


def perceive_job(seed: int, out: Path, steps: int, device: str) -> str:
    """Perception-pretrain a fresh tiny model from `seed` into `out` (skipped when done); returns final/."""
    from mgrd.train.perceive import PerceiveConfig, run

    if (out / "done.json").is_file():
        return str(out / "final")
    return str(run(PerceiveConfig(steps=steps), out, seed=seed, device=device, progress=False))


def sft_overrides(arm: str, args: argparse.Namespace, seed: int, start: str, train: Path, out: Path) -> list[str]:
    """The `mgrd sft` overrides of one arm: everything but the source and style is shared by the arms."""
    source, style = ARMS[arm]
    manifest = str(train / "manifest.jsonl")
    sources = [f"data.{name}={{manifests: [], weight: 0.0}}" for name in ("task_cot", "conversation", "audio_qa",
                                                                           "audio_cot") if name != source]
    return sources + [
        f"data.{source}={{manifests: [{manifest}], weight: 1.0, style: {style}}}",
        f"model.path={start}", f"run.name={arm}", f"run.out_dir={out}", f"run.seed={seed}",
        f"run.device={args.device}", f"run.max_steps={args.steps}", "run.eval_every=0", "run.save_every=0",
        "run.progress=false", "run.tensorboard=false", f"optim.lr={args.lr}", f"optim.warmup_steps={args.warmup}",
        f"optim.micro_batch_size={args.micro_batch}", f"optim.grad_accum={args.batch // args.micro_batch}",
        "eval.manifests=[]", "data.max_length=1024",
    ]


def evaluate(model: Path, suite: Path, out: Path, args: argparse.Namespace) -> Path:
    """Greedy answers of `model` on `suite` into `out` (`mgrd eval` resumes a partial run); returns `out`."""
    from mgrd.eval.harness import EvalConfig, run
    from mgrd.generate import SamplingConfig

    cfg = EvalConfig(task="synthetic", data=suite, out=out, model=model, device=args.device, batch_size=16,
                     sampling=SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=0.0),
                     report=False, progress=False)
    run(cfg)
    return out


def arm_job(arm: str, seed: int, start: str, suites: dict[str, Path], out: Path, args: argparse.Namespace) -> dict:
    """Train one arm of one seed and evaluate it on every split; returns timings and trained target tokens."""
    from mgrd.train.config import load
    from mgrd.train.sft import SFTConfig, run

    t0 = time.time()
    run_dir = out / arm
    if not (run_dir / "done.json").is_file():
        run(load(SFTConfig, None, sft_overrides(arm, args, seed, start, suites["train"], out)))
    t1 = time.time()
    for split in SPLITS:
        evaluate(run_dir / "final", suites[split], out / f"eval_{split}_{arm}", args)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    tokens = sum(r.get("tokens", 0) for r in rows if "loss" in r)
    return {"arm": arm, "seed": seed, "train_s": round(t1 - t0, 1), "eval_s": round(time.time() - t1, 1),
            "target_tokens": tokens, "final_loss": next((r["loss"] for r in reversed(rows) if "loss" in r), None)}


# ---------------------------------------------------------------------------------------------- reading runs

@functools.cache
def _tokenizer():
    """The tiny preset's offline tokenizer (the one every arm's checkpoint carries)."""
    from mgrd.tokenizer import build_tiny_tokenizer

    return build_tiny_tokenizer()


def chain_tokens(reasoning: str) -> int:
    """Think length: tokens of the chain text itself (0 for the empty think block; a chain cut off by the token
    budget counts whole)."""
    text = reasoning.strip()
    return len(_tokenizer()(text, add_special_tokens=False)["input_ids"]) if text else 0


def claim_check(reasoning: str, meta: dict | None) -> list[tuple[str, bool]]:
    """(claim kind, true) per checkable claim of a chain against the item's true facts (`mgrd.grounding.claims`);
    the kind names what is claimed (`_kind`)."""
    from mgrd.grounding.claims import extract_claims, facts_from_meta, verify_claims

    facts = facts_from_meta(meta) if meta and reasoning.strip() else {}
    if not facts:
        return []
    checks = [c for c in verify_claims(extract_claims(reasoning), facts) if c.status != "unverifiable"]
    return [(_kind(c.claim), c.status == "supported") for c in checks]


def _kind(claim) -> str:
    """A claim's kind for the tally: 'hz', 's duration', 'compare pitch', 'count louder_than_first', ..."""
    parts = [] if claim.kind == "quantity" else [claim.kind]
    return " ".join(parts + [x for x in (claim.dim, claim.role) if x and x not in parts])


def read_samples(run: Path) -> list[dict]:
    """One row per answered item: family, correct (0/1), think length in tokens, chain text, final answer, and
    the chain's checkable claims (`claim_check`)."""
    rows = []
    for line in (run / "samples.jsonl").read_text().splitlines():
        rec = json.loads(line)
        comp = rec["completions"][0] if rec["completions"] else {}
        verdict = rec["extra"]["verdict"]
        reasoning = comp.get("reasoning") or ""
        rows.append({"family": rec["task"], "correct": float(verdict.get("normalised") or 0.0),
                     "think": chain_tokens(reasoning), "reasoning": reasoning, "answer": comp.get("answer"),
                     "claims": claim_check(reasoning, rec["extra"]["fields"].get("meta"))})
    return rows


def chain_agrees(row: dict) -> bool | None:
    """Whether the chain's own "The answer is X" equals the final answer; None without a conclusion."""
    found = CONCLUSION.findall(row["reasoning"])
    if not found or row["answer"] is None:
        return None
    return found[-1].strip().lower() == row["answer"].strip().strip(".").lower()


def accuracy(rows: list[dict]) -> float:
    """Accuracy in % of rows (nan when empty)."""
    return 100 * sum(r["correct"] for r in rows) / len(rows) if rows else math.nan


def spread(values: list[float]) -> tuple[float, float]:
    """(mean, sample std) of per-seed values; std 0 for one seed."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise_arm(runs: dict[int, Path], families: list[str], n_buckets: int) -> dict:
    """Numbers of one arm on one split from its per-seed eval folders."""
    from mgrd.eval.metrics import length_buckets

    per_seed = {s: read_samples(p) for s, p in runs.items()}
    pooled = [r for rows in per_seed.values() for r in rows]
    accs = [accuracy(rows) for rows in per_seed.values()]
    agree = [a for a in (chain_agrees(r) for r in pooled) if a is not None]
    grounding = [json.loads((p / "summary.json").read_text()).get("grounding", {}) for p in runs.values()]
    mean, std = spread(accs)
    return {
        "accuracy": {"mean": mean, "std": std, "per_seed": dict(zip(runs, accs))},
        "families": {f: dict(zip(("mean", "std"), spread([accuracy([r for r in rows if r["family"] == f])
                                                         for rows in per_seed.values()]))) for f in families},
        "think_mean": statistics.fmean(r["think"] for r in pooled),
        "chain_share": 100 * sum(r["think"] > 0 for r in pooled) / len(pooled),
        "cut_off": 100 * sum(r["answer"] is None for r in pooled) / len(pooled),
        "agree": 100 * sum(agree) / len(agree) if agree else None,
        "claim_kinds": _claim_kinds(pooled),
        "buckets": length_buckets([r["think"] for r in pooled], [r["correct"] for r in pooled], n_buckets),
        "bucket_means": _bucket_means(pooled, n_buckets),
        "grounding": grounding,
        "n_per_seed": len(pooled) // max(len(per_seed), 1),
    }


def _claim_kinds(rows: list[dict]) -> dict[str, dict]:
    """Per family and claim kind: how many claims the chains made and the % that are true."""
    tally: dict[str, list[int]] = {}
    for r in rows:
        for kind, true in r["claims"]:
            t = tally.setdefault(f"{r['family']}: {kind}", [0, 0])
            t[0] += 1
            t[1] += true
    return {k: {"n": n, "true": 100 * ok / n} for k, (n, ok) in sorted(tally.items())}


def _bucket_means(rows: list[dict], n_buckets: int) -> list[float]:
    """Mean think length inside each `length_buckets` bucket (the plot's x positions)."""
    from mgrd.eval.metrics import length_buckets

    lengths = [r["think"] for r in rows]
    out = []
    for b in length_buckets(lengths, [0.0] * len(rows), n_buckets):
        inside = [n for n in lengths if b["lo"] <= n <= b["hi"]]
        out.append(statistics.fmean(inside))
    return out


# ---------------------------------------------------------------------------------------------- output

def _claims(grounding: list[dict]) -> str:
    """The verified share of checked claims over seeds, e.g. '42 % (310)'; '-' when none were checked."""
    checked = verified = 0.0
    for g in grounding:
        n = g.get("claims_checked") or 0
        checked += n
        verified += n * (g.get("verified_claim_rate") or 0.0)
    return f"{100 * verified / checked:.0f} % ({checked:.0f})" if checked else "-"


def table(results: dict, families: list[str]) -> str:
    """The markdown table: per split and arm, accuracy mean ± std, per family, think length, buckets."""
    fam_cols = " | ".join(families)
    lines = [f"| split | arm | accuracy % (mean ± std; per seed) | {fam_cols} | think tokens (mean) | "
             "chain / cut off | chain agrees with answer | claims verified | accuracy by think length |",
             "|---|---|---:|" + "---:|" * len(families) + "---:|---:|---:|---:|---|"]
    for split, arms in results["splits"].items():
        for arm, r in arms.items():
            fams = " | ".join(f"{r['families'][f]['mean']:.1f} ± {r['families'][f]['std']:.1f}" for f in families)
            buckets = "; ".join(f"{b['lo']}-{b['hi']}: {b['accuracy']:.0f} % ({b['n']})" for b in r["buckets"])
            agree = "-" if r["agree"] is None else f"{r['agree']:.0f} %"
            seeds = ", ".join(f"{a:.1f}" for a in r["accuracy"]["per_seed"].values())
            acc = f"**{r['accuracy']['mean']:.1f} ± {r['accuracy']['std']:.1f}** ({seeds})"
            chains = f"{r['chain_share']:.0f} % / {r['cut_off']:.0f} %"
            lines.append(f"| {split} | {ARM_LABEL[arm]} | {acc} | {fams} | {r['think_mean']:.1f} | {chains} | "
                         f"{agree} | {_claims(r['grounding'])} | {buckets} |")
    return "\n".join(lines)


def claim_lines(results: dict) -> str:
    """One line per split and chain arm: the % of true claims by family and kind (n claims)."""
    lines = []
    for split, arms in results["splits"].items():
        for arm, r in arms.items():
            if r["claim_kinds"]:
                kinds = "; ".join(f"{k} {v['true']:.0f} % ({v['n']})" for k, v in r["claim_kinds"].items())
                lines.append(f"claims true, {split} {arm}: {kinds}")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    """Accuracy vs think length (bucket mean), one line per arm, one panel per split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = results["splits"]
    fig, axes = plt.subplots(1, len(splits), figsize=(5.5 * len(splits), 4), squeeze=False)
    for ax, (split, arms) in zip(axes[0], splits.items()):
        for arm, r in arms.items():
            xs, ys = r["bucket_means"], [b["accuracy"] for b in r["buckets"]]
            ax.plot(xs, ys, marker="o", label=f"{ARM_LABEL[arm]} ({r['accuracy']['mean']:.0f} %)")
        ax.axhline(results["chance"], color="grey", linestyle=":", label="chance (mean over families)")
        ax.set(title=f"{split} items", xlabel="think length (tokens, bucket mean)", ylabel="accuracy (%)",
               ylim=(0, 100))
        ax.legend(fontsize=8)
    fig.suptitle(f"reasoning styles at matched compute ({results['config']['steps']} steps, "
                 f"{len(results['config']['seeds'])} seeds pooled)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def chance(suite: Path) -> float:
    """Chance accuracy in % on a suite: 1 / options per item (numeric answers 0-4 for louder_beeps: 1/5)."""
    rows = [json.loads(line) for line in (suite / "manifest.jsonl").read_text().splitlines() if line.strip()]
    numeric = {"louder_beeps": 5, "beep_count": 6}
    odds = [1 / (len(r["choices"]) if r.get("choices") else numeric.get(r["task"], 5)) for r in rows]
    return 100 * statistics.fmean(odds)


# ---------------------------------------------------------------------------------------------- main

def run_all(args: argparse.Namespace, out: Path, suites: dict[str, Path]) -> list[dict]:
    """Perceive per seed, then every (seed, arm) job, `--jobs` processes at a time; returns the jobs' infos."""
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(args.jobs, mp_context=ctx, initializer=_init_worker, initargs=(args.threads,)) as pool:
        starts = dict(zip(args.seeds, pool.map(perceive_job, args.seeds,
                                               [out / f"seed{s}" / "perceive" for s in args.seeds],
                                               [args.perceive_steps] * len(args.seeds),
                                               [args.device] * len(args.seeds))))
        print(f"perceive done: {starts}", flush=True)
        futures = [pool.submit(arm_job, arm, s, starts[s], suites, out / f"seed{s}", args)
                   for s in args.seeds for arm in ARMS]
        infos = []
        for fut in futures:
            infos.append(fut.result())
            print(f"done: {infos[-1]}", flush=True)
    return infos


def main(argv: list[str] | None = None) -> None:
    """Run every stage, print the table, write results.json and think_length.png."""
    args = parse_args(argv)
    out = Path(args.out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; "
          f"{args.jobs} jobs x {args.threads} thread(s)", flush=True)
    suites = make_suites(args, out)
    infos = run_all(args, out, suites)
    results = {"config": {k: v for k, v in vars(args).items()}, "jobs": infos, "chance": chance(suites["dev"]),
               "splits": {split: {arm: summarise_arm({s: out / f"seed{s}" / f"eval_{split}_{arm}" for s in args.seeds},
                                                     args.families, args.buckets) for arm in ARMS}
                          for split in SPLITS}}
    results["target_tokens"] = {arm: statistics.fmean(i["target_tokens"] for i in infos if i["arm"] == arm)
                                for arm in ARMS}
    results["wall_s"] = round(time.time() - start, 1)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    plot(results, out / "think_length.png")
    print(table(results, args.families))
    print(claim_lines(results))
    print("target tokens trained per arm (mean over seeds): "
          + ", ".join(f"{a} {t:,.0f}" for a, t in results["target_tokens"].items()))
    print(f"chance {results['chance']:.1f} %; wall {results['wall_s'] / 60:.1f} min; wrote {out}/results.json, "
          f"{out}/think_length.png")


if __name__ == "__main__":
    main()
