"""`mgrd data`: write the synthetic suite (`data synth`) and validate manifests (`data check`).

Only argument parsing and printing live here: `mgrd.data.synth.writer.synthesize` does the writing and
`mgrd.data.manifest.check_manifest` the checking. Both are imported when a subcommand runs, so `mgrd --help`
stays fast. Handlers return the exit code: 0 success, 1 a manifest with errors, 2 bad input
(printed as `error: ...`); `mgrd.cli.run` adds 130 for Ctrl-C, 143 for SIGTERM (both remove the suite's
temporary folder) and 141 when stdout's reader has gone.

    mgrd data synth --out data/synth --n 10000 --seed 0
    mgrd data synth --out data/ood --n 2000 --split ood --families pitch_compare,beep_count
    mgrd data synth --list
    mgrd data check data/synth/manifest.jsonl

`python -m mgrd.data.cli synth ...` runs the same commands without the top-level `mgrd`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mgrd.data.synth.base import SPLITS

MAX_SHOWN_ERRORS = 20  # `data check` prints this many FILE:LINE errors, then how many more there are


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the `data` command (with `synth` and `check`) to a top-level argparse subparsers object."""
    data = subparsers.add_parser("data", help="make the synthetic suite and validate manifests",
                                 description="Make the embedded synthetic acoustic suite, or validate a manifest.")
    sub = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    _add_synth(sub)
    _add_check(sub)
    return data


def _add_synth(sub) -> None:
    p = sub.add_parser(
        "synth", help="write a synthetic suite: manifest.jsonl + audio/*.wav + suite.json",
        description="Write N items spread round-robin over the chosen families, deterministic for a seed. "
        "The suite is built beside --out and renamed into place when complete.")
    p.add_argument("--out", type=Path, help="output folder (must be empty or absent unless --overwrite)")
    p.add_argument("--n", type=int, default=1000,
                   help="total number of items, spread evenly over the families (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="non-negative seed; same seed, same bytes (default 0)")
    p.add_argument("--families", action="append", metavar="NAMES",
                   help="comma-separated family names, repeatable (default: every non-speech audio family; see --list)")
    p.add_argument("--split", choices=SPLITS, default="train",
                   help="train, dev or pool (new items drawn like train's), test (disjoint parameter ranges) or ood "
                   "(test ranges + noise/speed corruption) (default train)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes (default: 1 for small suites, else the CPU count)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--list", action="store_true", help="list the families (name, kind, grader, description) and exit")
    p.set_defaults(func=run_synth)


def _add_check(sub) -> None:
    p = sub.add_parser("check", help="validate a manifest; prints FILE:LINE: message for each bad row",
                       description="Validate every row of a JSONL manifest. Exit 0 if clean, 1 if any row is bad "
                       f"(the first {MAX_SHOWN_ERRORS} errors are printed, then a count), 2 if it is no manifest.")
    p.add_argument("file", type=Path, help="the manifest (.jsonl) to validate")
    p.set_defaults(func=run_check)


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def parse_families(values: list[str] | None) -> list[str] | None:
    """`--families a,b --families c` -> ['a', 'b', 'c']; None when the flag was not given."""
    if values is None:
        return None
    return [name.strip() for value in values for name in value.split(",") if name.strip()]


def list_families() -> str:
    """One line per registered family: name, kind, grader, description (default ones marked '*')."""
    from mgrd.data.synth import DEFAULT_FAMILIES, FAMILIES

    width = max(len(name) for name in FAMILIES)
    lines = [f"{'':2}{'family':<{width}}  {'kind':<13}  {'grader':<7}  description"]
    for name, family in FAMILIES.items():
        mark = "*" if name in DEFAULT_FAMILIES else " "
        lines.append(f"{mark} {name:<{width}}  {family.kind:<13}  {family.grader:<7}  {family.description}")
    lines.append("(* = used when --families is not given)")
    return "\n".join(lines)


def run_synth(args: argparse.Namespace) -> int:
    """`mgrd data synth`: write the suite, or list the families."""
    if args.list:
        print(list_families())
        return 0
    if args.out is None:
        return _error("--out is required (the folder to write the suite into)")
    from mgrd.data.synth.speech import SpeechSynthUnavailable
    from mgrd.data.synth.writer import SynthError, synthesize

    try:
        manifest = synthesize(args.out, n=args.n, seed=args.seed, families=parse_families(args.families),
                              split=args.split, overwrite=args.overwrite, workers=args.workers,
                              progress=not args.no_progress)
    except (SynthError, SpeechSynthUnavailable) as err:  # bad input, or speech families without espeak-ng
        return _error(str(err))
    print(f"wrote {args.n} {args.split} items to {manifest}")
    return 0


def run_check(args: argparse.Namespace) -> int:
    """`mgrd data check FILE`: print every problem as FILE:LINE: message and a summary line."""
    try:
        from mgrd.data.manifest import check_manifest
    except ImportError as err:
        return _error(f"manifest checking is unavailable: {err}")
    try:
        report = check_manifest(args.file)
    except (ValueError, OSError) as err:
        return _error(str(err))
    for message in report.errors[:MAX_SHOWN_ERRORS]:
        print(message)
    if len(report.errors) > MAX_SHOWN_ERRORS:
        print(f"... and {len(report.errors) - MAX_SHOWN_ERRORS:,} more errors")
    for message in getattr(report, "warnings", []):
        print(f"warning: {message}", file=sys.stderr)
    verdict = "ok" if report.ok else f"{len(report.errors)} error{'s' if len(report.errors) != 1 else ''}"
    print(f"{args.file}: {report.n_rows} rows, {verdict}")
    return 0 if report.ok else 1


def main(argv: list[str] | None = None) -> int:
    """Run `mgrd data ...` without the top-level CLI: `main(["synth", "--out", "x"])`."""
    from mgrd.cli import run_stage  # the same exit codes and signal handling as `mgrd data ...`

    return run_stage(add_parser, "data", argv)


if __name__ == "__main__":
    sys.exit(main())
