"""The four per-task messages are native classes (native_messages.py) that
behave as the records they replaced: values compared, hashed, shown and
pickled by their fields, with unchanged wire tags."""

from __future__ import annotations

import copy
import pickle

import pytest

from teamster.core import messages as m
from teamster.core.native_messages import NativeMessage

NATIVE = [m.TaskSpec, m.TaskFinished, m.ComputeTask, m.FreeKeys]


def samples() -> list[NativeMessage]:
    run_spec = m.Serialized(b"fn")
    return [
        m.TaskSpec(("x", 1), run_spec, ("a",), priority=(0, 1), retries=2, stimulus_id="s"),
        m.TaskFinished("tcp://w:1", "x", 8, "int", 0.5, 12.0, 3, ((("a",), 8),), "s"),
        m.ComputeTask("x", run_spec, (("a", ("tcp://w:1",), 8),), (0, 1, 0), None, 3, False, "s"),
        m.FreeKeys(("x",), "s"),
    ]


def test_they_print_in_a_dataclass_format_with_defaults_filled_in() -> None:
    assert repr(m.FreeKeys(("x",), "s1")) == "FreeKeys(keys=('x',), stimulus_id='s1', run_id=-1)"
    assert repr(m.TaskSpec("k", None, ())) == (
        "TaskSpec(key='k', run_spec=None, dependencies=(), priority=(), workers=None, "
        "allow_other_workers=False, resources=None, retries=0, stimulus_id='')")


@pytest.mark.parametrize("msg", samples(), ids=lambda msg: type(msg).__name__)
def test_they_are_values(msg: NativeMessage) -> None:
    again = pickle.loads(pickle.dumps(msg))
    assert again == msg and hash(again) == hash(msg) and type(again) is type(msg)
    assert copy.copy(msg) == msg
    assert all(msg != other for other in samples() if type(other) is not type(msg))


def test_equal_fields_of_another_type_are_not_equal() -> None:
    class Other(m.FreeKeys):
        pass

    assert Other(("x",), "s") != m.FreeKeys(("x",), "s")
    assert m.FreeKeys(("x",), "s") != m.FreeKeys(("x",), "s", run_id=m.FETCHED_COPY)


def test_they_keep_their_wire_tags_among_the_records() -> None:
    names = [cls.__name__ for cls in m.MESSAGE_TYPES]
    # Tags are positions: these four kept theirs when they became native.
    assert {cls.__name__: cls.tag for cls in NATIVE} == {
        "TaskSpec": 0, "TaskFinished": 10, "ComputeTask": 20, "FreeKeys": 23}
    assert all(names[cls.tag] == cls.__name__ for cls in NATIVE)
    assert all(m.MESSAGE_TYPES[cls.tag] is cls for cls in m.MESSAGE_TYPES)


def test_only_records_and_native_messages_can_be_registered() -> None:
    class NotAMessage:
        pass

    with pytest.raises(TypeError, match="neither a record nor a NativeMessage"):
        m.register(NotAMessage)
