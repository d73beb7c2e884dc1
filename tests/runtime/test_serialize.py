"""serialize/deserialize (user objects) and dumps_message/loads_message (wire)."""

from __future__ import annotations

import pickle
import threading
import typing
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from teamster.core import messages
from teamster.core.messages import (
    MESSAGE_TYPES,
    ComputeTask,
    DataReply,
    Reply,
    Request,
    Serialized,
    TaskErred,
    TaskSpec,
    UpdateGraph,
)
from teamster.core.native_messages import NativeMessage
from teamster.runtime.comm.serialize import (
    INLINE_MAX,
    OUT_OF_BAND_MIN,
    deserialize,
    dumps_message,
    loads_message,
    message_fields,
    serialize,
)


def roundtrip(msg: object) -> object:
    return loads_message(dumps_message(msg))


def wire_roundtrip(msg: object) -> object:
    """Like roundtrip, but frames become fresh bytearrays as a socket delivers them."""
    return loads_message([bytearray(memoryview(f).cast("B")) for f in dumps_message(msg)])


# ---------------------------------------------------------------------------
# Every registered message, generated from its type hints


#: msgpack-able values as the wire returns them (tuples, never lists).
plain = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False) | st.text(max_size=20) | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4).map(tuple)
    | st.dictionaries(st.text(max_size=5) | st.integers(-1000, 1000) | st.tuples(st.text(max_size=5),
                                                                        st.integers(-9, 9)),
                      inner, max_size=4),
    max_leaves=12,
)
serialized = st.builds(
    Serialized,
    st.binary(max_size=50),
    st.lists(st.binary(max_size=50), max_size=2).map(tuple),
)
keys = st.text(max_size=10) | st.tuples(st.text(max_size=10), st.integers(0, 1000))


