"""mgrd.train.distributed: the single-process path (unit) and real `torchrun` processes on CPU over gloo (integration).

The integration test trains the tiny preset for a few AdamW steps on the same global batches in 2 processes (DDP,
then FSDP2) and in this process alone, and compares loss, gradient norm and parameters step for step.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mgrd.train import distributed as D

HERE = Path(__file__).parent
ROOT = HERE.parent.parent


def _no_torchrun_env(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)


# --------------------------------------------------------------------------------------------- single process


def test_plain_process_starts_no_group(monkeypatch):
    _no_torchrun_env(monkeypatch)
    info = D.init("cpu")
    assert info == D.DistInfo(0, 1, 0, torch.device("cpu"), None)
    assert info.is_main and not info.distributed and D.is_main()
    assert not torch.distributed.is_initialized()
    D.barrier()
    D.cleanup()  # both no-ops without a group


@pytest.mark.parametrize("env, message", [
    ({"WORLD_SIZE": "2"}, "MASTER_ADDR is unset"),
    ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two' is not an integer"),
    ({"WORLD_SIZE": "2", "RANK": "2", "MASTER_ADDR": "127.0.0.1"}, "RANK=2 WORLD_SIZE=2"),
])
def test_bad_torchrun_environment_is_one_clear_error(monkeypatch, env, message):
    _no_torchrun_env(monkeypatch)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ValueError, match=message):
        D.init("cpu")


def test_device_resolution():
    assert D.resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert D.resolve_device("auto") == torch.device("cpu")
        with pytest.raises(ValueError, match="CUDA is not available"):
            D.resolve_device("cuda")


def test_wrap_is_identity_in_one_process_and_refuses_unknown_strategies():
    model = torch.nn.Linear(2, 2)
    for strategy in D.STRATEGIES:
        assert D.wrap(model, strategy) is model
    assert D.unwrap(model) is model
    with pytest.raises(ValueError, match="unknown distributed strategy 'zero3'; choose from none, ddp, fsdp2"):
        D.wrap(model, "zero3")


@pytest.mark.parametrize("n, world", [(0, 3), (7, 1), (7, 2), (8, 4), (10, 3), (2, 4)])
def test_shard_partitions_the_list(n, world):
    """Strided shards cover every item once; sizes differ by at most one, the lower ranks holding the extra."""
    items = list(range(n))
    shards = [D.shard(items, D.DistInfo(rank=r, world_size=world)) for r in range(world)]
    assert sorted(sum(shards, [])) == items
    assert [len(s) for s in shards] == [n // world + (r < n % world) for r in range(world)]
    assert all(s == items[r::world] for r, s in enumerate(shards))
    even = [D.shard(items, D.DistInfo(rank=r, world_size=world), drop_remainder=True) for r in range(world)]
    assert [len(s) for s in even] == [n // world] * world
    assert sorted(sum(even, [])) == items[: n - n % world]


def test_check_divisible_names_the_field():
    assert D.check_divisible(8, 2, "global_batch") == 4
    with pytest.raises(ValueError, match="global_batch=7 is not a multiple of the 2 processes"):
        D.check_divisible(7, 2, "global_batch")


def test_rank_seed_differs_per_rank_only():
    seeds = [D.rank_seed(5, D.DistInfo(rank=r, world_size=4)) for r in range(4)]
    assert seeds[0] == 5 and len(set(seeds)) == 4


def test_single_process_reductions_are_the_values():
    metrics = {"loss": torch.tensor(1.5), "n": 3, "peak": 2.0}
    assert D.reduce_metrics(metrics, {"n": "sum", "peak": "max"}) == {"loss": 1.5, "n": 3.0, "peak": 2.0}
    assert D.all_sum(4) == 4 and D.all_sum(0.5) == 0.5
    assert D.gather_objects({"a": 1}) == [{"a": 1}] and D.broadcast_object("x") == "x"
    assert D.loss_divisor(12) == 12.0
    with pytest.raises(ValueError, match="unknown metric reduction 'median'"):
        D.reduce_metrics({"a": 1.0}, "median")
    with pytest.raises(ValueError, match="no loss tokens in this step on any rank"):
        D.loss_divisor(0)


def test_grad_sync_and_clip_on_a_plain_module():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    with D.grad_sync(model, enabled=False):
        model(torch.randn(4, 3)).pow(2).sum().backward()
    expected = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in model.parameters()))
    assert D.clip_grad_norm(model.parameters(), 0.5) == pytest.approx(expected, rel=1e-6)
    clipped = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in model.parameters()))
    assert clipped == pytest.approx(0.5, rel=1e-5)
    assert D.clip_grad_norm(torch.nn.Linear(2, 2).parameters(), 1.0) == 0.0  # no gradients yet


def test_full_state_dict_round_trip_in_one_process():
    """Model and optimizer states (keyed by parameter name) load into a fresh model and optimizer."""
    torch.manual_seed(0)
    a, b = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1)), torch.nn.Sequential(
        torch.nn.Linear(3, 4), torch.nn.Linear(4, 1))
    opt_a, opt_b = torch.optim.AdamW(a.parameters()), torch.optim.AdamW(b.parameters())
    a(torch.randn(2, 3)).sum().backward()
    opt_a.step()
    state, optim_state = D.full_state_dict(a, opt_a)
    assert set(state) == set(a.state_dict()) and set(optim_state["state"]) == {"0.weight", "0.bias", "1.weight",
                                                                                "1.bias"}
    D.load_full_state_dict(b, state, opt_b, optim_state)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert torch.equal(opt_b.state_dict()["state"][0]["exp_avg"], opt_a.state_dict()["state"][0]["exp_avg"])
    bad = {k: v for k, v in state.items() if k != "1.bias"} | {"junk": torch.zeros(1)}
    with pytest.raises(ValueError, match=r"does not fit this model: 1 missing \(1.bias\), 1 unexpected \(junk\)"):
        D.load_full_state_dict(b, bad)


# --------------------------------------------------------------------------------------------- torchrun


def assert_same_updates(init: dict, ref: dict, got: dict, lr: float, steps: int) -> None:
    """The training update of every tensor (final - initial) agrees within 1 % of its norm; untouched tensors (the
    frozen encoder) are bit-identical.

    Why not elementwise: AdamW scales each element's step by its own gradient history, so an element whose gradient
    is at float-noise level takes a step of up to ~lr in either sign; single elements may differ by up to lr per
    step, but few do. Measured over 3 steps: at most 6e-4 of a tensor's update norm (DDP, FSDP2); an optimizer that
    moved the unused adapter on its momentum: 16 %.
    """
    assert set(got) == set(ref) == set(init)
    for name, start in init.items():
        want, have = ref[name] - start, got[name] - start
        if not want.any():
            assert torch.equal(got[name], ref[name]), name
            continue
        assert float((have - want).norm()) <= 1e-2 * float(want.norm()), name
        assert float((have - want).abs().max()) <= lr * steps, name


def torchrun(script: Path, *args: str, nproc: int = 2, timeout: int = 300) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc-per-node N script args` with one thread per process (2 shared cores)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", str(script),
           *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


SFT_FAMILIES = ["text_arithmetic", "conversation", "pitch_compare"]
SFT_STEPS = 3
SFT_LR = 3e-3


def _sft_argv(suite: Path, out: Path, name: str, *extra: str) -> list[str]:
    sets = [f"run.out_dir={out}", f"run.name={name}", "run.progress=false", "run.tensorboard=false",
            "run.device=cpu", f"run.max_steps={SFT_STEPS}", "run.seed=0", f"data.task_cot.manifests=[{suite}]",
            f"data.conversation.manifests=[{suite}]", f"data.audio_qa.manifests=[{suite}]", "data.max_length=512",
            f"optim.lr={SFT_LR}", "optim.warmup_steps=0", "optim.grad_clip=1.0", *extra]
    return [a for s in sets for a in ("--set", s)]


RL_STEPS = 2


def _rl_argv(suite: Path, out: Path) -> list[str]:
    """PPO (policy and value model both sharded) from the tiny config: 2 prompts (one per rank) x 2 samples."""
    sets = [f"run.out_dir={out}", "run.name=rl_fsdp2", f"run.max_steps={RL_STEPS}", "run.save_every=0",
            "run.progress=false", "run.tensorboard=false", "algo.name=ppo", "algo.prompts_per_step=2",
            "algo.samples_per_prompt=2", "sampling.max_new_tokens=8", f"data.manifests=[{suite}]",
            "reward.functions={variety: 1.0}", "model.distributed=fsdp2", "optim.micro_batch_size=4"]
    return ["--config", "rl_tiny"] + [a for s in sets for a in ("--set", s)]


@pytest.fixture(scope="module")
def launch(tmp_path_factory):
    """One 2-process torchrun launch (one start-up) for everything: the primitives' steps under DDP and FSDP2,
    then `mgrd sft` under DDP and FSDP2 on a global batch of 4 (2 ranks x 2), then `mgrd rl` (PPO, FSDP2).
    Returns (primitives' results, folder of the stage runs, the suite)."""
    import json

    from mgrd.data.synth.writer import synthesize

    root = tmp_path_factory.mktemp("torchrun")
    suite = synthesize(root / "suite", n=16, seed=0, families=SFT_FAMILIES, workers=1, progress=False)
    runs = [["sft", _sft_argv(suite, root, s, "optim.micro_batch_size=2", "optim.grad_accum=1",
                              f"model.distributed={s}")] for s in ("ddp", "fsdp2")]
    runs.append(["rl", _rl_argv(suite, root)])
    done = torchrun(HERE / "torchrun_dist.py", str(root / "out.pt"), json.dumps(runs), "ddp", "fsdp2", timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return torch.load(root / "out.pt", weights_only=False), root, suite


@pytest.fixture(scope="module")
def two_ranks(launch):
    """The primitives' 2-rank results, and the same steps in this process alone."""
    sys.path.insert(0, str(HERE))
    try:
        import torchrun_dist
    finally:
        sys.path.remove(str(HERE))
    torch.set_num_threads(1)  # the same kernels' thread count as the ranks
    reference = torchrun_dist.train("none", D.DistInfo())
    return launch[0], reference, torchrun_dist


@pytest.mark.integration
@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_two_processes_equal_one_on_the_same_global_batch(two_ranks, strategy):
    """2 ranks x 2 micro-batches of 2 == 1 process x 4 micro-batches of 2, every step.

    Step 1 runs no audio on any rank: the adapter must then get no update at all, as in one process.
    Tolerances: the loss and the gradient norm are sums of the same float32 terms in another order (~1e-7
    relative); AdamW moments follow the gradients (1e-5 relative); parameters: `assert_same_updates`.
    """
    results, ref, script = two_ranks
    got = results[strategy]
    assert got["world_size"] == 2
    assert got["losses"] == pytest.approx(ref["losses"], rel=1e-5)
    assert got["norms"] == pytest.approx(ref["norms"], rel=1e-5)
    assert ref["losses"][-1] < ref["losses"][0]  # it really trained
    init = script.build()[0].state_dict()
    assert_same_updates(init, ref["state"], got["state"], lr=1e-3, steps=script.STEPS)
    assert got["encoder_same"] and ref["encoder_same"]  # the frozen encoder is bit-identical after training
    assert set(got["optim"]["state"]) == set(ref["optim"]["state"])
    for name, moments in ref["optim"]["state"].items():
        for key in ("exp_avg", "exp_avg_sq"):
            scale = float(moments[key].abs().max())
            torch.testing.assert_close(got["optim"]["state"][name][key], moments[key], rtol=1e-4,
                                       atol=1e-5 * scale, msg=f"{name}.{key}")


@pytest.mark.integration
def test_collectives_across_two_processes(two_ranks):
    """Rank r contributes r + 1: mean 1.5, sum 3, max 2, min 1; shards of 7 items are 4 + 3, strided."""
    c = two_ranks[0]["collectives"]
    assert c["metrics"] == {"a": 1.5, "b": 3.0, "c": 2.0, "d": 1.0}
    assert c["all_sum_int"] == 3 and c["all_sum_tensor"] == [3.0, 4.0]
    assert c["gathered"] == [{"rank": 0}, {"rank": 1}] and c["broadcast"] == "from 0"
    assert c["shard"] == [[0, 2, 4, 6], [1, 3, 5]]
    assert c["divisor"] == 15.0  # (10 + 20) tokens over 2 ranks
    assert "ranks reduce different metric names" in c["mismatch_error"]
    assert c["second_group"] == {"a": 3.0}  # cleanup, then init again in the same processes


# --------------------------------------------------------------------------------------------- mgrd sft under torchrun


@pytest.fixture(scope="module")
def sft_runs(launch):
    """The SFT runs of the launch, and the same run in this process alone with 2 micro-batches of 2."""
    from mgrd.train.sft import main

    _, root, suite = launch
    torch.set_num_threads(1)
    assert main(_sft_argv(suite, root, "single", "optim.micro_batch_size=2", "optim.grad_accum=2")) == 0
    return root


def _metrics(run: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.integration
@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_mgrd_sft_on_two_processes_equals_one(sft_runs, strategy):
    """Same global batches: the loss, token count and gradient norm of every step, and the final weights, agree.

    Tolerances as in the test above. Rank 0 alone writes: one metrics row per step. Only step 2 draws audio
    items, so the adapter must not move in step 3 (FSDP2 gives unused parameters zero gradients, which AdamW's
    momentum would follow; `distributed.UnusedParams` drops them).
    """
    from mgrd.models import build_model
    from mgrd.models.checkpoint import read_state_dict
    from mgrd.models.presets import tiny
    from mgrd.tokenizer import build_tiny_tokenizer, special_token_ids

    one, two = _metrics(sft_runs / "single"), _metrics(sft_runs / strategy)
    assert [r["step"] for r in two] == [r["step"] for r in one] == list(range(1, SFT_STEPS + 1))
    for a, b in zip(two, one):
        assert a["tokens"] == b["tokens"] and a["examples"] == b["examples"] == 4
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-5)
    assert one[-1]["loss"] < one[0]["loss"]
    assert [bool(r.get("mix/audio_qa")) for r in one] == [False, True, False]  # what the docstring says
    tok = build_tiny_tokenizer()
    init = build_model(tiny(len(tok), special_token_ids(tok)), seed=0).state_dict()  # the runs' start (seed 0)
    w1, w2 = read_state_dict(sft_runs / "single" / "final"), read_state_dict(sft_runs / strategy / "final")
    assert_same_updates(init, w1, w2, lr=SFT_LR, steps=SFT_STEPS)
    assert (sft_runs / strategy / "done.json").is_file() and (sft_runs / strategy / "config.yaml").is_file()


def test_fsdp2_units_are_the_llm_decoder_layers_also_under_peft(tok, ids):
    """`wrap("fsdp2")` shards one unit per LLM decoder layer, found the same way in a plain and a LoRA model."""
    from peft import LoraConfig, get_peft_model

    from mgrd.models import build_model
    from mgrd.models.presets import tiny

    model = build_model(tiny(len(tok), ids), device="meta")
    layers = D._decoder_layers(model)
    assert [id(m) for m in layers] == [id(m) for m in model.model.layers]
    model.model = get_peft_model(model.model, LoraConfig(r=2, target_modules=["q_proj"]))
    assert len(D._decoder_layers(model)) == 3
    with pytest.raises(ValueError, match="no decoder `layers`"):
        D._decoder_layers(torch.nn.Linear(2, 2))


@pytest.mark.integration
def test_mgrd_rl_ppo_runs_sharded_on_two_processes(launch):
    """`mgrd rl` under torchrun with FSDP2 (policy and value model sharded, rollouts split across ranks): it
    finishes (ranks stay in step through generation and update), rank 0 alone writes one row per step, and the
    updates are real (the variety reward differs between samples, so the gradient norm is positive)."""
    run = launch[1] / "rl_fsdp2"
    rows = _metrics(run)
    assert [r["step"] for r in rows] == list(range(1, RL_STEPS + 1))
    assert all("value_loss" in r and "reward/variety" in r for r in rows)
    assert all(r["grad_norm"] > 0 and r["zero_variance_groups"] < 1 for r in rows)
    assert (run / "final" / "config.json").is_file() and (run / "done.json").is_file()
