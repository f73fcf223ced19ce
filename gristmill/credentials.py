"""How a client proves who it is to a server: a bearer token, TLS, a client certificate.

`Credentials.from_env()` reads `GRISTMILL_TOKEN` (or the file `GRISTMILL_TOKEN_FILE`),
`GRISTMILL_TLS_CA` (the CA that signed the server's certificate; set it, or any of the
others, to speak TLS), `GRISTMILL_TLS_CERT` and `GRISTMILL_TLS_KEY` (a client
certificate, for mutual TLS), and `GRISTMILL_TLS_SERVER_NAME` (the name to expect in
the server's certificate when it is not the target's host). The client library, the
CLI and the queue worker all use these when given nothing else.

The token travels as `authorization: Bearer TOKEN` metadata on every call; it is sent
over a plaintext channel too (a Unix socket, loopback), where the server may ask for it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

__all__ = ["Credentials"]


def _read(path: Path | None) -> bytes | None:
    return None if path is None else path.read_bytes()


@dataclass(frozen=True)
class Credentials:
    """What a client shows; empty: a plaintext channel and no token."""

    token: str = ""
    # PEM files; any of them set (or `tls`) makes the channel TLS.
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    # TLS with the system's CAs (when no `ca_file` is given).
    tls: bool = False
    # The name the server's certificate must carry, when not the target's host.
    server_name: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Credentials:
        env = os.environ if environ is None else environ
        token = env.get("GRISTMILL_TOKEN", "")
        if not token and env.get("GRISTMILL_TOKEN_FILE"):
            token = Path(env["GRISTMILL_TOKEN_FILE"]).read_text().strip()

        def path(name: str) -> Path | None:
            return Path(env[name]) if env.get(name) else None

        return cls(
            token=token,
            ca_file=path("GRISTMILL_TLS_CA"),
            cert_file=path("GRISTMILL_TLS_CERT"),
            key_file=path("GRISTMILL_TLS_KEY"),
            server_name=env.get("GRISTMILL_TLS_SERVER_NAME", ""),
        )

    def merged(self, other: Credentials) -> Credentials:
        """These credentials with `other`'s non-empty fields in their place."""
        return Credentials(
            token=other.token or self.token,
            ca_file=other.ca_file or self.ca_file,
            cert_file=other.cert_file or self.cert_file,
            key_file=other.key_file or self.key_file,
            tls=other.tls or self.tls,
            server_name=other.server_name or self.server_name,
        )

    @property
    def secure(self) -> bool:
        return self.tls or any((self.ca_file, self.cert_file, self.key_file))

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The metadata every call carries."""
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    def _channel_credentials(self) -> grpc.ChannelCredentials:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("a client certificate needs its key, and a key its certificate")
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca_file),
            private_key=_read(self.key_file),
            certificate_chain=_read(self.cert_file),
        )

    def _options(self, options: Sequence[tuple[str, Any]]) -> list[tuple[str, Any]]:
        if self.server_name:
            return [*options, ("grpc.ssl_target_name_override", self.server_name)]
        return list(options)

    def channel(self, target: str, options: Sequence[tuple[str, Any]]) -> grpc.Channel:
        """A blocking channel to `target`, TLS when these credentials ask for it."""
        if not self.secure:
            return grpc.insecure_channel(target, options=options)
        return grpc.secure_channel(target, self._channel_credentials(), self._options(options))

    def aio_channel(self, target: str, options: Sequence[tuple[str, Any]]) -> grpc.aio.Channel:
        """An asyncio channel to `target`, TLS when these credentials ask for it."""
        if not self.secure:
            return grpc.aio.insecure_channel(target, options=options)
        return grpc.aio.secure_channel(target, self._channel_credentials(), self._options(options))
