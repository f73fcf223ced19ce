"""Routing by what servers run, against a real PostgreSQL and servers over the scripted
runner: each job goes to a server that runs its language and has the labels it requires,
the one with most free room first; a job no worker's servers can run stays queued with a
clear `last_error`; workers with different servers share one queue, each claiming only
what its servers run."""

from __future__ import annotations

from pathlib import Path

from gristmill.queue import Queue
from gristmill.queue.queue import NewJob
from tests.queue.conftest import ScriptedServer
from tests.queue.test_worker import migrated_queue, running_worker, until, wait


def runtimes(root: Path, *names: str) -> Path:
    """A runtimes dir with these (available) languages."""
    for name in names:
        (root / name).mkdir(parents=True)
        (root / name / "runtime.toml").write_text(
            f'name = "{name}"\nextensions = [".{name}"]\nsource_file = "main.{name}"\n'
            'run = ["/bin/sh"]\nrequires = ["/bin/sh"]\nversion_command = ["/bin/echo", "1"]\n'
        )
    return root


async def test_a_job_goes_only_to_a_server_that_runs_its_language(
    database: str, scripted_server: ScriptedServer, tmp_path: Path
) -> None:
    fake, fake_runner = scripted_server()
    other, other_runner = scripted_server(runtimes_dir=runtimes(tmp_path / "b", "other"))
    with migrated_queue(database) as queue:
        ids = queue.enqueue_many(NewJob(("fake", "other")[n % 2], "echo") for n in range(20))
        async with running_worker(database, [fake, other], concurrency=4) as worker:
            jobs = [await wait(queue, job_id) for job_id in ids]
    assert {(job.state, job.verdict, job.retries) for job in jobs} == {("done", "SUCCESS", 0)}
    assert set(fake_runner.runs) == {job.id for job in jobs if job.language == "fake"}
    assert set(other_runner.runs) == {job.id for job in jobs if job.language == "other"}
    assert worker.stats.failed == 0


async def test_a_job_that_requires_a_label_goes_to_the_server_with_it(
    database: str, scripted_server: ScriptedServer
) -> None:
    plain, plain_runner = scripted_server()
    gpu, gpu_runner = scripted_server()
    with migrated_queue(database) as queue:
        tagged = queue.enqueue_many(NewJob("fake", "echo", tags=["gpu"]) for _ in range(6))
        untagged = queue.enqueue_many(NewJob("fake", "sleep:0.1") for _ in range(6))
        async with running_worker(database, [plain, f"{gpu}=gpu,eu"], concurrency=4):
            jobs = [await wait(queue, job_id) for job_id in tagged + untagged]
    assert {job.state for job in jobs} == {"done"}
    assert set(tagged) <= set(gpu_runner.runs) and not set(tagged) & set(plain_runner.runs)


async def test_a_job_no_server_can_run_stays_queued_with_a_clear_last_error(
    database: str, scripted_server: ScriptedServer
) -> None:
    address, _ = scripted_server()
    with migrated_queue(database) as queue:
        cobol = queue.enqueue("cobol", "DISPLAY 'HI'.")
        tpu = queue.enqueue("fake", "echo", tags=["tpu"])
        runnable = queue.enqueue("fake", "echo")
        async with running_worker(database, [address], discover_s=0.2) as worker:
            assert (await wait(queue, runnable)).state == "done"

            def marked() -> bool:
                jobs = [queue.get(cobol), queue.get(tpu)]
                return all(job is not None and job.last_error for job in jobs)

            await until(marked)
        stuck = {job_id: queue.get(job_id) for job_id in (cobol, tpu)}
    assert {(j.state, j.attempts, j.last_error) for j in stuck.values() if j} == {
        ("queued", 0, "no worker's servers run cobol jobs"),
        ("queued", 0, "no worker's servers run fake jobs labelled tpu"),
    }
    assert worker.stats.claimed == 1 and worker.stats.failed == 0


async def test_workers_with_different_servers_share_one_queue_each_claiming_its_own(
    database: str, scripted_server: ScriptedServer, tmp_path: Path
) -> None:
    fake, _ = scripted_server()
    other, _ = scripted_server(runtimes_dir=runtimes(tmp_path / "b", "other"))
    with migrated_queue(database) as queue:
        ids = queue.enqueue_many(NewJob(("fake", "other")[n % 3 == 0], "echo") for n in range(30))
        async with (
            running_worker(database, [fake], worker_id="fake-group", discover_s=0.2) as first,
            running_worker(database, [other], worker_id="other-group", discover_s=0.2) as second,
        ):
            jobs = [await wait(queue, job_id) for job_id in ids]
    assert {(job.state, job.retries, job.last_error) for job in jobs} == {("done", 0, None)}
    assert (first.stats.claimed, second.stats.claimed) == (20, 10)


async def test_the_server_with_more_free_room_gets_more_jobs(
    database: str, scripted_server: ScriptedServer
) -> None:
    small, small_runner = scripted_server(max_concurrent_jobs=1, max_queued_jobs=0)
    large, large_runner = scripted_server(max_concurrent_jobs=8, max_queued_jobs=0)
    with Queue(database) as queue:
        queue.migrate()
        ids = queue.enqueue_many(NewJob("fake", "sleep:0.5", {"n": n}) for n in range(4))
        async with running_worker(database, [small, large], concurrency=4) as worker:
            jobs = [await wait(queue, job_id) for job_id in ids]
    assert {job.state for job in jobs} == {"done"}
    # Round robin would send the small server a second job while its one slot is busy
    # (RESOURCE_EXHAUSTED, a retry); by free room it gets at most the first.
    assert len(small_runner.runs) <= 1 and len(large_runner.runs) >= 3
    assert worker.stats.retried == 0
