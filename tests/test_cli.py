"""The `mgrd` command line: help for every command, demo, init/inspect, generate, and clear errors."""

import importlib.metadata
import json
import re
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from mgrd.cli import build_parser, main


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "tiny"
    assert main(["init", "--preset", "tiny", "--out", str(out), "--seed", "0"]) == 0
    return out


@pytest.fixture()
def clip(tmp_path):
    t = np.arange(16000) / 16000
    path = tmp_path / "tone.wav"
    sf.write(path, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000)
    return path


def test_every_flag_has_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        for action in p._actions:
            if action.dest != "help" and action.option_strings:
                assert action.help, f"mgrd {name} {action.option_strings[0]} has no help"


def test_console_script_help_runs():
    out = subprocess.run([sys.executable, "-m", "mgrd.cli", "generate", "--help"], capture_output=True, text=True, check=True)
    assert "--repetition-penalty" in out.stdout and "--samples" in out.stdout


def test_inspect_preset_and_folder(tiny_dir, capsys):
    assert main(["inspect", "--preset", "step-audio-r1"]) == 0
    out = capsys.readouterr().out
    assert "33,487,033,600" in out and '"model_type": "step_audio_2"' in out
    assert main(["inspect", str(tiny_dir)]) == 0
    out = capsys.readouterr().out
    assert "'audio_patch': 511" in out and "tokenizer: 512 tokens" in out
    assert "tensors in 1 file(s)" in out


def test_generate_json_is_one_openai_shaped_document(tiny_dir, clip, capsys):
    code = main(["generate", "--model", str(tiny_dir), "--audio", str(clip), "--prompt", "Is it high?",
                 "--samples", "3", "--json", "--max-new-tokens", "8", "--seed", "0"])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)  # one JSON document, not JSON Lines
    assert doc["object"] == "chat.completion" and doc["model"] == str(tiny_dir)
    assert [c["index"] for c in doc["choices"]] == [0, 1, 2]
    for choice in doc["choices"]:
        assert set(choice["message"]) == {"role", "content", "reasoning_content"}
        assert choice["finish_reason"] in ("stop", "length")
    usage = doc["usage"]
    assert 0 < usage["completion_tokens"] <= 3 * 8 and usage["prompt_tokens"] > 25  # 1 s of audio: 25 tokens
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_generate_streams_with_headers(tiny_dir, clip, capsys):
    assert main(["generate", "--model", str(tiny_dir), "--audio", str(clip), "--max-new-tokens", "6", "--temperature", "0"]) == 0
    assert "── thinking ──" in capsys.readouterr().out


def test_clear_errors(tiny_dir, clip, tmp_path, capsys):
    assert main(["generate", "--model", str(tiny_dir), "--audio", str(tmp_path / "nope.wav")]) == 2
    assert "audio file not found" in capsys.readouterr().err
    assert main(["generate", "--model", str(tiny_dir), "--audio", str(clip), "--set", "temprature=1"]) == 2
    assert "did you mean temperature" in capsys.readouterr().err
    assert main(["generate", "--model", str(tmp_path / "no_model"), "--prompt", "hi"]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["generate", "--model", str(tiny_dir), "--prompt", "hi", "--top-p", "2"]) == 2
    assert "top_p" in capsys.readouterr().err
    assert main(["inspect"]) == 2
    assert "give a checkpoint folder or --preset" in capsys.readouterr().err
    assert main(["generate", "--model", str(tiny_dir), "--prompt", "hi", "--dtype", "float32", "--set", "seed=abc"]) == 2
    assert "seed must be a whole number" in capsys.readouterr().err
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF0000WAVEjunk" * 20)
    assert main(["generate", "--model", str(tiny_dir), "--audio", str(bad)]) == 2
    assert "corrupt or not audio" in capsys.readouterr().err
    empty = tmp_path / "empty.flac"
    empty.write_bytes(b"")
    assert main(["generate", "--model", str(tiny_dir), "--audio", str(empty)]) == 2
    assert "empty" in capsys.readouterr().err


