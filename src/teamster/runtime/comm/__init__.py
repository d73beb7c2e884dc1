"""The network seam: comms (TCP, in-process), serialization, batching.

Everything else in teamster talks to peers only through these names::

    comm = await connect("tcp://host:port", handshake={"role": "worker"})
    await comm.send(msg); msg = await comm.recv()
    listener = await listen("tcp://0.0.0.0:0", handler, handshake={"role": "scheduler"})
"""

from teamster.runtime.comm.batched import BatchedSend
from teamster.runtime.comm.core import (
    Comm,
    CommClosedError,
    ConnectTimeoutError,
    HandshakeError,
    Listener,
    ProtocolError,
    connect,
    listen,
    parse_address,
)
from teamster.runtime.comm.frames import DEFAULT_MAX_MESSAGE_SIZE
from teamster.runtime.comm.handshake import PROTOCOL_VERSION, exchange_handshake
from teamster.runtime.comm.loop import install_event_loop_policy, new_event_loop, run
from teamster.runtime.comm.serialize import (
    deserialize,
    dumps_message,
    loads_message,
    serialize,
)

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "PROTOCOL_VERSION",
    "BatchedSend",
    "Comm",
    "CommClosedError",
    "ConnectTimeoutError",
    "HandshakeError",
    "Listener",
    "ProtocolError",
    "connect",
    "deserialize",
    "dumps_message",
    "exchange_handshake",
    "install_event_loop_policy",
    "listen",
    "loads_message",
    "new_event_loop",
    "parse_address",
    "run",
    "serialize",
]
