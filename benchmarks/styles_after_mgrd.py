"""Benchmark: the report's central finding with (iii) = the model after the MGRD loop, at matched optimiser steps.

Step-Audio-R1's claim in miniature: on compositional listening items, (ii) reasoning from the wording is worse
than (i) answering directly, which is worse than (iii) reasoning grounded in the sound after MGRD. Unlike
`benchmarks/reasoning_styles.py` (three SFT arms on two families), every arm here is trained as the speedrun
trains (`mgrd loop`, config `loop_tiny`: all six families, perception pretraining, the cold start's data mix),
from the same perceived encoder per seed:

(iii) mgrd:            the loop as configured (`benchmarks/loop_variants.py`'s first variant): the grounded cold start,
                       then T iterations of sampling, filtering, SFT and RL; its last model.
(i)   direct:          a cold start without audio chains (`cold_audio_cot_weight=0`: audio questions answered after
                       an empty think block), and no iterations.
(ii)  text_substitute: a cold start whose audio chains are all the suite's text-substitute ones
                       (`cold_grounded_share=0`: they argue from the wording and end on the answer the wording
                       suggests), and no iterations. `text_substitute_only` (not run by default) also drops the
                       answer-only audio items, so the model always reasons from the wording.
The cold starts of (i) and (ii) run as many optimiser steps as (iii)'s cold start plus all of its iterations' SFT
and RL steps (read from (iii)'s run), so no arm trains longer; (iii)'s own cold start (iteration 0, the grounded
style before MGRD) is reported beside them.

Every model answers the large dev suite of `loop_variants.py` greedily (new items drawn like the training ones);
the table reads its compositional families (`higher_longer`, `louder_beeps`), per seed, with the seeds' spread,
the think length, and accuracy by think length (equal-count buckets, seeds pooled). Written to `--out`:
`styles_after_mgrd.json` and `styles_after_mgrd.png` (accuracy vs think length per arm).

Run: `python benchmarks/styles_after_mgrd.py --out runs/loop_variants` (reuses the loop runs and dev suite
`loop_variants.py` left there; three seeds: about 45 min on a quiet 2-core CPU, 15 min per seed).
Smoke: the `--set` overrides of `loop_variants.py`'s smoke command, with `--dev-items 12 --seeds 0`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loop_variants  # noqa: E402
import reasoning_styles  # noqa: E402

COMPOSITIONAL = ("higher_longer", "louder_beeps")
# arm -> (loop overrides, overrides of its cold-start SFT)
BASELINES = {"direct": (["cold_audio_cot_weight=0.0"], []),
             "text_substitute": (["cold_grounded_share=0.0"], []),
             "text_substitute_only": (["cold_grounded_share=0.0"], ["data.audio_qa={manifests: [], weight: 0.0}"])}
LABEL = {"direct": "(i) direct", "text_substitute": "(ii) text-substitute",
         "text_substitute_only": "(ii') text-substitute, no answer-only audio items",
         "grounded_cold": "grounded cold start", "mgrd": "(iii) after MGRD"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/loop_variants", help="folder of the runs (shared with loop_variants.py)")
    p.add_argument("--config", default="loop_tiny", help="loop config of every arm")
    p.add_argument("--variant", default="x4_x2_x1", choices=list(loop_variants.VARIANTS),
                   help="the loop variant whose last model is arm (iii)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="loop seeds (each its own encoder)")
    p.add_argument("--dev-items", type=int, default=1200, help="items of the large dev suite")
    p.add_argument("--dev-seed", type=int, default=7, help="suite seed of the large dev suite")
    p.add_argument("--buckets", type=int, default=4, help="think-length buckets per arm")
    p.add_argument("--baselines", nargs="+", default=["direct", "text_substitute"], choices=list(BASELINES),
                   help="the cold-start arms to train beside (iii)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="loop config overrides for every arm")
    p.add_argument("--progress", action="store_true", help="show the stages' progress bars")
    return p.parse_args(argv)


def loop_steps(root: Path) -> int:
    """Optimiser steps of a loop run's iterations (SFT and RL, t >= 1), from their metrics files."""
    steps = 0
    for metrics in sorted(root.glob("iter_*/*/metrics.jsonl")):
        if metrics.parts[-3] == "iter_0":
            continue
        rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        steps += max((r["step"] for r in rows if "step" in r), default=0)
    return steps


def baseline_run(args, seed: int, arm: str, mgrd_root: Path, cold_steps: int) -> Path:
    """A cold start of `arm` (no iterations) from the (iii) run's perceived encoder, for `cold_steps` steps."""
    from mgrd.loop import driver

    name = f"s{seed}_{arm}"
    overrides = [f"out_dir={args.out}", f"name={name}", f"seed={seed}", f"progress={str(args.progress).lower()}",
                 *args.set, *BASELINES[arm][0], "iterations=0"]
    cfg = driver.load(args.config, overrides)
    cold = list(cfg.cold_sft.overrides) + BASELINES[arm][1] + [f"run.max_steps={cold_steps}"]
    cfg = driver.load(args.config, overrides + [f"cold_sft.overrides={json.dumps(cold)}"])
    root = cfg.path
    if not root.exists():
        loop_variants.seed_run(mgrd_root, root, ("perceive",))
    settings = " ".join(BASELINES[arm][0] + BASELINES[arm][1])
    print(f"loop {name}: cold start of {cold_steps} steps ({settings})", flush=True)
    return driver.run(cfg, resume=(root / "config.yaml").is_file())


