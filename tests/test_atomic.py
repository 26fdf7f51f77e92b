"""Folders that appear whole or not at all: refusal rules, clean-up on failure, the atomic swap, sweeping, modes."""

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mgrd.atomic import (
    TargetError, atomic_folder, atomic_write, check_target, current_umask, swap_in, sweep_stale, temp_beside,
)


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def test_check_target_refuses_files_and_non_empty_folders(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"RIFF")
    with pytest.raises(TargetError, match="exists and is not a folder"):
        check_target(tmp_path / "a.wav", overwrite=True)  # never, not even with overwrite
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(TargetError, match=r"not empty: .*full \(use --overwrite to replace it\)"):
        check_target(tmp_path / "full", overwrite=False)
    check_target(tmp_path / "full", overwrite=True)
    (tmp_path / "empty").mkdir()
    check_target(tmp_path / "empty", overwrite=False)
    check_target(tmp_path / "absent", overwrite=False)


def test_failure_inside_leaves_the_target_and_no_temp(tmp_path):
    target = tmp_path / "ckpt"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError, match="half-way"):
        with atomic_folder(target) as tmp:
            (tmp / "new.txt").write_text("new")
            raise RuntimeError("failed half-way")
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"] and (target / "old.txt").read_text() == "old"


def test_success_replaces_the_old_folder_whole(tmp_path):
    target = tmp_path / "ckpt"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with atomic_folder(target) as tmp:
        (tmp / "new.txt").write_text("new")
        assert not (target / "new.txt").exists()  # nothing visible before the block ends
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_swap_without_exchange_falls_back_to_two_renames(tmp_path, monkeypatch):
    monkeypatch.setattr("mgrd.atomic._exchange", lambda a, b: False)  # e.g. macOS or an old glibc
    target, new = tmp_path / "t", tmp_path / "new"
    target.mkdir()
    (target / "old.txt").write_text("old")
    new.mkdir()
    (new / "new.txt").write_text("new")
    swap_in(new, target)
    assert [p.name for p in tmp_path.iterdir()] == ["t"] and [p.name for p in target.iterdir()] == ["new.txt"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="renameat2 is Linux only")
def test_linux_swap_is_one_exchange(tmp_path):
    from mgrd.atomic import _exchange

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "from_a").touch()
    (tmp_path / "b").mkdir()
    assert _exchange(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "b" / "from_a").exists() and not (tmp_path / "a" / "from_a").exists()


def test_sweep_removes_only_dead_runs_of_the_same_target_on_this_machine(tmp_path):
    from mgrd.atomic import _host

    pid, here = _dead_pid(), _host()
    stale = [tmp_path / f".ckpt.tmp-{pid}@{here}-x1", tmp_path / f".ckpt.old-{pid}@{here}-x2",
             tmp_path / f".ckpt.old-{pid}"]  # the last: what earlier versions left
    kept = [tmp_path / f".ckpt.tmp-{os.getpid()}@{here}-x3",  # a live run
            tmp_path / f".ckpt.tmp-{pid}@{here}x.other-x5",  # another machine: its pids mean nothing here
            tmp_path / f".other.tmp-{pid}@{here}-x4", tmp_path / "ckpt.tmp-1-x", tmp_path / f".ckpt.old-{pid}x"]
    for p in stale + kept:
        p.mkdir()
    assert sorted(sweep_stale(tmp_path / "ckpt")) == sorted(stale)
    assert sorted(tmp_path.iterdir()) == sorted(kept)


def test_modes_follow_the_umask_not_tempfile(tmp_path):
    mask = current_umask()
    assert mask == os.umask(mask)  # the /proc reading agrees with the system call
    with atomic_folder(tmp_path / "out") as tmp:
        (tmp / "sub").mkdir(mode=0o700)
        fd = os.open(tmp / "sub" / "w.bin", os.O_CREAT | os.O_WRONLY, 0o600)  # as safetensors writes
        os.close(fd)
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o777 & ~mask
    assert (tmp_path / "out" / "sub").stat().st_mode & 0o777 == 0o777 & ~mask
    assert (tmp_path / "out" / "sub" / "w.bin").stat().st_mode & 0o777 == 0o666 & ~mask
    made = temp_beside(tmp_path / "x")
    assert made.stat().st_mode & 0o777 == 0o777 & ~mask and made.name.startswith(f".x.tmp-{os.getpid()}@")


def test_atomic_write_replaces_whole_with_shared_permissions(tmp_path):
    """The one file writer (manifests, sample records): new folder made, usual 0644 mode, old file kept on failure."""
    target = tmp_path / "sub" / "rows.jsonl"
    old_umask = os.umask(0o022)
    try:
        atomic_write(target, b"first\n")
    finally:
        os.umask(old_umask)
    assert target.read_bytes() == b"first\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644

    with pytest.raises(TypeError):  # the write itself fails (text to a binary file), after the temporary file exists
        atomic_write(target, "second\n")
    assert target.read_bytes() == b"first\n"
    assert [p.name for p in target.parent.iterdir()] == ["rows.jsonl"]  # no temporary file left
