"""The worker's data store: task values in memory up to a byte target, the
least recently used beyond it pickled to files on local disk.

``SpillStore`` is a mapping from task key to value. Values live in the fast
tier (a dict in LRU order, sizes from ``dask.sizeof``) until the bytes held
there exceed ``target``; then ``evict`` writes the least recently used ones to
the slow tier, one file per value in ``directory``, in the wire format
(pickle protocol 5 with out-of-band buffers, see ``runtime/comm/serialize``).
Reading a spilled key unpickles it and moves it back to memory ("unspill");
``read_serialized`` hands a peer the file's bytes without unpickling them.

Threads: the event loop puts and deletes, task threads read their inputs
(and so unspill), and one spill thread evicts. The lock guards only the
indices; files are written and read outside it, so a reader never waits for
a write. A value stays in the fast tier until its file is complete, so there
is no moment when a key is in neither tier; a key deleted or replaced while
its file is being written is marked and the file discarded.

Why not zict (dask's own spill library): ``zict.File`` leaves a partly
written file behind when the disk fills and takes only string keys, and
``zict.Buffer`` raises a failed eviction into whichever reader happened to
trigger it; here a full disk must stay with the value being spilled (it
stays in memory) or with the task whose result it is (that task errs).
"""

from __future__ import annotations

import errno
import itertools
import logging
import math
import os
import struct
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterator, MutableMapping
from typing import Any

from teamster.core.messages import Key, Serialized
from teamster.runtime.comm import deserialize, serialize
from teamster.runtime.workspace import WorkerDirectory

logger = logging.getLogger("teamster.spill")

_COUNT = struct.Struct("<Q")


class NotPicklable(Exception):
    """A value that cannot be pickled, so it cannot leave memory."""


