"""`mgrd serve` on the command line: every flag explained, bad input refused in one line, and a real server
process that answers and shuts down on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import httpx2 as httpx
import pytest

from mgrd.serve.cli import add_parser, main


def test_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--model", "--host", "--port", "--api-key", "--served-model-name", "--max-model-len",
                 "--max-num-seqs", "--max-waiting", "--max-body-mb", "--max-audio-seconds", "--max-audio-parts",
                 "--max-n", "--default-max-tokens", "--device", "--dtype", "--threads"):
        assert flag in text
    assert "127.0.0.1" in text


def test_add_parser_builds_the_serve_command():
    import argparse

    parser = argparse.ArgumentParser(prog="mgrd")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["serve", "--model", "x"])
    assert args.command == "serve" and args.host == "127.0.0.1" and args.port == 8000 and callable(args.func)


@pytest.mark.parametrize("argv, message", [
    (["--model", "/no/such/folder"], "no checkpoint in /no/such/folder"),
    (["--model", ".", "--port", "70000"], "--port must be in [0, 65535]"),
    (["--model", ".", "--device", "cuda:7"], "--device cuda:7"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_bad_limits_are_refused(tiny_dir, capsys):
    assert main(["--model", str(tiny_dir), "--max-model-len", "999999", "--device", "cpu"]) == 2
    assert "--max-model-len must be in [2, 4096]" in capsys.readouterr().err


@pytest.mark.integration
def test_a_server_process_answers_and_stops_on_sigterm(tiny_dir):
    env = {**os.environ, "MGRD_API_KEY": "k"}
    proc = subprocess.Popen([sys.executable, "-m", "mgrd.serve.cli", "--model", str(tiny_dir), "--port", "0",
                             "--device", "cpu", "--served-model-name", "tiny"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url, deadline, seen = None, time.monotonic() + 120, []
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            seen.append(line)
            found = re.search(r"Uvicorn running on (http://127\.0\.0\.1:\d+)", line)
            url = found and found.group(1)
        assert url, "".join(seen)
        r = httpx.post(url + "/v1/chat/completions", headers={"Authorization": "Bearer k"}, timeout=60,
                       json={"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3})
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] <= 3
        assert httpx.get(url + "/v1/models", timeout=10).status_code == 401  # the key came from $MGRD_API_KEY
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert proc.returncode in (0, 143)


def test_threads_must_be_positive(capsys):
    assert main(["--model", ".", "--threads", "0", "--device", "cpu"]) == 2
    assert "--threads must be >= 1" in capsys.readouterr().err
