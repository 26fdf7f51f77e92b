"""`mgrd chat`: the terminal client against the scripted tiny checkpoint, loaded here and behind a real
`mgrd serve` (uvicorn on a free port), driven through stdin as a user types."""

from __future__ import annotations

import io
import sys

import pytest
import soundfile as sf

from mgrd.serve.chat import DIM, RESET, EndpointBackend, LocalBackend, Session, add_parser, main, show_reply

from .helpers import tone
from .scripted import ANSWER, REASONING


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("chat") / "clip.wav"
    sf.write(path, tone(440.0, 1.0), 16_000, subtype="PCM_16")
    return path


def _args(*argv):
    import argparse

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["chat", *argv])


def _backend(kind, scripted_dir, scripted_live):
    from mgrd.cli import _sampling_config

    if kind == "local":
        args = _args("--model", str(scripted_dir), "--temperature", "0", "--max-new-tokens", "40")
        return LocalBackend(args, _sampling_config(args))
    args = _args("--endpoint", scripted_live.url + "/v1", "--temperature", "0")
    return EndpointBackend(args, _sampling_config(args))


@pytest.mark.parametrize("kind", ["local", "endpoint"])
def test_two_turns_keep_answers_without_thinking(kind, scripted_dir, scripted_live, clip, tmp_path, capsys):
    session = Session(_backend(kind, scripted_dir, scripted_live), system="Be brief.")
    out = io.StringIO()
    lines = [f"/audio {clip}", "What do you hear?", f"/audio {tmp_path / 'missing.wav'}", "/nope", "And then?"]
    prompt_tokens = []
    for line in lines:  # as `run` does, one line at a time, recording the prompt each question sent
        try:
            session.handle(line, out, dim=False)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
        prompt_tokens.append(session.backend.last_prompt_tokens)
    text = out.getvalue()
    assert text.count(f"thinking: {REASONING}\nanswer: {ANSWER}\n") == 2, text
    errors = capsys.readouterr().err.splitlines()
    assert errors[0] == f"error: audio file not found: {tmp_path / 'missing.wav'}"
    assert errors[1].startswith("error: unknown command '/nope'") and len(errors) == 2
    # History: system, user (audio + text), assistant answer only, user, assistant.
    roles = [m["role"] for m in session.history]
    assert roles == ["system", "user", "assistant", "user", "assistant"]
    assert session.history[1]["content"][0] == {"type": "audio", "audio": str(clip)}
    assert [m["content"] for m in session.history[2::2]] == [ANSWER, ANSWER]  # no thinking stored
    assert prompt_tokens[4] > prompt_tokens[1] > 0  # the second question carried the first turn (and its audio)
    session.handle("/reset", out, dim=False)
    assert session.history == [{"role": "system", "content": "Be brief."}] and session.pending_audio == []


def test_bad_audio_is_one_error_and_the_session_goes_on(scripted_dir, scripted_live, tmp_path, capsys):
    noise = tmp_path / "noise.wav"
    noise.write_bytes(b"not audio at all")
    session = Session(_backend("local", scripted_dir, scripted_live))
    rc = session.run(io.StringIO(f"/audio {noise}\nWhat?\nHello\n"), out := io.StringIO())
    assert rc == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "noise.wav" in err[0], err
    assert out.getvalue() == f"thinking: {REASONING}\nanswer: {ANSWER}\n"
    assert len(session.history) == 2  # the failed turn left nothing behind


def test_main_local_quit_exits_0(scripted_dir, clip, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"/audio {clip}\nWhat do you hear?\n/quit\nnever read\n"))
    assert main(["--model", str(scripted_dir), "--max-new-tokens", "40"]) == 0
    captured = capsys.readouterr()
    assert captured.out == f"thinking: {REASONING}\nanswer: {ANSWER}\n"
    assert captured.err == ""


def test_main_endpoint_end_of_input_exits_0(scripted_live, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO("First?\nSecond?"))
    assert main(["--endpoint", scripted_live.url + "/v1", "--model-name", "scripted"]) == 0
    assert capsys.readouterr().out == f"thinking: {REASONING}\nanswer: {ANSWER}\n" * 2


def test_main_endpoint_errors(scripted_live, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO("Hi\n"))
    assert main(["--endpoint", scripted_live.url + "/v1", "--model-name", "gpt-4o"]) == 0  # unknown model: per turn
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: the server refused the turn:") and "gpt-4o" in err[0], err
    assert main(["--endpoint", "http://127.0.0.1:9/v1"]) == 2  # nothing listens: one line, exit 2
    assert capsys.readouterr().err.startswith("error: cannot list the models of http://127.0.0.1:9/v1")
    assert main(["--model", "/nonexistent", "--api-key", "k"]) == 2


class _CtrlC(io.StringIO):
    def readline(self, *a):
        raise KeyboardInterrupt


def test_ctrl_c_exits_130(scripted_live, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", _CtrlC())
    assert main(["--endpoint", scripted_live.url + "/v1"]) == 130
    assert capsys.readouterr().err.strip() == "interrupted"


def test_show_reply_dims_thinking_in_a_terminal():
    out = io.StringIO()
    answer = show_reply(iter([("Two ", ""), ("tones", ""), ("", "Up"), ("", " a fifth")]), out, dim=True)
    assert answer == "Up a fifth"
    assert out.getvalue() == f"{DIM}Two tones{RESET}\nUp a fifth\n"
    out = io.StringIO()
    assert show_reply(iter([("cut off", "")]), out, dim=True) == ""
    assert out.getvalue() == f"{DIM}cut off{RESET}\n(no answer: the reply ended before </think>)\n"


def test_import_is_light():
    """`mgrd --help` lists `chat` without importing torch: the module imports it only when a command runs."""
    import subprocess

    code = "import sys, mgrd.serve.chat; print(sorted(m for m in ('torch', 'openai') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


def test_show_reply_undims_when_interrupted():
    def pieces():
        yield "halfway", ""
        raise KeyboardInterrupt

    out = io.StringIO()
    with pytest.raises(KeyboardInterrupt):
        show_reply(pieces(), out, dim=True)
    assert out.getvalue() == f"{DIM}halfway{RESET}"
    out = io.StringIO()
    assert show_reply(iter([]), out, dim=False) == ""
    assert out.getvalue() == "(no answer: the reply ended before </think>)\n"
