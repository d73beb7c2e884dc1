"""User objects to pickle streams, and wire messages to frames.

Two separate layers live here, and they must stay separate:

- ``serialize``/``deserialize`` turn *user* objects (functions, arguments,
  results) into ``Serialized`` blobs with pickle protocol 5. Large buffers
  (numpy, pandas, bytearray) travel out-of-band as memoryviews, never copied
  into the pickle stream. Only ``deserialize`` ever unpickles.
- ``dumps_message``/``loads_message`` turn a message -- msgpack-able data
  holding registered message dataclasses and ``Serialized`` blobs anywhere --
  into a list of frames and back. This layer never unpickles: a ``Serialized``
  stays opaque bytes until someone calls ``deserialize`` on it, so a peer that
  can send frames cannot make us run code by sending a message (the scheduler
  never needs to look inside user data at all).

Frame 0 is a msgpack header. Each registered message is an msgpack ExtType
whose code is the message's tag and whose data is its fields, in order, packed
as an array. A small ``Serialized`` without out-of-band buffers (the usual
pickled task) is inlined in the header as an ExtType holding the pickle bytes;
any other ``Serialized`` puts its header and buffers in frames of their own,
and the ExtType holds only (first frame index, frame count), so large buffers
are never copied into the header.

Speed: the target is 10,000+ tiny tasks/s end to end on 2 cores, so a
``ComputeTask`` round trip must cost a few microseconds; see
``benchmarks/serialize_micro.py``. Every traversal is done by msgpack's C code,
with Python hooks only at message and ``Serialized`` boundaries.
"""

from __future__ import annotations

import pickle
import struct
from collections.abc import Callable
from dataclasses import fields
from operator import attrgetter
from typing import Any

import cloudpickle
from msgpack import ExtType, Packer, unpackb

from teamster.core.messages import MESSAGE_TYPES, Serialized
from teamster.core.native_messages import NativeMessage

__all__ = [
    "INLINE_MAX",
    "OUT_OF_BAND_MIN",
    "deserialize",
    "dumps_message",
    "loads_message",
    "serialize",
]

#: Pickle buffers at least this large travel out-of-band (a frame of their
#: own, received into memory the result array then uses); smaller ones are
#: copied into the pickle stream, where one extra small copy is cheaper than a
#: frame and yields a writable array on the other side.
OUT_OF_BAND_MIN = 16 * 1024
#: A ``Serialized`` with no buffers and a header at most this long is inlined
#: in the msgpack header instead of costing a frame. Equal to OUT_OF_BAND_MIN so
#: a blob that has buffers is always big enough to deserve frames.
INLINE_MAX = 16 * 1024

# Ext codes. Message tags use codes 0..99 directly (no tag field to unpack).
_MAX_MESSAGE_TAG = 99
_EXT_SERIALIZED_INLINE = 100  # data: the pickle header itself
_EXT_SERIALIZED_FRAMES = 101  # data: _FRAME_REF (first frame index, frame count)
_FRAME_REF = struct.Struct("<II")

# msgpack's Packer preallocates 256 KiB by default; allocating that for every
# nested message pushes glibc malloc into mmap/trim churn (measured: 13 us ->
# 2 us per ComputeTask). Start small; the packer grows by doubling as needed.
_PACKER_BUF = 1024

# ExtType.__new__ validates its arguments in Python (~0.4 us); we build codes
# and bytes ourselves, so construct the namedtuple directly.
_new_tuple = tuple.__new__

#: message class -> (tag, getter returning its fields as a tuple in order)
_ENCODERS: dict[type, tuple[int, Callable[[Any], tuple[Any, ...]]]] = {}


def message_fields(cls: type) -> list[str]:
    """A registered message class's field names, in wire order."""
    if issubclass(cls, NativeMessage):
        return list(cls.FIELDS)
    return [f.name for f in fields(cls)]


def _encoder(cls: type) -> tuple[int, Callable[[Any], tuple[Any, ...]]]:
    """Look up (and cache) how to encode a registered message class.

    Lazy, so that message classes registered after this module was imported
    still work.
    """
    enc = _ENCODERS.get(cls)
    if enc is None:
        tag = getattr(cls, "tag", None)
        if tag is None or tag >= len(MESSAGE_TYPES) or MESSAGE_TYPES[tag] is not cls:
            raise TypeError(
                f"Cannot put an object of type {cls.__name__} in a message: only "
                "msgpack types, registered messages and Serialized (use serialize(obj)) "
                "can travel"
            )
        if tag > _MAX_MESSAGE_TAG:
            raise TypeError(f"message tag {tag} of {cls.__name__} exceeds {_MAX_MESSAGE_TAG}")
        names = message_fields(cls)
        # attrgetter with several names returns a tuple, in C; all messages have
        # at least two fields (a payload and stimulus_id).
        getter = attrgetter(*names) if len(names) > 1 else (lambda o, _n=names[0]: (getattr(o, _n),))
        enc = _ENCODERS[cls] = (tag, getter)
    return enc