def summarise(folders: dict[int, Path], n_buckets: int) -> dict:
    """One arm's numbers on the compositional dev items (`reasoning_styles.summarise_arm` on a filtered copy)."""
    rows = {}
    for seed, folder in folders.items():
        keep = [line for line in (folder / "samples.jsonl").read_text().splitlines()
                if line.strip() and json.loads(line)["task"] in COMPOSITIONAL]
        part = folder.parent / f"{folder.name}_compositional"
        part.mkdir(exist_ok=True)
        (part / "samples.jsonl").write_text("".join(f"{line}\n" for line in keep))
        shutil.copy2(folder / "summary.json", part / "summary.json")
        rows[seed] = part
    out = reasoning_styles.summarise_arm(rows, list(COMPOSITIONAL), n_buckets)
    out["all_families"] = {s: json.loads((f / "summary.json").read_text())["overall"]["normalised"]
                           for s, f in folders.items()}
    return out


def table(results: dict) -> str:
    lines = ["| arm | compositional acc % (mean ± std; per seed) | higher_longer | louder_beeps | all families % | "
             "think tokens | chain agrees with answer | accuracy by think length (tokens: %, n) |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for arm, r in results["arms"].items():
        a = r["accuracy"]
        seeds = ", ".join(f"{v:.1f}" for v in a["per_seed"].values())
        fam = " | ".join(f"{r['families'][f]['mean']:.1f} ± {r['families'][f]['std']:.1f}" for f in COMPOSITIONAL)
        overall = statistics.fmean(r["all_families"].values())
        agree = "-" if r["agree"] is None else f"{r['agree']:.0f} %"
        buckets = "; ".join(f"{b['lo']}-{b['hi']}: {b['accuracy']:.0f} % ({b['n']})" for b in r["buckets"])
        lines.append(f"| {LABEL[arm]} | **{a['mean']:.1f} ± {a['std']:.1f}** ({seeds}) | {fam} | {overall:.1f} | "
                     f"{r['think_mean']:.1f} | {agree} | {buckets} |")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for arm, r in results["arms"].items():
        ax.plot(r["bucket_means"], [b["accuracy"] for b in r["buckets"]], marker="o",
                label=f"{LABEL[arm]} ({r['accuracy']['mean']:.0f} %)")
    ax.axhline(results["chance"], color="grey", linestyle=":", label="chance")
    ax.set(xlabel="think length (tokens, bucket mean)", ylabel="accuracy (%)", ylim=(0, 100),
           title=f"compositional dev items, {len(results['seeds'])} seeds pooled")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from mgrd.loop import driver

    lv = argparse.Namespace(out=args.out, config=args.config, set=args.set, progress=args.progress,
                            dev_items=args.dev_items, dev_seed=args.dev_seed)
    base_cfg = driver.load(args.config, [f"out_dir={args.out}", *args.set])
    dev = loop_variants.dev_suite(lv, list(base_cfg.data.synth_families))
    folders: dict[str, dict[int, Path]] = {arm: {} for arm in LABEL}
    steps = {}
    for seed in args.seeds:
        mgrd_root = loop_variants.run_variant(lv, seed, args.variant, args.variant)
        cfg = driver.load(mgrd_root / "config.yaml")
        loop_variants.evaluate(mgrd_root, dev, cfg, first=0)
        folders["grounded_cold"][seed] = loop_variants.eval_folder(mgrd_root, 0)
        folders["mgrd"][seed] = loop_variants.eval_folder(mgrd_root, cfg.iterations)
        cold = next(int(o.split("=", 1)[1]) for o in reversed(cfg.cold_sft.overrides) if o.startswith("run.max_steps="))
        steps[seed] = {"cold_start": cold, "iterations": loop_steps(mgrd_root)}
        for arm in args.baselines:
            root = baseline_run(args, seed, arm, mgrd_root, cold + steps[seed]["iterations"])
            loop_variants.evaluate(root, dev, driver.load(root / "config.yaml"))
            folders[arm][seed] = loop_variants.eval_folder(root, 0)
    order = [*args.baselines, "grounded_cold", "mgrd"]
    results = {"seeds": args.seeds, "steps": steps, "chance": reasoning_styles.chance(dev_subset(dev)),
               "arms": {arm: summarise(folders[arm], args.buckets) for arm in order}}
    (Path(args.out) / "styles_after_mgrd.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    plot(results, Path(args.out) / "styles_after_mgrd.png")
    print(f"\noptimiser steps per seed (cold start + iterations; (i) and (ii) ran the sum): {steps}\n")
    print(table(results))
    print(f"\nchance {results['chance']:.1f} %; wrote {args.out}/styles_after_mgrd.json and .png")


def dev_subset(dev: Path) -> Path:
    """The compositional items of the dev suite as a manifest folder (for their chance level)."""
    part = dev.parent / "dev_large_compositional"
    part.mkdir(exist_ok=True)
    rows = [line for line in (dev / "manifest.jsonl").read_text().splitlines()
            if line.strip() and json.loads(line)["task"] in COMPOSITIONAL]
    (part / "manifest.jsonl").write_text("".join(f"{line}\n" for line in rows))
    return part


if __name__ == "__main__":
    main()
