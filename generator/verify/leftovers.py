"""`verify --cleanup`: what runs killed with SIGKILL left behind (namespaces and rules
folders named by rulegen's own pattern, and free locks), removed; never what a live
run still holds.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from .bed import BED_NAME, RUN_DIR, TMP_PREFIX


def cleanup(only=None, unclaimed_age: float = 300.0) -> tuple[list[str], list[str]]:
    """Remove what runs killed with SIGKILL left behind: namespaces and rules
    folders named by rulegen's own pattern (and by the prefixes in `only`, when
    given), never those of a live run. A live run holds its prefix's lock; a bed
    without a lock file (made by an older rulegen) is removed only when no process
    is left in it and it is older than `unclaimed_age` seconds.
    Returns (removed, namespaces kept because their run may be alive)."""
    import fcntl

    try:
        names = sorted(n for n in os.listdir("/run/netns") if BED_NAME.match(n))
    except OSError:
        names = []
    removed, alive = [], []
    for prefix in sorted({BED_NAME.match(n).group(1) for n in names}):
        if only is not None and prefix not in only:
            continue
        mine = [n for n in names if n.startswith(prefix + "-")]
        lock = RUN_DIR / f"{prefix}.lock"
        try:
            fd = os.open(lock, os.O_RDWR)
        except OSError:
            fd = None
        try:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            elif _busy_or_young(mine, unclaimed_age):
                alive += mine
                continue
        except BlockingIOError:
            alive += mine
            os.close(fd)
            continue
        for name in sorted(mine, reverse=True):  # hosts first, then the bridge
            for pid in _pids(name):  # a left agent keeps its namespace alive
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            result = subprocess.run(
                ["ip", "netns", "delete", name], capture_output=True, timeout=30
            )
            if result.returncode == 0:
                removed.append(name)
        lock.unlink(missing_ok=True)
        if fd is not None:
            os.close(fd)
    dead = {n.split("-")[0] for n in removed}
    removed += _left_files(only, unclaimed_age, dead)
    return removed, alive


def _left_files(only, age: float, dead: set[str]) -> list[str]:
    """The rules folders (and free locks) of runs that are gone: those of `dead`
    prefixes, or whose prefix's lock is free, or that have no lock and are older
    than `age` seconds."""
    import fcntl

    removed = []
    base = Path(tempfile.gettempdir())
    pattern = re.compile(rf"^{TMP_PREFIX}(rgv[0-9a-f]{{6}})-")
    folders: dict[str, list[Path]] = {}
    for path in base.glob(f"{TMP_PREFIX}rgv*"):
        match = pattern.match(path.name)
        if match and path.is_dir() and not path.is_symlink():
            folders.setdefault(match.group(1), []).append(path)
    try:
        locks = {p.stem for p in RUN_DIR.glob("rgv*.lock")}
    except OSError:
        locks = set()
    for prefix in sorted(set(folders) | locks):
        if only is not None and prefix not in only:
            continue
        lock = RUN_DIR / f"{prefix}.lock"
        try:
            fd = os.open(lock, os.O_RDWR)
        except OSError:
            fd = None
        try:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            elif prefix not in dead and any(
                time.time() - p.stat().st_mtime < age for p in folders[prefix]
            ):
                continue
        except OSError:  # busy (a live run), or gone meanwhile
            continue
        finally:
            if fd is not None:
                os.close(fd)
        for path in folders.get(prefix, []):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(str(path))
        if fd is not None:
            lock.unlink(missing_ok=True)
    return removed


def _pids(name: str) -> list[int]:
    out = subprocess.run(
        ["ip", "netns", "pids", name], capture_output=True, text=True, timeout=30
    ).stdout.split()
    return [int(pid) for pid in out if pid.isdigit()]


def _busy_or_young(names: list[str], age: float) -> bool:
    for name in names:
        try:
            made = os.stat(f"/run/netns/{name}").st_mtime
        except OSError:
            continue
        if time.time() - made < age or _pids(name):
            return True
    return False
