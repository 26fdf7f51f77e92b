"""The training infrastructure: config sections, parameter selection and LoRA merge, the schedule, and the run
folder (metrics rows, TensorBoard, atomic checkpoints that restore exactly, the final model that loads)."""

import dataclasses
import json
import math
import warnings

import pytest
import torch

from mgrd.config import ConfigKeyError
from mgrd.models import build_model, load_pretrained
from mgrd.models.presets import tiny
from mgrd.train.config import LoraSetup, ModelSetup, OptimConfig, RunConfig, describe, load
from mgrd.train.optim import (
    build_optimizer, build_scheduler, clip_gradients, lr_factor, merge_lora, prepare_trainable,
)
from mgrd.train.run import (
    CheckpointMismatchError, RunDir, RunExistsError, model_fingerprint, rng_state,
)


@dataclasses.dataclass
class StageConfig:  # how a stage composes the sections (SFTConfig does the same)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    model: ModelSetup = dataclasses.field(default_factory=ModelSetup)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: why one thread


@pytest.fixture()
def model(tok, ids):
    return build_model(tiny(len(tok), ids), seed=0)


# ---------------------------------------------------------------------------------------------- config


def test_yaml_then_overrides_and_every_field_has_help(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("run: {name: a, max_steps: 7}\noptim: {lr: 0.001}\nmodel: {lora: {rank: 4}}\n")
    cfg = load(StageConfig, path, ["optim.lr=2e-4", "model.lora.target_modules=[q_proj, v_proj]"])
    assert (cfg.run.name, cfg.run.max_steps, cfg.optim.lr) == ("a", 7, 2e-4)
    assert cfg.model.lora.target_modules == ("q_proj", "v_proj") and cfg.model.lora.enabled
    lines = describe(StageConfig)
    leaves = [f for section in (RunConfig, OptimConfig, ModelSetup, LoraSetup) for f in dataclasses.fields(section)]
    assert len(lines) == len(leaves) - 1  # model.lora is a section, not a leaf
    assert all(line.split(": ", 1)[1].strip() for line in lines), "a field without help"


def test_a_partly_overridden_section_keeps_its_own_defaults():
    @dataclasses.dataclass
    class Named:
        run: RunConfig = dataclasses.field(default_factory=lambda: RunConfig(name="stage", max_steps=9))

    cfg = load(Named, None, ["run.seed=3"])
    assert (cfg.run.name, cfg.run.max_steps, cfg.run.seed) == ("stage", 9, 3)  # not RunConfig's own "sft", 100
    from mgrd.train.sft import SFTConfig

    sft = load(SFTConfig, None, ["data.audio_qa.manifests=[a.jsonl]"])
    assert sft.data.audio_qa.style == "none" and sft.data.audio_cot.weight == 0.0


@pytest.mark.parametrize("override, named", [
    ("optim.lrr=1", "optim.lrr (did you mean optim.lr?)"),
    ("run.max_step=3", "run.max_step (did you mean run.max_steps?)"),
    ("model.lora.rnk=2", "model.lora.rnk"),
])
def test_unknown_key_names_it(override, named):
    with pytest.raises(ConfigKeyError, match=f"unknown config key {named}".replace("(", r"\(").replace(")", r"\)")
                       .replace(".", r"\.").replace("?", r"\?")):
        load(StageConfig, None, [override])


@pytest.mark.parametrize("override, message", [
    ("optim.schedule=linear", "optim.schedule must be one of cosine, constant"),
    ("model.distributed=zero3", "model.distributed must be one of none, ddp, fsdp2"),
    ("optim.lr=0", "optim.lr must be > 0"),
    ("run.name=a/b", "run.name must be a plain folder name"),
    ("optim.micro_batch_size=1.5", "must be a whole number"),
])
def test_bad_values_are_one_clear_error(override, message):
    with pytest.raises(ConfigKeyError, match=message):
        load(StageConfig, None, [override])


# ---------------------------------------------------------------------------------------------- optim


def test_lr_factor_pinned():
    # warm-up 2 of 10 steps: 1/2, then 1 at the end of warm-up, cosine down to min_lr_ratio at the last step
    assert [lr_factor(s, 10, 2) for s in (0, 1, 2)] == [0.5, 1.0, 1.0]
    assert lr_factor(9, 10, 2) == pytest.approx(0.1)
    # no warm-up, 5 steps: half-way (step 2 of span 4) is min + (1 - min) / 2
    assert lr_factor(2, 5, 0, min_lr_ratio=0.1) == pytest.approx(0.55)
    assert lr_factor(1, 5, 0, min_lr_ratio=0.0) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_factor(7, 10, 2, schedule="constant") == 1.0


def test_scheduler_follows_lr_factor(model):
    cfg = OptimConfig(lr=1e-3, warmup_steps=2)
    prepare_trainable(model, ModelSetup())
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, total_steps=6)
    seen = []
    for _ in range(6):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([1e-3 * lr_factor(s, 6, 2) for s in range(6)])


