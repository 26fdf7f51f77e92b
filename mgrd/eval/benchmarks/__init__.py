"""The evaluation's benchmarks, one module each (loader + official scorer + normalised scorer).

`BENCHMARKS` maps each `--task` name to its `Benchmark`; importing a module also registers its prompting
`mgrd.tasks.Task` (`prompts.py`). Formats and rules: `shared/reference/benchmarks.md`.
"""

from mgrd.eval.benchmarks import big_bench_audio, mmau, mmsu, spoken_mqa, synthetic, wildspeech
from mgrd.eval.benchmarks.base import Benchmark, DataError, EvalItem, LoadedSet, ScoreOptions, Verdict

BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (
    mmau.BENCHMARK, mmsu.BENCHMARK, big_bench_audio.BENCHMARK, spoken_mqa.BENCHMARK, wildspeech.BENCHMARK,
    synthetic.BENCHMARK,
)}


def get_benchmark(name: str) -> Benchmark:
    """The benchmark called `name`; a ValueError lists the known ones."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown eval task {name!r}; choose one of {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]


__all__ = ["BENCHMARKS", "Benchmark", "DataError", "EvalItem", "LoadedSet", "ScoreOptions", "Verdict",
           "get_benchmark"]
