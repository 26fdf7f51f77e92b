"""`mgrd loop` killed with SIGKILL in its SFT, sampling and RL stages, then resumed with `--resume`: the run ends
with the artifacts of an uninterrupted run, nothing lost, repeated or torn (issue 8, "Kill/resume").

Both runs are real `python -m mgrd loop` subprocesses on the same tiny config (cold start + one iteration). The
killed run is one run folder that is killed three times, each time once the stage has written output of its own:

    iter_0/sft     a first step checkpoint exists (the cold-start SFT)
    iter_1/sample  samples.jsonl holds a first whole record; then half a record is appended by hand (what a kill
                   inside a `write` leaves: a real SIGKILL rarely lands there, so the test makes it happen)
    iter_1/rl      a first step checkpoint exists

The triggers are files appearing, not sleeps; each kill is checked to have landed inside its stage (no done marker
yet). Every restart takes `--resume`; the last one runs to the end. The tests below then compare the two runs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration  # four loop processes of the tiny preset (~1-2 min on 2 cores)

QUESTIONS = 6  # audio questions sampled in iteration 1, one rollout batch each (so a kill can land between them)
K = 2
RL_STEPS = 4
TIMEOUT_S = 900  # per process: generous for a loaded machine; a healthy run takes seconds
# the uninterrupted run's order; a killed stage logs nothing, so the killed run must log exactly this too
STAGE_LOG = [(0, "perceive"), (0, "sft"), (0, "eval")] + \
    [(1, s) for s in ("curate", "sample", "select", "sft", "rl", "eval")]


def _config(base: Path, suite: dict, name: str) -> Path:
    """The loop config both runs use: a cold start of 3 steps, then one iteration, every stage tiny."""
    train = ("[run.max_steps=3, run.save_every=1, run.eval_every=0, run.tensorboard=false, "
             "optim.micro_batch_size=2, optim.grad_accum=1]")
    path = base / f"{name}.yaml"
    path.write_text(f"""\
name: {name}
out_dir: {base}
iterations: 1
progress: false
device: cpu
data: {{train: {suite['train']}, dev: {suite['dev']}, test: {suite['test']}, ood: {suite['ood']}}}
cold_sft: {{overrides: {train}}}
sample: {{items_per_iteration: {QUESTIONS}, batch_items: 1, sampling: {{max_new_tokens: 24}}}}
select: {{samples_per_item: {K}, band_low: 0, band_high: {K}, text_per_audio: 0.5}}
sft: {{overrides: {train}}}
rl:
  overrides: [run.max_steps={RL_STEPS}, run.save_every=1, run.tensorboard=false, algo.prompts_per_step=2,
              algo.samples_per_prompt=2, sampling.max_new_tokens=8]
eval: {{max_items: 2, max_new_tokens: 8, batch_size: 2}}
""")
    return path


def _start(config: Path, *flags: str) -> subprocess.Popen:
    """`python -m mgrd loop --config FILE [flags]`, stderr appended to a log beside the config (a pipe nobody
    reads could fill and stall the run). One OpenMP thread: see the `one_thread` fixture in tests/conftest.py."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    with open(config.with_suffix(".log"), "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "mgrd", "loop", "--config", str(config), *flags],
                                env=env, stdout=subprocess.DEVNULL, stderr=log)


def _log_tail(config: Path) -> str:
    return config.with_suffix(".log").read_text(errors="replace")[-3000:]


def _finish(proc: subprocess.Popen, config: Path) -> None:
    """Wait for a run to end by itself and require success."""
    try:
        code = proc.wait(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"the loop did not finish in {TIMEOUT_S} s: {_log_tail(config)}")
    assert code == 0, _log_tail(config)


def _kill_when(proc: subprocess.Popen, config: Path, ready, what: str) -> float:
    """SIGKILL the run as soon as `ready()` holds (polled every 5 ms); returns the time of the kill."""
    deadline = time.monotonic() + TIMEOUT_S
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"the loop exited {proc.returncode} before {what}: {_log_tail(config)}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            pytest.fail(f"no {what} after {TIMEOUT_S} s: {_log_tail(config)}")
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"the loop ended before the kill: {_log_tail(config)}"
    return time.time()


def _checkpoints(stage: Path) -> list[int]:
    """Steps of the complete checkpoints of a training stage (a save in flight has a temporary name)."""
    folder = stage / "checkpoints"
    return sorted(int(p.name[5:]) for p in folder.glob("step_*")) if folder.is_dir() else []


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.is_file() else 0


def _markers(root: Path) -> dict[str, tuple[int, int]]:
    """Every done marker with its inode and mtime: a stage that ran again would have written a new one."""
    return {str(p.relative_to(root)): (p.stat().st_ino, p.stat().st_mtime_ns) for p in root.glob("iter_*/*/done.json")}


@pytest.fixture(scope="module")
def plain_run(suite, tmp_path_factory) -> Path:
    """The uninterrupted run's folder."""
    config = _config(tmp_path_factory.mktemp("plain"), suite, "plain")
    _finish(_start(config), config)
    return config.parent / "plain"


