"""`mgrd eval`: evaluate a model on a benchmark, score predictions made elsewhere, merge shards, compare runs.

    mgrd eval --task mmau --data data/mmau --model runs/tiny --out runs/eval/mmau [--limit 20]
    mgrd eval --task big_bench_audio --data data/bba --endpoint http://localhost:8000/v1 --out runs/eval/bba \\
        --judge-endpoint http://localhost:9000/v1 --judge-model gpt-4o-mini
    mgrd eval score --task mmsu --data data/mmsu --predictions preds.jsonl --out runs/eval/mmsu-ext
    mgrd eval --task synthetic --data data/test --model runs/tiny --out runs/eval/s0 --shard 0/2   (and 1/2)
    mgrd eval merge runs/eval/s0 runs/eval/s1 --out runs/eval/s
    mgrd eval rescore runs/eval/mmsu --exact-bugs --out runs/eval/mmsu-legacy
    mgrd eval compare runs/eval/a runs/eval/b

Only argument parsing and printing live here (`mgrd.eval.harness` does the work, imported when a command
runs). Handlers return the exit code: 0 success, 1 a run that finished with errors (endpoint or judge failures,
listed in summary.json), 2 bad input (`error: ...`, via `mgrd.cli.run`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

TASKS = ("mmau", "mmsu", "big_bench_audio", "spoken_mqa", "wildspeech", "synthetic")  # mgrd.eval.benchmarks
ACTIONS = ("score", "rescore", "merge", "compare")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the `eval` command to a top-level argparse subparsers object."""
    p = subparsers.add_parser(
        "eval", help="evaluate on MMAU, MMSU, Big Bench Audio, Spoken MQA, Wild Speech or the synthetic suite",
        description="Evaluate a local checkpoint (--model) or an OpenAI-compatible endpoint (--endpoint) on a "
        "benchmark read from its official on-disk format, with the report's prompts; writes RUN/samples.jsonl, "
        "RUN/summary.json and RUN/report.html. A rerun into the same --out resumes. "
        "`eval score` scores a predictions file, `eval rescore RUN` scores a run again with other scoring settings, "
        "`eval merge RUN...` joins shards, `eval compare RUN...` prints runs side by side with the report's "
        "published numbers.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", nargs="?", choices=ACTIONS, metavar="ACTION",
                   help="none: run the evaluation; score: score --predictions (no model); rescore RUN: score a "
                   "finished run again (--exact-bugs, a judge, ...) into --out (default RUN); merge RUN...: join "
                   "shard runs into --out; compare RUN...: print their scores")
    p.add_argument("runs", nargs="*", type=Path, help="run folders (for rescore, merge and compare)")
    what = p.add_argument_group("what to evaluate")
    what.add_argument("--task", choices=TASKS, help="the benchmark")
    what.add_argument("--data", type=Path, help="the benchmark's folder in its official layout (mmau: "
                      "mmau-test-mini.json + test-mini-audios/; mmsu: question/mmsu.jsonl or parquet; big_bench_audio: "
                      "metadata.jsonl + data/; spoken_mqa and wildspeech: parquet; synthetic: a suite folder)")
    what.add_argument("--out", type=Path, help="the run folder (created; a rerun resumes it)")
    what.add_argument("--limit", type=int, help="evaluate only the first N items (after --start/--end/--shard)")
    what.add_argument("--start", type=int, default=0, help="first item index (dataset order, default 0)")
    what.add_argument("--end", type=int, help="one past the last item index (default: all)")
    what.add_argument("--shard", help="i/n: the i-th of n contiguous item ranges (merge the runs with `eval merge`)")
    what.add_argument("--variants", default="clean",
                      help="comma-separated audio variants to ask: clean, silence, noise (ablations: does the answer "
                      "change without the sound?), snr<dB> (e.g. snr10), speed<factor> (e.g. speed1.25), "
                      "think<N> (local model: thinking forced closed after N tokens; think0 = none) (default clean)")
    what.add_argument("--split", default="test-mini", choices=("test-mini", "test"),
                      help="MMAU split; test has no answers: `eval score` then writes submission.json")
    what.add_argument("--questions", type=Path, help="Big Bench Audio: an id -> question sidecar (questions.jsonl; "
                      "default DATA/questions.jsonl when present) for the judge prompt's question slot")
    what.add_argument("--predictions", type=Path, help="eval score: JSONL of {\"id\", \"output\"} per line")
    model = p.add_argument_group("the model under test")
    model.add_argument("--model", type=Path, help="a local checkpoint folder (batched through mgrd.rollout)")
    model.add_argument("--endpoint", help="an OpenAI-compatible base URL, e.g. http://localhost:8000/v1")
    model.add_argument("--api-key", default="EMPTY", help="the endpoint's API key")
    model.add_argument("--served-model", default="default", help="the model name sent to the endpoint")
    model.add_argument("--think-prefix", action="store_true", help="endpoint: send the official client's assistant "
                       "prefix <think>\\n with continue_final_message and stop id 151665 (a Step-Audio-R1 behind vLLM)")
    model.add_argument("--concurrency", type=int, default=4, help="endpoint: requests in flight (default 4)")
    model.add_argument("--timeout", type=float, default=600.0, help="endpoint: seconds per request (default 600)")
    model.add_argument("--max-retries", type=int, default=3,
                       help="endpoint: retries of timeouts, 429 and 5xx with backoff (default 3); then an error")
    model.add_argument("--batch-size", type=int, default=8, help="local model: prompts per rollout batch (default 8)")
    model.add_argument("--device", default="cpu", help="local model: cpu, cuda or cuda:N (default cpu)")
    model.add_argument("--dtype", default="auto", help="local model: auto, float32, bfloat16 or float16")
    model.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (report: 0.7; 0 = greedy)")
    model.add_argument("--max-new-tokens", type=int, default=32000,
                       help="new tokens per answer (report: 32000; a local model caps it to its context)")
    model.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default 1.0)")
    model.add_argument("--repetition-penalty", type=float, default=1.0, help="repetition penalty (report: 1.0)")
    model.add_argument("--seed", type=int, help="sampling seed")
    model.add_argument("--think-budget", type=int, help="local model: force the think block closed after N tokens "
                       "(0 = no thinking) and generate the answer (--answer-tokens) from there")
    model.add_argument("--answer-tokens", type=int, default=64, help="tokens for the forced answer (default 64)")
    scoring = p.add_argument_group("scoring")
    scoring.add_argument("--exact-bugs", action="store_true", help="reproduce the official scorers' quirks (stale "
                         "predictions, raw-output matching, MMSU's legacy scorer); off by default")
    scoring.add_argument("--require-think", action=argparse.BooleanOptionalAction, default=None,
                         help="an output without </think> is cut off (default: yes for --model, no for --endpoint and "
                         "score)")
    scoring.add_argument("--bba-newlines", choices=("literal", "newlines"),
                         help="Big Bench Audio judge prompt: the '\\n\\n' after the question as the literal characters "
                         "the blog prints (default) or as two newlines")
    scoring.add_argument("--judge-endpoint", help="OpenAI-compatible base URL of the LLM judge (Big Bench Audio, "
                         "Wild Speech); without it their official score is left empty")
    scoring.add_argument("--judge-model", default="gpt-4o-mini", help="judge model name (default gpt-4o-mini)")
    scoring.add_argument("--judge-api-key", default="EMPTY", help="the judge endpoint's API key")
    scoring.add_argument("--judge-cache", type=Path, help="judge reply cache folder (default RUN/judge_cache)")
    scoring.add_argument("--judge-replay", action="store_true", help="answer the judge from its cache only")
    scoring.add_argument("--judge-template", type=Path, help="Wild Speech: a judge template file with {query}, "
                         "{response} and {checklist} slots (e.g. the official meta prompt)")
    p.add_argument("--no-report", action="store_true", help="skip report.html and the PNG plots")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run_eval)
    return p


