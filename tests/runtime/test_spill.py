"""SpillStore: the worker's two-tier data store, on a real disk.

Sizes are given explicitly (``put(key, value, nbytes)``) so the LRU
arithmetic reads plainly; the values are real and really go to files.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import random
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from teamster.runtime.comm import deserialize
from teamster.runtime.memory_monitor import MemoryManager, MemoryThresholds, parse_fraction
from teamster.runtime.spill import SpillStore


def files(store: SpillStore) -> list[str]:
    return sorted(os.listdir(store.directory)) if store.directory else []


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SpillStore]:
    s = SpillStore(str(tmp_path), target=250)
    try:
        yield s
    finally:
        s.close()


def test_least_recently_used_values_go_to_disk_first(store: SpillStore) -> None:
    for key in ("a", "b", "c"):
        store.put(key, key * 10, nbytes=100)
    assert store.fast_bytes == 300 and files(store) == []
    assert store.evict() == 100  # a is the oldest
    assert [k for k in "abc" if store.is_spilled(k)] == ["a"]
    store["b"]  # b is now the most recently used: c goes next
    store["d"] = "d" * 10  # __setitem__ spills down to target at once
    assert store.nbytes("d") > 0
    assert [k for k in "abcd" if store.is_spilled(k)] == ["a", "c"]
    assert len(files(store)) == 2


def test_reading_a_spilled_value_brings_it_back_and_deletes_its_file(store: SpillStore) -> None:
    array = np.arange(1000)
    store.put("x", array, nbytes=200)
    store.put("y", "y", nbytes=100)
    store.evict()
    assert store.is_spilled("x") and len(files(store)) == 1
    back = store["x"]
    np.testing.assert_array_equal(back, array)
    assert back.flags.writeable  # its buffer is the file's bytes read into memory
    # x is back in memory (y went out to make room) and its file is gone.
    assert not store.is_spilled("x") and store.is_spilled("y")
    assert store.unspilled_total == 200 and store.spilled_total == 300
    assert len(files(store)) == 1


def test_sizes_are_accounted_in_memory_and_on_disk(store: SpillStore) -> None:
    store.put("a", b"a" * 5000, nbytes=150)
    store.put("b", b"b" * 3000, nbytes=120)
    store.put("c", b"c", nbytes=50)
    store.evict()
    assert (store.fast_bytes, store.spilled_bytes) == (170, 150)
    on_disk = sum(os.path.getsize(os.path.join(store.directory, f)) for f in files(store))
    assert store.disk_bytes == on_disk > 5000
    assert len(store) == 3 and sorted(store) == ["a", "b", "c"]
    metrics = dict(store.metrics())
    assert metrics["managed"] == 170 and metrics["spilled"] == 150
    assert metrics["spilled_keys"] == 1 and metrics["spilled_total"] == 150


def test_deleting_or_replacing_a_spilled_key_removes_its_file(store: SpillStore) -> None:
    store.put("a", "a", nbytes=200)
    store.put("b", "b", nbytes=200)
    store.put("c", "c", nbytes=200)
    store.evict()
    assert store.is_spilled("a") and store.is_spilled("b") and len(files(store)) == 2
    del store["a"]
    store.put("b", "new b", nbytes=10)  # replaced: the old file goes too
    assert files(store) == []
    assert store["b"] == "new b" and "a" not in store
    assert (store.fast_bytes, store.spilled_bytes, store.disk_bytes) == (210, 0, 0)
    store.discard("a")  # absent: no error
    with pytest.raises(KeyError):
        del store["a"]


def test_a_spilled_value_is_served_as_wire_bytes_without_unpickling(store: SpillStore) -> None:
    array = np.arange(100_000)
    store.put("x", array, nbytes=800)
    store.evict()
    blob = store.read_serialized("x")
    assert blob is not None and blob.nbytes >= array.nbytes
    np.testing.assert_array_equal(deserialize(blob), array)
    assert store.is_spilled("x")  # serving a peer does not pull it back into memory
    assert store.read_serialized("not-there") is None


def test_a_value_that_cannot_be_pickled_stays_in_memory_and_others_spill(
    store: SpillStore, caplog: pytest.LogCaptureFixture
) -> None:
    lock = threading.Lock()  # not picklable
    store.put("lock", lock, nbytes=200)
    store.put("b", "b", nbytes=200)
    store.put("c", "c", nbytes=10)
    with caplog.at_level(logging.WARNING, "teamster.spill"):
        store.evict()
    assert not store.is_spilled("lock") and store.is_spilled("b")
    assert store["lock"] is lock
    assert "cannot be pickled" in caplog.text


def test_close_removes_the_spill_folder(tmp_path: Path) -> None:
    store = SpillStore(str(tmp_path / "local"), target=0)
    store["x"] = 1
    folder = store.directory
    assert folder is not None and folder.startswith(str(tmp_path / "local"))
    assert os.listdir(folder)
    store.close()
    assert not os.path.exists(folder)


def test_concurrent_readers_and_a_spiller_see_every_value_intact(tmp_path: Path) -> None:
    store = SpillStore(str(tmp_path), target=3 * 8000)
    arrays = {i: np.full(1000, i) for i in range(20)}
    for i, a in arrays.items():
        store.put(i, a, nbytes=8000)
    errors: list[BaseException] = []
    stop = threading.Event()

    def read(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(300):
                i = rng.randrange(20)
                assert store[i][0] == i
        except BaseException as exc:  # reported below
            errors.append(exc)

    def spill() -> None:
        while not stop.is_set():
            store.evict()

    spiller = threading.Thread(target=spill)
    spiller.start()
    readers = [threading.Thread(target=read, args=(n,)) for n in range(4)]
    for t in readers:
        t.start()
    for t in readers:
        t.join()
    stop.set()
    spiller.join()
    store.evict()
    assert errors == []
    assert store.fast_bytes <= store.target
    assert store.fast_bytes + store.spilled_bytes == 20 * 8000
    assert len(files(store)) == sum(store.is_spilled(i) for i in range(20))
    store.close()


# ------------------------------------------------------------------ full disk


def test_a_full_disk_keeps_values_in_memory_and_logs_once(
    tiny_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = SpillStore(str(tiny_disk), target=100)
    big = np.ones(300_000)  # 2.4 MB: more than the disk holds
    store.put("big", big, nbytes=big.nbytes)
    store.put("small", 1, nbytes=1)
    with caplog.at_level(logging.ERROR, "teamster.spill"):
        assert store.evict() == 0
        assert store.evict() == 0
    assert store["big"] is big and not store.is_spilled("big")
    assert files(store) == []  # the partly written file was removed
    assert caplog.text.count("could not spill") == 1
    assert "No space left on device" in caplog.text
    assert store.last_failure is not None and store.last_failure.errno == errno.ENOSPC
    store.close()


def test_a_task_result_too_large_for_memory_and_disk_errs_clearly(tiny_disk: Path) -> None:
    store = SpillStore(str(tiny_disk))
    memory = MemoryManager(store, MemoryThresholds(limit=1_000_000),
                           on_pause_changed=lambda paused: None, owner="worker w1")
    try:
        big = np.ones(300_000)
        with pytest.raises(OSError) as info:
            memory.store_large_result("result-1", big, big.nbytes)
        assert info.value.errno == errno.ENOSPC
        text = str(info.value)
        assert "worker w1 could not store the result of 'result-1'" in text
        assert "No space left on device" in text and str(tiny_disk) in text
        assert "free disk space there or raise memory_limit" in text
        # A result that fits in memory is simply handed back.
        assert memory.store_large_result("small", 7, 28) == 7
        assert files(store) == []
    finally:
        memory.close()


def test_measuring_a_value_does_not_keep_it_alive() -> None:
    """Importing dask stores an ImportError whose traceback holds its caller's
    frames; imported lazily inside sizeof, that pinned the first measured
    task result for the life of the worker. A fresh interpreter shows it."""
    code = (
        "import gc, weakref, numpy as np\n"
        "from teamster.runtime.spill import sizeof\n"
        "class A(np.ndarray): pass\n"
        "def measure():\n"
        "    a = np.arange(10).view(A)\n"
        "    sizeof(a)\n"
        "    return weakref.ref(a)\n"
        "ref = measure(); gc.collect()\n"
        "assert ref() is None, 'sizeof kept the value alive'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ------------------------------------------------------------ memory policy


def test_thresholds_are_fractions_of_the_limit_and_zero_disables_one() -> None:
    th = MemoryThresholds(limit=1000)
    assert (th.target_bytes, th.spill_bytes, th.pause_bytes) == (600, 700, 800)
    off = MemoryThresholds(limit=1000, target=0, spill=None, pause=0.5)
    assert (off.target_bytes, off.spill_bytes, off.pause_bytes) == (math.inf, math.inf, 500)
    assert MemoryThresholds(limit=0).pause_bytes == math.inf  # no limit: never pauses
    with pytest.raises(ValueError, match="pause fraction must be in"):
        MemoryThresholds(limit=1000, pause=1.5)
    assert parse_fraction("false", "--memory-spill") is None
    assert parse_fraction("0.75", "--memory-spill") == 0.75
    with pytest.raises(ValueError, match="--memory-spill must be a fraction"):
        parse_fraction("lots", "--memory-spill")


def test_the_monitor_pauses_above_the_pause_fraction_and_resumes_below(tmp_path: Path) -> None:
    changes: list[bool] = []
    memory = MemoryManager(SpillStore(str(tmp_path)),
                           MemoryThresholds(limit=1000, spill=None, pause=0.8),
                           on_pause_changed=changes.append)
    try:
        for rss in (700, 801, 900, 850, 799, 500, 810):
            memory.check(rss)
        assert changes == [True, False, True]
        assert memory.paused
    finally:
        memory.close()
