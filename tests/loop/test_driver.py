"""The MGRD loop driver (`mgrd.loop.driver`): stage markers and resume, the D_audio-cot manifest into SFT, bad
input, and (integration) one tiny iteration end to end with its report.

The state-machine tests replace the stage functions with recorders (the real stages train models; the end-to-end
test runs them). Everything else is real: the config loader, the run folder, the manifests, the SFT data loader.
"""

from __future__ import annotations

import json

import pytest

from mgrd.config import ConfigKeyError
from mgrd.data.manifest import load_manifest
from mgrd.data.records import CompletionRecord, SampleRecord
from mgrd.data.synth.writer import synthesize
from mgrd.loop import driver
from mgrd.loop.cli import main as loop_main
from mgrd.loop.filters import score_records
from mgrd.loop.select import select_audio_cot


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: why one thread


def _cfg(tmp_path, suite, *extra) -> driver.LoopConfig:
    return driver.load(None, [f"out_dir={tmp_path}", "name=run", "iterations=2", "progress=false", "device=cpu",
                              f"data.train={suite['train']}", f"data.dev={suite['dev']}", f"data.test={suite['test']}",
                              f"data.ood={suite['ood']}", *extra])


# ---------------------------------------------------------------------------------------------- state machine


class Killed(Exception):
    pass


@pytest.fixture
def recorder(monkeypatch):
    """Stage functions that record their calls and write a file; `kill_at` makes one raise mid-stage."""
    calls, state = [], {"kill_at": None}

    def make(name):
        def stage(ctx, t, folder):
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "out.txt").write_text(f"{name} {t}\n")
            calls.append((t, name))
            if state["kill_at"] == (t, name):
                raise Killed(f"killed in {name} of iteration {t}")
            return {"n": 1}
        return stage

    monkeypatch.setattr(driver, "STAGE_FNS", {name: make(name) for name in driver.COLD_STAGES + driver.STAGES})
    import mgrd.loop.report

    monkeypatch.setattr(mgrd.loop.report, "write_report", lambda root: None)  # the end-to-end test draws it
    return calls, state


def test_stages_run_in_order_with_done_markers(tmp_path, suite, recorder, monkeypatch):
    calls, _ = recorder
    published = []
    monkeypatch.setattr(driver, "_publish_final", lambda root, cfg: published.append(root))
    cfg = _cfg(tmp_path, suite)
    driver.run(cfg)
    assert published == [cfg.path]
    expected = [(0, s) for s in driver.COLD_STAGES] + [(t, s) for t in (1, 2) for s in driver.STAGES]
    assert calls == expected
    root = cfg.path
    assert all(done for _, _, done in driver.progress_of(root, cfg))
    assert json.loads((root / "iter_1" / "sample" / "done.json").read_text())["n"] == 1
    assert [json.loads(line)["stage"] for line in (root / "stages.jsonl").read_text().splitlines()] == \
        [s for _, s in expected]


def test_a_killed_stage_is_redone_and_finished_ones_are_not(tmp_path, suite, recorder, monkeypatch):
    calls, state = recorder
    monkeypatch.setattr(driver, "_publish_final", lambda root, cfg: None)
    cfg = _cfg(tmp_path, suite)
    state["kill_at"] = (1, "sft")
    with pytest.raises(Killed):
        driver.run(cfg)
    assert calls[-1] == (1, "sft")
    assert not driver.is_done(driver.stage_dir(cfg.path, 1, "sft"))
    assert driver.is_done(driver.stage_dir(cfg.path, 1, "select"))
    first = list(calls)
    calls.clear()
    state["kill_at"] = None
    driver.run(cfg)  # a plain rerun continues
    assert calls[0] == (1, "sft")  # the killed stage again, nothing finished before it
    assert not set(calls) & set(first[:-1])
    assert calls[-1] == (2, "eval")
    calls.clear()
    driver.run(cfg)  # everything finished: nothing runs again
    assert calls == []