def _config(args: argparse.Namespace):
    from mgrd.eval.harness import EvalConfig, parse_shard
    from mgrd.generate import SamplingConfig

    if args.task is None or args.data is None or args.out is None:
        raise ValueError("--task, --data and --out are required")
    options = {}
    if args.task == "mmau":
        options["split"] = args.split
    if args.task == "big_bench_audio" and (args.bba_newlines is not None or args.action != "rescore"):
        options["bba_literal_newlines"] = args.bba_newlines != "newlines"  # unset: literal (rescore: the run's)
        if args.questions:
            options["questions"] = str(args.questions)
    if args.task == "wildspeech" and args.judge_template:
        options["judge_template"] = str(args.judge_template)
    sampling = SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                              repetition_penalty=args.repetition_penalty, seed=args.seed)
    variants = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    return EvalConfig(
        task=args.task, data=args.data, out=args.out, model=args.model, endpoint=args.endpoint, api_key=args.api_key,
        served_model=args.served_model, start=args.start, end=args.end,
        shard=parse_shard(args.shard) if args.shard else None, limit=args.limit, variants=variants or ("clean",),
        sampling=sampling, batch_size=args.batch_size, device=args.device, dtype=args.dtype,
        think_budget=args.think_budget, answer_tokens=args.answer_tokens, concurrency=args.concurrency,
        timeout_s=args.timeout, max_retries=args.max_retries, think_prefix=args.think_prefix,
        exact_bugs=args.exact_bugs, require_think=args.require_think, options=options,
        judge_endpoint=args.judge_endpoint, judge_model=args.judge_model, judge_api_key=args.judge_api_key,
        judge_cache=args.judge_cache, judge_replay=args.judge_replay, report=not args.no_report,
        progress=not args.no_progress)


