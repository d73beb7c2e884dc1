"""Spill folders that outlive their worker are removed by the next one.

A worker that is killed outright (SIGKILL, the kernel's OOM killer, a node
losing power) cannot remove its spill folder, and on a long-lived machine
those folders fill the disk. So each folder ``teamster-worker-<random>`` comes
with a lock file ``teamster-worker-<random>.lock`` beside it, which its worker
holds (``flock``) for as long as it lives: the kernel releases the lock when
the process ends, however it ends. A worker creating its folder first
removes every sibling whose lock it can take.

- The lock file is created and locked *before* the folder exists, and a
  worker that cannot lock its own new lock file (another worker's sweep
  took it in between) starts over with a new name. So a sweep never removes
  a live worker's folder.
- Folders without a lock file are left alone: they are not known to be
  abandoned (another program's, or an older teamster's).
- dask.distributed's ``WorkSpace`` solves the same problem the same way
  (its locks are per-folder files too); this is the part of it we need.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import tempfile

logger = logging.getLogger(__name__)

PREFIX = "teamster-worker-"
LOCK_SUFFIX = ".lock"
#: New names tried when a sweep keeps taking our fresh lock (never in practice).
ATTEMPTS = 10


class WorkerDirectory:
    """A folder only this process uses, removed by ``close`` or, after a
    crash, by the next worker that creates one beside it."""

    def __init__(self, parent: str | None = None) -> None:
        parent = parent if parent is not None else tempfile.gettempdir()
        os.makedirs(parent, exist_ok=True)
        #: Folders of dead workers this one removed on creation.
        self.removed = remove_abandoned(parent)
        for _ in range(ATTEMPTS):
            fd, lock_path = tempfile.mkstemp(prefix=PREFIX, suffix=LOCK_SUFFIX, dir=parent)
            if _try_lock(fd):
                break
            os.close(fd)  # a sweep holds it and is about to remove it: another name
        else:
            raise OSError(f"could not lock a new spill folder's lock file in {parent}")
        self._lock_fd = fd
        self.lock_path = lock_path
        self.path = lock_path[: -len(LOCK_SUFFIX)]
        try:
            os.mkdir(self.path, 0o700)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Remove the folder and its lock file (idempotent)."""
        if self._lock_fd < 0:
            return
        _remove(self.lock_path)
        os.close(self._lock_fd)  # (the lock goes with the last descriptor)
        self._lock_fd = -1


def remove_abandoned(parent: str) -> list[str]:
    """Remove the spill folders in ``parent`` whose worker is gone; returns their paths."""
    removed: list[str] = []
    try:
        names = os.listdir(parent)
    except OSError:
        return removed
    for name in names:
        if not (name.startswith(PREFIX) and name.endswith(LOCK_SUFFIX)):
            continue
        lock_path = os.path.join(parent, name)
        try:
            fd = os.open(lock_path, os.O_RDWR)
        except OSError:
            continue  # removed meanwhile, or not ours to open
        try:
            if not _try_lock(fd):
                continue  # its worker is alive
            removed.append(_remove(lock_path))
        finally:
            os.close(fd)
    if removed:
        logger.warning("removed %d spill folder(s) left in %s by workers that died: %s",
                       len(removed), parent, ", ".join(removed))
    return removed


def _remove(lock_path: str) -> str:
    """Remove a folder, then its lock file (the lock still held); returns the folder."""
    folder = lock_path[: -len(LOCK_SUFFIX)]
    shutil.rmtree(folder, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(lock_path)
    return folder


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
