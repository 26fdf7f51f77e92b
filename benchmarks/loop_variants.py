"""Benchmark: does the MGRD loop raise held-out accuracy? Loop variants from one cold start, on a large dev set.

The loop's own dev split moves by several points between iterations by chance alone, so this script measures
every iteration's model on a large separate dev suite (new items drawn like the training ones, another suite seed)
and compares variants of the iterations that share their seed's perceived encoder and cold start:

1. per seed, the first variant runs the whole loop (`mgrd loop`: data, perception pretraining, cold start,
   iterations);
2. every other variant of that seed copies the first one's data and iteration 0 into its own run folder and runs
   only the iterations, with its overrides (`--resume`);
3. each iteration's model (iteration 0 = the cold start) answers the large dev suite greedily, as the loop's own
   evaluation does (`mgrd eval`'s local-model path).

Printed and written to `--out/results.json`: overall accuracy per variant, seed and iteration, the change over the
iterations, and accuracy per family. The default variants are those of benchmarks/RESULTS.md ("Does the loop
raise held-out accuracy?"): the claim tolerance x4 or x2 throughout, x4/x2/x1 by iteration, and x4 with one
reference chain replayed per accepted chain.

Run: `python benchmarks/loop_variants.py` (two seeds, four variants, 1,200 dev items: about 25 min on a quiet
2-core CPU). Smoke: `--seeds 0 --dev-items 12 --set iterations=1 perceive.steps=5 data.synth_train=48
data.synth_dev=12 data.synth_test=6 data.synth_ood=6 sample.items_per_iteration=8 eval.max_items=6
"cold_sft.overrides=[run.max_steps=4]" "sft.overrides=[run.max_steps=2]" "rl.overrides=[run.max_steps=1]"`.
A rerun into the same `--out` continues each run where it stopped (delete the folder to start over).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

VARIANTS = {
    "x4": ["filters.claim_tolerance=4.0", "filters.claim_tolerance_by_iteration=[]"],
    "x2": ["filters.claim_tolerance=2.0", "filters.claim_tolerance_by_iteration=[]"],
    "x4_x2_x1": ["filters.claim_tolerance_by_iteration=[4.0, 2.0, 1.0]"],
    "x4_replay": ["filters.claim_tolerance=4.0", "filters.claim_tolerance_by_iteration=[]", "sft_replay=1.0"],
    # not run by default (RESULTS: "Two more levers"): new items for the iterations, and a 40-step RL stage
    "pool": ["filters.claim_tolerance_by_iteration=[4.0, 2.0, 1.0]", "data.synth_pool=1200"],
    "pool_rl40": ["filters.claim_tolerance_by_iteration=[4.0, 2.0, 1.0]", "data.synth_pool=1200",
                  "rl.overrides=[run.max_steps=40, run.save_every=20, run.tensorboard=false, algo.prompts_per_step=8, "
                  "sampling.max_new_tokens=96, optim.lr=5.0e-5]"],
    # the recipe levers K and band (RESULTS: "K and the band"): 16 samples per question, the band scaled
    # with it (6-12 of 16); and a wider band (1-7 of 8) that sends the hard items to RL too
    "k16": ["filters.claim_tolerance_by_iteration=[4.0, 2.0, 1.0]", "select.samples_per_item=16",
            "select.band_low=6", "select.band_high=12"],
    "band_wide": ["filters.claim_tolerance_by_iteration=[4.0, 2.0, 1.0]", "select.band_low=1", "select.band_high=7"],
}
DEFAULT_VARIANTS = ["x4", "x2", "x4_x2_x1", "x4_replay"]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/loop_variants", help="folder for the runs, the dev suite and results.json")
    p.add_argument("--config", default="loop_tiny", help="loop config every variant starts from")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="loop seeds (each its own cold start)")
    p.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(VARIANTS),
                   help="variants to run; the first one runs the cold start the others reuse")
    p.add_argument("--dev-items", type=int, default=1200, help="items of the large dev suite (spread over the families)")
    p.add_argument("--dev-seed", type=int, default=7, help="suite seed of the large dev suite (not the loop's)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="loop config overrides for every variant (e.g. iterations=2)")
    p.add_argument("--progress", action="store_true", help="show the stages' progress bars")
    return p.parse_args()


def run_variant(args, seed: int, variant: str, first: str) -> Path:
    """Run (or continue) one variant's loop; a variant other than `first` starts from `first`'s iteration 0."""
    from mgrd.loop import driver

    name = f"s{seed}_{variant}"
    overrides = [f"out_dir={args.out}", f"name={name}", f"seed={seed}", f"progress={str(args.progress).lower()}",
                 *args.set, *VARIANTS[variant]]
    cfg = driver.load(args.config, overrides)
    root = cfg.path
    if variant != first and not root.exists():
        base = Path(args.out) / f"s{seed}_{first}"
        seed_run(base, root, driver.COLD_STAGES)
        shutil.copy2(base / "config.yaml", root / "config.yaml")
    print(f"loop {name} ({' '.join(VARIANTS[variant])})", flush=True)
    return driver.run(cfg, resume=(root / "config.yaml").is_file())


def seed_run(base: Path, root: Path, stages: tuple[str, ...]) -> None:
    """Start the run folder `root` from `base`'s: its suites and the finished iteration-0 `stages` (folders and
    their rows of `stages.jsonl`), so the loop run in `root` skips them."""
    root.mkdir(parents=True)
    shutil.copytree(base / "data", root / "data")
    for stage in stages:
        shutil.copytree(base / "iter_0" / stage, root / "iter_0" / stage)
    rows = [line for line in (base / "stages.jsonl").read_text().splitlines()
            if json.loads(line)["iteration"] == 0 and json.loads(line)["stage"] in stages]
    (root / "stages.jsonl").write_text("".join(f"{line}\n" for line in rows))


def eval_folder(root: Path, t: int) -> Path:
    """Where iteration t's model of a run answers the large dev suite."""
    return root / f"iter_{t}" / "eval_dev_large"