def run_eval(args: argparse.Namespace) -> int:
    """Dispatch `mgrd eval [score|rescore|merge|compare]`; prints the summary table."""
    import logging

    from mgrd.eval import harness
    from mgrd.eval.report import compare_table, summary_table

    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s")
    if args.action == "compare":
        if not args.runs:
            raise ValueError("eval compare needs run folders: mgrd eval compare RUN1 RUN2 ...")
        print(compare_table(args.runs))
        return 0
    if args.action == "rescore":
        if len(args.runs) != 1:
            raise ValueError("eval rescore takes one run folder: mgrd eval rescore RUN [--out OUT] [--exact-bugs] ...")
        args.out = args.out or args.runs[0]
        args.task, args.data = harness.run_task(args.runs[0]), args.runs[0]  # no data is read
        summary = harness.rescore(args.runs[0], _config(args))
    elif args.action == "merge":
        if not args.runs or args.out is None:
            raise ValueError("eval merge needs run folders and --out: mgrd eval merge RUN1 RUN2 --out RUN")
        summary = harness.merge(args.runs, args.out, report=not args.no_report)
    else:
        if args.runs:
            extra = " ".join(map(str, args.runs))
            raise ValueError(f"unexpected argument(s) {extra}; run folders go with rescore/merge/compare")
        cfg = _config(args)
        if args.action == "score":
            if args.predictions is None:
                raise ValueError("eval score needs --predictions FILE (JSONL of {\"id\", \"output\"})")
            summary = harness.score_predictions(cfg, args.predictions)
        else:
            summary = harness.run(cfg)
    print(summary_table(summary))
    out = args.out
    print(f"\nwrote {out / 'samples.jsonl'}, {out / 'summary.json'}" + ("" if args.no_report else
                                                                      f", {out / 'report.html'}"))
    if summary["errors"]:
        print(f"{len(summary['errors'])} item(s) ended in errors (not scored; rerun the same command to retry them); "
              f"first: {summary['errors'][0]}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run `mgrd eval ...` without the top-level CLI: `main(["--task", "mmau", ...])`."""
    from mgrd.cli import run_stage  # the same exit codes and signal handling as `mgrd eval ...`

    return run_stage(add_parser, "eval", argv)


if __name__ == "__main__":
    sys.exit(main())
