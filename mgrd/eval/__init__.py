"""Evaluation: the report's benchmarks read from their official on-disk formats, scored by their official rules
(quirks behind a flag) beside a normalised score, run against a local checkpoint or an OpenAI-compatible
endpoint; grounding metrics, audio ablation, think-length curves and corruption robustness; reports.

`harness.run(EvalConfig)` is the entry point; `mgrd eval --help` the command line."""
