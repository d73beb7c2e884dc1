"""The scheduler's instructions are values: compared, hashed and shown by
their fields (in a dataclass's format), as the records they replaced were."""

from __future__ import annotations

from teamster.core import messages as m
from teamster.core.scheduler.instructions import CloseWorker, SendToClient, SendToWorker


def test_instructions_compare_and_hash_by_type_and_fields() -> None:
    free = m.FreeKeys(("x",), "s1")
    assert SendToWorker("tcp://a:1", free) == SendToWorker("tcp://a:1", m.FreeKeys(("x",), "s1"))
    assert hash(SendToWorker("tcp://a:1", free)) == hash(SendToWorker("tcp://a:1", free))
    assert SendToWorker("tcp://a:1", free) != SendToWorker("tcp://b:1", free)
    assert SendToWorker("tcp://a:1", free) != SendToClient("tcp://a:1", free)
    assert len({SendToWorker("tcp://a:1", free), SendToWorker("tcp://a:1", free)}) == 1


def test_instructions_read_as_the_dataclasses_they_were() -> None:
    assert repr(CloseWorker("tcp://a:1", "duplicate", "s2")) == (
        "CloseWorker(worker='tcp://a:1', reason='duplicate', stimulus_id='s2')")
    assert SendToClient("c", m.FreeKeys(("x",), "s3")).stimulus_id == "s3"