def test_stop_after_then_rerun_continues_from_the_next_stage(tmp_path, suite, recorder, monkeypatch):
    calls, _ = recorder
    monkeypatch.setattr(driver, "_publish_final", lambda root, cfg: None)
    assert loop_main(["loop", "--config", _write_cfg(tmp_path, suite), "--stop-after", "1:sample"]) == 0
    assert calls[-1] == (1, "sample")
    calls.clear()
    assert loop_main(["loop", "--config", _write_cfg(tmp_path, suite)]) == 0
    assert calls[0] == (1, "select") and calls[-1] == (2, "eval")


def _write_cfg(tmp_path, suite) -> str:
    path = tmp_path / "loop.yaml"
    path.write_text(f"name: run\nout_dir: {tmp_path}\niterations: 2\nprogress: false\ndevice: cpu\n"
                    f"data: {{train: {suite['train']}, dev: {suite['dev']}, test: {suite['test']}, "
                    f"ood: {suite['ood']}}}\n")
    return str(path)


def test_a_changed_config_needs_resume(tmp_path, suite, recorder, monkeypatch):
    monkeypatch.setattr(driver, "_publish_final", lambda root, cfg: None)
    driver.run(_cfg(tmp_path, suite), stop_after=(0, "sft"))
    with pytest.raises(driver.LoopError, match="another config; pass --resume"):
        driver.run(_cfg(tmp_path, suite, "select.max_per_item=3"))
    driver.run(_cfg(tmp_path, suite, "select.max_per_item=3"), resume=True, stop_after=(0, "eval"))


def test_model_after_follows_the_skipped_stages(tmp_path, suite):
    cfg = _cfg(tmp_path, suite)
    root = cfg.path
    driver.mark_done(driver.stage_dir(root, 0, "sft"))
    driver.mark_done(driver.stage_dir(root, 1, "sft"), {"skipped": "empty D_audio-cot"})
    driver.mark_done(driver.stage_dir(root, 1, "rl"), {"skipped": "band empty"})
    assert driver.model_after(root, cfg, 1) == driver.stage_dir(root, 0, "sft") / "final"
    driver.mark_done(driver.stage_dir(root, 2, "sft"))
    driver.mark_done(driver.stage_dir(root, 2, "rl"))
    assert driver.model_after(root, cfg, 2) == driver.stage_dir(root, 2, "rl") / "final"


def test_the_cold_start_trains_the_perceived_model(tmp_path, suite, monkeypatch):
    """A finished perceive stage hands its model to the cold-start SFT and, with cold_start=false, on to iteration 1."""
    import mgrd.train.sft

    seen = []
    monkeypatch.setattr(mgrd.train.sft, "run", lambda scfg: seen.append(scfg.model.path))
    cfg = _cfg(tmp_path, suite, "perceive.steps=5")
    root = cfg.path
    ctx = driver.Context(cfg, root, suite)
    driver.mark_done(driver.stage_dir(root, 0, "perceive"))
    driver.stage_cold_sft(ctx, driver.stage_dir(root, 0, "sft"))
    assert seen == [str(driver.stage_dir(root, 0, "perceive") / "final")]
    skipped = _cfg(tmp_path, suite, f"model={tmp_path}", "cold_start=false")
    driver.stage_cold_sft(driver.Context(skipped, root, suite), driver.stage_dir(root, 0, "sft"))
    assert len(seen) == 1 and driver.read_done(driver.stage_dir(root, 0, "sft")) == {"skipped": "cold_start=false"}
    assert driver.model_after(root, skipped, 0) == driver.stage_dir(root, 0, "perceive") / "final"
    driver.mark_done(driver.stage_dir(root, 0, "perceive"), {"skipped": "perceive.steps=0"})
    assert driver.model_after(root, skipped, 0) == tmp_path  # neither trained: the given model as is


def test_a_few_accepted_chains_are_not_repeated_for_hundreds_of_draws():
    # 4 chains at half of a batch of 8: 2 epochs take ceil(2 * 4 / 4) = 2 steps
    assert driver.chain_limited_steps(4, 8, 0.5, 2.0, 20) == 2
    assert driver.chain_limited_steps(400, 8, 0.5, 2.0, 20) == 20  # capped by the stage's max_steps
    assert driver.chain_limited_steps(1, 8, 1.0, 2.0, 20) == 1  # at least one step
    assert driver.chain_limited_steps(4, 8, 0.5, 0.0, 20) == 20  # 0: the stage's own max_steps