@pytest.fixture(scope="module")
def killed_run(suite, tmp_path_factory) -> tuple[Path, dict]:
    """The run killed in SFT, sampling and RL and resumed after each kill; returns its folder and what each kill
    left: {"sft"/"rl": (newest checkpoint step, kill time), "sample": whole records kept} and the done markers
    that existed before each resume ("markers": a list)."""
    config = _config(tmp_path_factory.mktemp("killed"), suite, "killed")
    root = config.parent / "killed"
    sft, sample, rl = root / "iter_0" / "sft", root / "iter_1" / "sample", root / "iter_1" / "rl"
    info: dict = {"markers": []}

    killed = _kill_when(_start(config), config, lambda: bool(_checkpoints(sft)), "a cold-start SFT checkpoint")
    assert not (sft / "done.json").exists() and not (sft / "final").exists(), "the kill missed the SFT stage"
    info["sft"] = (_checkpoints(sft)[-1], killed)

    info["markers"].append(_markers(root))
    samples = sample / "samples.jsonl"
    _kill_when(_start(config, "--resume"), config, lambda: _lines(samples) >= 1, "a first sampled record")
    kept = _lines(samples)
    assert kept < QUESTIONS and not (sample / "done.json").exists(), "the kill missed the sampling stage"
    first = samples.read_bytes().split(b"\n")[0]
    with open(samples, "ab") as f:
        f.write(first[: len(first) // 2])  # a record torn mid-write, as a kill inside `write` leaves it
    info["sample"] = kept

    info["markers"].append(_markers(root))
    killed = _kill_when(_start(config, "--resume"), config, lambda: bool(_checkpoints(rl)), "an RL checkpoint")
    assert not (rl / "done.json").exists(), "the kill missed the RL stage"
    info["rl"] = (_checkpoints(rl)[-1], killed)

    info["markers"].append(_markers(root))
    _finish(_start(config, "--resume"), config)
    return root, info


def _done_stages(root: Path) -> dict[str, bool]:
    """{iter_t/stage: skipped?} for every finished stage."""
    return {str(p.parent.relative_to(root)): bool(json.loads(p.read_text()).get("skipped"))
            for p in root.glob("iter_*/*/done.json")}


def test_the_same_stages_finish_each_once_and_none_is_redone(plain_run, killed_run):
    root, info = killed_run
    assert _done_stages(root) == _done_stages(plain_run)
    assert len(_done_stages(plain_run)) == len(STAGE_LOG)
    for path in (plain_run, root):
        rows = map(json.loads, (path / "stages.jsonl").read_text().splitlines())
        logged = [(r["iteration"], r["stage"]) for r in rows]
        assert logged == STAGE_LOG, path.name  # each stage logged once: none lost, none run twice
    final = _markers(root)
    for before in info["markers"]:  # a stage finished before a resume keeps its marker untouched
        assert {k: final[k] for k in before} == before


def test_the_samples_file_holds_each_question_once_and_whole(plain_run, killed_run):
    root, info = killed_run
    questions = [json.loads(line)["id"] for line in (root / "iter_1/curate/questions.jsonl").read_text().splitlines()]
    assert len(questions) == QUESTIONS
    for path in (plain_run, root):
        raw = (path / "iter_1/sample/samples.jsonl").read_bytes()
        assert raw.endswith(b"\n"), f"{path.name}: torn last line"
        records = [json.loads(line) for line in raw.decode().splitlines()]  # every line a whole record
        assert [r["item_id"] for r in records] == questions, path.name  # each once, in the questions' order
        assert all(len(r["completions"]) == K for r in records)
    # the resumed stage kept the records written before the kill (the torn one dropped) and asked only the rest
    assert json.loads((root / "iter_1/sample/done.json").read_text())["resumed_with"] == info["sample"]


@pytest.mark.parametrize("stage, steps", [("iter_0/sft", 3), ("iter_1/rl", RL_STEPS)])
def test_killed_training_stages_continue_from_their_checkpoint(plain_run, killed_run, stage, steps):
    root, info = killed_run
    step, killed = info[stage.split("/")[1]]
    assert step < steps
    rows = [json.loads(line) for line in (root / stage / "metrics.jsonl").read_text().splitlines()]
    plain = [json.loads(line)["step"] for line in (plain_run / stage / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == plain == list(range(1, steps + 1))  # no step lost or logged twice
    # the steps up to the checkpoint are the first attempt's (not trained again); the later ones came after the kill
    assert all((r["time"] < killed) == (r["step"] <= step) for r in rows), (step, [r["time"] for r in rows], killed)


def test_summary_report_and_final_model_match_the_uninterrupted_run(plain_run, killed_run):
    from mgrd.models import load_pretrained
    from mgrd.tokenizer import load_tokenizer

    root, _ = killed_run
    summaries = [json.loads((path / "summary.json").read_text()) for path in (plain_run, root)]
    assert summaries[0].keys() == summaries[1].keys()
    for a, b in zip(summaries[0]["iterations"], summaries[1]["iterations"], strict=True):
        assert a["iteration"] == b["iteration"] and a.keys() == b.keys()
    assert [e["iteration"] for e in summaries[1]["iterations"]] == [0, 1]
    for name in ("report.html", "report.md"):
        assert (root / name).is_file()
    files = [sorted(p.name for p in (path / "final").iterdir()) for path in (plain_run, root)]
    assert files[0] == files[1]
    assert {"config.json", "model.safetensors", "tokenizer.json", "SOURCE"} <= set(files[1])
    assert (root / "final/SOURCE").read_text().strip() == str(root / "iter_1/rl/final")
    tokenizer = load_tokenizer(root / "final")
    load_pretrained(root / "final", tokenizer=tokenizer)  # the official layout loads: config, weights, tokenizer
