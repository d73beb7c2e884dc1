"""Who may talk to a teamster cluster: the shared token and TLS certificates.

A ``Security`` travels with every process that connects or listens (scheduler,
workers, clients) and is handed to the comm layer, which does the work:

- ``token``: a shared secret. Every connection starts with a challenge-response
  over msgpack-only handshake frames (runtime/comm/handshake.py); the token
  itself never crosses the wire, and nothing is unpickled before both sides
  proved they know it.
- ``tls_cert``/``tls_key``/``tls_ca``: PEM files. With them, addresses are
  ``tls://host:port`` and every byte is encrypted; with a CA both ends verify
  the other's certificate (mutual TLS).

See docs/security.md for the threat model and how to deploy.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import ssl
import threading
from pathlib import Path

__all__ = ["TOKEN_ENV_VAR", "Security", "is_loopback_host", "read_token_file"]

#: Environment variable holding the token (for the CLI, workers of a
#: LocalCluster, and clients). Never put the token on a command line: ``ps``
#: shows every user the arguments of every process.
TOKEN_ENV_VAR = "TEAMSTER_TOKEN"


@dataclasses.dataclass(frozen=True, repr=False)
class Security:
    """Credentials of one process; immutable, safe to share between threads.

    ``token=None`` means no token: only peers without one are accepted (and
    a peer that has one refuses us). TLS is on when ``tls_cert`` and
    ``tls_key`` are set (a listener needs them) or ``tls_ca`` is set (enough
    for a client of a server that does not ask for client certificates).
    """

    token: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None

    def __post_init__(self) -> None:
        if self.token is not None and (not isinstance(self.token, str) or not self.token):
            raise ValueError("Security(token=...) must be a non-empty string (or None for no "
                             "token); generate one with: python -c 'import secrets; "
                             "print(secrets.token_urlsafe(32))'")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("Security needs both tls_cert and tls_key (a certificate and its "
                             f"private key), got tls_cert={self.tls_cert!r}, "
                             f"tls_key={self.tls_key!r}")
        for name in ("tls_cert", "tls_key", "tls_ca"):
            path = getattr(self, name)
            if path is not None:
                object.__setattr__(self, name, os.fspath(path))
                if not Path(path).is_file():
                    raise FileNotFoundError(f"Security({name}={path!r}): no such file")
        # The SSL contexts load files and are costly: build each once, lazily.
        object.__setattr__(self, "_contexts", {})
        object.__setattr__(self, "_lock", threading.Lock())

    @classmethod
    def from_env(cls, **tls: str | None) -> Security:
        """A Security with the token from ``TEAMSTER_TOKEN`` (if set) and these TLS files."""
        return cls(token=os.environ.get(TOKEN_ENV_VAR) or None, **tls)

    @property
    def tls(self) -> bool:
        """True if connections use TLS (addresses are "tls://...")."""
        return self.tls_cert is not None or self.tls_ca is not None

    @property
    def scheme(self) -> str:
        """The address scheme for listeners: "tls" or "tcp"."""
        return "tls" if self.tls else "tcp"

    @property
    def token_bytes(self) -> bytes | None:
        return None if self.token is None else self.token.encode()

    def with_token(self, token: str | None) -> Security:
        return dataclasses.replace(self, token=token)

    def tls_args(self) -> list[str]:
        """The CLI flags giving a child process the same certificates (paths only)."""
        args: list[str] = []
        for flag, value in (("--tls-cert", self.tls_cert), ("--tls-key", self.tls_key),
                            ("--tls-ca", self.tls_ca)):
            if value is not None:
                args += [flag, value]
        return args

    def server_context(self) -> ssl.SSLContext:
        """SSL context for listening: our certificate; the peer's verified if we have a CA."""
        if self.tls_cert is None or self.tls_key is None:
            raise ValueError("Listening on a tls:// address needs a certificate and key: "
                             "Security(tls_cert=..., tls_key=..., tls_ca=...) "
                             "(CLI: --tls-cert, --tls-key, --tls-ca)")
        return self._context("server")

    def client_context(self) -> ssl.SSLContext:
        """SSL context for connecting: the peer verified against our CA (if any),
        our certificate presented (if any) for servers that ask for one."""
        return self._context("client")

    def _context(self, side: str) -> ssl.SSLContext:
        with self._lock:  # type: ignore[attr-defined]
            ctx: ssl.SSLContext | None = self._contexts.get(side)  # type: ignore[attr-defined]
            if ctx is None:
                ctx = self._build_context(side)
                self._contexts[side] = ctx  # type: ignore[attr-defined]
            return ctx

    def _build_context(self, side: str) -> ssl.SSLContext:
        purpose = ssl.Purpose.CLIENT_AUTH if side == "server" else ssl.Purpose.SERVER_AUTH
        ctx = ssl.create_default_context(purpose, cafile=self.tls_ca)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if side == "client":
            # Cluster members are found by IP and move between hosts: the trust
            # anchor is the cluster's private CA, not a host name (as in
            # dask.distributed). Use a CA dedicated to this cluster.
            ctx.check_hostname = False
        if self.tls_ca is not None:
            ctx.verify_mode = ssl.CERT_REQUIRED  # mutual TLS: both sides verify
        else:
            ctx.verify_mode = ssl.CERT_NONE  # encryption only; see docs/security.md
        if self.tls_cert is not None:
            ctx.load_cert_chain(self.tls_cert, self.tls_key)
        return ctx

    def __repr__(self) -> str:
        # Never show the token: reprs end up in logs and tracebacks.
        parts = [f"token={'<set>' if self.token else None}"]
        parts += [f"{name}={getattr(self, name)!r}" for name in ("tls_cert", "tls_key", "tls_ca")
                  if getattr(self, name) is not None]
        return f"Security({', '.join(parts)})"

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("Security objects hold a secret and are not pickled; give each "
                        "process its token through TEAMSTER_TOKEN or a token file")


def read_token_file(path: str) -> str:
    """The token in ``path`` (surrounding whitespace stripped); a clear error if unusable."""
    try:
        text = Path(path).read_text().strip()
    except OSError as exc:
        raise ValueError(f"cannot read the token file {path!r}: {exc.strerror or exc}") from None
    if not text:
        raise ValueError(f"the token file {path!r} is empty")
    return text


def is_loopback_host(host: str) -> bool:
    """True if a listener on ``host`` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# -- tokens of clusters this process started ------------------------------------

#: scheduler address -> Security of a cluster started in this process, so that
#: ``Client(cluster.scheduler_address)`` works like ``Client(cluster)``: this
#: process already holds that secret, nothing is revealed to anyone else.
_LOCAL_CLUSTERS: dict[str, Security] = {}


def remember_local_cluster(address: str, security: Security) -> None:
    _LOCAL_CLUSTERS[address] = security


def forget_local_cluster(address: str) -> None:
    _LOCAL_CLUSTERS.pop(address, None)


def security_for_client(address: str, security: Security | None, token: str | None,
                        cluster_security: Security | None = None) -> Security:
    """What a client connecting to ``address`` uses.

    Explicit arguments win; then the cluster object's own Security; then a
    cluster this process started at that address; then ``TEAMSTER_TOKEN``.
    """
    if security is not None and token is not None and security.token not in (None, token):
        raise ValueError("Client got two different tokens (token= and security.token); "
                         "pass one")
    chosen = security or cluster_security or _LOCAL_CLUSTERS.get(address) or Security()
    if token is not None:
        return chosen.with_token(token)
    if chosen.token is None:
        env_token = os.environ.get(TOKEN_ENV_VAR) or None
        if env_token is not None:
            return chosen.with_token(env_token)
    return chosen