# ---------------------------------------------------------------------------------------------- manifest -> SFT


def test_selected_chains_round_trip_into_the_sft_data(tmp_path, suite, tok):
    """The select stage's manifest of accepted chains is what `mgrd sft`'s audio_cot source trains on."""
    from mgrd.models.presets import tiny
    from mgrd.train.data import SFTDataConfig, SourceConfig, build_sources

    items = {i.id: i for i in load_manifest(suite["train"]) if i.audio}
    records = []
    for item in items.values():
        good = CompletionRecord.from_text(f"{item.reasoning}\n</think>\n{item.answer}", 60, "stop")
        bad = CompletionRecord.from_text("I cannot hear audio.\n</think>\nno", 8, "stop")
        records.append(SampleRecord(item_id=item.id, task=item.task, prompt="", completions=[good, good, bad]))
    score_records(records, items)
    chosen = select_audio_cot(records, max_per_item=2)
    assert len(chosen) == len(items)  # the duplicate chain counts once, the denial fails selfcog
    path = tmp_path / "audio_cot.jsonl"
    driver.write_chain_manifest(chosen, items, path)
    back = {i.id: i for i in load_manifest(path)}
    assert set(back) == {f"{i}#cot0" for i in items}
    for item_id, item in items.items():
        row = back[f"{item_id}#cot0"]
        assert row.reasoning == item.reasoning and row.answer == item.answer and row.audio == item.audio
    data = SFTDataConfig(task_cot=SourceConfig(weight=0.0), audio_qa=SourceConfig(weight=0.0),
                         conversation=SourceConfig(weight=0.0),
                         audio_cot=SourceConfig(manifests=(str(path),), weight=1.0))
    encoded = build_sources(data, tok, tiny().audio, 1024, progress=False)
    examples = encoded.sources["audio_cot"]
    assert len(examples) == len(items)
    target = tok.decode([t for t, m in zip(examples[0].input_ids, examples[0].labels_mask) if m])
    assert examples[0].item.reasoning in target and target.rstrip().endswith("<|EOT|>")


def test_replayed_reference_chains_follow_the_accepted_ones(tmp_path, suite):
    """sft_replay: the chain manifest holds the accepted chains, then reference chains of train items
    (`<item>#ref`, their grounded chain and true answer, audio where it is)."""
    from mgrd.loop.select import replay_items

    items = {i.id: i for i in load_manifest(suite["train"]) if i.audio}
    first = next(iter(items.values()))
    good = CompletionRecord.from_text(f"{first.reasoning}\n</think>\n{first.answer}", 60, "stop")
    record = SampleRecord(item_id=first.id, task=first.task, prompt="", completions=[good])
    score_records([record], items)
    chosen = select_audio_cot([record], max_per_item=2)
    replay = replay_items(list(items.values()), 3, seed=1)
    path = tmp_path / "audio_cot.jsonl"
    rows = driver.write_chain_manifest(chosen, items, path, replay)
    back = list(load_manifest(path))
    assert len(rows) == 1 and [i.id for i in back] == [f"{first.id}#cot0"] + [f"{i.id}#ref" for i in replay]
    for got, item in zip(back[1:], replay):
        assert (got.reasoning, got.answer, got.audio) == (item.reasonings["grounded"], item.answer, item.audio)


