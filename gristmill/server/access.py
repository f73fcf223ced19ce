"""Who may call the server: TLS, client certificates, bearer tokens, and the address rule.

Every call but the health service's passes `AccessInterceptor` before any handler
runs: a call that shows no valid token or verified client certificate (when the
server asks for one) ends UNAUTHENTICATED there, so nothing of its job is even read.
The tenant it authenticates as is set in `tenants.current_tenant` for the handler and
everything it starts.

Tokens are compared in constant time: each presented token's SHA-256 against every
known token's, with `hmac.compare_digest` and no early exit.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health

from gristmill.config import ANONYMOUS, AuthConfig, ConfigError, ServerConfig
from gristmill.interceptors import Handler, HandlerWrapper
from gristmill.server.tenants import Tenant, Tenants, current_tenant

__all__ = [
    "AccessInterceptor",
    "Authenticator",
    "check_exposure",
    "is_local_address",
    "load_tokens",
    "server_credentials",
]

log = logging.getLogger(__name__)

AUTHORIZATION = "authorization"
BEARER = "bearer "
_OPEN_SERVICES = (f"/{health.SERVICE_NAME}/",)
"""Services any caller may use: a load balancer's health probe carries no token."""


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


_TENANT_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
"""A token's name: it names a tenant in logs, metrics and settings keys."""


def _parse_tokens(text: str, origin: str) -> list[tuple[str, bytes]]:
    """`NAME:TOKEN` entries, one per line or whitespace-separated word; `#` comments."""
    tokens = []
    for line in text.splitlines():
        for word in line.partition("#")[0].split():
            name, colon, token = word.partition(":")
            if not colon or not name or not token:
                raise ConfigError(f"{origin}: expected NAME:TOKEN entries, got {word[:4]!r}...")
            if not _TENANT_NAME.fullmatch(name):
                raise ConfigError(f"{origin}: token name {name!r} is not 1-64 of [A-Za-z0-9._-]")
            tokens.append((name, _digest(token)))
    return tokens


def load_tokens(auth: AuthConfig) -> list[tuple[str, bytes]]:
    """The known tokens, as (tenant name, SHA-256), from the file and the environment."""
    tokens = _parse_tokens(auth.tokens, "auth.tokens")
    if auth.tokens_file is not None:
        try:
            text = auth.tokens_file.read_text()
            mode = auth.tokens_file.stat().st_mode
        except OSError as error:
            raise ConfigError(f"auth.tokens_file: {error}") from error
        if mode & 0o077:
            log.warning("%s is readable by others (mode %o): chmod 600 it", auth.tokens_file, mode)
        tokens += _parse_tokens(text, str(auth.tokens_file))
    return tokens