@pytest.mark.integration
def test_demo_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no runs/speedrun/final here: the random model
    assert main(["demo", "--out", str(tmp_path / "demo"), "--max-new-tokens", "12"]) == 0
    out = capsys.readouterr().out
    assert "built the tiny model" in out and "── thinking ──" in out
    assert (tmp_path / "demo" / "model" / "tokenizer.json").is_file()
    # It says what it shows: an untrained model whose output is noise, what trains one, and what to run next.
    assert out.index("untrained: its weights are random") < out.index("── thinking ──")
    assert out.index("`mgrd speedrun` trains one") < out.index("── thinking ──")
    assert "next steps:" in out and f"mgrd inspect {tmp_path / 'demo' / 'model'}" in out


def _answers(out: str) -> list[list[str]]:
    """The demo's graded answers: per question its [question, thinking, answer + correct] lines."""
    lines = out.splitlines()
    return [lines[i:i + 3] for i, line in enumerate(lines) if line.startswith("- [")]


def test_demo_shows_the_speedrun_model_when_one_exists(tmp_path, tiny_dir, capsys, monkeypatch):
    import shutil

    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_dir, tmp_path / "runs" / "speedrun" / "final")  # where `mgrd speedrun` leaves its model
    assert main(["demo", "--out", str(tmp_path / "demo"), "--questions", "2", "--max-new-tokens", "8"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("model: runs/speedrun/final (trained by `mgrd speedrun`)")
    assert "untrained" not in out and not (tmp_path / "demo" / "model").exists()  # no random model built
    answers = _answers(out)
    assert [a[0].split("]")[0] for a in answers] == ["- [pitch_compare", "- [duration_compare"]
    for question, thinking, answer in answers:
        assert thinking.startswith("  thinking: ") and re.fullmatch(r"  answer: .*  correct: (yes|no)", answer)


def test_demo_model_flag_picks_the_checkpoint(tmp_path, tiny_dir, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--model", str(tiny_dir), "--questions", "1", "--max-new-tokens", "4"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"model: {tiny_dir} (given with --model)") and len(_answers(out)) == 1


def test_demo_model_flag_refuses_a_folder_without_a_checkpoint(tmp_path, capsys):
    assert main(["demo", "--model", str(tmp_path)]) == 2
    assert f"--model {tmp_path} is not a checkpoint folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    assert "runs/speedrun/final" in capsys.readouterr().out  # --help says which model it shows by default


# ------------------------------------------------------------------------------------------------ init: data loss
def _tree(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_init_refuses_a_non_empty_folder_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"\xff\xd8 precious")
    assert main(["init", "--out", str(out)]) == 2
    assert "output folder is not empty" in capsys.readouterr().err
    assert _tree(tmp_path) == ["photos", "photos/holiday.jpg"]
    assert main(["init", "--out", str(out), "--overwrite"]) == 0
    assert (out / "config.json").is_file() and not (out / "holiday.jpg").exists() and _tree(tmp_path)[0] == "photos"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_init_never_turns_a_file_into_a_folder(tmp_path, capsys):
    wav = tmp_path / "a.wav"
    wav.write_bytes(b"RIFF....WAVEfmt ")
    for extra in ([], ["--overwrite"]):
        assert main(["init", "--out", str(wav), *extra]) == 2
        assert "exists and is not a folder" in capsys.readouterr().err
    assert wav.read_bytes() == b"RIFF....WAVEfmt " and _tree(tmp_path) == ["a.wav"]  # no hidden .a.wav.old-PID


def test_init_files_are_readable_by_others(tiny_dir):
    from mgrd.atomic import current_umask

    mask = current_umask()
    assert tiny_dir.stat().st_mode & 0o777 == 0o777 & ~mask
    assert {f.name: f.stat().st_mode & 0o777 for f in tiny_dir.iterdir()} == {f.name: 0o666 & ~mask for f in tiny_dir.iterdir()}


# ------------------------------------------------------------------------------------------- init: presets, dtype
def test_unknown_preset_names_the_choices(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["init", "--preset", "nope", "--out", "x"])
    assert exit_info.value.code == 2
    assert "unknown preset 'nope'; choose from tiny, step-audio-2-mini, step-audio-r1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["init", "--help"])
    assert "{tiny,step-audio-2-mini,step-audio-r1}" in capsys.readouterr().out


def test_cli_preset_names_are_the_presets():
    from mgrd.cli import PRESET_NAMES
    from mgrd.models.presets import PRESETS

    assert PRESET_NAMES == tuple(PRESETS)


def test_released_preset_without_tokenizer_names_the_flag(tmp_path, capsys):
    assert main(["init", "--preset", "step-audio-r1", "--out", str(tmp_path / "m")]) == 2
    assert "needs its tokenizer: pass --tokenizer DIR" in capsys.readouterr().err


def test_memory_is_estimated_from_the_meta_build():
    import torch

    from mgrd.cli import model_bytes
    from mgrd.models.presets import step_audio_2_mini

    # 8,315,179,264 parameters + 128 rotary buffer values, 4 bytes each in float32 and 2 in bfloat16.
    assert model_bytes(step_audio_2_mini(), torch.float32) == 8_315_179_392 * 4
    assert model_bytes(step_audio_2_mini(), torch.bfloat16) == 8_315_179_392 * 2


def test_init_refuses_a_build_that_cannot_fit(tmp_path, tok, capsys, monkeypatch):
    from mgrd.tokenizer import save_tokenizer

    save_tokenizer(tok, tmp_path / "tok")
    monkeypatch.setattr("mgrd.cli.available_memory", lambda: 24 * 10**9)  # a 24 GB machine
    assert main(["init", "--preset", "step-audio-2-mini", "--tokenizer", str(tmp_path / "tok"), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "step-audio-2-mini in float32 needs about 33.3 GB of memory but 24.0 GB is available; " \
           "try --dtype bfloat16 (16.6 GB)" in err
    assert not (tmp_path / "m").exists()
    assert main(["init", "--preset", "step-audio-r1", "--tokenizer", str(tmp_path / "tok"), "--out", str(tmp_path / "m"),
                 "--dtype", "bfloat16"]) == 2
    assert "step-audio-r1 in bfloat16 needs about 67.0 GB of memory but 24.0 GB is available; " \
           "use a machine with more memory" in capsys.readouterr().err
    assert main(["init", "--preset", "step-audio-r1", "--tokenizer", str(tmp_path / "absent"), "--out", str(tmp_path / "m")]) == 2
    assert "tokenizer folder not found" in capsys.readouterr().err
    monkeypatch.setattr("mgrd.cli.available_memory", lambda: 10**6)
    assert main(["init", "--out", str(tmp_path / "t"), "--dtype", "bfloat16"]) == 2  # checked before building
    assert "tiny in bfloat16 needs about 0.0 GB" in capsys.readouterr().err and not (tmp_path / "t").exists()


def test_init_in_bfloat16(tmp_path):
    import torch
    from safetensors import safe_open

    assert main(["init", "--out", str(tmp_path / "m"), "--dtype", "bfloat16"]) == 0
    assert json.loads((tmp_path / "m" / "config.json").read_text())["torch_dtype"] == "bfloat16"
    with safe_open(tmp_path / "m" / "model.safetensors", framework="pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}


# --------------------------------------------------------------------------------------- inspect: what generate refuses
def _damaged(tiny_dir, tmp_path, how: str):
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    ckpt = tmp_path / how
    shutil.copytree(tiny_dir, ckpt)
    weights = ckpt / "model.safetensors"
    state = load_file(weights)
    if how == "missing":
        del state["lm_head.weight"]
    elif how == "unexpected":
        state["lm_head.bias"] = torch.zeros(4)
    elif how == "misshaped":
        state["lm_head.weight"] = state["lm_head.weight"][:, :-1].contiguous()
    elif how == "empty":
        state = {}
    if how in ("missing", "unexpected", "misshaped", "empty"):
        save_file(state, weights)
    elif how == "truncated":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size * 3 // 4])
    elif how == "header":
        weights.write_bytes(b"\x00" * 5)
    elif how == "unreadable":  # root reads mode-000 files, so make it something no one can read as a file
        weights.unlink()
        weights.mkdir()
    elif how == "absent_shard":
        index = {"metadata": {}, "weight_map": {k: "model-00001-of-00002.safetensors" for k in state}}
        (ckpt / "model.safetensors.index.json").write_text(json.dumps(index))
        weights.rename(ckpt / "model-00002-of-00002.safetensors")
    return ckpt


@pytest.mark.parametrize("how, message", [
    ("missing", "1 missing tensor(s): lm_head.weight"),
    ("unexpected", "1 unexpected tensor(s): lm_head.bias"),
    ("misshaped", "1 mis-shaped tensor(s): lm_head.weight is (512, 127), expected (512, 128)"),
    ("empty", "missing tensor(s)"),
    ("truncated", "cannot read safetensors"),
    ("header", "cannot read safetensors"),
    ("unreadable", "model.safetensors is not a file"),
    ("absent_shard", "lists model-00001-of-00002.safetensors, which is missing"),
])
def test_inspect_warns_and_fails_on_what_generate_refuses(tiny_dir, tmp_path, capsys, how, message):
    from mgrd.models import CheckpointError, load_pretrained

    ckpt = _damaged(tiny_dir, tmp_path, how)
    with pytest.raises(CheckpointError, match=re.escape(message)):
        load_pretrained(ckpt)  # generate refuses it ...
    assert main(["inspect", str(ckpt)]) == 1  # ... so inspect says so
    captured = capsys.readouterr()
    assert message in captured.err and "would refuse" in captured.err and "Traceback" not in captured.err
    assert '"model_type": "step_audio_2"' in captured.out  # the config is still shown


def test_inspect_a_good_folder_exits_0(tiny_dir, capsys):
    assert main(["inspect", str(tiny_dir)]) == 0
    assert capsys.readouterr().err == ""


def test_config_json_that_is_not_an_object(tiny_dir, tmp_path, capsys):
    import shutil

    ckpt = tmp_path / "list"
    shutil.copytree(tiny_dir, ckpt)
    (ckpt / "config.json").write_text("[1, 2]")
    assert main(["inspect", str(ckpt)]) == 2
    assert capsys.readouterr().err == f"error: {ckpt / 'config.json'}: expected a JSON object, got a list\n"
    assert main(["inspect", str(tmp_path / "nothing")]) == 2
    assert "checkpoint folder not found" in capsys.readouterr().err


# ------------------------------------------------------------------------- generate: cheap checks before the weights
@pytest.fixture()
def no_weights(monkeypatch):
    """Loading the weights fails the test: every error below must be found before that (minutes on 33B)."""
    def refuse(*args, **kwargs):
        raise AssertionError("weights were loaded before the inputs were checked")

    monkeypatch.setattr("mgrd.models.load_pretrained", refuse)


@pytest.mark.parametrize("extra, message", [
    (["--audio", "{tmp}/nope.wav"], "audio file not found"),
    (["--audio", "{tmp}/bad.wav"], "corrupt or not audio"),
    (["--set", "temprature=1"], "did you mean temperature"),
    (["--set", "temperature=true"], "temperature must be a number, got True"),
    (["--top-p", "2"], "top_p must be in (0, 1]"),
    (["--config", "nope"], "config file not found: nope (named configs: "),  # the names shipped in mgrd/configs
    (["--device", "tpu"], "unknown device 'tpu'; use cpu, cuda or cuda:N"),
    (["--device", "meta"], "--device meta: not supported"),
])
def test_generate_checks_inputs_before_loading_weights(tiny_dir, tmp_path, capsys, no_weights, extra, message):
    (tmp_path / "bad.wav").write_bytes(b"RIFF0000WAVEjunk" * 20)
    args = [a.format(tmp=tmp_path) for a in extra]
    assert main(["generate", "--model", str(tiny_dir), "--prompt", "hi", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err


def test_generate_without_a_gpu_is_one_line(tiny_dir, capsys, no_weights):
    import torch

    device = "cuda:99" if torch.cuda.is_available() else "cuda"
    assert main(["generate", "--model", str(tiny_dir), "--prompt", "hi", "--device", device]) == 2
    err = capsys.readouterr().err
    expected = "there are only" if torch.cuda.is_available() else "CUDA is not available here"
    assert expected in err and err.count("\n") == 1


def test_missing_model_folder_is_named_as_such(tmp_path, capsys, no_weights):
    assert main(["generate", "--model", str(tmp_path / "no_model"), "--prompt", "hi"]) == 2
    assert capsys.readouterr().err == f"error: model folder not found: {tmp_path / 'no_model'}\n"


# --------------------------------------------------------------------------------- generate: sampling flags
def _parsed(*argv):
    from mgrd.cli import build_parser

    return build_parser().parse_args(list(argv))


def test_cli_defaults_are_the_python_defaults():
    from mgrd.cli import _sampling_config
    from mgrd.generate import SamplingConfig

    assert _sampling_config(_parsed("generate", "--model", "m")) == SamplingConfig()
    assert _sampling_config(_parsed("demo")) == SamplingConfig(max_new_tokens=64)  # the demo keeps it short


def test_a_flag_per_sampling_field_with_its_help():
    import dataclasses

    from mgrd.cli import build_parser
    from mgrd.generate import SamplingConfig

    generate = next(a for a in build_parser()._actions if a.dest == "command").choices["generate"]
    flags = {a.dest: a for a in generate._actions}
    for f in dataclasses.fields(SamplingConfig):
        assert flags[f.name].option_strings == ["--" + f.name.replace("_", "-")]
        assert flags[f.name].help.startswith(f.metadata["help"])


def test_flags_set_and_config_combine_later_wins(tmp_path, monkeypatch):
    from mgrd.cli import _sampling_config

    monkeypatch.chdir(tmp_path)  # the shipped config is found from any folder
    cfg = _sampling_config(_parsed("generate", "--model", "m", "--config", "configs/generate.yaml",
                                   "--set", "top_k=5", "--set", "stop_ids=9", "--top-k", "7", "--seed", "3"))
    assert (cfg.temperature, cfg.top_k, cfg.stop_ids, cfg.seed) == (0.7, 7, (9,), 3)
    assert _sampling_config(_parsed("generate", "--model", "m", "--stop-ids", "5", "7")).stop_ids == (5, 7)
    assert _sampling_config(_parsed("generate", "--model", "m", "--set", "stop_ids=[5, 7]")).stop_ids == (5, 7)
    with pytest.raises(SystemExit):
        _parsed("generate", "--model", "m", "--temperature", "true")  # argparse: not a float


def test_stop_ids_flag_reaches_generation(tiny_dir, capsys):
    """The greedy first token, given as an extra stop id, ends the sample after one token."""
    from mgrd.chat import OFFICIAL_PART_JOIN, encode_chat
    from mgrd.generate import SamplingConfig, generate
    from mgrd.models import load_pretrained
    from mgrd.tokenizer import load_tokenizer

    tok, model = load_tokenizer(tiny_dir), load_pretrained(tiny_dir)
    prompt = encode_chat(tok, [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                         audio_config=model.config.audio, part_join=OFFICIAL_PART_JOIN)
    [[free]] = generate(model, [prompt], SamplingConfig(temperature=0, max_new_tokens=3))
    first = free.token_ids[0]
    assert len(free.token_ids) == 3 and first not in model.config.stop_ids()
    assert main(["generate", "--model", str(tiny_dir), "--prompt", "hi", "--temperature", "0", "--max-new-tokens", "3",
                 "--json", "--stop-ids", str(first)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["usage"]["completion_tokens"] == 1 and doc["choices"][0]["finish_reason"] == "stop"
    assert doc["usage"]["prompt_tokens"] == len(prompt.input_ids)


def _short_context(tiny_dir, tmp_path, positions: int):
    import shutil

    small = tmp_path / "small"
    shutil.copytree(tiny_dir, small)
    config = json.loads((small / "config.json").read_text())
    config["text_config"]["max_position_embeddings"] = positions
    (small / "config.json").write_text(json.dumps(config))
    return small


def test_a_prompt_past_the_context_is_refused_before_the_weights(tiny_dir, tmp_path, capsys, no_weights):
    small = _short_context(tiny_dir, tmp_path, 48)
    assert main(["generate", "--model", str(small), "--prompt", "word " * 60]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: prompt of ") and "does not fit the model's 48 positions" in err
    assert err.count("\n") == 1, err


def test_max_new_tokens_past_the_context_is_capped_with_one_warning_line(tiny_dir, tmp_path, capsys):
    small = _short_context(tiny_dir, tmp_path, 48)
    assert main(["generate", "--model", str(small), "--prompt", "hi", "--max-new-tokens", "500", "--json",
                 "--temperature", "0"]) == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert doc["usage"]["total_tokens"] <= 48
    assert captured.err.startswith("warning: max_new_tokens 500 capped to ") and captured.err.count("\n") == 1
    assert f"capped to {48 - doc['usage']['prompt_tokens']}:" in captured.err  # what is left of the 48 positions


# ------------------------------------------------------------------------------------- entry points and help
def test_python_dash_m_mgrd_and_version():
    from mgrd import __version__

    done = subprocess.run([sys.executable, "-m", "mgrd", "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout == f"mgrd {__version__}\n"
    assert __version__ == importlib.metadata.version("mgrd")  # the package and pyproject.toml agree


def test_top_level_help_is_for_users(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "Start here" in out and "mgrd demo" in out and "Only parsing and dispatch" not in out
    for command in ("demo", "init", "inspect", "generate", "data"):
        assert f"    {command}" in out


@pytest.mark.integration
def test_generate_into_a_closed_pipe_exits_quietly(tiny_dir):
    proc = subprocess.Popen([sys.executable, "-m", "mgrd", "generate", "--model", str(tiny_dir), "--prompt", "hi",
                             "--max-new-tokens", "4"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # `| head` that has already gone
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and stderr == ""


def test_demo_never_replaces_a_folder_that_is_not_its_model(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no runs/speedrun/final here: the demo would build the random model
    (tmp_path / "demo" / "model").mkdir(parents=True)
    (tmp_path / "demo" / "model" / "notes.txt").write_text("mine")
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 2
    assert "holds no checkpoint" in capsys.readouterr().err
    assert (tmp_path / "demo" / "model" / "notes.txt").read_text() == "mine"


def test_stream_printing_splits_at_think_end_however_the_deltas_fall(capsys):
    from mgrd.cli import _print_stream

    text = "Two beeps, the second higher.\n</think>\n\nB"
    for cuts in ([], [5, 31, 33], list(range(1, len(text)))):  # whole, across the tag, one character at a time
        edges = [0, *cuts, len(text)]
        _print_stream(text[a:b] for a, b in zip(edges, edges[1:]))
        assert capsys.readouterr().out == "── thinking ──\nTwo beeps, the second higher.\n── answer ──\nB\n", cuts
    _print_stream(iter(["cut off mid-thought</th"]))
    out = capsys.readouterr().out
    assert out == "── thinking ──\ncut off mid-thought</th\n── (no answer: the output ended before </think>) ──\n"