def test_full_finetune_freezes_the_encoder_only(model):
    names = prepare_trainable(model, ModelSetup())
    assert names and not any(n.startswith("encoder.") for n in names)
    assert {n.split(".")[0] for n in names} == {"adapter", "model", "lm_head"}
    assert all(not p.requires_grad for p in model.encoder.parameters())
    adapter_only = build_model(model.config, seed=0)
    assert {n.split(".")[0] for n in prepare_trainable(adapter_only, ModelSetup(train_llm=False))} == {"adapter"}
    opt = build_optimizer(model, OptimConfig(weight_decay=0.1))
    decayed = {id(p) for p in opt.param_groups[0]["params"]}
    assert all(p.dim() >= 2 for p in model.parameters() if id(p) in decayed)
    assert opt.param_groups[1]["weight_decay"] == 0.0


def test_encoder_lr_is_its_own_group_only_when_the_encoder_trains(model):
    prepare_trainable(model, ModelSetup(freeze_encoder=False))
    encoder = {id(p) for p in model.encoder.parameters() if p.requires_grad}
    assert encoder
    cfg = OptimConfig(lr=3e-4, encoder_lr=1e-3, weight_decay=0.1, warmup_steps=2)
    opt = build_optimizer(model, cfg)
    groups = [{id(p) for p in g["params"]} for g in opt.param_groups]
    assert len(groups) == 4 and groups[2] | groups[3] == encoder and not (groups[0] | groups[1]) & encoder
    assert [g["lr"] for g in opt.param_groups] == [3e-4, 3e-4, 1e-3, 1e-3]
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0, 0.1, 0.0]
    sched = build_scheduler(opt, cfg, total_steps=6)
    for step in range(6):  # every group follows the same factor
        factor = lr_factor(step, 6, 2)
        assert [g["lr"] for g in opt.param_groups] == pytest.approx([3e-4 * factor] * 2 + [1e-3 * factor] * 2)
        opt.step()
        sched.step()
    # null: one lr, the encoder inside the two usual groups
    opt = build_optimizer(model, OptimConfig(lr=3e-4, encoder_lr=None))
    assert len(opt.param_groups) == 2 and all(g["lr"] == 3e-4 for g in opt.param_groups)
    assert encoder <= {id(p) for g in opt.param_groups for p in g["params"]}
    # a frozen encoder: no encoder group, whatever encoder_lr says
    prepare_trainable(model, ModelSetup())
    opt = build_optimizer(model, OptimConfig(lr=3e-4, encoder_lr=1e-3))
    assert len(opt.param_groups) == 2 and all(g["lr"] == 3e-4 for g in opt.param_groups)
    assert not encoder & {id(p) for g in opt.param_groups for p in g["params"]}
    with pytest.raises(ConfigKeyError, match="optim.encoder_lr must be > 0"):
        load(StageConfig, None, ["optim.encoder_lr=0"])
    assert load(StageConfig, None, ["optim.encoder_lr=null"]).optim.encoder_lr is None