class DiskEntry:
    """One spilled value: its file and the bytes it occupies there."""

    __slots__ = ("path", "file_bytes")

    def __init__(self, path: str, file_bytes: int) -> None:
        self.path = path
        self.file_bytes = file_bytes

    def read_serialized(self) -> Serialized:
        """The file's frames as a ``Serialized``: one read, buffers are views into it."""
        with open(self.path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            buf = bytearray(size)
            if f.readinto(buf) != size:
                raise OSError(errno.EIO, f"short read of spill file {self.path}")
        view = memoryview(buf)
        (count,) = _COUNT.unpack_from(view, 0)
        lengths = struct.unpack_from(f"<{count}Q", view, _COUNT.size)
        offset = _COUNT.size + 8 * count
        frames = []
        for n in lengths:
            frames.append(view[offset:offset + n])
            offset += n
        return Serialized(bytes(frames[0]), tuple(frames[1:]))

    def load(self) -> Any:
        return deserialize(self.read_serialized())


class SpillStore(MutableMapping[Key, Any]):
    def __init__(self, directory: str | None = None, target: float = math.inf, *,
                 owner: str = "this worker") -> None:
        #: Where spill files go: a fresh folder created on first spill, inside
        #: ``directory`` (or the system's temp dir), removed by ``close``.
        self.parent_directory = directory
        self.directory: str | None = None
        self._workspace: WorkerDirectory | None = None
        #: Bytes of values kept in memory; beyond it the least recently used go to disk.
        self.target = target
        self.owner = owner
        self._lock = threading.RLock()
        #: Values in memory, least recently used first.
        self._fast: OrderedDict[Key, Any] = OrderedDict()
        #: Spilled values. A key is in exactly one of _fast and _disk.
        self._disk: dict[Key, DiskEntry] = {}
        #: sizeof of every stored value, in memory or on disk.
        self._sizes: dict[Key, int] = {}
        #: Keys whose file is being written -> True once deleted/replaced meanwhile.
        self._moving: dict[Key, bool] = {}
        #: Keys that cannot be pickled: they stay in memory.
        self._pinned: set[Key] = set()
        self._names = itertools.count()
        #: Sum of _sizes over _fast (managed memory) and over _disk.
        self.fast_bytes = 0
        self.spilled_bytes = 0
        #: Bytes the spill files occupy.
        self.disk_bytes = 0
        #: Totals since start: bytes (sizeof) moved to disk and back.
        self.spilled_total = 0
        self.unspilled_total = 0
        #: A spill failed and was logged; reset by the next success (log once per episode).
        self._failure_logged = False
        self.last_failure: OSError | None = None

    # ---------------------------------------------------------------- mapping

    def __getitem__(self, key: Key) -> Any:
        while True:
            with self._lock:
                fast = self._fast
                if key in fast:
                    fast.move_to_end(key)
                    return fast[key]
                entry = self._disk[key]
            try:
                value = entry.load()
                break
            except OSError:
                with self._lock:
                    if self._disk.get(key) is entry:
                        raise  # the disk failed to give it back: say so
                # Unspilled by another reader (and maybe spilled again) or
                # deleted meanwhile: look again.
        remove = False
        with self._lock:
            if self._disk.get(key) is entry:
                size = self._sizes[key]
                self.unspilled_total += size
                if size <= self.target:  # a value larger than target stays on disk
                    del self._disk[key]
                    self.spilled_bytes -= size
                    self.disk_bytes -= entry.file_bytes
                    self._fast[key] = value
                    self.fast_bytes += size
                    remove = True
            elif key in self._fast:
                value = self._fast[key]
        if remove:
            _remove(entry.path)
            if self.fast_bytes > self.target:
                self.evict()
        return value

    def __setitem__(self, key: Key, value: Any) -> None:
        self.put(key, value)
        if self.fast_bytes > self.target:
            self.evict()

    def __delitem__(self, key: Key) -> None:
        with self._lock:
            if key not in self._sizes:
                raise KeyError(key)
            entry = self._discard(key)
        if entry is not None:
            _remove(entry.path)

    def discard(self, key: Key) -> None:
        """Delete if present; never reads a spilled value back (``pop`` would)."""
        try:
            del self[key]
        except KeyError:
            pass

    def __contains__(self, key: object) -> bool:
        return key in self._sizes

    def __iter__(self) -> Iterator[Key]:
        with self._lock:
            return iter(list(self._sizes))

    def __len__(self) -> int:
        return len(self._sizes)

    # ------------------------------------------------------------------ store

    def put(self, key: Key, value: Any, nbytes: int | None = None) -> int:
        """Store in memory without evicting (no disk I/O); returns its size."""
        if nbytes is None:
            nbytes = sizeof(value)
        with self._lock:
            entry = self._discard(key)
            self._fast[key] = value
            self._sizes[key] = nbytes
            self.fast_bytes += nbytes
        if entry is not None:
            _remove(entry.path)
        return nbytes

    def adopt(self, key: Key, entry: DiskEntry, nbytes: int) -> None:
        """Take a value already written by ``write`` (a task's large result)."""
        with self._lock:
            old = self._discard(key)
            self._disk[key] = entry
            self._sizes[key] = nbytes
            self.spilled_bytes += nbytes
            self.disk_bytes += entry.file_bytes
            self.spilled_total += nbytes
        if old is not None:
            _remove(old.path)

    def write(self, key: Key, value: Any) -> DiskEntry:
        """Pickle a value into a new file (not yet in the store).

        Raises NotPicklable, or OSError (a full disk) with the file removed.
        """
        try:
            ser = serialize(value)
        except Exception as exc:
            raise NotPicklable(f"{key!r}: {exc}") from exc
        frames = [ser.header, *ser.buffers]
        lengths = [memoryview(f).nbytes for f in frames]
        head = _COUNT.pack(len(frames)) + struct.pack(f"<{len(frames)}Q", *lengths)
        path = os.path.join(self._ensure_directory(), f"{next(self._names)}.pkl")
        try:
            with open(path, "wb") as f:
                f.write(head)
                for frame in frames:
                    f.write(frame)
        except BaseException:
            _remove(path)
            raise
        return DiskEntry(path, len(head) + sum(lengths))

    def read_serialized(self, key: Key) -> Serialized | None:
        """A spilled value's wire bytes, read without unpickling; None if it is
        in memory (or gone)."""
        entry = self._disk.get(key)
        if entry is None:
            return None
        try:
            return entry.read_serialized()
        except OSError:
            return None  # unspilled or deleted meanwhile

    def nbytes(self, key: Key) -> int:
        return self._sizes[key]

    def is_spilled(self, key: Key) -> bool:
        return key in self._disk

    # ------------------------------------------------------------- eviction

    def evict(self, target: float | None = None) -> int:
        """Move least recently used values to disk until memory holds at most
        ``target`` bytes (default: the store's target). Returns bytes moved.

        A failing disk stops the round and leaves the value in memory (logged
        once); unpicklable values stay in memory and are skipped.
        """
        goal = self.target if target is None else target
        moved = 0
        while self.fast_bytes > goal:
            n = self.evict_one()
            if n is None:
                break
            moved += n
        return moved

    def evict_one(self) -> int | None:
        """Spill the least recently used value; its size, 0 if it could not be
        written, None if nothing is left to spill (or the disk failed)."""
        with self._lock:
            key = next((k for k in self._fast if k not in self._moving
                        and k not in self._pinned), None)
            if key is None:
                return None
            value = self._fast[key]
            self._moving[key] = False
        try:
            entry = self.write(key, value)
        except NotPicklable as exc:
            with self._lock:
                self._moving.pop(key, None)
                if key in self._fast:
                    self._pinned.add(key)
            logger.warning("%s keeps %r in memory: it cannot be pickled to disk (%s)",
                           self.owner, key, exc.__cause__)
            return 0
        except OSError as exc:
            with self._lock:
                self._moving.pop(key, None)
            self._log_failure(exc)
            return None
        with self._lock:
            cancelled = self._moving.pop(key)
            if cancelled or self._fast.get(key) is not value:
                stale = True
            else:
                stale = False
                size = self._sizes[key]
                del self._fast[key]
                self.fast_bytes -= size
                self._disk[key] = entry
                self.spilled_bytes += size
                self.disk_bytes += entry.file_bytes
                self.spilled_total += size
        if stale:
            _remove(entry.path)
            return 0
        if self._failure_logged:
            self._failure_logged = False
            logger.warning("%s spills to %s again", self.owner, self.directory)
        return size

    def _log_failure(self, exc: OSError) -> None:
        self.last_failure = exc
        if not self._failure_logged:
            self._failure_logged = True
            logger.error(
                "%s could not spill to %s (%s); values stay in memory until it can. "
                "Free disk space there or raise memory_limit.", self.owner,
                self.directory or self.parent_directory, exc)

    # ---------------------------------------------------------------- helpers

    def _discard(self, key: Key) -> DiskEntry | None:
        """Drop a key from the indices (lock held); returns a file to remove."""
        size = self._sizes.pop(key, None)
        if size is None:
            return None
        self._pinned.discard(key)
        if key in self._moving:
            self._moving[key] = True
        if key in self._fast:
            del self._fast[key]
            self.fast_bytes -= size
            return None
        entry = self._disk.pop(key)
        self.spilled_bytes -= size
        self.disk_bytes -= entry.file_bytes
        return entry

    def _ensure_directory(self) -> str:
        if self.directory is None:
            with self._lock:
                if self.directory is None:
                    # (Also removes the folders of workers that died here.)
                    self._workspace = WorkerDirectory(self.parent_directory)
                    self.directory = self._workspace.path
        return self.directory

    def close(self) -> None:
        """Forget every value and remove the spill folder."""
        with self._lock:
            self._fast.clear()
            self._disk.clear()
            self._sizes.clear()
            self.fast_bytes = self.spilled_bytes = self.disk_bytes = 0
            workspace, self._workspace = self._workspace, None
            self.directory = None
        if workspace is not None:
            workspace.close()

    def metrics(self) -> tuple[tuple[str, float], ...]:
        return (
            ("managed", float(self.fast_bytes)),
            ("spilled", float(self.spilled_bytes)),
            ("spilled_keys", float(len(self._disk))),
            ("spilled_disk_bytes", float(self.disk_bytes)),
            ("spilled_total", float(self.spilled_total)),
            ("unspilled_total", float(self.unspilled_total)),
        )


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


_BUILTIN_SIZED = frozenset({int, float, bool, type(None), str, bytes, bytearray, complex})


def sizeof(value: Any) -> int:
    """Bytes a value occupies; dask's sizeof knows numpy, pandas and containers."""
    if type(value) in _BUILTIN_SIZED:
        return sys.getsizeof(value)
    try:
        return int((_dask_sizeof or _load_dask_sizeof())(value))
    except Exception:
        return sys.getsizeof(value)




_dask_sizeof: Any = None


def _load_dask_sizeof() -> Any:
    """dask's sizeof, imported on a thread of its own.

    Importing dask stores an ImportError (dask.widgets, without jinja2) whose
    traceback keeps every frame of the importing stack alive. Imported from
    sizeof's caller, that stack was a task's, and its result (25 MB in the
    spill test) stayed pinned for the life of the worker. A thread that
    ends leaves only its own finished frames behind.
    """
    global _dask_sizeof

    def load() -> None:
        import dask.sizeof  # noqa: F401

    importer = threading.Thread(target=load, name="teamster-import-dask", daemon=True)
    importer.start()
    importer.join()
    from dask.sizeof import sizeof as dask_sizeof  # already imported: nothing raised here

    _dask_sizeof = dask_sizeof
    return dask_sizeof
