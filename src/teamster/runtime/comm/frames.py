"""Length-prefixed framing: bytes in, lists of frames out. No I/O here.

Wire format of one message::

    u64le n | u64le len_0 ... len_{n-1} | frame_0 ... frame_{n-1}

``FrameReader`` follows asyncio's ``BufferedProtocol`` shape (``get_buffer`` /
``buffer_updated``) so the transport reads straight into its memory:

- small messages accumulate in one reusable buffer and are sliced out (one
  small copy, and many messages per read syscall);
- a message whose payload is at least ``BIG_MESSAGE`` bytes gets a bytearray
  of exactly its size, and the socket is read directly into it. Frames are
  memoryviews of that bytearray, so a 100 MB array is received without any
  copy and deserializes to memory that is writable and owned by nobody else.

Counts and lengths are checked against limits *before* anything is allocated,
so garbage or a hostile peer cannot make us allocate absurd memory; a
violation raises ``ProtocolError`` and the transport closes that connection.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from teamster.runtime.comm.core import ProtocolError

#: Default limit on the total size of one message.
DEFAULT_MAX_MESSAGE_SIZE = 2 * 1024**3
#: Default limit on frames per message (each costs 8 bytes of header).
DEFAULT_MAX_FRAMES = 1_000_000
#: Payloads at least this large are read into a dedicated buffer (no copy).
BIG_MESSAGE = 32 * 1024
#: Size of the reusable read buffer for small messages.
INITIAL_BUFFER = 64 * 1024
#: Ask the socket for at least this much per read (fewer syscalls).
_MIN_READ = 16 * 1024

_U64 = struct.Struct("<Q")


def normalize_frames(frames: list[Any]) -> tuple[list[Any], bytes, int]:
    """Return (frames as bytes or byte-format memoryviews, wire prefix, payload size).

    Frames may be any C-contiguous buffer (bytes, bytearray, memoryview, numpy
    array); none is copied.
    """
    out: list[Any] = []
    lengths: list[int] = []
    for f in frames:
        t = type(f)
        if t is bytes or t is bytearray:
            lengths.append(len(f))
        else:
            f = memoryview(f)
            if f.format != "B" or f.ndim != 1:
                f = f.cast("B")  # raises TypeError for non-contiguous buffers
            lengths.append(f.nbytes)
        out.append(f)
    prefix = struct.pack(f"<{len(lengths) + 1}Q", len(lengths), *lengths)
    return out, prefix, sum(lengths)


def _tls_hint(head: bytes | bytearray) -> str:
    """Say so when the bytes look like a TLS record (handshake or alert): the
    usual reason for garbage is TLS on one end and plain TCP on the other."""
    if len(head) >= 3 and head[0] in (0x15, 0x16) and head[1] == 0x03 and head[2] <= 0x04:
        return ("; the peer speaks TLS: use a tls:// address and "
                "teamster.Security(tls_ca=..., tls_cert=..., tls_key=...) on both ends")
    return ""


class FrameReader:
    """Incremental parser of the frame protocol; see the module docstring."""

    def __init__(self, on_message: Callable[[list[Any]], None], *, max_frames: int,
                 max_size: int, halt_after_one: bool = False) -> None:
        self._on_message = on_message
        #: Limits checked before allocating (see ``set_limits``).
        self.max_frames = max_frames
        self.max_size = max_size
        #: While True, stop after delivering one message (the handshake) until
        #: ``resume()``: later bytes must be parsed under the post-handshake limits.
        self.halt_after_one = halt_after_one
        #: Set once a message was delivered in halt mode; parsing is suspended.
        self.halted = False
        #: Reusable buffer; unparsed bytes are ``_buf[_start:_end]``.
        self._buf = bytearray(INITIAL_BUFFER)
        self._view = memoryview(self._buf)
        self._start = 0
        self._end = 0
        #: The dedicated buffer of the big message being received, if any;
        #: ``_big_filled`` bytes of it are in, its frames have ``_big_lengths``.
        self._big: bytearray | None = None
        self._big_view: memoryview | None = None
        self._big_filled = 0
        self._big_lengths: tuple[int, ...] = ()

    def set_limits(self, *, max_frames: int, max_size: int) -> None:
        self.max_frames = max_frames
        self.max_size = max_size

    def resume(self, halt_after_one: bool = False) -> None:
        """Parse whatever arrived meanwhile; with ``halt_after_one``, stop again
        after one more message (a further handshake message)."""
        self.halt_after_one = halt_after_one
        self.halted = False
        self._parse()

    def get_buffer(self) -> memoryview:
        """Memory the transport should read into next."""
        if self._big_view is not None:
            return self._big_view[self._big_filled :]
        if len(self._buf) - self._end < _MIN_READ:
            self._make_room(self._end - self._start + _MIN_READ)
        return self._view[self._end :]

    def buffer_updated(self, nbytes: int) -> None:
        """``nbytes`` were written into the last ``get_buffer()``. May raise ProtocolError."""
        if self._big is not None:
            self._big_filled += nbytes
            if self._big_filled == len(self._big):
                self._finish_big()
                self._parse()
            return
        self._end += nbytes
        self._parse()

    @property
    def buffered(self) -> int:
        """Bytes received but not yet delivered as a message."""
        return self._end - self._start + self._big_filled

    # -- internals ------------------------------------------------------------

    def _parse(self) -> None:
        buf = self._buf
        while not self.halted:
            start = self._start
            avail = self._end - start
            if avail < 8:
                break
            (n,) = _U64.unpack_from(buf, start)
            if not 1 <= n <= self.max_frames:
                raise ProtocolError(f"invalid frame count {n} (limit {self.max_frames})"
                                    + _tls_hint(buf[start : start + 3]))
            prefix = 8 + 8 * n
            if avail < prefix:
                self._make_room(prefix)
                break
            lengths = struct.unpack_from(f"<{n}Q", buf, start + 8)
            total = sum(lengths)
            if total > self.max_size:
                raise ProtocolError(
                    f"message of {total} bytes exceeds the limit of {self.max_size} bytes"
                )
            if avail < prefix + total:
                if total >= BIG_MESSAGE:
                    self._start_big(lengths, total, start + prefix)
                else:
                    self._make_room(prefix + total)
                break
            pos = start + prefix
            frames = []
            for length in lengths:
                frames.append(buf[pos : pos + length])
                pos += length
            self._start = pos
            self._deliver(frames)
        if self._start == self._end:
            self._start = self._end = 0
            if len(self._buf) > 16 * INITIAL_BUFFER:  # a huge prefix grew it; give it back
                self._replace_buffer(INITIAL_BUFFER)

    def _deliver(self, frames: list[Any]) -> None:
        if self.halt_after_one:
            self.halted = True
        self._on_message(frames)

    def _start_big(self, lengths: tuple[int, ...], total: int, payload_start: int) -> None:
        big = bytearray(total)
        have = self._end - payload_start
        big[:have] = self._view[payload_start : self._end]
        self._start = self._end = 0  # everything buffered belonged to this message
        self._big, self._big_view = big, memoryview(big)
        self._big_filled = have
        self._big_lengths = lengths

    def _finish_big(self) -> None:
        view = self._big_view
        assert view is not None
        frames = []
        pos = 0
        for length in self._big_lengths:
            frames.append(view[pos : pos + length])
            pos += length
        self._big = self._big_view = None
        self._big_filled = 0
        self._deliver(frames)

    def _make_room(self, needed: int) -> None:
        """Ensure ``_buf[_start:]`` can hold ``needed`` bytes."""
        if len(self._buf) - self._start >= needed:
            return
        if needed <= len(self._buf):
            # Compact in place: equal-size slice assignment is allowed even
            # while the transport still holds a view of the buffer.
            n = self._end - self._start
            self._buf[:n] = self._buf[self._start : self._end]
            self._start, self._end = 0, n
        else:
            self._replace_buffer(max(needed, 2 * len(self._buf)))

    def _replace_buffer(self, size: int) -> None:
        n = self._end - self._start
        new = bytearray(size)
        new[:n] = self._view[self._start : self._end]
        self._buf, self._view = new, memoryview(new)
        self._start, self._end = 0, n
