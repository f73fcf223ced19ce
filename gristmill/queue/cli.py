"""The queue's commands of `gristmill`: `worker`, `enqueue` and `queue migrate|show|cancel`.

The database comes from `--database`, else `$GRISTMILL_DATABASE_URL` (which
`scripts/postgres.sh env` sets), else libpq's own `PG*` variables.

The commands import psycopg and the queue's modules when they run, never at start-up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gristmill.credentials import add_credential_flags, credentials_from_options
from gristmill.render import print_json

if TYPE_CHECKING:  # psycopg costs ~0.1 s to import: only the queue's commands load it
    from gristmill.queue.records import JobRecord
    from gristmill.queue.worker import WorkerConfig

__all__ = ["COMMANDS", "add_commands"]

EXIT_OK, EXIT_JOB_FAILED, EXIT_USAGE = 0, 1, 2


class QueueUsageError(Exception):
    """The queue command cannot be carried out as given."""


def _database_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database",
        default=os.environ.get("GRISTMILL_DATABASE_URL", ""),
        help="libpq URL of the queue's database (default: $GRISTMILL_DATABASE_URL, PG*)",
    )


def add_commands(commands: Any, command: Callable[..., argparse.ArgumentParser]) -> None:
    """Adds `worker`, `enqueue` and `queue` to the `gristmill` subcommands; `command`
    makes each one as the CLI makes its own (help, examples, exit codes)."""
    worker = command(
        commands,
        "worker",
        "run queue jobs from PostgreSQL on servers",
        "Claims jobs from the queue, runs them on the servers and writes their outcomes back.",
        "  gristmill worker --target 127.0.0.1:50051 --concurrency 8\n"
        "  gristmill worker --target a:50051 --target b:50051 --database postgresql:///jobs\n"
        "  gristmill worker --target gpu-1:50051=gpu,eu --target cpu-1:50051",
    )
    _database_flag(worker)
    worker.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="HOST:PORT[=LABELS]",
        help="a gristmill server and the labels it has (repeat for several; one DNS name"
        " spreads over its addresses); each job goes to one that runs it, the least busy",
    )
    worker.add_argument("--concurrency", type=int, default=4, help="jobs at once (4)")
    worker.add_argument("--lease-s", type=float, default=30.0, help="lease per claim (30)")
    worker.add_argument("--poll-s", type=float, default=2.0, help="poll when no NOTIFY (2)")
    worker.add_argument("--grace-s", type=float, default=30.0, help="time to finish at stop (30)")
    worker.add_argument("--no-migrate", action="store_true", help="do not migrate at start")
    worker.add_argument(
        "--retention-days",
        type=float,
        default=7.0,
        help="keep finished jobs this long; older days of history are dropped whole (7)",
    )
    worker.add_argument(
        "--otlp-endpoint",
        metavar="URL",
        default=os.environ.get("GRISTMILL_OTLP_ENDPOINT", ""),
        help="export the worker's spans of each job (in the job's trace) to this OTLP/gRPC"
        " collector, e.g. http://127.0.0.1:4317 (default: $GRISTMILL_OTLP_ENDPOINT; none)",
    )
    add_credential_flags(worker)

    enqueue = command(
        commands,
        "enqueue",
        "queue a file as a job; print its id",
        "Adds a job to the queue; with --wait, prints its outcome once a worker ran it.",
        "  gristmill enqueue job.py --args '{\"n\": 3}'\n  gristmill enqueue job.sh --wait",
    )
    _database_flag(enqueue)
    enqueue.add_argument("file", type=Path)
    enqueue.add_argument("--lang", help="language (default: from the file's extension)")
    enqueue.add_argument("--args", dest="args_json", default="{}", help="arguments, JSON object")
    enqueue.add_argument("--entry-point", default="", help="function to call (language's default)")
    enqueue.add_argument("--timeout-ms", type=int, default=0, help="wall time (server default)")
    enqueue.add_argument("--memory-mb", type=int, default=0, help="memory (server default)")
    enqueue.add_argument(
        "--priority", type=int, default=0, help="higher runs first, within its tenant (0)"
    )
    enqueue.add_argument("--tenant", default="", help="tenant (slots are shared fairly)")
    enqueue.add_argument("--max-attempts", type=int, default=5, help="retries of lost runs (5)")
    enqueue.add_argument("--id", dest="job_id", help="the job's id (default: a new uuid)")
    enqueue.add_argument(
        "--tag",
        action="append",
        default=[],
        dest="tags",
        help="a label its server must have (repeat for several)",
    )
    enqueue.add_argument(
        "--traceparent",
        default=os.environ.get("TRACEPARENT"),
        help="the W3C trace the job's spans join (default: $TRACEPARENT; else a new trace)",
    )
    enqueue.add_argument("--wait", action="store_true", help="wait for its outcome, print it")
    enqueue.add_argument("--wait-timeout-s", type=float, default=None, help="give up after (never)")

    queue = command(
        commands,
        "queue",
        "the queue's schema and jobs",
        "Migrates the queue's schema, shows its state and its jobs, cancels or waits for one.",
        "  gristmill queue migrate\n  gristmill queue status\n  gristmill queue wait JOB_ID",
    )
    actions = queue.add_subparsers(dest="queue_command", required=True)
    for name, text in (
        ("migrate", "create or upgrade the schema"),
        ("status", "the schema's version and jobs per state (finished: kept ones)"),
    ):
        _database_flag(actions.add_parser(name, help=text))
    for name, text in (
        ("show", "print a job as JSON, with its timeline (the wait in the queue, phases)"),
        ("cancel", "cancel a job"),
    ):
        action = actions.add_parser(name, help=text)
        _database_flag(action)
        action.add_argument("job_id")
    wait = actions.add_parser("wait", help="wait for a job's outcome and print it")
    _database_flag(wait)
    wait.add_argument("job_id")
    wait.add_argument("--timeout-s", type=float, default=None, help="give up after (never)")


def _print_record(job: JobRecord) -> None:
    print_json({**vars(job), "timeline": job.timeline()})


def _exit_for(job: JobRecord) -> int:
    return EXIT_OK if job.verdict == "SUCCESS" else EXIT_JOB_FAILED


def _language(options: argparse.Namespace) -> str:
    if options.lang:
        return str(options.lang)
    from gristmill.config import ServerConfig
    from gristmill.languages import Registry

    config = ServerConfig()
    runtime = Registry(config.runtimes_dir, config.profiles_dir).for_extension(options.file.suffix)
    if runtime is None:
        raise QueueUsageError(f"no language for {options.file.suffix!r} files: pass --lang")
    return runtime.name


def _enqueue(options: argparse.Namespace) -> int:
    try:
        code = options.file.read_text()
        args = json.loads(options.args_json)
    except (OSError, json.JSONDecodeError) as error:
        raise QueueUsageError(str(error)) from error
    if not isinstance(args, dict):
        raise QueueUsageError("--args must be a JSON object")
    limits = {}
    if options.timeout_ms:
        limits["wall_time_ms"] = options.timeout_ms
    if options.memory_mb:
        limits["memory_bytes"] = options.memory_mb * 1024 * 1024
    from gristmill.queue.queue import Queue

    with Queue(options.database) as queue:
        job_id = queue.enqueue(
            _language(options),
            code,
            args,
            job_id=options.job_id,
            entry_point=options.entry_point,
            limits=limits,
            tenant=options.tenant,
            priority=options.priority,
            max_attempts=options.max_attempts,
            tags=options.tags,
            traceparent=options.traceparent,
        )
        print(job_id)
        if not options.wait:
            return EXIT_OK
        job = queue.wait(job_id, options.wait_timeout_s)
    _print_record(job)
    return _exit_for(job)


def _queue(options: argparse.Namespace) -> int:
    from gristmill.queue.migrations import migrate
    from gristmill.queue.queue import Queue

    action = options.queue_command
    if action == "migrate":
        applied = migrate(options.database)
        print(f"applied: {applied}" if applied else "up to date")
        return EXIT_OK
    with Queue(options.database) as queue:
        if action == "status":
            version = queue.schema_version()
            print(json.dumps({"version": version, "jobs": queue.counts()}))
            return EXIT_OK
        if action == "cancel":
            print(queue.cancel(options.job_id) or "no such job")
            return EXIT_OK
        job = (
            queue.wait(options.job_id, options.timeout_s)
            if action == "wait"
            else queue.get(options.job_id)
        )
    if job is None:
        print("no such job", file=sys.stderr)
        return EXIT_JOB_FAILED
    _print_record(job)
    return _exit_for(job) if action == "wait" else EXIT_OK


async def _work(config: WorkerConfig, otlp_endpoint: str) -> None:
    from gristmill.queue.worker import Worker

    tracing = None
    if otlp_endpoint:
        from gristmill.observability.tracing import Tracing

        tracing = Tracing.otlp(otlp_endpoint, "gristmill-worker")
    worker = Worker(config, tracer=tracing.tracer if tracing else None)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, worker.stop)
    try:
        await worker.run()
    finally:
        if tracing is not None:
            tracing.close()


def _worker(options: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if options.retention_days <= 0:
        raise QueueUsageError("--retention-days must be more than 0")
    if not options.target:
        raise QueueUsageError("--target HOST:PORT is required (repeat it for several servers)")
    from gristmill.queue.worker import WorkerConfig

    try:
        credentials = credentials_from_options(options)
    except OSError as error:
        raise QueueUsageError(f"credentials: {error}") from error
    config = WorkerConfig(
        conninfo=options.database,
        targets=tuple(options.target),
        concurrency=options.concurrency,
        lease_s=options.lease_s,
        poll_s=options.poll_s,
        grace_s=options.grace_s,
        migrate=not options.no_migrate,
        retention_s=options.retention_days * 86400,
        credentials=credentials,
    )
    asyncio.run(_work(config, options.otlp_endpoint))
    return EXIT_OK


def _guarded(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(options: argparse.Namespace) -> int:
        import psycopg

        from gristmill.queue.queue import WaitTimeout

        try:
            return int(command(options))
        except QueueUsageError as error:
            print(f"gristmill: {error}", file=sys.stderr)
        except WaitTimeout as error:
            print(f"gristmill: {error}", file=sys.stderr)
            return EXIT_JOB_FAILED
        except psycopg.Error as error:
            print(f"gristmill: database: {error}", file=sys.stderr)
        return EXIT_USAGE

    return run


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "worker": _guarded(_worker),
    "enqueue": _guarded(_enqueue),
    "queue": _guarded(_queue),
}