# ---------------------------------------------------------------------------
# User objects


def serialize(obj: object) -> Serialized:
    """Pickle ``obj`` with protocol 5, large buffers out-of-band (not copied).

    Plain pickle is tried first because it is several times faster than
    cloudpickle; cloudpickle is used when pickle fails (lambdas, closures) or
    when the stream refers to ``__main__`` (a function defined in a script or
    notebook, which the worker could not import by reference).
    """
    buffers: list[memoryview] = []

    def collect(buf: pickle.PickleBuffer) -> bool:
        view = buf.raw()
        if view.nbytes < OUT_OF_BAND_MIN:
            return True  # in-band
        buffers.append(view)
        return False

    try:
        header = pickle.dumps(obj, protocol=5, buffer_callback=collect)
        if b"__main__" not in header:
            return Serialized(header, tuple(buffers))
    except Exception:
        pass
    buffers.clear()
    try:
        header = cloudpickle.dumps(obj, protocol=5, buffer_callback=collect)
    except Exception as e:
        raise TypeError(
            f"Could not serialize object of type {type(obj).__name__}: {_safe_repr(obj):.100}: {e}"
        ) from e
    return Serialized(header, tuple(buffers))


def deserialize(s: Serialized) -> object:
    """Unpickle a ``Serialized``; its buffers become the objects' memory (no copy)."""
    return pickle.loads(s.header, buffers=s.buffers)


def _safe_repr(obj: object) -> str:
    try:
        return repr(obj)
    except Exception as e:  # a broken __repr__ must not hide the real error
        return f"<{type(obj).__name__} with failing repr: {e!r}>"


# ---------------------------------------------------------------------------
# Messages


def dumps_message(msg: object) -> list[bytes | memoryview]:
    """Encode a message into frames: a msgpack header, then out-of-band buffers."""
    frames: list[Any] = [b""]

    def default(obj: Any) -> Any:
        cls = type(obj)
        if cls is Serialized:
            header = obj.header
            if not obj.buffers and len(header) <= INLINE_MAX:
                if type(header) is not bytes:
                    header = bytes(header)
                return _new_tuple(ExtType, (_EXT_SERIALIZED_INLINE, header))
            ref = _FRAME_REF.pack(len(frames), 1 + len(obj.buffers))
            frames.append(header)
            frames.extend(obj.buffers)
            return _new_tuple(ExtType, (_EXT_SERIALIZED_FRAMES, ref))
        enc = _ENCODERS.get(cls)
        if enc is None:
            if hasattr(obj, "__index__") and not hasattr(obj, "__dataclass_fields__"):
                # numpy integers (e.g. sizes computed with numpy) are plain ints on the wire
                return obj.__index__()
            enc = _encoder(cls)
        tag, get = enc
        data = Packer(default=default, buf_size=_PACKER_BUF).pack(get(obj))  # noqa: F821 (see del)
        return _new_tuple(ExtType, (tag, data))

    try:
        frames[0] = Packer(default=default, buf_size=_PACKER_BUF).pack(msg)
        return frames
    finally:
        # default refers to itself (it recurses): break that cycle, or it pins
        # these frames (often large buffers) until the next garbage collection.
        del default


def loads_message(frames: list[bytes | bytearray | memoryview]) -> object:
    """Decode frames from ``dumps_message``. Never unpickles.

    Arrays decode as tuples (so dask's tuple keys stay hashable, also as dict
    keys). Raises ValueError (or a msgpack error) on malformed input.
    """
    types = MESSAGE_TYPES

    def hook(code: int, data: bytes) -> Any:
        if code <= _MAX_MESSAGE_TAG:
            return types[code](
                *unpackb(data, ext_hook=hook, use_list=False, strict_map_key=False)  # noqa: F821
            )
        if code == _EXT_SERIALIZED_INLINE:
            return Serialized(data)
        if code == _EXT_SERIALIZED_FRAMES:
            first, count = _FRAME_REF.unpack(data)
            if count < 1 or first < 1 or first + count > len(frames):
                raise ValueError(f"Serialized refers to frames {first}..{first + count - 1} "
                                 f"of a {len(frames)}-frame message")
            header = frames[first]
            return Serialized(
                header if type(header) is bytes else bytes(header),
                tuple([memoryview(f) for f in frames[first + 1 : first + count]]),
            )
        raise ValueError(f"unknown msgpack ext code {code} in message")

    try:
        return unpackb(frames[0], ext_hook=hook, use_list=False, strict_map_key=False)
    finally:
        # As in dumps_message: a paused worker (no allocations, so no garbage
        # collection) kept every received buffer alive through this cycle.
        del hook
