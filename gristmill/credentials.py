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

import argparse
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import grpc

__all__ = ["Credentials", "add_credential_flags", "credentials_from_options"]


class _CallDetails(NamedTuple):
    method: str
    timeout: float | None
    metadata: Sequence[tuple[str, str]] | None
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None


class _Bearer(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):  # type: ignore[misc]
    """Adds the token's metadata to every call of a blocking channel."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata

    def _with_token(self, details: Any) -> _CallDetails:
        return _CallDetails(
            details.method,
            details.timeout,
            (*(details.metadata or ()), *self._metadata),
            details.credentials,
            details.wait_for_ready,
            details.compression,
        )

    def intercept_unary_unary(
        self, continuation: Callable[[Any, Any], Any], client_call_details: Any, request: Any
    ) -> Any:
        return continuation(self._with_token(client_call_details), request)

    def intercept_unary_stream(
        self, continuation: Callable[[Any, Any], Any], client_call_details: Any, request: Any
    ) -> Any:
        return continuation(self._with_token(client_call_details), request)


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

    def authenticated(self, channel: grpc.Channel) -> grpc.Channel:
        """`channel` with the token on every call, for callers of raw stubs (the
        conformance runner); `Client` adds it per call itself."""
        if not self.token:
            return channel
        return grpc.intercept_channel(channel, _Bearer(self.metadata()))

    def aio_channel(self, target: str, options: Sequence[tuple[str, Any]]) -> grpc.aio.Channel:
        """An asyncio channel to `target`, TLS when these credentials ask for it."""
        if not self.secure:
            return grpc.aio.insecure_channel(target, options=options)
        return grpc.aio.secure_channel(target, self._channel_credentials(), self._options(options))


def add_credential_flags(parser: argparse.ArgumentParser) -> None:
    """A client command's credential flags; each one's default is its variable."""
    group = parser.add_argument_group("credentials (a server that authenticates callers)")
    for flag, dest, text in (
        ("--token-file", "token_file", "the bearer token (default: $GRISTMILL_TOKEN[_FILE])"),
        ("--tls-ca", "tls_ca", "speak TLS; the server certificate's CA ($GRISTMILL_TLS_CA)"),
        ("--tls-cert", "tls_cert", "client certificate, mutual TLS ($GRISTMILL_TLS_CERT)"),
        ("--tls-key", "tls_key", "its private key ($GRISTMILL_TLS_KEY)"),
    ):
        group.add_argument(flag, dest=dest, type=Path, metavar="FILE", help=text)


def credentials_from_options(options: argparse.Namespace) -> Credentials:
    """The environment's credentials with the command's flags in their place; raises
    OSError when the token file cannot be read."""
    token_file = getattr(options, "token_file", None)
    given = Credentials(
        token=token_file.read_text().strip() if token_file else "",
        ca_file=getattr(options, "tls_ca", None),
        cert_file=getattr(options, "tls_cert", None),
        key_file=getattr(options, "tls_key", None),
    )
    return Credentials.from_env().merged(given)