def test_lora_trains_only_lora_and_adapter_and_merges_to_the_same_function(model, ids):
    names = prepare_trainable(model, ModelSetup(lora=LoraSetup(rank=4, target_modules=("q_proj", "v_proj"))))
    assert all("lora_" in n or n.startswith("adapter.") for n in names)
    assert sum("lora_A" in n for n in names) == 3 * 2  # 3 layers x (q, v)
    with torch.no_grad():  # peft starts lora_B at zero; give the update a value
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    x = torch.randint(10, 400, (2, 9))
    before = model(x).logits
    assert merge_lora(model) == 6
    after = model(x).logits
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)
    assert set(model.state_dict()) == set(build_model(model.config, device="meta").state_dict())


def test_clip_gradients_returns_the_norm_and_clips(model):
    prepare_trainable(model, ModelSetup())
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.full_like(p, 1.0)
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    norm = clip_gradients(model, 1.0)
    assert float(norm) == pytest.approx(math.sqrt(n), rel=1e-5)
    after = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in model.parameters() if p.grad is not None))
    assert float(after) == pytest.approx(1.0, rel=1e-4)


# ---------------------------------------------------------------------------------------------- run folder


def _train_a_step(model, opt):
    x = torch.randint(10, 400, (2, 7))
    model(x).logits.float().pow(2).mean().backward()
    opt.step()
    opt.zero_grad()


def test_metrics_rows_tensorboard_and_truncation(tmp_path):
    run = RunDir(tmp_path / "r")
    run.prepare({"run": {"name": "r"}, "optim": {"betas": (0.9, 0.95)}}, resume=False)
    for step in (1, 2, 3):
        run.log(step, {"loss": torch.tensor(1.0 / step), "lr": 0.1})
    run.log(3, {"eval/loss": 0.5})
    run.log(3, {"loss": float("nan"), "grad_norm": torch.tensor(float("inf"))})
    run.close()
    rows = run.read_metrics()
    assert [r["step"] for r in rows] == [1, 2, 3, 3, 3] and rows[0]["loss"] == 1.0 and "time" in rows[0]
    assert rows[3]["eval/loss"] == 0.5
    assert rows[4]["loss"] is None and rows[4]["grad_norm"] is None  # strict JSON: no NaN literal
    assert "NaN" not in run.metrics_path.read_text() and "Infinity" not in run.metrics_path.read_text()
    assert list((tmp_path / "r" / "tb").glob("events.out.tfevents.*"))
    assert "betas:\n  - 0.9" in (tmp_path / "r" / "config.yaml").read_text()
    run.truncate_metrics(2)
    assert [r["step"] for r in run.read_metrics()] == [1, 2]
    with pytest.raises(RunExistsError, match="pass --resume"):
        RunDir(tmp_path / "r").prepare({}, resume=False)


def test_checkpoint_restores_exactly_and_refuses_another_model(model, tmp_path, tok, ids):
    prepare_trainable(model, ModelSetup())
    opt = build_optimizer(model, OptimConfig(lr=1e-2))
    _train_a_step(model, opt)
    fp = model_fingerprint(model)
    run = RunDir(tmp_path / "r", tensorboard=False)
    torch.manual_seed(123)
    path = run.save_checkpoint(1, model, opt, {"data": {"consumed": [3, 4]}}, fp)
    expect_draw = torch.rand(3)
    saved = {n: p.detach().clone() for n, p in model.named_parameters()}
    _train_a_step(model, opt)  # diverge, then restore
    step, state = run.load_checkpoint(path, model, opt, fp)
    assert step == 1 and state == {"data": {"consumed": [3, 4]}}
    for n, p in model.named_parameters():
        assert torch.equal(p, saved[n]), n
    torch.testing.assert_close(torch.rand(3), expect_draw, rtol=0, atol=0)  # the RNG continues where it was
    # the same next step from the restored state as from the saved one
    twin = build_model(model.config, seed=0)
    prepare_trainable(twin, ModelSetup())
    twin_opt = build_optimizer(twin, OptimConfig(lr=1e-2))
    run.load_checkpoint(path, twin, twin_opt, fp)
    torch.manual_seed(7)
    _train_a_step(model, opt)
    torch.manual_seed(7)
    _train_a_step(twin, twin_opt)
    for (n, a), (_, b) in zip(model.named_parameters(), twin.named_parameters()):
        assert torch.equal(a, b), n
    # a wider model is refused with a message naming the difference
    other = build_model(tiny(len(tok), ids), seed=0)
    other.config.text["hidden_size"] = 256
    message = "another model: config text_config.hidden_size is 128 there, 256 here"
    with pytest.raises(CheckpointMismatchError, match=message):
        run.load_checkpoint(path, model, opt, model_fingerprint(other))