def _read(path: Path, setting: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise ConfigError(f"auth.{setting}: {error}") from error


def server_credentials(auth: AuthConfig) -> grpc.ServerCredentials | None:
    """TLS credentials for the port (mutual TLS with a client CA), or None: plaintext."""
    if auth.tls_cert_file is None or auth.tls_key_file is None:
        return None
    pair = (_read(auth.tls_key_file, "tls_key_file"), _read(auth.tls_cert_file, "tls_cert_file"))
    client_ca = (
        _read(auth.client_ca_file, "client_ca_file") if auth.client_ca_file is not None else None
    )
    return grpc.ssl_server_credentials(
        [pair], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def is_local_address(address: str) -> bool:
    """Whether only this machine can reach `address`: a Unix socket or a loopback IP."""
    if address.startswith(("unix:", "unix-abstract:")):
        return True
    host = address.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name, or "" (every interface)


def check_exposure(config: ServerConfig, tokens: int) -> None:
    """Refuses to serve a public address to anyone unauthenticated, or tokens in the
    clear, unless `auth.insecure` says the operator means it."""
    auth = config.auth
    if auth.insecure or is_local_address(config.address):
        return
    tls = auth.tls_cert_file is not None
    if not tokens and auth.client_ca_file is None:
        raise ConfigError(
            f"{config.address} is reachable from other machines and no caller is "
            "authenticated: set auth.tokens_file (or GRISTMILL_AUTH_TOKENS) with TLS, or "
            "auth.client_ca_file; listen on 127.0.0.1 or unix:PATH; or pass --insecure"
        )
    if not tls:
        raise ConfigError(
            f"{config.address} is reachable from other machines: bearer tokens without "
            "TLS would cross the network in the clear; set auth.tls_cert_file and "
            "auth.tls_key_file, or pass --insecure"
        )


@dataclass(frozen=True)
class Caller:
    """What a call shows: its bearer tokens and its verified certificate's names."""

    tokens: tuple[str, ...]
    certificate_names: tuple[str, ...]

    @classmethod
    def of(cls, context: grpc.aio.ServicerContext) -> Caller:
        tokens = tuple(
            str(value)[len(BEARER) :].strip()
            for key, value in context.invocation_metadata() or ()
            if key == AUTHORIZATION and str(value).lower().startswith(BEARER)
        )
        auth: Mapping[str, Iterable[bytes]] = context.auth_context() or {}
        names = tuple(
            name.decode(errors="replace")
            for key in ("x509_common_name", "x509_subject_alternative_name")
            for name in auth.get(key, ())
        )
        return cls(tokens, names)


class Authenticator:
    """Decides a call's tenant from its token or client certificate."""

    def __init__(self, config: ServerConfig, tenants: Tenants) -> None:
        self._tokens = load_tokens(config.auth)
        self._certificates = config.auth.client_ca_file is not None
        self._tenants = tenants
        check_exposure(config, len(self._tokens))

    @property
    def required(self) -> bool:
        return bool(self._tokens) or self._certificates

    def _token_owner(self, token: str) -> str | None:
        presented = _digest(token)
        owner = None
        for name, known in self._tokens:  # every entry, whatever matched: constant time
            if hmac.compare_digest(presented, known) and owner is None:
                owner = name
        return owner

    def tenant(self, caller: Caller) -> Tenant | None:
        """The caller's tenant, or None: not authenticated. A token shown must be valid
        even where a certificate would do; it names the tenant before the certificate."""
        if not self.required:
            return self._tenants.get(ANONYMOUS)
        if len(caller.tokens) > 1:
            return None
        if caller.tokens:
            owner = self._token_owner(caller.tokens[0]) if self._tokens else None
            return None if owner is None else self._tenants.get(owner)
        if self._certificates and caller.certificate_names:
            # gRPC verified the chain against the client CA before the call got here.
            return self._tenants.get(caller.certificate_names[0])
        return None


class AccessInterceptor(HandlerWrapper):
    """Authenticates every call (but health checks) before its handler runs."""

    def __init__(self, authenticator: Authenticator) -> None:
        self._authenticator = authenticator

    def wants(self, method: str) -> bool:
        return not method.startswith(_OPEN_SERVICES)

    async def _admit(self, context: grpc.aio.ServicerContext, method: str) -> None:
        tenant = self._authenticator.tenant(Caller.of(context))
        if tenant is None:
            log.warning("unauthenticated call to %s from %s refused", method, context.peer())
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "no valid bearer token or client certificate (the client library reads "
                "$GRISTMILL_TOKEN, $GRISTMILL_TLS_CA, $GRISTMILL_TLS_CERT, $GRISTMILL_TLS_KEY)",
            )
        assert tenant is not None
        current_tenant.set(tenant)

    def around_unary(self, inner: Handler, method: str) -> Handler:
        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await self._admit(context, method)
            return await inner(request, context)

        return unary

    def around_stream(self, inner: Handler, method: str) -> Handler:
        async def stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await self._admit(context, method)
            async for reply in inner(request, context):
                yield reply

        return stream
