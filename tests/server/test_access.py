"""Who may call the server: bearer tokens, TLS, mutual TLS, and the address rule.

Real certificates (made by `cryptography`, `certificates.py`), real gRPC clients; the
fake runner records every job it is given, so "nothing of a job runs" is checked by
its calls staying empty.
"""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from gristmill.client import Client, Credentials, RetryPolicy
from gristmill.config import ConfigError, load_config
from gristmill.server import BackgroundServer
from gristmill.server.access import Authenticator, Caller, is_local_address
from gristmill.server.tenants import Tenants
from gristmill.v1 import runtime_pb2 as pb
from tests.server.certificates import Authority

TOKENS = "alice:alice-secret bob:bob-secret alice:alice-rotated"
FAIL_FAST = RetryPolicy(wait_for_ready=False, max_attempts=1)


def _client(address: str, **credentials) -> Client:
    return Client(address, retry=FAIL_FAST, credentials=Credentials(**credentials))


def _refused(address: str, **credentials) -> grpc.RpcError:
    with _client(address, **credentials) as client, pytest.raises(grpc.RpcError) as refused:
        client.execute("fake", "now", timeout_s=10)
    return refused.value


@pytest.fixture
def authority(tmp_path):
    return Authority(tmp_path / "ca", "gristmill-test-ca")


def test_a_call_without_a_token_or_with_a_wrong_one_is_unauthenticated_and_runs_nothing(
    fake_server,
):
    address, runner = fake_server(**{"auth.tokens": TOKENS})
    for credentials in ({}, {"token": "alice-secre"}, {"token": "Alice-secret"}, {"token": "x"}):
        assert _refused(address, **credentials).code() == grpc.StatusCode.UNAUTHENTICATED
    assert runner.calls == []


def test_each_token_names_its_tenant_on_the_job_and_the_outcome(fake_server):
    address, runner = fake_server(**{"auth.tokens": TOKENS})
    for token, tenant in (
        ("alice-secret", "alice"),
        ("alice-rotated", "alice"),
        ("bob-secret", "bob"),
    ):
        with _client(address, token=token) as client:
            outcome = client.execute("fake", "now", timeout_s=10)
        assert outcome.verdict == pb.SUCCESS
        assert outcome.tenant == tenant
        assert runner.calls[-1].tenant == tenant


