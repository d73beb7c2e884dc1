"""Spill folders left by killed workers are removed by the next worker.

Real processes, really killed (SIGKILL: nothing of theirs runs afterwards),
on a real disk.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from teamster.runtime.spill import SpillStore
from teamster.runtime.workspace import LOCK_SUFFIX, WorkerDirectory, remove_abandoned

#: A worker's data store spills one value, says where, and is killed.
SPILL_AND_DIE = """
import os, signal, sys
from teamster.runtime.spill import SpillStore
store = SpillStore(sys.argv[1], target=0)
store["x"] = b"x" * 10_000
print(store.directory, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def spill_and_die(parent: Path) -> str:
    proc = subprocess.run([sys.executable, "-c", SPILL_AND_DIE, str(parent)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    return proc.stdout.strip()


def test_a_killed_workers_spill_folder_is_removed_by_the_next_worker(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    first = spill_and_die(tmp_path)
    assert os.listdir(first)  # its spilled value is still on disk: the leak
    second = spill_and_die(tmp_path)  # (its first spill swept the first's folder)
    assert not os.path.exists(first) and not os.path.exists(first + LOCK_SUFFIX)
    assert os.listdir(second)
    store = SpillStore(str(tmp_path), target=0)
    with caplog.at_level(logging.WARNING, "teamster.runtime.workspace"):
        store["y"] = b"y" * 10_000  # its first spill creates its folder
    assert not os.path.exists(second) and not os.path.exists(second + LOCK_SUFFIX)
    assert "1 spill folder(s)" in caplog.text and second in caplog.text
    assert sorted(os.listdir(tmp_path)) == sorted(
        [os.path.basename(store.directory), os.path.basename(store.directory) + LOCK_SUFFIX])
    store.close()
    assert os.listdir(tmp_path) == []


def test_a_live_workers_folder_survives_a_sweep(tmp_path: Path) -> None:
    live = WorkerDirectory(str(tmp_path))
    (Path(live.path) / "spilled").write_bytes(b"data")
    # Another worker starting beside it (a second lock on the same file, as
    # from another process, is refused while the first is held).
    other = WorkerDirectory(str(tmp_path))
    assert other.removed == [] and remove_abandoned(str(tmp_path)) == []
    assert (Path(live.path) / "spilled").read_bytes() == b"data"
    other.close()
    live.close()
    live.close()  # idempotent
    assert os.listdir(tmp_path) == []


def test_folders_without_a_lock_file_are_left_alone(tmp_path: Path) -> None:
    # Not known to be abandoned: another program's, or an older teamster's.
    foreign = tmp_path / "teamster-worker-old"
    foreign.mkdir()
    (foreign / "file").write_bytes(b"keep")
    WorkerDirectory(str(tmp_path)).close()
    assert (foreign / "file").read_bytes() == b"keep"