def strategy_for(tp: Any) -> st.SearchStrategy[Any]:
    """A strategy producing values of a message field's annotated type."""
    if tp is Any:
        return plain
    if tp is type(None):
        return st.none()
    if tp is str:
        return st.text(max_size=20)
    if tp is bool:
        return st.booleans()
    if tp is int:
        return st.integers(-(2**63), 2**63 - 1)
    if tp is float:
        return st.floats(allow_nan=False)
    if tp is Serialized:
        return serialized
    if tp in MESSAGE_TYPES:
        return message_strategy(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union or origin is getattr(__import__("types"), "UnionType", None):
        if set(args) == {str, tuple[Any, ...]}:
            return keys  # Key: keep tuples hashable-looking, as dask keys are
        return st.one_of([strategy_for(a) for a in args])
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return st.lists(strategy_for(args[0]), max_size=3).map(tuple)
        return st.tuples(*[strategy_for(a) for a in args])
    if origin is dict:
        return st.dictionaries(strategy_for(args[0]), strategy_for(args[1]), max_size=3)
    raise NotImplementedError(f"no strategy for {tp!r}; extend strategy_for")


def message_strategy(cls: type) -> st.SearchStrategy[Any]:
    # A record's fields are annotated on the class, a native message's
    # (native_messages.py) on its __init__. (Tests run the pure source.)
    hints = typing.get_type_hints(cls.__init__ if issubclass(cls, NativeMessage) else cls,
                                  vars(messages))
    return st.builds(cls, **{name: strategy_for(hints[name]) for name in message_fields(cls)})


@pytest.mark.parametrize("cls", MESSAGE_TYPES, ids=lambda c: c.__name__)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_message_type_round_trips(cls: type, data: st.DataObject) -> None:
    msg = data.draw(message_strategy(cls))
    assert roundtrip(msg) == msg
    assert wire_roundtrip(msg) == msg
    assert type(roundtrip(msg)) is cls


def test_sample_messages_round_trip() -> None:
    spec = TaskSpec(key=("x-1", 0), run_spec=Serialized(b"fn"), dependencies=("a", ("b", 1)),
                    priority=(0, 1, -3), workers=None, resources=(("GPU", 1.0),))
    samples = [
        spec,
        UpdateGraph(client="c", tasks=(spec, spec), wanted=(("x-1", 0),), now=1.5,
                    stimulus_id="update-graph-1"),
        ComputeTask(key="f-123", run_spec=Serialized(b"x" * 60), who_has=(("a", ("tcp://w:1",),
                    8),), priority=(0, 5), resources=None, run_id=3, announce=True,
                    stimulus_id="s"),
        TaskErred(worker="tcp://w:1", key="k", exception=serialize(ValueError("boom")),
                  traceback=None, exception_text="ValueError('boom')", duration=0.1,
                  run_id=3, stimulus_id="s"),
        DataReply(data=(("k", serialize(np.arange(10_000))),), missing=(), stimulus_id="s"),
        Request(request_id=1, op="who_has", args={"keys": (("x", 1),)}),
        Reply(request_id=1, ok=True, result={("x", 1): ("tcp://w:1",)}),
    ]
    for msg in samples:
        assert roundtrip(msg) == msg
        assert wire_roundtrip(msg) == msg


def test_batches_of_messages_are_tuples() -> None:
    msgs = [Request(request_id=i, op="ping") for i in range(100)]
    out = roundtrip(msgs)
    assert isinstance(out, tuple)
    assert list(out) == msgs


# ---------------------------------------------------------------------------
# Containers, keys, Serialized placement


def test_tuples_and_tuple_keys() -> None:
    msg = {
        ("x", 1): ("a", (1, 2.5), None),
        "nested": {("deep", ("er", 2)): [1, [2, 3]]},
        7: b"bytes",
        "empty": (),
    }
    out = roundtrip(msg)
    assert out == {
        ("x", 1): ("a", (1, 2.5), None),
        "nested": {("deep", ("er", 2)): (1, (2, 3))},  # lists come back as tuples
        7: b"bytes",
        "empty": (),
    }
    assert isinstance(out[("x", 1)][1], tuple)


def test_small_serialized_is_inlined_large_gets_frames() -> None:
    small = Serialized(b"s" * 100)
    big = Serialized(b"h" * (INLINE_MAX + 1))
    with_buffers = Serialized(b"h", (b"b" * 10, bytearray(b"c" * 20)))
    frames = dumps_message({"a": small, "b": (big, [with_buffers])})
    # small: in the header; big: 1 frame; with_buffers: header + 2 buffers
    assert len(frames) == 1 + 1 + 3
    out = loads_message(frames)
    assert out == {"a": small, "b": (big, (with_buffers,))}
    assert type(out["b"][0].header) is bytes


def test_serialized_nested_in_message_fields() -> None:
    arr = np.arange(100_000, dtype="i8")
    msg = DataReply(data=(("a", serialize(arr)), (("b", 1), serialize("small"))), missing=("c",),
                    stimulus_id="s")
    out = wire_roundtrip(msg)
    assert isinstance(out, DataReply)
    np.testing.assert_array_equal(deserialize(out.data[0][1]), arr)
    assert deserialize(out.data[1][1]) == "small"


def test_frames_are_freed_with_the_message_without_garbage_collection() -> None:
    """A worker paused for memory allocates nothing, so the cyclic GC never
    runs: a reference cycle through the frames pinned every received value
    (25 MB arrays) after the store had dropped it."""
    import gc
    import weakref

    class Buffer(bytearray):  # a bytearray that can be weakly referenced
        pass

    sent = Buffer(b"x" * OUT_OF_BAND_MIN)
    gc.disable()
    try:
        frames = dumps_message(DataReply((("k", Serialized(b"h", (sent,))),), (), "s"))
        sent_ref = weakref.ref(sent)
        del sent
        received = [bytes(frames[0]), b"h", Buffer(frames[2])]
        received_ref = weakref.ref(received[2])
        msg = loads_message(received)
        del frames, received
        assert isinstance(msg, DataReply)
        assert sent_ref() is None
        assert received_ref() is not None  # the message's buffers are its views
        del msg
        assert received_ref() is None
    finally:
        gc.enable()


def test_numpy_integers_encode_as_ints() -> None:
    assert roundtrip({"nbytes": np.int64(5), "n": np.uint8(3)}) == {"nbytes": 5, "n": 3}


def test_unregistered_type_in_message_is_a_clear_error() -> None:
    class Thing:
        pass

    with pytest.raises(TypeError, match="Thing.*serialize"):
        dumps_message({"x": Thing()})


def test_loads_message_never_unpickles() -> None:
    # A payload whose unpickling has a side effect (as an attacker's would).
    calls: list[int] = []
    payload = serialize(_SideEffect())
    _SideEffect.calls = calls
    out = wire_roundtrip(Reply(request_id=1, ok=True, result=payload))
    assert calls == []  # decoding the message did not run it
    assert isinstance(out.result, Serialized)
    deserialize(out.result)
    assert calls == [1]


class _SideEffect:
    calls: list[int] = []

    def __reduce__(self) -> tuple[Any, ...]:
        return (_record_call, ())


def _record_call() -> None:
    _SideEffect.calls.append(1)


@pytest.mark.parametrize("frames", [
    [b"\xc1"],  # msgpack "never used" byte
    [b"\xd4\x7f\x00"],  # unknown ext code 127
    [b"\xd6\x65\x05\x00\x00\x00"],  # truncated frame reference
    [dumps_message(Serialized(b"x" * (INLINE_MAX + 1)))[0]],  # references a missing frame
])
def test_malformed_messages_raise(frames: list[bytes]) -> None:
    with pytest.raises(Exception) as info:
        loads_message(frames)
    assert not isinstance(info.value, pickle.UnpicklingError)


# ---------------------------------------------------------------------------
# serialize / deserialize


def test_large_numpy_buffer_goes_out_of_band_without_copy() -> None:
    arr = np.arange(1_000_000, dtype="f8")
    s = serialize(arr)
    assert len(s.header) < 1024
    assert len(s.buffers) == 1
    assert np.shares_memory(np.frombuffer(s.buffers[0], dtype="u1"), arr)
    out = deserialize(s)
    np.testing.assert_array_equal(out, arr)
    assert np.shares_memory(out, arr)  # deserialize uses the buffer as is


def test_small_numpy_is_in_band_and_writable() -> None:
    arr = np.arange(10, dtype="i4")
    s = serialize(arr)
    assert s.buffers == ()
    out = wire_roundtrip(s)
    result = deserialize(out)
    np.testing.assert_array_equal(result, arr)
    result[0] = 99  # received arrays are writable, like dask's


def test_pandas_round_trip() -> None:
    df = pd.DataFrame({"a": np.arange(50_000), "b": np.random.default_rng(0).random(50_000),
                       "c": ["x"] * 50_000})
    s = serialize(df)
    assert s.buffers  # numeric blocks travel out-of-band
    pd.testing.assert_frame_equal(deserialize(wire_roundtrip(s)), df)


def test_received_out_of_band_arrays_are_writable() -> None:
    arr = np.ones(OUT_OF_BAND_MIN, dtype="u1")
    out = deserialize(wire_roundtrip(serialize(arr)))
    out[0] = 7
    assert arr[0] == 1


def test_lambda_and_closure_round_trip_via_cloudpickle() -> None:
    offset = 10

    def add_offset(x: int) -> int:
        return x + offset

    assert deserialize(wire_roundtrip(serialize(lambda x: x * 2)))(21) == 42  # type: ignore[operator]
    assert deserialize(wire_roundtrip(serialize(add_offset)))(5) == 15  # type: ignore[operator]


def test_main_module_functions_are_pickled_by_value() -> None:
    def f(x: int) -> int:
        return x + 1

    f.__module__ = "__main__"
    f.__qualname__ = "f"
    s = serialize(f)
    # By value: loading does not need a `f` in the receiver's __main__.
    assert deserialize(s)(1) == 2  # type: ignore[operator]


@pytest.mark.parametrize("obj, name", [
    (threading.Lock(), "lock"),
    ((i for i in range(3)), "generator"),
])
def test_unpicklable_object_raises_type_error_naming_it(obj: object, name: str) -> None:
    with pytest.raises(TypeError, match=f"Could not serialize object of type {name}: "):
        serialize(obj)


def test_unpicklable_object_nested_names_the_outer_object() -> None:
    with pytest.raises(TypeError, match="type dict.*lock"):
        serialize({"a": threading.Lock()})


def test_plain_pickle_is_used_when_possible() -> None:
    s = serialize(("inc", (1, 2), {"k": None}))
    assert b"cloudpickle" not in s.header
    assert deserialize(s) == ("inc", (1, 2), {"k": None})