def test_a_cold_start_with_text_substitute_chains(tmp_path, suite, monkeypatch):
    """cold_grounded_share=0.5: the cold start's audio CoT source is a manifest where half of each family's items
    carry the grounded chain and true answer, the rest the text-substitute chain and the answer it guesses."""
    import mgrd.train.sft

    seen = []
    monkeypatch.setattr(mgrd.train.sft, "run", lambda scfg: seen.append(scfg.data.audio_cot))
    cfg = _cfg(tmp_path, suite, "cold_grounded_share=0.5")
    driver.stage_cold_sft(driver.Context(cfg, cfg.path, suite), driver.stage_dir(cfg.path, 0, "sft"))
    (source,) = seen
    assert source.style is None and source.manifests == (str(cfg.path / "iter_0" / "cold_audio_cot.jsonl"),)
    rows = list(load_manifest(source.manifests[0]))
    audio = [i for i in load_manifest(suite["train"]) if i.audio]
    assert len(rows) == len(audio)
    by = {}
    for row in rows:
        by.setdefault(row.task, []).append(row.reasoning_style)
        chain_answer = row.answer if row.reasoning_style == "grounded" else str(row.meta["substitute_answer"])
        assert row.reasoning == row.reasonings[row.reasoning_style] and row.answer == chain_answer
    for styles in by.values():
        assert abs(styles.count("grounded") - styles.count("text_substitute")) <= 1
    with pytest.raises(ConfigKeyError, match="cold_grounded_share must lie in"):
        _cfg(tmp_path, suite, "cold_grounded_share=1.5")


# ---------------------------------------------------------------------------------------------- bad input


def test_unknown_config_key_is_named(tmp_path, suite):
    with pytest.raises(ConfigKeyError, match="select.max_per_itm.*did you mean select.max_per_item"):
        _cfg(tmp_path, suite, "select.max_per_itm=3")
    assert loop_main(["loop", "--set", "iterationz=2"]) == 2


def test_the_iterations_curate_from_the_pool_of_new_items(tmp_path, suite):
    """With data.synth_pool the iterations ask new items drawn like the train split's, none of the cold start's."""
    cfg = _cfg(tmp_path, suite, "data.synth_pool=9", "data.synth_families=[pitch_compare, text_logic]")
    manifests = driver.prepare_data(cfg, cfg.path)
    assert manifests["pool"] == cfg.path / "data" / "pool" / "manifest.jsonl"
    pool = list(load_manifest(manifests["pool"]))
    assert len(pool) == 9 and {item.meta["split"] for item in pool if item.audio} == {"pool"}
    driver.stage_curate(driver.Context(cfg, cfg.path, manifests), 1, tmp_path / "curate")
    asked = list(load_manifest(tmp_path / "curate" / "questions.jsonl"))
    train = list(load_manifest(suite["train"]))
    assert [q.id for q in asked] == [item.id for item in pool if item.task == "pitch_compare"]
    def facts(item) -> str:  # what the clip holds, without the split's name
        return json.dumps({k: v for k, v in item.meta.items() if k != "split"}, sort_keys=True)

    assert not {facts(q) for q in asked} & {facts(item) for item in train}
    # without a pool the train split's audio questions are asked
    plain = _cfg(tmp_path, suite, "name=plain")
    driver.stage_curate(driver.Context(plain, plain.path, driver.prepare_data(plain, plain.path)), 1,
                        tmp_path / "curate_train")
    assert {q.id for q in load_manifest(tmp_path / "curate_train" / "questions.jsonl")} == \
        {item.id for item in train if item.audio}


def test_a_manifest_without_perception_items_is_refused(tmp_path, suite):
    text = synthesize(tmp_path / "text", n=4, seed=0, families=["text_logic"], workers=1, progress=False)
    cfg = _cfg(tmp_path, suite, f"data.train={text}")
    ctx = driver.Context(cfg, cfg.path, {"train": text})
    with pytest.raises(ValueError, match="no audio questions that need perception"):
        driver.stage_curate(ctx, 1, tmp_path / "curate")


def test_a_missing_model_folder_is_refused(tmp_path, suite):
    cfg = _cfg(tmp_path, suite, f"model={tmp_path / 'nowhere'}")
    with pytest.raises(FileNotFoundError, match="nowhere is not a checkpoint folder"):
        driver.run(cfg)
    assert not cfg.path.exists()  # nothing written
    with pytest.raises(ConfigKeyError, match="cold_start=false needs a model"):
        _cfg(tmp_path, suite, "cold_start=false")


def test_a_bad_band_and_k_are_refused(tmp_path, suite):
    with pytest.raises(ConfigKeyError, match="band"):
        _cfg(tmp_path, suite, "select.band_high=9")
    with pytest.raises(ConfigKeyError, match="K"):
        _cfg(tmp_path, suite, "select.samples_per_item=0")


