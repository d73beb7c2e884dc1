"""Micro-benchmark of the message codec: microseconds per message.

Run: python benchmarks/serialize_micro.py

The 10,000 tiny tasks/s target leaves ~100 us of CPU per task across the
scheduler and a worker, shared by several messages; the codec should cost a
few microseconds of it.
"""

from __future__ import annotations

import timeit

from teamster.core.messages import ComputeTask, Serialized, TaskFinished
from teamster.runtime.comm.serialize import deserialize, dumps_message, loads_message, serialize


def per_call_us(fn: object, number: int) -> float:
    timer = timeit.Timer(fn)  # type: ignore[arg-type]
    best = min(timer.repeat(repeat=5, number=number))
    return best / number * 1e6


def main() -> None:
    compute = ComputeTask(
        key="f-123",
        run_spec=Serialized(b"x" * 60),
        who_has=(),
        priority=(0, 5),
        resources=None,
        run_id=1,
        announce=False,
        stimulus_id="s",
    )
    finished = TaskFinished(
        worker="tcp://127.0.0.1:40000", key=("x-abc", 3), nbytes=28, type_name="int",
        duration=0.001, stop=1.7e9, run_id=1, transfers=(((("y-abc", 3),), 1000),),
        stimulus_id="task-finished-1",
    )
    for name, msg in [("ComputeTask", compute), ("TaskFinished", finished)]:
        frames = dumps_message(msg)
        assert loads_message(frames) == msg
        n = 100_000
        print(f"{name:12s} single: dumps {per_call_us(lambda m=msg: dumps_message(m), n):5.2f} us"
              f"   loads {per_call_us(lambda f=frames: loads_message(f), n):5.2f} us"
              f"   ({len(frames[0])} header bytes)")
        batch = [msg] * 1000
        bframes = dumps_message(batch)
        d = per_call_us(lambda b=batch: dumps_message(b), 100) / len(batch)
        lo = per_call_us(lambda f=bframes: loads_message(f), 100) / len(batch)
        print(f"{name:12s} batch of 1000: dumps {d:5.2f} us/msg   loads {lo:5.2f} us/msg")

    def inc(x: int) -> int:
        return x + 1

    for name, obj in [("int", 1), ("tuple(fn,args)", (inc.__qualname__, (1, 2), {})), ("closure", inc)]:
        s = serialize(obj)
        print(f"serialize {name:15s} {per_call_us(lambda o=obj: serialize(o), 20_000):6.2f} us"
              f"   deserialize {per_call_us(lambda s=s: deserialize(s), 20_000):6.2f} us")


if __name__ == "__main__":
    main()