def test_checkpoints_are_listed_complete_and_pruned(model, tmp_path):
    prepare_trainable(model, ModelSetup(train_llm=False))
    opt = build_optimizer(model, OptimConfig())
    run = RunDir(tmp_path / "r", tensorboard=False)
    fp = model_fingerprint(model)
    for step in (2, 4, 6):
        run.save_checkpoint(step, model, opt, {}, fp, keep=2)
    (run.checkpoints / ".step_8.tmp-999999999@host-x").mkdir()  # what a killed save leaves
    (run.checkpoints / "step_9").mkdir()  # no state.json: not a checkpoint
    assert [s for s, _ in run.list_checkpoints()] == [4, 6]
    assert run.latest_checkpoint() == run.checkpoint_path(6)
    names = json.loads((run.latest_checkpoint() / "state.json").read_text())["fingerprint"]["trainable"]
    assert names and all(n.startswith("adapter.") for n in names)


def test_final_is_the_official_layout_with_lora_merged(model, tok, tmp_path):
    lora = LoraSetup(rank=2, target_modules=("q_proj",))
    prepare_trainable(model, ModelSetup(lora=lora))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    x = torch.randint(10, 400, (1, 6))
    expected = model(x).logits
    from mgrd.train.optim import lora_config_dict

    run = RunDir(tmp_path / "r", tensorboard=False)
    final = run.save_final(model, tok, lora_config=lora_config_dict(lora))
    loaded = load_pretrained(final)
    torch.testing.assert_close(loaded(x).logits, expected, rtol=1e-4, atol=1e-5)
    assert (final / "tokenizer.json").is_file() or (final / "tokenizer_config.json").is_file()
    adapter = json.loads((tmp_path / "r" / "final_lora" / "adapter_config.json").read_text())
    assert adapter["r"] == 2 and adapter["target_modules"] == ["q_proj"]
    from peft import PeftModel  # the adapter alone, on the untrained base, is the same model again

    base = build_model(model.config, seed=0)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*missing adapter keys.*")  # names peft does not expect
        peft_model = PeftModel.from_pretrained(base, tmp_path / "r" / "final_lora")
    torch.testing.assert_close(peft_model(x).logits, expected, rtol=1e-4, atol=1e-5)


def test_rng_state_round_trip():
    from mgrd.train.run import set_rng_state

    state = rng_state()
    a = (torch.rand(2), __import__("random").random())
    set_rng_state(state)
    assert torch.equal(torch.rand(2), a[0]) and __import__("random").random() == a[1]


def test_describe_shows_each_stage_its_own_nested_defaults():
    """`mgrd rl --help` lists RL's defaults (run.name 'rl'), not the RunConfig class's ('sft')."""
    from mgrd.train.config import describe
    from mgrd.train.rl import RLConfig

    lines = describe(RLConfig)
    want = RLConfig()
    assert f"  run.name = {want.run.name!r}: " in "\n".join(lines) and want.run.name != "sft"
    assert any(line.startswith(f"  optim.lr = {want.optim.lr!r}: ") for line in lines)