def test_help_lists_every_key(capsys):
    with pytest.raises(SystemExit):
        loop_main(["loop", "--help"])
    out = capsys.readouterr().out
    for key in ("select.band_low", "sample.prompt_suffix", "rl.overrides", "--stop-after", "--resume"):
        assert key in out


# ---------------------------------------------------------------------------------------------- end to end


@pytest.mark.integration  # cold start + one iteration of the tiny preset, tiny sizes (~1-2 min loaded)
def test_one_tiny_iteration_writes_every_stage_and_the_report(tmp_path, suite):
    cfg = _cfg(tmp_path, suite, "iterations=1",
               "cold_sft.overrides=[run.max_steps=6, run.save_every=3, run.tensorboard=false, "
               "optim.micro_batch_size=4, optim.grad_accum=1]",
               "sft.overrides=[run.max_steps=2, run.tensorboard=false, optim.micro_batch_size=4]",
               "rl.overrides=[run.max_steps=1, run.tensorboard=false, algo.prompts_per_step=2, "
               "sampling.max_new_tokens=8]",
               "select.samples_per_item=4", "select.band_low=0", "select.band_high=4", "select.text_per_audio=0.5",
               "sample.items_per_iteration=3", "sample.sampling.max_new_tokens=12",
               "eval.max_items=3", "eval.max_new_tokens=8")
    root = driver.run(cfg)
    for t, stage, done in driver.progress_of(root, cfg):
        assert done, (t, stage)
    samples = [json.loads(line) for line in (root / "iter_1/sample/samples.jsonl").read_text().splitlines()]
    assert len(samples) == 3 and all(len(r["completions"]) == 4 for r in samples)
    assert all({"correct", "grounding", "coherence", "selfcog"} <= set(c["scores"]) for r in samples
               for c in r["completions"])
    stats = json.loads((root / "iter_1/select/stats.json").read_text())
    assert sum(stats["pass_hist"]) == 3 and stats["band_items"] == 3  # band 0..4 of 4 keeps every question
    assert stats["rl_items"] >= 3 and (root / "iter_1/rl/final/config.json").is_file()
    sft_done = json.loads((root / "iter_1/sft/done.json").read_text())
    if stats["kept_chains"] == 0:  # a 6-step model rarely passes every filter: the stage says it skipped
        assert "skipped" in sft_done
    for split in ("test", "ood"):
        assert json.loads((root / f"iter_1/eval/{split}/summary.json").read_text())["overall"]["n"] == 3
    summary = json.loads((root / "summary.json").read_text())
    assert [e["iteration"] for e in summary["iterations"]] == [0, 1]
    assert "filters" in summary["iterations"][1]["sampling"]
    for name in ("report.html", "report.md", "plots/accuracy.png", "plots/pass_hist.png", "plots/filters.png",
                 "final/config.json"):
        assert (root / name).is_file(), name
    assert (root / "final" / "SOURCE").read_text().strip().endswith("iter_1/rl/final")


@pytest.mark.parametrize("name", ["loop_tiny", "loop_gpu"])
def test_shipped_loop_configs_and_their_stage_configs_load(name):
    from mgrd.config import load_config
    from mgrd.train import rl, sft

    cfg = driver.load(name, ["model=/any/checkpoint"])
    for stage in (cfg.cold_sft, cfg.sft):
        sft.load(sft.SFTConfig, stage.config, list(stage.overrides))
    load_config(rl.RLConfig, cfg.rl.config, list(cfg.rl.overrides))


def test_rl_reward_replaces_the_rl_configs_reward(tmp_path, suite):
    """The format-term ablation through config alone: `rl_reward` reaches the RL stage's reward functions."""
    plain = driver._load_rl(_cfg(tmp_path, suite), [])
    assert plain.reward.functions == {"report": 1.0}
    ablated = driver._load_rl(_cfg(tmp_path, suite, "rl_reward={text: 1.0, audio_correct: 0.8}"), [])
    assert ablated.reward.functions == {"text": 1.0, "audio_correct": 0.8}
