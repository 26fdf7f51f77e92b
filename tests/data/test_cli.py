"""`mgrd data synth` / `mgrd data check`: end to end through a subprocess and in process through `main()`."""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mgrd.data.cli import add_parser, main, parse_families
from mgrd.data.synth import DEFAULT_FAMILIES, FAMILIES

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mgrd.data.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_synth_then_check_end_to_end(tmp_path):
    out = tmp_path / "suite"
    made = _run("synth", "--out", str(out), "--n", "14", "--seed", "3")
    assert made.returncode == 0, made.stderr
    assert "synth train" in made.stderr and "100%" in made.stderr  # the tqdm progress bar
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 14 and len(list((out / "audio").glob("*.wav"))) == 14
    checked = _run("check", str(out / "manifest.jsonl"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "14 rows, ok" in checked.stdout


def test_check_reports_bad_rows_with_line_numbers(tmp_path, capsys):
    out = tmp_path / "suite"
    assert main(["synth", "--out", str(out), "--n", "3", "--no-progress"]) == 0
    manifest = out / "manifest.jsonl"
    lines = manifest.read_text().splitlines()
    broken = json.loads(lines[1])
    broken["audio"] = ["audio/missing.wav"]
    manifest.write_text("\n".join([lines[0], json.dumps(broken), "{not json", lines[2]]) + "\n")
    capsys.readouterr()
    assert main(["check", str(manifest)]) == 1
    printed = capsys.readouterr().out
    assert f"{manifest}:2:" in printed and f"{manifest}:3:" in printed
    assert f"{manifest}:1:" not in printed and f"{manifest}:4:" not in printed
    assert f"{manifest}: 4 rows, 2 errors" in printed


@pytest.mark.parametrize("args, message", [
    (["--n", "5", "--families", "pitch_compare,nope"], "error: unknown family 'nope'"),
    (["--n", "0"], "error: n (number of items) must be an integer >= 1"),
    (["--n", "5", "--seed", "-2"], "error: seed must be an integer >= 0"),
])
def test_synth_bad_input_exits_2(tmp_path, capsys, args, message):
    assert main(["synth", "--out", str(tmp_path / "out"), "--no-progress", *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_synth_refuses_a_non_empty_folder_without_overwrite(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["synth", "--out", str(out), "--n", "2", "--no-progress"]) == 2
    assert "error: output folder is not empty" in capsys.readouterr().err
    assert main(["synth", "--out", str(out), "--n", "2", "--no-progress", "--overwrite"]) == 0
    assert not (out / "notes.txt").exists() and (out / "manifest.jsonl").exists()


def test_synth_needs_out_and_check_needs_a_file(tmp_path, capsys):
    assert main(["synth", "--n", "2"]) == 2
    assert "error: --out is required" in capsys.readouterr().err
    assert main(["check", str(tmp_path / "absent.jsonl")]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_unknown_split_is_an_argparse_error(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["synth", "--out", str(tmp_path / "x"), "--split", "valid"])
    assert exit_info.value.code == 2


def test_families_flag_accepts_commas_and_repeats(tmp_path):
    assert parse_families(None) is None
    assert parse_families(["timbre, beep_count", "chord_quality"]) == ["timbre", "beep_count", "chord_quality"]
    out = tmp_path / "out"
    assert main(["synth", "--out", str(out), "--n", "4", "--no-progress", "--families", "timbre",
                 "--families", "beep_count", "--split", "test", "--seed", "9"]) == 0
    summary = json.loads((out / "suite.json").read_text())
    assert [f["name"] for f in summary["families"]] == ["timbre", "beep_count"]
    assert summary["split"] == "test" and summary["seed"] == 9


def test_list_shows_every_family(capsys):
    assert main(["synth", "--list"]) == 0
    printed = capsys.readouterr().out
    for name in FAMILIES:
        assert name in printed
    marked = [line.split()[1] for line in printed.splitlines() if line.startswith("* ")]
    assert marked == DEFAULT_FAMILIES


def test_every_flag_has_help():
    parser = argparse.ArgumentParser()
    data = add_parser(parser.add_subparsers())
    commands = next(a for a in data._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert set(commands) == {"synth", "check"}
    for command in commands.values():
        for action in command._actions:
            assert action.help, f"{command.prog}: {action.dest} has no help"


def _default_sigint() -> None:
    """In a child before exec: Ctrl-C handled as in a terminal, whatever this test process inherited (a shell
    that starts a job in the background without job control makes it ignore SIGINT, and children keep that)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _hidden(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


@pytest.mark.integration
@pytest.mark.parametrize("to, sig, code, said", [
    ("parent", signal.SIGTERM, 143, "terminated"),  # `timeout`, `docker stop`
    ("group", signal.SIGTERM, 143, "terminated"),  # Slurm: every process of the job, workers too
    ("group", signal.SIGINT, 130, "interrupted"),  # Ctrl-C in a terminal
])
def test_sigterm_during_synth_cleans_up_like_ctrl_c(tmp_path, to, sig, code, said):
    """A real SIGTERM (what `timeout`, `docker stop` and Slurm send) mid-suite: exit 143, no temp folder, no
    worker tracebacks. Without the handler the process dies at once and leaves `.suite.tmp-*` behind."""
    out = tmp_path / "suite"
    proc = subprocess.Popen([sys.executable, "-m", "mgrd", "data", "synth", "--out", str(out), "--n", "20000",
                             "--workers", "2", "--no-progress"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, preexec_fn=_default_sigint)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:  # wait until workers have written some wavs
        temps = [p for p in tmp_path.iterdir() if p.name.startswith(".suite.tmp-")]
        if temps and len(list((temps[0] / "audio").glob("*.wav"))) >= 20:
            break
        time.sleep(0.1)
    assert proc.poll() is None, "the suite finished before it could be interrupted"
    os.killpg(proc.pid, sig) if to == "group" else proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    assert stderr.strip() == said, stderr  # no BrokenPipeError or KeyboardInterrupt tracebacks
    assert _hidden(tmp_path) == [] and not out.exists()


# Ctrl-C while the pool's workers are still importing: the race that a signal sent "mid-suite" hits only when one
# worker has written the wavs before the other got going. The workers' SIGINT state is read from /proc: the
# signal goes once each has started Python (SIGINT caught or ignored), long before it has imported what its
# initializer needs. "workers": to the workers alone (deterministic: nothing else reacts); "group": to the
# whole process group, as a terminal does (the parent then races its workers to the exit).
_SIGINT_AT_POOL_START = """
import os, signal, sys, time
import multiprocessing.pool
from mgrd.cli import main

out, to, n = sys.argv[1], sys.argv[2], sys.argv[3]
started = multiprocessing.pool.Pool._repopulate_pool


def sigint_bit(pid, field):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1], 16) >> (signal.SIGINT - 1) & 1
    return 0


def start_then_interrupt(self):
    out = started(self)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not all(sigint_bit(p.pid, "SigCgt") or sigint_bit(p.pid, "SigIgn")
                                                  for p in self._pool):
        time.sleep(0.001)
    time.sleep(0.05)  # into the imports
    if to == "group":
        os.killpg(0, signal.SIGINT)
    else:
        for p in self._pool:
            os.kill(p.pid, signal.SIGINT)
    return out


multiprocessing.pool.Pool._repopulate_pool = start_then_interrupt
sys.exit(main(["data", "synth", "--out", out, "--n", n, "--workers", "2", "--no-progress"]))
"""


@pytest.mark.integration
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the workers' signal state from /proc")
@pytest.mark.parametrize("to, n, code, said", [("workers", "40", 0, ""), ("group", "2000", 130, "interrupted")])
def test_ctrl_c_while_the_workers_start_up_leaves_no_traceback(tmp_path, to, n, code, said):
    """Workers start with SIGINT held back (not only once their initializer has run): a Ctrl-C during their
    imports prints no KeyboardInterrupt traceback. Sent to the workers alone it changes nothing; sent to the
    group, the parent exits 130 and removes its temporary folder."""
    out = tmp_path / "suite"
    proc = subprocess.run([sys.executable, "-c", _SIGINT_AT_POOL_START, str(out), to, n], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, start_new_session=True,
                          preexec_fn=_default_sigint)
    assert proc.returncode == code, proc.stderr
    assert proc.stderr.strip() == said, proc.stderr
    assert out.exists() == (code == 0)
    assert _hidden(tmp_path) == []


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="POSIX signal masks")
def test_a_ctrl_c_while_workers_start_is_held_then_raised():
    """In the parent: the pool is on its clean-up stack before the held Ctrl-C is raised; the handler and the
    signal mask are as before afterwards."""
    from mgrd.data.synth.writer import _sigint_held

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, whatever pytest got
    try:
        reached = []
        with pytest.raises(KeyboardInterrupt):
            with _sigint_held():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)
                reached.append(signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, []))
        assert reached == [True]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, [])


def test_stale_temp_folders_of_the_same_target_are_swept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    from mgrd.atomic import _host

    pid = int(dead.stdout)  # a process that has exited
    stale = tmp_path / f".suite.tmp-{pid}@{_host()}-abc"
    (stale / "audio").mkdir(parents=True)
    live = tmp_path / f".suite.tmp-{os.getpid()}@{_host()}-def"  # a run still in progress: left alone
    live.mkdir()
    other = tmp_path / f".other.tmp-{pid}@{_host()}-ghi"  # another target's: left alone
    other.mkdir()
    assert main(["synth", "--out", str(tmp_path / "suite"), "--n", "2", "--no-progress"]) == 0
    assert _hidden(tmp_path) == sorted([live.name, other.name])


def test_closed_stdout_exits_quietly():
    """`mgrd data synth --list | head`: the reader goes away; no 'Broken pipe' message, exit 141 like other tools.
    (`mgrd generate | head`: tests/test_cli.py.)"""
    proc = subprocess.Popen([sys.executable, "-m", "mgrd", "data", "synth", "--list"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # nobody reads: the first write fails with EPIPE
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141 and stderr == ""


def test_check_on_a_binary_file_is_one_error_line(tmp_path, capsys):
    import numpy as np
    import soundfile as sf

    wav = tmp_path / "clip.wav"
    sf.write(wav, np.zeros(16000, dtype=np.float32), 16000)  # "RIFF", then the size 32036 as 24 7d 00 00
    assert main(["check", str(wav)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == f"error: {wav}: binary data (a NUL byte at offset 6), not a JSON Lines manifest\n"


def test_check_shows_a_few_errors_then_counts_the_rest(tmp_path, capsys):
    text = tmp_path / "latin1.jsonl"
    text.write_bytes(b"caf\xe9\n" * 100)  # not UTF-8 on every line, yet no NUL byte
    assert main(["check", str(text)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 22 and all("not UTF-8 text" in line for line in lines[:20])
    assert lines[20] == "... and 80 more errors" and lines[21] == f"{text}: 100 rows, 100 errors"
