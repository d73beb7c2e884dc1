"""The kernel and the network model, on their own."""

from __future__ import annotations

from typing import Any

from teamster.core import messages as m
from teamster.sim.engine import Engine
from teamster.sim.network import Network


def test_events_run_in_time_then_schedule_order() -> None:
    e = Engine()
    seen: list[Any] = []
    e.at(2.0, seen.append, "c")
    e.at(1.0, seen.append, "a")
    e.at(1.0, seen.append, "b")
    e.background(1.5, seen.append, "bg")
    e.run_while_foreground()
    assert seen == ["a", "b", "bg", "c"] and e.now == 2.0


def test_background_events_do_not_keep_the_loop_alive() -> None:
    e = Engine()
    seen: list[float] = []

    def tick(_: Any) -> None:
        seen.append(e.now)
        e.background(e.now + 1.0, tick)

    e.background(0.5, tick)
    e.at(3.0, lambda _: None)
    e.run_while_foreground()
    assert seen == [0.5, 1.5, 2.5] and e.n_foreground == 0 and e.next_time() == 3.5


def test_trace_hash_depends_on_every_field() -> None:
    def run(*lines: tuple[float, str, str, Any]) -> str:
        e = Engine()
        for t, where, kind, ident in lines:
            e.now = t
            e.trace(where, kind, ident)
        return e.trace_hash()

    base = run((0.0, "scheduler", "TaskFinished", "x"), (1.0, "w0", "ComputeTask", "y"))
    assert base == run((0.0, "scheduler", "TaskFinished", "x"), (1.0, "w0", "ComputeTask", "y"))
    assert base != run((0.0, "scheduler", "TaskFinished", "x"), (1.5, "w0", "ComputeTask", "y"))
    assert base != run((0.0, "scheduler", "TaskFinished", "x"), (1.0, "w1", "ComputeTask", "y"))
    assert base != run((0.0, "scheduler", "TaskFinished", "x"), (1.0, "w0", "FreeKeys", "y"))


def test_stream_batches_like_batched_send() -> None:
    """First message after a quiet spell goes at once; then one write per interval."""
    e = Engine()
    net = Network(e, latency=0.001, batch_interval=0.002)
    got: list[tuple[float, str]] = []
    s = net.stream("a", "b", lambda msg: got.append((e.now, msg)))
    e.at(0.0, lambda _: (s.send("m1"), s.send("m2")))
    e.at(0.0005, lambda _: s.send("m3"))  # within the interval: waits for the next write
    e.at(0.0015, lambda _: s.send("m4"))  # joins m3's batch (written at 0.002)
    e.at(0.010, lambda _: s.send("m5"))  # after a quiet spell: at once
    e.run_while_foreground()
    assert got == [(0.001, "m1"), (0.001, "m2"), (0.003, "m3"), (0.003, "m4"), (0.011, "m5")]
    assert s.batches == 3 and s.messages == 5


def test_closed_stream_drops_what_is_in_flight() -> None:
    e = Engine()
    net = Network(e, latency=0.001)
    got: list[str] = []
    s = net.stream("a", "b", got.append)
    e.at(0.0, lambda _: s.send("lost"))
    e.at(0.0005, lambda _: s.close())
    e.run_while_foreground()
    assert got == []


def test_transfers_from_one_holder_queue_behind_each_other() -> None:
    e = Engine()
    net = Network(e, bandwidth=100.0, links={("h", "slow"): (0.01, 10.0)})
    assert net.transfer_done_at("h", "a", 0.0, 100) == 1.0
    assert net.transfer_done_at("h", "b", 0.5, 100) == 2.0  # waits for the first reply
    assert net.transfer_done_at("g", "b", 0.5, 100) == 1.5  # another holder is free
    assert net.transfer_done_at("h", "slow", 5.0, 100) == 15.0  # a per-link bandwidth
    assert net.latency("h", "slow") == 0.01 and net.latency("h", "a") == net.default_latency


def test_zero_latency_stream_delivers_messages_sent_on_arrival() -> None:
    e = Engine()
    net = Network(e, latency=0.0, batch_interval=0.0)
    got: list[str] = []
    s = net.stream("a", "b", lambda msg: (got.append(msg), msg == "m1" and s.send("m2")))
    e.at(0.0, lambda _: s.send("m1"))
    e.run_while_foreground()
    assert got == ["m1", "m2"]


def test_a_message_arrives_as_a_fresh_decoded_copy_as_between_processes() -> None:
    # A simulated worker handed the scheduler's own ComputeTask kept its key
    # objects warm for the scheduler's next lookup: a discount no real
    # scheduler gets.
    e = Engine()
    net = Network(e)
    got: list[Any] = []
    s = net.stream("scheduler", "w", got.append)
    key = ("".join(["x-", "9f8e7d6c5b4a"]), 300)
    sent = m.FreeKeys((key,), "sid", 7)
    e.at(0.0, lambda _: s.send(sent))
    e.run_while_foreground()
    assert got == [sent]
    (received,) = got
    assert received is not sent and received.keys[0] is not key
    assert received.keys[0][0] is not key[0] and received.keys[0][1] is not key[1]
