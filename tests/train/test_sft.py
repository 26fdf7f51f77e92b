"""`mgrd sft` (issue 7): the loss counts only the assistant's reply, gradient accumulation is exact, the tiny
model learns the synthetic suite while its encoder stays bit-identical, a SIGKILLed run resumes to the same
weights, LoRA trains only LoRA (+ adapter) and saves merged, and bad inputs give one clear error each.

The runs use the tiny preset (random init, offline tokenizer) and a small suite written by `mgrd.data.synth`.
"""

import copy
import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mgrd.data.collate import IGNORE_INDEX, collate_sft
from mgrd.data.synth.writer import synthesize
from mgrd.models import build_model, load_pretrained
from mgrd.models.checkpoint import read_state_dict
from mgrd.models.presets import tiny
from mgrd.tasks import get_task
from mgrd.train.config import load
from mgrd.train.data import Example
from mgrd.train.run import RunExistsError
from mgrd.train.sft import SFTConfig, SFTTrainer, TrainingDivergedError, main, run, token_loss_sum

FAMILIES = "text_arithmetic,text_compare,conversation,pitch_compare"
ROOT = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: why one thread


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """A 24-item training suite (text, conversation, audio) and an 8-item held-out one."""
    root = tmp_path_factory.mktemp("sft_suite")
    families = FAMILIES.split(",")
    train = synthesize(root / "train", n=24, seed=0, families=families, workers=1, progress=False)
    test = synthesize(root / "test", n=8, seed=1, families=families, split="test", workers=1, progress=False)
    return train, test


def config(suite, tmp_path, *overrides, eval_set=False):
    """An SFT config on the suite: text and audio sources, conversations rarely (they are the longest)."""
    train, test = suite
    base = [f"run.out_dir={tmp_path}", "run.progress=false", "run.tensorboard=false", "run.device=cpu",
            f"data.task_cot.manifests=[{train}]", f"data.conversation.manifests=[{train}]",
            "data.conversation.weight=0.25", f"data.audio_qa.manifests=[{train}]", "optim.lr=3e-3",
            "optim.warmup_steps=0", "optim.micro_batch_size=2", "optim.grad_accum=2", "data.max_length=512"]
    if eval_set:
        base += [f"eval.manifests=[{test}]", "eval.generate_items=4", "eval.max_new_tokens=8", "eval.batch_size=8"]
    return load(SFTConfig, None, base + list(overrides))


RUN = ("run.max_steps=8", "run.save_every=4", "run.eval_every=8")  # the shared run, and the killed one


@pytest.fixture(scope="module")
def trainer(suite, tmp_path_factory):
    """One trainer (text + audio, no conversations) for the step-level tests; they restore what they change."""
    cfg = config(suite, tmp_path_factory.mktemp("trainer"), "data.conversation.weight=0", "run.max_nan_skips=1",
                 "optim.lr=1e-3", "optim.grad_clip=0")
    return SFTTrainer(cfg)


@pytest.fixture(scope="module")
def full_run(suite, tmp_path_factory):
    """An uninterrupted 8-step run with held-out evaluation at steps 0 and 8 (shared by the learning and the
    resume tests)."""
    return run(config(suite, tmp_path_factory.mktemp("full"), "run.name=full", *RUN, eval_set=True))


# ---------------------------------------------------------------------------------------------- labels


def test_loss_counts_only_the_assistant_reply(tok):
    row = {"id": "x", "task": "text_arithmetic", "audio": [], "question": "What is 2 + 3?", "choices": None,
           "answer": "5", "reasoning": "2 plus 3 is 5.", "reasoning_style": "text"}
    task = get_task("text_arithmetic")
    chain, empty = task.encode_example(row, tok), task.encode_example(row, tok, style="none")
    batch = collate_sft([chain, empty], pad_id=0)
    # "2 plus 3 is 5.\n</think>\n5" is 13 tokens of the tiny vocabulary, then <|EOT|>; the empty think block
    # "\n</think>\n5" is 5, then <|EOT|>. The prompt (and its closing "<think>\n") is never counted.
    logits = torch.randn(2, batch.input_ids.shape[1], 600)
    total, count = token_loss_sum(logits, batch.labels)
    assert int(count) == 14 + 6
    picked = [(b, t) for b in range(2) for t in range(1, batch.labels.shape[1]) if batch.labels[b, t] != IGNORE_INDEX]
    by_hand = sum(-logits[b, t - 1].log_softmax(-1)[batch.labels[b, t]] for b, t in picked)
    assert float(total) == pytest.approx(float(by_hand), rel=1e-5)
    shown = tok.convert_ids_to_tokens(batch.labels[1][batch.labels[1] != IGNORE_INDEX].tolist())
    assert shown == ["Ċ", "</", "think", ">Ċ", "5", "<|EOT|>"]


