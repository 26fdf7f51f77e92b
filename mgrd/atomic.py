"""Folders that appear whole or not at all: build beside the target, swap into place, sweep what killed runs left.

Used by checkpoint saving, `mgrd init` and the synthetic-suite writer; `atomic_write` does the same for one file
(manifests, sample records). A folder is built in a hidden temporary folder next to its target (`.NAME.tmp-PID@HOST-xxxx`, same filesystem, so the final rename is atomic) and swapped in
at the end. On Linux the swap is one `renameat2(RENAME_EXCHANGE)`, so the target path always holds either the
old folder or the new one, even if the process is killed mid-swap; elsewhere it is two renames in a row.
A run killed by SIGKILL cannot clean up after itself, so the next write to the same target removes the
temporary folders whose process is gone (on this machine). Files and folders end up with the usual permissions (0644/0755
under umask 022), not the private ones `tempfile` uses.

This module does not decide policy: whether a non-empty target may be replaced is the caller's flag.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import Iterator


class TargetError(ValueError):
    """The target path cannot be written as asked (a file where a folder goes, a non-empty folder, ...)."""


def check_target(target: Path, overwrite: bool) -> None:
    """Refuse a target that is not a folder, or a non-empty folder unless `overwrite`.

    Raises:
        TargetError: with a one-line message that names the fix.
    """
    if target.exists() and not target.is_dir():
        raise TargetError(f"output path exists and is not a folder: {target}")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise TargetError(f"output folder is not empty: {target} (use --overwrite to replace it)")


def _host() -> str:
    """This machine's name as it may appear in a file name."""
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "localhost"


def temp_beside(target: Path, kind: str = "tmp") -> Path:
    """A new empty folder next to `target`, `.NAME.<kind>-<pid>@<host>-xxxx`, with the usual permissions."""
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{target.name}.{kind}-{os.getpid()}@{_host()}-"
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
    tmp.chmod(0o777 & ~current_umask())
    return tmp


def sweep_stale(target: Path) -> list[Path]:
    """Remove the temporary folders of `target` whose process no longer runs; returns what was removed.

    Only this machine's folders are judged (a process id means nothing on another host sharing the
    filesystem); `.NAME.old-PID` without host or suffix is what versions before this module left.
    """
    pattern = re.compile(re.escape(f".{target.name}.") + r"(tmp|old)-(\d+)(@" + re.escape(_host()) + r")?(-|$)")
    removed = []
    if not target.parent.is_dir():
        return removed
    for path in target.parent.iterdir():
        match = pattern.match(path.name)
        if match and not _alive(int(match.group(2))):
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def swap_in(tmp: Path, target: Path) -> None:
    """Move the finished folder `tmp` to `target`, replacing an existing `target` only now."""
    if not target.exists():
        os.replace(tmp, target)
        return
    if not target.is_dir():
        raise TargetError(f"output path exists and is not a folder: {target}")
    if _exchange(tmp, target):  # target is now the new folder; tmp holds the old one
        shutil.rmtree(tmp, ignore_errors=True)
        return
    old = temp_beside(target, "old")
    os.replace(target, old / "previous")
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with Linux `renameat2(RENAME_EXCHANGE)`; False where that is unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # glibc older than 2.28, or another libc
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


@contextlib.contextmanager
def atomic_folder(target: str | os.PathLike, *, overwrite: bool = True) -> Iterator[Path]:
    """Build a folder that replaces `target` only when the `with` block finishes.

    Checks the target first (see `check_target`), sweeps stale temporary folders of the same target, yields
    an empty temporary folder beside it, and on success swaps it in. On any exception (Ctrl-C included)
    the temporary folder is removed and `target` is untouched.

    Example:
        with atomic_folder(out, overwrite=False) as tmp:
            (tmp / "config.json").write_text(...)
    """
    target = Path(target)
    check_target(target, overwrite)
    sweep_stale(target)
    tmp = temp_beside(target)
    try:
        yield tmp
        fix_permissions(tmp)
        swap_in(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def fix_permissions(folder: Path) -> None:
    """Give every file 0666 and every folder 0777, less the umask (what `open` and `mkdir` would have made)."""
    mask = current_umask()
    for path in [folder, *folder.rglob("*")]:
        if not path.is_symlink():
            path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)


def current_umask() -> int:
    """The process umask (read from /proc on Linux; elsewhere set and restored at once)."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        status = Path("/proc/self/status").read_text().splitlines()
        return int(next(line for line in status if line.startswith("Umask:")).split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, data: bytes) -> Path:
    """Replace the file `path` with `data` whole or not at all: a temporary file in the same folder, fsync,
    the usual permissions (0644 under umask 022, not tempfile's 0600), then `os.replace`. Creates the folder.

    A failure or kill before the rename leaves the old file as it was (the temporary file is removed on a
    failure; a killed run's `.NAME.*.tmp` stays beside it, hidden).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
