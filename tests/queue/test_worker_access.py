"""The queue worker against a server that authenticates its callers: TLS and a token."""

from __future__ import annotations

from gristmill.credentials import Credentials
from tests.queue.conftest import ScriptedServer
from tests.queue.test_worker import migrated_queue, running_worker, wait
from tests.server.certificates import Authority


async def test_the_worker_runs_jobs_on_a_tls_server_with_its_token(
    database: str, scripted_server: ScriptedServer, tmp_path
) -> None:
    authority = Authority(tmp_path / "ca", "queue-ca")
    server = authority.issue("server", server=True)
    address, runner = scripted_server(
        **{
            "auth.tokens": "queue-worker:w-token",
            "auth.tls_cert_file": str(server.cert),
            "auth.tls_key_file": str(server.key),
        }
    )
    credentials = Credentials(token="w-token", ca_file=authority.cert_file)
    with migrated_queue(database) as queue:
        job_id = queue.enqueue("fake", "echo", {"n": 3})
        async with running_worker(database, [address], credentials=credentials):
            job = await wait(queue, job_id)
    assert (job.state, job.verdict, job.result) == ("done", "SUCCESS", {"n": 3})
    assert runner.runs == {job_id: 1}


async def test_a_worker_without_the_token_fails_the_job_and_runs_nothing(
    database: str, scripted_server: ScriptedServer
) -> None:
    address, runner = scripted_server(**{"auth.tokens": "queue-worker:w-token"})
    with migrated_queue(database) as queue:
        job_id = queue.enqueue("fake", "echo", {"n": 3}, max_attempts=1)
        async with running_worker(database, [address], credentials=Credentials()):
            job = await wait(queue, job_id)
    assert job.state == "failed"
    assert str(job.last_error).startswith("UNAUTHENTICATED")
    assert runner.runs == {}