def test_a_conversation_learns_only_its_last_reply(tok, suite):
    from mgrd.data.manifest import load_manifest

    item = next(i for i in load_manifest(suite[0]) if i.task == "conversation")
    ex = get_task("conversation").encode_example(item, tok)
    learned = tok.decode([i for i, m in zip(ex.input_ids, ex.labels_mask) if m])
    assert learned.endswith(item.answer + "<|EOT|>") or learned.rstrip().endswith(item.answer)
    earlier = [m["content"] for m in item.messages[:-1] if m["role"] == "assistant"]
    assert earlier and all(e not in learned for e in earlier if isinstance(e, str))


# ---------------------------------------------------------------------------------------------- accumulation


@pytest.mark.integration  # two optimiser steps of the tiny model on 8 sequences (seconds; more on a loaded CPU)
def test_grad_accumulation_1x8_equals_8x1(trainer):
    lr = trainer.cfg.optim.lr
    trainer.nan_skips = 0
    examples = trainer.mixture.draw(0, 8)
    assert len({e.length for e in examples}) > 1 and any(e.mels for e in examples)  # padding and audio
    start = [copy.deepcopy(x.state_dict()) for x in (trainer.model, trainer.optimizer, trainer.scheduler)]
    grads = []
    hook = trainer.optimizer.register_step_pre_hook(lambda opt, args, kwargs: grads.append(
        {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}))

    def step(micro, accum):
        for x, state in zip((trainer.model, trainer.optimizer, trainer.scheduler), start):
            x.load_state_dict(copy.deepcopy(state))
        trainer.cfg.optim.micro_batch_size, trainer.cfg.optim.grad_accum = micro, accum
        metrics = trainer.train_step(examples)
        return metrics, {n: p.detach().clone() for n, p in trainer.model.named_parameters()}

    (one, p_one), (eight, p_eight) = step(8, 1), step(1, 8)
    for x, state in zip((trainer.model, trainer.optimizer, trainer.scheduler), start):
        x.load_state_dict(state)
    hook.remove()
    assert eight["tokens"] == one["tokens"] and eight["loss"] == pytest.approx(one["loss"], rel=1e-6)
    assert eight["grad_norm"] == pytest.approx(one["grad_norm"], rel=1e-5)
    g_one, g_eight = grads
    assert set(g_one) == set(g_eight) and any(n.startswith("adapter.") for n in g_one)
    for n, g in g_one.items():  # fp32 sums in another order: ~1e-7 of the tensor's largest gradient
        torch.testing.assert_close(g_eight[n], g, rtol=0, atol=1e-5 * float(g.abs().max()) + 1e-12, msg=n)
    # AdamW's first step moves each weight by lr * g / (|g| + eps): insensitive to the rounding of g wherever
    # |g| is well above eps (where it is not, a 1e-10 change of g moves the weight by up to lr)
    for n, g in g_one.items():
        resolved = g.abs() > 1e-5
        torch.testing.assert_close(p_eight[n][resolved], p_one[n][resolved], rtol=0, atol=1e-3 * lr, msg=n)


