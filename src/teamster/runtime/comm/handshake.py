"""The first message on every connection: who are you, do we speak the same protocol.

Rules of this module:
- Each side sends one plain msgpack dict as a single-frame message, then reads
  the peer's. Both send first, so neither waits on the other.
- The peer's handshake is decoded with msgpack only (no ext types, never
  pickle) and validated before anything else on the connection is decoded;
  until then the transport accepts only one small frame.
- Token challenge-response (shared-secret auth) will be added here, so a
  connection that does not authenticate is closed before any user data moves.
"""

from __future__ import annotations

from typing import Any, NoReturn

import msgpack

from teamster.runtime.comm.core import Comm, HandshakeError

#: Bump on any incompatible change to framing, message encoding or the schema
#: in core/messages.py (message tags are registration indexes).
PROTOCOL_VERSION = 1
#: Largest handshake accepted; also the transport's limit before the handshake.
MAX_HANDSHAKE_SIZE = 64 * 1024


def _reject_ext(code: int, data: bytes) -> NoReturn:
    raise ValueError(f"handshake may not contain msgpack ext types (got code {code})")


def decode_handshake(frames: list[Any]) -> dict[str, Any]:
    """Validate and decode a raw handshake message. Raises ``ValueError``."""
    if len(frames) != 1:
        raise ValueError(f"handshake must be one frame, got {len(frames)}")
    peer = msgpack.unpackb(frames[0], ext_hook=_reject_ext, use_list=False, raw=False)
    if not isinstance(peer, dict) or "teamster" not in peer:
        raise ValueError(f"not a teamster handshake: {peer!r:.200}")
    return peer


async def exchange_handshake(comm: Comm, local: dict[str, Any]) -> dict[str, Any]:
    """Send our handshake, read and validate the peer's; return it.

    ``local`` gets ``{"teamster": PROTOCOL_VERSION}`` unless it sets its own.
    On success ``comm.handshake`` is the peer's dict and the comm accepts
    full-size messages; on failure the comm is aborted and ``HandshakeError``
    raised.
    """
    ours = {"teamster": PROTOCOL_VERSION, **local}
    await comm.send_frames([msgpack.packb(ours)])
    frames = await comm.recv_frames()

    def fail(reason: str) -> NoReturn:
        comm.abort()
        raise HandshakeError(f"Handshake with {comm.peer_address} failed: {reason}")

    try:
        peer = decode_handshake(frames)
    except Exception as e:
        fail(f"{e} (is the peer a teamster process?)")
    if peer["teamster"] != ours["teamster"]:
        fail(
            f"the peer speaks teamster wire protocol {peer['teamster']!r} "
            f"(role {peer.get('role', '?')!r}), this process speaks {ours['teamster']!r}. "
            "Run the same teamster version on the scheduler, workers and clients."
        )
    comm.handshake = peer
    comm.handshake_complete()
    return peer
