"""The first messages on every connection: who are you, do we speak the same
protocol, and do you know the cluster's token.

Rules of this module:
- Handshake messages are single small frames of plain msgpack (no ext types,
  never pickle); the transport accepts nothing larger than
  ``MAX_HANDSHAKE_SIZE`` and parses one frame at a time until the handshake
  completed, so an unauthenticated peer can make us decode only these.
- Each side first sends a *hello* (protocol version, role, a fresh random
  nonce, whether it has a token), then reads the peer's. Both send first, so
  neither waits on the other.
- With a token on both sides, challenge-response, mutual (``prove``):
  the connector sends ``HMAC-SHA256(token, "connector" + both hellos)``;
  the listener checks it with ``hmac.compare_digest`` and only then answers
  with its own proof, ``HMAC-SHA256(token, "listener" + both hellos)``, or
  with a refusal the connector turns into a clear ``AuthenticationError``.
  Both hellos carry a nonce, so a recorded proof is worthless on another
  connection; the hellos carry the roles and addresses, so the proof covers
  them too; the side labels stop a proof from being reflected back. The
  token itself never crosses the wire.
- A process with a token talks only to peers that prove they have it, and a
  process without one is refused by those that have one: a client must not
  unpickle results from an impostor any more than a worker may run its tasks.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from typing import Any, NoReturn

import msgpack

from teamster.errors import AuthenticationError
from teamster.runtime.comm.core import Comm, CommClosedError, HandshakeError

#: Bump on any incompatible change to framing, message encoding, this
#: handshake or the schema in core/messages.py (message tags are
#: registration indexes). 2: nonces and token challenge-response.
PROTOCOL_VERSION = 2
#: Largest handshake message accepted; also the transport's limit per frame
#: before the handshake completed. Hellos are a few hundred bytes.
MAX_HANDSHAKE_SIZE = 4096
#: Random bytes per hello: unpredictable challenges, no replay.
NONCE_SIZE = 32
#: The one authentication scheme spoken.
AUTH_SCHEME = "hmac-sha256"

#: Keys of ours in the hello; not shown in ``comm.handshake``.
_PROTOCOL_KEYS = ("nonce", "auth")
_SIDE_CONNECTOR = b"connector"
_HOW_TO_GIVE_TOKEN = ("pass token=... (or security=teamster.Security(token=...)), or set "
                      "TEAMSTER_TOKEN (CLI: --token-file PATH) to the cluster's token")
_SIDE_LISTENER = b"listener"


def _reject_ext(code: int, data: bytes) -> NoReturn:
    raise ValueError(f"handshake may not contain msgpack ext types (got code {code})")


def _unpack(frames: list[Any]) -> Any:
    if len(frames) != 1:
        raise ValueError(f"handshake must be one frame, got {len(frames)}")
    return msgpack.unpackb(frames[0], ext_hook=_reject_ext, use_list=False, raw=False,
                           strict_map_key=True)


def decode_handshake(frames: list[Any]) -> dict[str, Any]:
    """Validate and decode a raw hello. Raises ``ValueError``."""
    peer = _unpack(frames)
    if not isinstance(peer, dict) or "teamster" not in peer:
        raise ValueError(f"not a teamster handshake: {peer!r:.200}")
    return peer


def proof(token: bytes, side: bytes, listener_hello: bytes, connector_hello: bytes) -> bytes:
    """HMAC-SHA256 over the side label and both hellos (length-prefixed, so
    no two different transcripts serialise to the same bytes)."""
    mac = hmac.new(token, b"teamster-auth-v1\0" + side + b"\0", hashlib.sha256)
    for hello in (listener_hello, connector_hello):
        mac.update(struct.pack("<I", len(hello)))
        mac.update(hello)
    return mac.digest()


class _Exchange:
    """One side's view of one handshake; methods raise after aborting the comm."""

    def __init__(self, comm: Comm, local: dict[str, Any], token: bytes | None,
                 initiator: bool) -> None:
        self.comm = comm
        self.token = token
        self.initiator = initiator
        self.ours = {"teamster": PROTOCOL_VERSION, **local, "nonce": os.urandom(NONCE_SIZE),
                     "auth": AUTH_SCHEME if token is not None else None}
        self.our_role = str(local.get("role") or "process")
        self.peer_role = "peer"

    def fail(self, reason: str, error: type[Exception] = HandshakeError) -> NoReturn:
        self.comm.abort()
        if error is AuthenticationError:
            raise AuthenticationError(reason)
        raise HandshakeError(f"Handshake with {self.comm.peer_address} failed: {reason}")

    async def receive(self, what: str) -> list[Any]:
        try:
            return await self.comm.recv_frames()
        except CommClosedError as exc:
            hint = ""
            if self.initiator and self.comm.peer_address.startswith("tcp://"):
                hint = "; does it require TLS (a tls:// address and certificates)?"
            elif self.initiator:
                hint = ("; did it refuse our TLS certificate? (mutual TLS needs tls_cert and "
                        "tls_key signed by the CA the peer trusts)")
            self.fail(f"the connection closed before the peer's {what} arrived ({exc}){hint}")

    async def run(self) -> dict[str, Any]:
        comm = self.comm
        our_hello = msgpack.packb(self.ours)
        try:
            await comm.send_frames([our_hello])
        except CommClosedError:
            pass  # the peer already broke the connection; receive() says how
        frames = await self.receive("handshake")
        try:
            peer = decode_handshake(frames)
        except Exception as e:
            self.fail(f"{e} (is the peer a teamster process?)")
        self.peer_role = str(peer.get("role") or "peer")
        if peer["teamster"] != self.ours["teamster"]:
            self.fail(
                f"the peer speaks teamster wire protocol {peer['teamster']!r} "
                f"(role {peer.get('role', '?')!r}), this process speaks {self.ours['teamster']!r}. "
                "Run the same teamster version on the scheduler, workers and clients."
            )
        nonce, auth = peer.get("nonce"), peer.get("auth")
        if not isinstance(nonce, bytes) or len(nonce) != NONCE_SIZE or auth not in (None,
                                                                                      AUTH_SCHEME):
            self.fail(f"malformed hello (nonce or auth field): {peer!r:.200}")
        peer_hello = bytes(frames[0])
        if self.initiator:
            await self._authenticate_as_connector(peer_hello, our_hello, auth is not None)
        else:
            await self._authenticate_as_listener(our_hello, peer_hello, auth is not None)
        comm.handshake = {k: v for k, v in peer.items() if k not in _PROTOCOL_KEYS}
        comm.handshake_complete()
        return comm.handshake

    async def _authenticate_as_listener(self, our_hello: bytes, peer_hello: bytes,
                                        peer_has_token: bool) -> None:
        if self.token is None:
            return  # no auth here; a peer that has a token refuses us on its side
        if not peer_has_token:
            await self._refuse("token-required", "it presented no token")
        self.comm.expect_handshake_message()
        frames = await self.receive("token proof")
        try:
            answer = _unpack(frames)
            given = answer["proof"]
            if not isinstance(given, bytes):
                raise TypeError
        except Exception:
            self.fail("malformed token proof (is the peer a teamster process?)")
        expected = proof(self.token, _SIDE_CONNECTOR, our_hello, peer_hello)
        if not hmac.compare_digest(given, expected):
            await self._refuse("bad-token", "its token is wrong")
        await self.comm.send_frames([msgpack.packb(
            {"proof": proof(self.token, _SIDE_LISTENER, our_hello, peer_hello)})])

    async def _refuse(self, code: str, why: str) -> NoReturn:
        """Tell the connector why (so it raises a clear error at once), then fail."""
        try:
            await self.comm.send_frames([msgpack.packb({"refused": code})])
            await self.comm.close()  # flush the refusal; abort would drop it
        except Exception:
            pass
        self.fail(f"authentication failed: {why}", AuthenticationError)

    async def _authenticate_as_connector(self, peer_hello: bytes, our_hello: bytes,
                                         peer_has_token: bool) -> None:
        where = f"the {self.peer_role} at {self.comm.peer_address}"
        if self.token is None:
            if peer_has_token:
                self.fail(f"{where} requires a token and this {self.our_role} has none; "
                          f"{_HOW_TO_GIVE_TOKEN}", AuthenticationError)
            return
        if not peer_has_token:
            self.fail(f"{where} does not authenticate (it was started without a token), so it "
                      f"cannot prove it belongs to this {self.our_role}'s cluster; start it with "
                      "the same token, or connect without one (unset TEAMSTER_TOKEN)",
                      AuthenticationError)
        await self.comm.send_frames([msgpack.packb(
            {"proof": proof(self.token, _SIDE_CONNECTOR, peer_hello, our_hello)})])
        self.comm.expect_handshake_message()
        frames = await self.receive("answer to our token proof")
        try:
            answer = _unpack(frames)
        except Exception:
            self.fail("malformed answer to our token proof")
        if isinstance(answer, dict) and "refused" in answer:
            if answer["refused"] == "token-required":
                self.fail(f"{where} requires a token and refused this {self.our_role}",
                          AuthenticationError)
            self.fail(f"{where} refused this {self.our_role}'s token; {_HOW_TO_GIVE_TOKEN}",
                      AuthenticationError)
        given = answer.get("proof") if isinstance(answer, dict) else None
        expected = proof(self.token, _SIDE_LISTENER, peer_hello, our_hello)
        if not isinstance(given, bytes) or not hmac.compare_digest(given, expected):
            self.fail(f"{where} could not prove it knows this {self.our_role}'s token: it is "
                      "not the cluster you meant, or it uses another token", AuthenticationError)


async def exchange_handshake(comm: Comm, local: dict[str, Any], *, token: bytes | None = None,
                             initiator: bool = True) -> dict[str, Any]:
    """Run the handshake (see the module doc); return the peer's hello.

    ``initiator`` is True on the side that connected. ``local`` gets
    ``{"teamster": PROTOCOL_VERSION}`` unless it sets its own. On success
    ``comm.handshake`` is the peer's hello and the comm accepts full-size
    messages; on failure the comm is aborted and ``HandshakeError`` or
    ``teamster.errors.AuthenticationError`` raised.
    """
    return await _Exchange(comm, local, token, initiator).run()