def test_activation_checkpointing_is_exact_and_bf16_autocast_is_close(trainer):
    from mgrd.train.sft import activation_checkpointing

    examples = trainer.data.sources["audio_qa"][:1] + trainer.data.sources["task_cot"][:1]
    batch = collate_sft(examples, trainer.pad_id)
    model = trainer.model

    def loss_and_grads():
        model.zero_grad(set_to_none=True)
        with trainer._autocast():
            out = model(batch.input_ids, batch.attention_mask, batch.mels, batch.mel_lens)
            total, n = token_loss_sum(out.logits, batch.labels)
        (total / n).backward()
        grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
        model.zero_grad(set_to_none=True)
        return float(total.detach() / n), grads

    model.train()
    plain, g_plain = loss_and_grads()
    activation_checkpointing(model)
    try:
        ckpt, g_ckpt = loss_and_grads()
    finally:
        activation_checkpointing(model, enabled=False)
    assert ckpt == pytest.approx(plain, rel=1e-6)
    for k, g in g_plain.items():  # the same kernels recomputed: equal up to fp32 rounding
        torch.testing.assert_close(g_ckpt[k], g, rtol=1e-5, atol=1e-7, msg=k)
    trainer.cfg.model.autocast_bf16 = True
    try:
        low, _ = loss_and_grads()
    finally:
        trainer.cfg.model.autocast_bf16 = False
    assert low == pytest.approx(plain, rel=2e-2) and low != plain  # bf16 has 8 mantissa bits


def test_features_recomputed_per_batch_equal_the_kept_ones(trainer, tok):
    from mgrd.train.data import encode_source

    kept = trainer.data.sources["audio_qa"][:2]
    items = [e.item for e in kept]
    again, _ = encode_source(items, "audio_qa", "none", tok, trainer.model_config.audio, 512, cache_features=False)
    assert [e.inputs.mels for e in again] == [[], []] and [e.input_ids for e in again] == [e.input_ids for e in kept]
    for a, b in zip(again, kept):
        assert len(a.mels) == len(b.mels) >= 1 and all(torch.equal(x, y) for x, y in zip(a.mels, b.mels))
    batch_a, batch_b = collate_sft(again, trainer.pad_id), collate_sft(kept, trainer.pad_id)
    assert torch.equal(batch_a.mels, batch_b.mels) and torch.equal(batch_a.labels, batch_b.labels)


# ---------------------------------------------------------------------------------------------- learning


@pytest.mark.integration
def test_sft_lowers_held_out_loss_and_trains_every_trainable_tensor(full_run, tok, ids):
    rows = [json.loads(line) for line in (full_run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval/loss" in r]
    assert [r["step"] for r in evals] == [0, 8]
    assert evals[-1]["eval/loss"] < 0.8 * evals[0]["eval/loss"], evals
    assert 0.0 <= evals[-1]["eval/accuracy"] <= 1.0 and "eval/truncated" in evals[-1]
    steps = [r for r in rows if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 9))
    assert all(k in steps[0] for k in ("lr", "grad_norm", "tokens_per_s", "padding", "nan_skips"))
    assert json.loads((full_run / "done.json").read_text())["steps"] == 8
    # final/ is the official layout with its tokenizer; compare every tensor with the initial model (seed 0)
    trained = load_pretrained(full_run / "final")
    initial = build_model(tiny(len(tok), ids), seed=0).state_dict()
    for name, value in trained.state_dict().items():
        if name.startswith("encoder."):
            assert torch.equal(value, initial[name]), f"frozen {name} changed"
        else:
            assert not torch.equal(value, initial[name]), f"trainable {name} did not change"


@pytest.mark.integration
def test_a_trained_encoder_is_saved_in_final_and_loaded_frozen(suite, tmp_path, tok, ids):
    cfg = config(suite, tmp_path, "run.name=enc", "run.max_steps=2", "data.conversation.weight=0",
                 "model.freeze_encoder=false", "optim.encoder_lr=1e-3", "optim.lr=3e-4")
    path = run(cfg)
    trained = load_pretrained(path / "final")  # what a later stage loads (model.path; freeze_encoder defaults true)
    initial = build_model(tiny(len(tok), ids), seed=0).state_dict()
    changed = {n for n, v in trained.state_dict().items() if n.startswith("encoder.") and not torch.equal(v, initial[n])}
    assert changed and not any("positional_embedding" in n for n in changed)  # the fixed sinusoids stay
    assert trained.freeze_encoder and not any(p.requires_grad for p in trained.encoder.parameters())


# ---------------------------------------------------------------------------------------------- resume


@pytest.mark.integration
def test_sigkill_then_resume_equals_the_uninterrupted_run(suite, full_run, tmp_path):
    import yaml

    cfg = config(suite, tmp_path, "run.name=killed", *RUN, eval_set=True)
    cfg_file = tmp_path / "killed.yaml"
    cfg_file.write_text(yaml.safe_dump(json.loads(json.dumps(dataclasses.asdict(cfg)))))
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "mgrd.train.sft", "--config", str(cfg_file)], env=env,
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first = tmp_path / "killed" / "checkpoints" / "step_4" / "state.json"
    deadline = time.monotonic() + 300
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    if proc.poll() is not None:  # ended (or crashed) before its step-4 checkpoint: say why
        pytest.fail(f"the run exited {proc.returncode} before step 4: {proc.communicate()[1].decode()[-2000:]}")
    os.kill(proc.pid, signal.SIGKILL)  # mid-run: step 4 is saved, steps 5-8 and final/ are not
    _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    assert not (tmp_path / "killed" / "final").exists()

    cfg.run.resume = True
    resumed = run(cfg)
    a, b = read_state_dict(resumed / "final"), read_state_dict(full_run / "final")
    for name in b:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)
    rows = [[r for r in map(json.loads, (p / "metrics.jsonl").read_text().splitlines())] for p in (resumed, full_run)]
    assert [r["step"] for r in rows[0]] == [r["step"] for r in rows[1]]  # the killed run's rows past 4 are gone
    for mine, theirs in zip(*rows):
        for key in ("loss", "grad_norm", "lr", "eval/loss", "eval/accuracy"):
            if key in theirs:
                assert mine[key] == pytest.approx(theirs[key], rel=1e-5), (mine["step"], key)


