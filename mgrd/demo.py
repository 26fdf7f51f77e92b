"""`mgrd demo` with a trained model: a few fresh synthetic listening questions, answered and graded.

`mgrd demo` shows the model `mgrd speedrun` trained (`runs/speedrun/final`, relative to the current folder) when
it exists, or the checkpoint given with `--model`; only without either does it build a random-weight tiny model
(`mgrd.cli.cmd_demo`). The questions are the synthetic suite's dev items (drawn like the training items) with a
seed the loop does not use, so none is a training item; `mgrd eval`'s harness asks and grades them, and
`mgrd.loop.cli.answer_lines` prints them as `mgrd speedrun` prints its examples.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from mgrd.loop.cli import SPEEDRUN_OUT

SPEEDRUN_MODEL = Path(SPEEDRUN_OUT) / "final"
QUESTION_SEED = 2024  # not the loop's synthetic seed (0): fresh items


def speedrun_model() -> Path | None:
    """`runs/speedrun/final` when it holds a checkpoint (a finished `mgrd speedrun` here), else None."""
    return SPEEDRUN_MODEL if (SPEEDRUN_MODEL / "config.json").is_file() else None


def answer_questions(model: Path, n: int, sampling, device: str = "cpu") -> list[str]:
    """Ask `model` `n` synthetic questions (the loop's families, round-robin) and grade its answers.

    Args:
        model: a checkpoint folder (official layout + tokenizer).
        n: questions to ask.
        sampling: the `SamplingConfig` of the answers.
    Returns:
        The lines to print: a title, then per question its text, the thinking, the answer and whether it is correct.
    """
    from mgrd.data.synth.writer import synthesize
    from mgrd.eval.harness import EvalConfig
    from mgrd.eval.harness import run as run_eval
    from mgrd.loop.cli import answer_lines
    from mgrd.loop.driver import DataSetup

    with tempfile.TemporaryDirectory(prefix="mgrd-demo-") as tmp:
        manifest = synthesize(Path(tmp) / "questions", n=n, seed=QUESTION_SEED, split="dev", workers=1,
                              families=list(DataSetup().synth_families), progress=False)
        out = Path(tmp) / "answers"
        run_eval(EvalConfig(task="synthetic", data=manifest, out=out, model=model, sampling=sampling,
                            batch_size=n, device=device, report=False, progress=False))
        return answer_lines(out / "samples.jsonl", n, f"{n} fresh synthetic questions (new dev items):")