def dev_suite(args, families: list[str]) -> Path:
    """The large dev suite, written once."""
    from mgrd.data.synth.writer import synthesize

    path = Path(args.out) / "dev_large"
    if not (path / "manifest.jsonl").is_file():
        synthesize(path, n=args.dev_items, seed=args.dev_seed, families=families, split="dev", progress=False)
    return path


def evaluate(root: Path, dev: Path, cfg, first: int = 0) -> list[dict]:
    """The models of iterations `first`.. on the large dev suite (greedy, the loop's own evaluation settings)."""
    from mgrd.eval.harness import EvalConfig
    from mgrd.eval.harness import run as run_eval
    from mgrd.generate import SamplingConfig
    from mgrd.loop import driver

    out = []
    for t in range(first, cfg.iterations + 1):
        model = driver.model_after(root, cfg, t)
        summary = run_eval(EvalConfig(task="synthetic", data=str(dev), out=eval_folder(root, t),
                                      model=str(model), batch_size=cfg.eval.batch_size, device="cpu",
                                      sampling=SamplingConfig(max_new_tokens=cfg.eval.max_new_tokens, temperature=0.0),
                                      report=False, progress=False))
        family = summary.get("categories", {}).get("family", {})
        out.append({"iteration": t, "accuracy": summary["overall"]["normalised"], "n": summary["overall"]["n"],
                    "by_family": {k: v["normalised"] for k, v in family.items()},
                    "verified_claim_rate": summary.get("grounding", {}).get("verified_claim_rate")})
    return out


def main() -> None:
    args = parse_args()
    from mgrd.loop import driver

    base_cfg = driver.load(args.config, [f"out_dir={args.out}", *args.set])
    dev = dev_suite(args, list(base_cfg.data.synth_families))
    results: dict[str, dict[str, list[dict]]] = {}
    for seed in args.seeds:
        for variant in args.variants:
            root = run_variant(args, seed, variant, args.variants[0])
            cfg = driver.load(root / "config.yaml")
            if variant == args.variants[0]:
                evals = evaluate(root, dev, cfg)
            else:  # the same cold start: its numbers are the first variant's
                evals = results[args.variants[0]][str(seed)][:1] + evaluate(root, dev, cfg, first=1)
            results.setdefault(variant, {})[str(seed)] = evals
    (Path(args.out) / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"\naccuracy (%) on {args.dev_items} dev items, iteration 0 (cold start) -> last\n")
    print("| variant | " + " | ".join(f"seed {s}" for s in args.seeds) + " | change |")
    print("|---|" + "---|" * len(args.seeds) + "---:|")
    for variant, by_seed in results.items():
        runs = [by_seed[str(s)] for s in args.seeds]
        cells = [" -> ".join(f"{e['accuracy']:.1f}" for e in run) for run in runs]
        change = ", ".join(f"{run[-1]['accuracy'] - run[0]['accuracy']:+.1f}" for run in runs)
        print(f"| {variant} | " + " | ".join(cells) + f" | {change} |")
    print(f"\nper family and iteration: {Path(args.out) / 'results.json'}")


if __name__ == "__main__":
    main()