# ---------------------------------------------------------------------------------------------- LoRA


@pytest.mark.integration
def test_lora_trains_only_lora_and_the_adapter_and_saves_merged(suite, tmp_path, tok, ids):
    cfg = config(suite, tmp_path, "run.name=lora", "run.max_steps=2", "run.save_every=1", "model.lora.rank=4",
                 "model.lora.target_modules=[q_proj, v_proj]", "data.conversation.weight=0")
    path = run(cfg)
    state = json.loads((path / "checkpoints" / "step_1" / "state.json").read_text())
    names = list(state["fingerprint"]["trainable"])
    assert sum("lora_A" in n for n in names) == 6 and all("lora_" in n or n.startswith("adapter.") for n in names)
    trained = load_pretrained(path / "final").state_dict()
    initial = build_model(tiny(len(tok), ids), seed=0).state_dict()
    assert set(trained) == set(initial)  # merged: the official names, no lora_ tensors
    changed = {n for n in initial if not torch.equal(trained[n], initial[n])}
    assert {n for n in changed if not n.startswith("adapter.")} == {
        f"model.layers.{i}.self_attn.{p}_proj.weight" for i in range(3) for p in ("q", "v")}
    assert any(n.startswith("adapter.") for n in changed)
    adapter = json.loads((path / "final_lora" / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and sorted(adapter["target_modules"]) == ["q_proj", "v_proj"]


# ---------------------------------------------------------------------------------------------- bad input


def test_empty_dataset_is_a_clear_error(suite, tmp_path):
    with pytest.raises(ValueError, match="empty dataset: no source has manifests"):
        SFTTrainer(load(SFTConfig, None, [f"run.out_dir={tmp_path}", "run.device=cpu", "run.tensorboard=false"]))
    text_only = tmp_path / "text.jsonl"
    text_only.write_text("".join(line + "\n" for line in suite[0].read_text().splitlines()
                                 if json.loads(line)["task"] == "text_compare"))
    only_audio_cot = ["data.task_cot.weight=0", "data.audio_qa.weight=0", "data.conversation.weight=0",
                      "data.audio_cot.weight=1"]
    message = r"text.jsonl\) hold no item of the weighted sources' kinds \(audio_cot: audio"
    with pytest.raises(ValueError, match=message):
        SFTTrainer(config(suite, tmp_path, "run.name=b", *only_audio_cot, f"data.audio_cot.manifests=[{text_only}]"))
    (tmp_path / "none.jsonl").write_text("")
    with pytest.raises(ValueError, match="none.jsonl: manifest has no rows"):
        SFTTrainer(config(suite, tmp_path, "run.name=c", f"data.task_cot.manifests=[{tmp_path / 'none.jsonl'}]",
                          "data.audio_qa.weight=0", "data.conversation.weight=0"))


def test_every_sample_longer_than_the_context_is_a_clear_error(suite, tmp_path):
    with pytest.raises(ValueError, match="every one of the 24 examples is longer than the context of 40 tokens"):
        SFTTrainer(config(suite, tmp_path, "data.max_length=40"))


def test_nan_loss_is_skipped_counted_and_stops_after_the_limit(trainer):
    examples = trainer.data.sources["audio_qa"][:2] + trainer.data.sources["task_cot"][:2]
    poisoned = [Example(copy.copy(e.inputs), e.item, e.source) for e in examples]
    for e in poisoned:
        e.inputs.mels = [m * float("nan") for m in e.inputs.mels]  # NaN features: NaN loss on the audio rows
    start = [copy.deepcopy(x.state_dict()) for x in (trainer.model, trainer.optimizer, trainer.scheduler)]
    trainer.nan_skips = 0
    try:
        metrics = trainer.train_step(poisoned)
        assert metrics["skipped"] == 1 and metrics["nan_skips"] == 1
        assert all(torch.equal(p, start[0][n]) for n, p in trainer.model.named_parameters())
        assert trainer.train_step(examples)["skipped"] == 0  # a good step after a bad one trains
        assert any(not torch.equal(p, start[0][n]) for n, p in trainer.model.named_parameters())
        with pytest.raises(TrainingDivergedError, match="2 step.*non-finite.*max_nan_skips=1") as caught:
            trainer.train_step(poisoned)
        assert caught.value.metrics["nan_skips"] == 2 and not math.isfinite(caught.value.metrics["loss"])
    finally:
        for x, state in zip((trainer.model, trainer.optimizer, trainer.scheduler), start):
            x.load_state_dict(state)
        trainer.nan_skips = 0


@pytest.mark.integration
def test_resume_from_a_checkpoint_of_another_model_is_refused(suite, full_run, tmp_path, capsys):
    shutil.copytree(full_run, tmp_path / "copy")
    with pytest.raises(RunExistsError, match="pass --resume"):
        SFTTrainer(config(suite, tmp_path, "run.name=copy"))
    code = main(["--set", f"run.out_dir={tmp_path}", "--set", "run.name=copy", "--set", "run.device=cpu",
                 "--set", "run.progress=false", "--set", f"data.task_cot.manifests=[{suite[0]}]",
                 "--set", "model.lora.rank=2", "--resume"])
    err = capsys.readouterr().err
    assert code == 2 and "step_4 was written for another model" in err and "trainable tensor" in err, err


def test_an_unknown_target_style_is_named_before_any_work(capsys):
    assert main(["--dry-run", "--set", "data.audio_qa.style=groundd"]) == 2
    assert "data.audio_qa.style must be one of grounded, text_substitute, text, none or null" in capsys.readouterr().err


def test_the_command_parser_imports_no_torch():
    code = ("import argparse, sys, mgrd.train.sft as s; s.add_parser(argparse.ArgumentParser().add_subparsers()); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"  # `mgrd --help` stays fast


def test_unknown_config_key_is_named(capsys):
    assert main(["--set", "optim.lrr=1e-4"]) == 2
    assert "unknown config key optim.lrr (did you mean optim.lr?)" in capsys.readouterr().err


@pytest.mark.integration  # builds the 8B and 33B presets on the meta device (seconds)
@pytest.mark.parametrize("name", ["sft_tiny", "sft_step_audio_2_mini", "sft_step_audio_r1"])
def test_every_shipped_config_loads_and_dry_runs(name, capsys):
    assert main(["--config", name, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "parameters: encoder" in out and "per GPU" in out


@pytest.mark.integration  # builds the 33B preset on the meta device (seconds)
def test_dry_run_plans_the_33b_preset_without_weights(capsys):
    assert main(["--dry-run", "--set", "model.preset=step-audio-r1", "--set", "model.lora.rank=16"]) == 0
    out = capsys.readouterr().out
    import re

    counts = {k: int(v.replace(",", "")) for k, v in re.findall(r"(\w+) ([\d,]+)", out.split("parameters: ")[1])}
    assert 30e9 < counts["total"] < 36e9 and 0 < counts["trainable"] < 0.01 * counts["total"]  # LoRA + adapter


def test_help_lists_every_config_key(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for key in ("optim.grad_accum", "data.audio_qa.weight", "model.lora.rank", "eval.generate_items", "run.resume"):
        assert key in out