def test_tokens_come_from_a_file_too(fake_server, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("# name:token\ncarol:from-a-file  # rotated monthly\n\n")
    address, _ = fake_server(**{"auth.tokens_file": str(tokens)})
    with _client(address, token="from-a-file") as client:
        assert client.execute("fake", "now", timeout_s=10).tenant == "carol"
    assert _refused(address, token="carol").code() == grpc.StatusCode.UNAUTHENTICATED


def test_every_rpc_but_health_needs_authentication(fake_server):
    address, runner = fake_server(**{"auth.tokens": TOKENS})
    with _client(address) as client:
        calls = (
            lambda: client.list_runtimes(timeout_s=10),
            lambda: client.describe("fake", "x", timeout_s=10),
            lambda: client.cancel("some-job", timeout_s=10),
            lambda: client.get_outcome("some-job", timeout_s=10),
            lambda: list(client.execute_stream("fake", "now", timeout_s=10)),
        )
        for call in calls:
            with pytest.raises(grpc.RpcError) as refused:
                call()
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        # Reflection (a bidirectional stream) is behind the check like the rest.
        database = ProtoReflectionDescriptorDatabase(channel)
        with pytest.raises(grpc.RpcError) as refused:
            database.get_services()
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert runner.calls == []


def test_tls_with_a_token(fake_server, authority):
    server = authority.issue("server", server=True)
    address, runner = fake_server(
        **{
            "auth.tokens": TOKENS,
            "auth.tls_cert_file": str(server.cert),
            "auth.tls_key_file": str(server.key),
        }
    )
    with _client(address, token="bob-secret", ca_file=authority.cert_file) as client:
        assert client.execute("fake", "now", timeout_s=10).tenant == "bob"
    # Plaintext to a TLS port never gets as far as a call.
    assert _refused(address, token="bob-secret").code() == grpc.StatusCode.UNAVAILABLE
    code = _refused(address, ca_file=authority.cert_file).code()
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert len(runner.calls) == 1


def test_mutual_tls_names_the_tenant_by_the_client_certificate(fake_server, authority, tmp_path):
    server = authority.issue("server", server=True)
    address, runner = fake_server(
        **{
            "auth.tls_cert_file": str(server.cert),
            "auth.tls_key_file": str(server.key),
            "auth.client_ca_file": str(authority.cert_file),
        }
    )
    dave = authority.issue("dave")
    with _client(
        address, ca_file=authority.cert_file, cert_file=dave.cert, key_file=dave.key
    ) as client:
        assert client.execute("fake", "now", timeout_s=10).tenant == "dave"
    # No client certificate, or one from another CA: the handshake fails.
    assert _refused(address, ca_file=authority.cert_file).code() == grpc.StatusCode.UNAVAILABLE
    rogue = Authority(tmp_path / "rogue", "rogue-ca").issue("dave")
    forged = _refused(
        address, ca_file=authority.cert_file, cert_file=rogue.cert, key_file=rogue.key
    )
    assert forged.code() == grpc.StatusCode.UNAVAILABLE
    # A certificate does not excuse a wrong token: a token shown must be valid.
    wrong = _refused(
        address, ca_file=authority.cert_file, cert_file=dave.cert, key_file=dave.key, token="x"
    )
    assert wrong.code() == grpc.StatusCode.UNAUTHENTICATED
    assert len(runner.calls) == 1


def test_a_server_reachable_from_other_machines_refuses_to_start_without_authentication(
    make_config, tmp_path, authority
):
    server = authority.issue("server", server=True)
    tls = {"auth.tls_cert_file": str(server.cert), "auth.tls_key_file": str(server.key)}
    public = {"address": "0.0.0.0:0"}
    with pytest.raises(ConfigError, match="no caller is authenticated"):
        BackgroundServer(make_config(**public)).__enter__()
    with pytest.raises(ConfigError, match="in the clear"):
        BackgroundServer(make_config(**public, **{"auth.tokens": TOKENS})).__enter__()
    with pytest.raises(ConfigError, match="no caller is authenticated"):
        BackgroundServer(make_config(**public, **tls)).__enter__()
    for allowed in (
        {**public, **tls, "auth.tokens": TOKENS},
        {**public, "auth.insecure": True},
        {"address": f"unix:{tmp_path}/gristmill.sock"},
        {"address": "127.0.0.1:0"},
    ):
        Authenticator(make_config(**allowed), Tenants(make_config(**allowed)))


@pytest.mark.parametrize(
    ("address", "local"),
    [
        ("127.0.0.1:50051", True),
        ("127.8.9.1:1", True),
        ("[::1]:50051", True),
        ("localhost:50051", True),
        ("unix:/run/gristmill.sock", True),
        ("0.0.0.0:50051", False),
        ("[::]:50051", False),
        (":50051", False),
        ("10.0.0.5:50051", False),
        ("gristmill.example:50051", False),
    ],
)
def test_which_addresses_are_local(address, local):
    assert is_local_address(address) is local


def test_a_unix_socket_server_with_tokens(fake_server, tmp_path):
    address, _ = fake_server(
        **{"address": f"unix:{tmp_path}/gristmill.sock", "auth.tokens": TOKENS}
    )
    with _client(address, token="alice-secret") as client:
        assert client.execute("fake", "now", timeout_s=10).tenant == "alice"
    assert _refused(address).code() == grpc.StatusCode.UNAUTHENTICATED


def test_two_tokens_in_one_call_are_refused(make_config):
    config = make_config(**{"auth.tokens": TOKENS})
    authenticator = Authenticator(config, Tenants(config))
    assert authenticator.tenant(Caller(("bob-secret", "alice-secret"), ())) is None
    tenant = authenticator.tenant(Caller(("bob-secret",), ()))
    assert tenant is not None
    assert tenant.name == "bob"


def test_malformed_token_settings_are_refused_at_start(make_config):
    for tokens, message in (("just-a-secret", "NAME:TOKEN"), ("a b:c:d", "NAME:TOKEN")):
        with pytest.raises(ConfigError, match=message):
            Authenticator(make_config(**{"auth.tokens": tokens}), Tenants(make_config()))
    with pytest.raises(ConfigError, match="is not 1-64 of"):
        Authenticator(make_config(**{"auth.tokens": 'x"y:tok'}), Tenants(make_config()))


def test_a_tokens_file_others_can_read_is_warned_about(make_config, tmp_path, caplog):
    tokens = tmp_path / "tokens"
    tokens.write_text("carol:secret\n")
    tokens.chmod(0o644)
    config = make_config(**{"auth.tokens_file": str(tokens)})
    Authenticator(config, Tenants(config))
    assert "readable by others" in caplog.text
    caplog.clear()
    tokens.chmod(0o600)
    Authenticator(config, Tenants(config))
    assert "readable by others" not in caplog.text


def test_the_client_reads_its_credentials_from_the_environment(fake_server, tmp_path, authority):
    server = authority.issue("server", server=True)
    address, _ = fake_server(
        **{
            "auth.tokens": TOKENS,
            "auth.tls_cert_file": str(server.cert),
            "auth.tls_key_file": str(server.key),
        }
    )
    token_file = tmp_path / "token"
    token_file.write_text("alice-secret\n")
    environ = {
        "GRISTMILL_TOKEN_FILE": str(token_file),
        "GRISTMILL_TLS_CA": str(authority.cert_file),
    }
    with Client(address, retry=FAIL_FAST, credentials=Credentials.from_env(environ)) as client:
        assert client.execute("fake", "now", timeout_s=10).tenant == "alice"


def test_config_reads_auth_and_tenants_from_toml(tmp_path):
    config_file = tmp_path / "gristmill.toml"
    config_file.write_text(
        '[auth]\ntokens_file = "/etc/gristmill/tokens"\ninsecure = false\n'
        "[tenants.alice]\nmax_concurrent_jobs = 2\nmax_queued_jobs = 3\noperator = true\n"
        "[tenants.alice.max_limits]\nmemory_bytes = 536870912\n"
    )
    config = load_config(config_file, environ={"GRISTMILL_AUTH_TOKENS": "x:y"})
    assert str(config.auth.tokens_file) == "/etc/gristmill/tokens"
    assert config.auth.tokens == "x:y"
    alice = Tenants(config).get("alice")
    assert (alice.quota.max_running, alice.quota.max_queued, alice.operator) == (2, 3, True)
    assert alice.max_limits.memory_bytes == 512 * 1024 * 1024
    with pytest.raises(ConfigError, match="under default_limits"):
        Tenants(load_config(overrides={"tenants.eve.max_limits.memory_bytes": 1}))


def test_a_real_job_runs_over_tls_with_a_token_and_an_unauthenticated_one_never_starts(
    real_config, authority
):
    server = authority.issue("server", server=True)
    config = real_config(
        **{
            # No warm sandboxes: a workspace appearing would be the refused call's.
            "pool.enabled": False,
            "auth.tokens": TOKENS,
            "auth.tls_cert_file": str(server.cert),
            "auth.tls_key_file": str(server.key),
        }
    )
    with BackgroundServer(config) as address:
        with _client(address, token="alice-secret", ca_file=authority.cert_file) as client:
            outcome = client.run("bash", 'echo "hello $(id -u)"\n', timeout_s=60)
        assert (outcome.verdict.name, outcome.stdout) == ("SUCCESS", "hello 65534\n")
        assert outcome.proto.tenant == "alice"
        jobs_dir = config.work_dir / "jobs"
        before = set(jobs_dir.iterdir()) if jobs_dir.exists() else set()
        refused = _refused(address, ca_file=authority.cert_file)
        assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
        after = set(jobs_dir.iterdir()) if jobs_dir.exists() else set()
        assert after <= before  # no workspace was ever made for it


def test_the_cli_sends_the_token_from_the_environment(fake_server, monkeypatch, capsys):
    from gristmill.cli import main

    address, _ = fake_server(**{"auth.tokens": TOKENS})
    monkeypatch.delenv("GRISTMILL_TOKEN", raising=False)
    assert main(["runtimes", "--target", address]) == 2
    err = capsys.readouterr().err
    assert "no valid bearer token" in err
    assert "hint: give a token (--token-file, $GRISTMILL_TOKEN)" in err
    monkeypatch.setenv("GRISTMILL_TOKEN", "bob-secret")
    assert main(["runtimes", "--target", address, "--json"]) == 0
    assert '"fake"' in capsys.readouterr().out


def test_serve_on_a_public_address_without_authentication_exits_2_saying_why(tmp_path, capsys):
    from gristmill.cli import main

    status = main(["serve", "--address", "0.0.0.0:0", "--work-dir", str(tmp_path)])
    assert status == 2
    assert "--insecure" in capsys.readouterr().err
