"""The `mgrd` command line: help for every command, demo, init/inspect, generate, and clear errors."""

import json
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


def test_generate_json_samples(tiny_dir, clip, capsys):
    code = main(["generate", "--model", str(tiny_dir), "--audio", str(clip), "--prompt", "Is it high?",
                 "--samples", "3", "--json", "--max-new-tokens", "8", "--seed", "0"])
    assert code == 0
    lines = [json.loads(l) for l in capsys.readouterr().out.strip().splitlines()]
    assert [r["sample"] for r in lines] == [0, 1, 2]
    assert all(r["tokens"] <= 8 for r in lines)


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
def test_demo_runs(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo"), "--max-new-tokens", "12"]) == 0
    out = capsys.readouterr().out
    assert "built the tiny model" in out and "── thinking ──" in out
    assert (tmp_path / "demo" / "model" / "tokenizer.json").is_file()
