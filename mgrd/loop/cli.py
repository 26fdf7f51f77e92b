"""`mgrd loop` (the MGRD state machine, `mgrd.loop.driver`) and `mgrd speedrun` (the one command that shows it).

`mgrd speedrun [--out runs/speedrun]` is `mgrd loop --config loop_tiny` written into `--out`: it synthesises the
suite, cold-starts the tiny preset, runs the loop, writes the report, prints the per-iteration table, the wall
time, and a few answers of the final model on a held-out split (dev when evaluated; question, thinking, answer,
correct?).

This module imports no torch at the top (the stages import it when they run), so `mgrd --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

LOOP_HELP = "the MGRD loop: sample, filter, distil (SFT), RL, evaluate, report; resumable"
SPEEDRUN_HELP = "synthesise data, cold-start the tiny model, run a short MGRD loop, print the report (CPU minutes)"
SPEEDRUN_OUT = "runs/speedrun"  # `mgrd speedrun`'s default --out; `mgrd demo` shows its final/ when it exists


def _describe() -> str:
    from mgrd.loop.driver import LoopConfig
    from mgrd.train.config import describe

    return "config keys (set with --set key=value):\n" + "\n".join(describe(LoopConfig))


def add_parser(subparsers) -> None:
    """Add `loop` and `speedrun` to a top-level argparse subparsers object (`mgrd.cli`)."""
    p = subparsers.add_parser(
        "loop", help=LOOP_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Modality-grounded reasoning distillation (Step-Audio-R1 §4.2). Iteration 0 cold-starts the "
        "model (SFT) and evaluates it; each iteration t then curates audio questions, samples K candidates per "
        "question, scores them with the four filters, fine-tunes on the accepted chains plus the text tasks, runs "
        "RL on the items whose pass@K lies in the band, and evaluates on the test and ood splits. Every stage writes "
        "runs/<name>/iter_<t>/<stage>/ and a done.json; a rerun continues from the first unfinished stage. "
        "runs/<name>/ holds summary.json, report.html, report.md, plots/ and final/.",
        epilog=_describe())
    p.add_argument("--config", default="loop_tiny", metavar="FILE",
                   help="YAML config: a path or a named config (default loop_tiny; loop_gpu for one GPU)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override one config key (dotted, e.g. select.band_low=2); repeatable; wins over the file")
    p.add_argument("--resume", action="store_true",
                   help="continue the run even if its config changed (unfinished stages use the new settings); a "
                        "rerun with the same config continues without it")
    p.add_argument("--stop-after", default=None, metavar="T:STAGE",
                   help="stop once stage STAGE of iteration T is finished (e.g. 1:sample); rerun to continue")
    p.add_argument("--report-only", action="store_true",
                   help="rebuild summary.json, report.html/.md and the plots of the run folder, and exit")
    p.set_defaults(func=cmd_loop)

    s = subparsers.add_parser(
        "speedrun", help=SPEEDRUN_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="The main job in miniature: `mgrd loop --config loop_tiny` into --out, then the table of "
        "accuracy, grounding and think length per iteration, the wall time, and example answers of the final "
        "model. A tiny model trained for minutes: the numbers are what this run measured, nothing more. "
        "Rerunning continues an interrupted speedrun.")
    s.add_argument("--out", default=SPEEDRUN_OUT, help=f"the run folder (default {SPEEDRUN_OUT})")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override a key of loop_tiny (e.g. iterations=1); repeatable")
    s.add_argument("--examples", type=int, default=4, help="example answers of the final model to print")
    s.set_defaults(func=cmd_speedrun)


def _stop_after(text: str | None) -> tuple[int, str] | None:
    from mgrd.loop.driver import STAGES

    if text is None:
        return None
    t, _, stage = text.partition(":")
    if not t.isdigit() or stage not in STAGES:
        raise ValueError(f"--stop-after must be T:STAGE with STAGE one of {', '.join(STAGES)}, got {text!r}")
    return int(t), stage


def cmd_loop(args: argparse.Namespace) -> int:
    from mgrd.loop import driver
    from mgrd.loop.report import write_report

    cfg = driver.load(args.config, args.overrides)
    if args.report_only:
        if not (cfg.path / "config.yaml").is_file():
            raise FileNotFoundError(f"{cfg.path}: no loop run there (no config.yaml)")
        print(f"wrote {write_report(cfg.path)}")
        return 0
    root = driver.run(cfg, resume=args.resume, stop_after=_stop_after(args.stop_after))
    if (root / "summary.json").is_file():
        from mgrd.loop.report import markdown_table

        print(markdown_table(json.loads((root / "summary.json").read_text())))
    print(f"run folder: {root} (report.html, summary.json, final/)")
    return 0


def cmd_speedrun(args: argparse.Namespace) -> int:
    from mgrd.loop import driver
    from mgrd.loop.report import markdown_table, write_report

    out = Path(args.out)
    overrides = [f"name={out.name}", f"out_dir={out.parent}"] + list(args.overrides)
    cfg = driver.load("loop_tiny", overrides)
    start = time.time()
    root = driver.run(cfg, resume=(cfg.path / "config.yaml").is_file())
    write_report(root)
    summary = json.loads((root / "summary.json").read_text())
    print(markdown_table(summary))
    print(f"\nspeedrun finished in {time.time() - start:.0f} s this call "
          f"({sum(e['wall_s'] for e in summary['iterations']):.0f} s of stages in all); "
          f"report: {root / 'report.html'}; model: {root / 'final'}")
    for line in example_answers(root, cfg.iterations, args.examples):
        print(line)
    return 0


def example_answers(root: Path, t: int, n: int) -> list[str]:
    """A few of the final model's held-out answers (from its evaluation, dev split when there is one, else test):
    question, thinking, answer, correct?"""
    folder = root / f"iter_{t}" / "eval"
    split = "dev" if (folder / "dev" / "samples.jsonl").is_file() else "test"
    return answer_lines(folder / split / "samples.jsonl", n,
                        f"example answers of the final model (iteration {t}, {split} split):")


def answer_lines(path: Path, n: int, title: str) -> list[str]:
    """Up to `n` answers of an eval run's samples file (one per task first), each as question, thinking, answer
    and correct?, under `title`; also what `mgrd demo` prints for a trained model."""
    from mgrd.data.records import read_records

    if n <= 0 or not path.is_file():
        return []
    records = read_records(path)
    # one per task first, so the examples show several families
    picked, seen = [], set()
    for r in records + records:
        if len(picked) == n:
            break
        if r.completions and (r.task not in seen or len(seen) == len({x.task for x in records})) and r not in picked:
            picked.append(r)
            seen.add(r.task)
    lines = [f"\n{title}"]
    for r in picked:
        c = r.completions[0]
        question = r.prompt.split("<|BOT|>assistant")[0].replace("<|BOT|>human\n", "").replace("<audio_patch>", "")
        question = " ".join(question.replace("<|EOT|>", "").split())
        correct = r.extra.get("verdict", {}).get("normalised")
        lines += [f"- [{r.task}] {question}", f"  thinking: {' '.join(c.reasoning.split())[:300] or '(empty)'}",
                  f"  answer: {c.answer!r}  correct: {'yes' if correct else 'no'}"]
    return lines


def main(argv: list[str] | None = None) -> int:
    """`mgrd loop ...` / `mgrd speedrun ...` without the top-level CLI: `main(["loop", "--config", FILE])`."""
    parser = argparse.ArgumentParser(prog="mgrd")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    from mgrd.cli import run as run_command  # the same exit codes and error lines as every mgrd command

    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
