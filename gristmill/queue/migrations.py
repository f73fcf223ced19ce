"""The queue's schema in PostgreSQL, as versioned migrations applied in order.

Everything lives in the `gristmill` schema. `gristmill.schema_migrations` records the
versions applied; `migrate` applies the missing ones, each in a transaction of its own
under an advisory lock, so that several workers starting at once migrate once. A
migration is never edited once released: a change is a new migration.

Version 1: the jobs table, its fencing-token sequence and `gristmill.enqueue(...)`.
Version 2: cancellation (`cancel_requested`, `gristmill.cancel(id)`) and the
notifications that workers and waiters listen to, sent by triggers so that a plain
`INSERT` wakes the workers as well as `gristmill.enqueue` does.
Version 3: fair claims between tenants (`gristmill.tenants`, `gristmill.claim(...)`, the
ready index by tenant in place of the global one).
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

__all__ = ["MIGRATIONS", "Migration", "current_version", "migrate"]

# Any fixed number: the advisory lock that serialises migrations across processes.
_LOCK_KEY = 0x67726973  # "gris"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


_V1 = """
create schema if not exists gristmill;

create sequence gristmill.lease_tokens;

create table gristmill.jobs (
    id text primary key default gen_random_uuid()::text
        check (id ~ '^[A-Za-z0-9._:-]{1,128}$'),
    -- the job, as Execute takes it
    language text not null,
    code text not null,
    entry_point text not null default '',
    args jsonb not null default '{}' check (jsonb_typeof(args) = 'object'),
    files jsonb not null default '{}' check (jsonb_typeof(files) = 'object'),
    env jsonb not null default '{}' check (jsonb_typeof(env) = 'object'),
    limits jsonb not null default '{}' check (jsonb_typeof(limits) = 'object'),
    lockfile text,
    -- scheduling
    tenant text not null default '',
    priority integer not null default 0,
    run_after timestamptz not null default now(),
    attempts integer not null default 0,
    max_attempts integer not null default 5 check (max_attempts >= 1),
    state text not null default 'queued'
        check (state in ('queued', 'running', 'done', 'failed', 'cancelled')),
    -- the lease: who runs it, until when, and the fencing token its write must carry
    lease_token bigint,
    leased_by text,
    lease_expires_at timestamptz,
    -- service failures that sent it back to the queue, and the last one
    retries integer not null default 0,
    last_error text,
    enqueued_at timestamptz not null default now(),
    started_at timestamptz,
    finished_at timestamptz,
    -- the outcome, once done
    verdict text,
    result jsonb,
    error jsonb,
    stdout text,
    stderr text,
    exit_code integer,
    usage jsonb,
    outcome_lockfile text,
    detail text
);

create index jobs_ready on gristmill.jobs (priority desc, run_after, enqueued_at)
    where state = 'queued';
create index jobs_leases on gristmill.jobs (lease_expires_at) where state = 'running';

create function gristmill.enqueue(
    language text,
    code text,
    args jsonb default '{}',
    files jsonb default '{}',
    limits jsonb default '{}',
    tenant text default '',
    priority integer default 0,
    run_after timestamptz default now(),
    max_attempts integer default 5,
    id text default null,
    entry_point text default '',
    env jsonb default '{}',
    lockfile text default null
) returns text language sql as $$
    insert into gristmill.jobs (id, language, code, args, files, limits, tenant, priority,
                                run_after, max_attempts, entry_point, env, lockfile)
    values (coalesce(enqueue.id, gen_random_uuid()::text), enqueue.language, enqueue.code,
            enqueue.args, enqueue.files, enqueue.limits, enqueue.tenant, enqueue.priority,
            enqueue.run_after, enqueue.max_attempts, enqueue.entry_point, enqueue.env,
            enqueue.lockfile)
    returning jobs.id
$$;
"""

_V2 = """
alter table gristmill.jobs add column cancel_requested boolean not null default false;

-- gristmill_jobs: work is ready (payload empty); gristmill_done: a job ended (payload its
-- id); gristmill_cancel: a running job was asked to stop (payload its id).
create function gristmill.notify_state() returns trigger language plpgsql as $$
begin
    if new.state = 'queued' then
        perform pg_notify('gristmill_jobs', '');
    elsif new.state in ('done', 'failed', 'cancelled')
          and (tg_op = 'INSERT' or old.state is distinct from new.state) then
        perform pg_notify('gristmill_done', new.id);
    end if;
    return null;
end $$;

create trigger jobs_notify after insert or update of state on gristmill.jobs
    for each row execute function gristmill.notify_state();

-- Cancels a job: a queued one at once, a running one by asking its worker (which calls
-- the server's Cancel). Returns the job's state afterwards ('cancelling' while its
-- worker stops it), or null when there is no such job.
create function gristmill.cancel(job_id text) returns text language plpgsql as $$
declare
    current text;
begin
    select state into current from gristmill.jobs where id = job_id for update;
    if current is null then
        return null;
    elsif current = 'queued' then
        update gristmill.jobs
           set state = 'cancelled', verdict = 'CANCELLED', finished_at = now(),
               detail = 'cancelled while queued', lease_token = null
         where id = job_id;
        return 'cancelled';
    elsif current = 'running' then
        update gristmill.jobs set cancel_requested = true where id = job_id;
        perform pg_notify('gristmill_cancel', job_id);
        return 'cancelling';
    end if;
    return current;
end $$;
"""

# The fair claim. Between tenants, a slot goes to the tenant whose next job has the lowest
# (running + 1) / weight (its jobs running on every worker, this claim's included), ties
# to the tenant served longest ago (`last_served`, a turn number), then by name; a tenant
# at its `max_running` gets none (exact under concurrent claims: one claim at a time
# serves a capped tenant). Within a tenant: priority (higher first), run_after, enqueue
# time. So a tenant alone gets every slot, and a tenant that arrives behind another's
# backlog gets the next slot that frees. The tenants with ready jobs are found by a skip
# scan of `jobs_ready_by_tenant` (one probe per tenant), each job by one probe of its
# tenant's head under SKIP LOCKED: the cost grows with the tenants waiting, not the jobs.
_V3 = """
create table gristmill.tenants (
    tenant text primary key,
    weight double precision not null default 1 check (weight > 0),
    max_running integer check (max_running >= 0),
    last_served bigint not null default 0
);

create sequence gristmill.tenant_turns;

create index jobs_ready_by_tenant on gristmill.jobs (tenant, priority desc, run_after, enqueued_at)
    where state = 'queued';
create index jobs_running_by_tenant on gristmill.jobs (tenant) where state = 'running';
drop index gristmill.jobs_ready;

create function gristmill.claim(worker text, max_jobs integer, lease_s double precision)
returns setof gristmill.jobs language plpgsql as $$
declare
    names text[];
    running integer[];
    weights double precision[];
    caps integer[];
    turns bigint[];
    served boolean[];
    exhausted boolean[];
    held boolean[];
    picks integer[];
    batch integer;
    claimed integer := 0;
    i integer;
    picked text;
    job gristmill.jobs;
begin
    -- The tenants with ready jobs (a skip scan: one index probe each), what they run.
    with recursive ready(tenant) as (
        (select j.tenant from gristmill.jobs j where j.state = 'queued'
          order by j.tenant limit 1)
        union all
        select (select j.tenant from gristmill.jobs j
                 where j.state = 'queued' and j.tenant > r.tenant
                 order by j.tenant limit 1)
          from ready r where r.tenant is not null
    ), busy as (
        select j.tenant, count(*)::integer as n from gristmill.jobs j
         where j.state = 'running' group by j.tenant
    )
    -- (The aggregates see the rows in one order: their arrays line up.)
    select array_agg(r.tenant), array_agg(coalesce(b.n, 0)),
           array_agg(coalesce(t.weight, 1)), array_agg(coalesce(t.max_running, 2147483647)),
           array_agg(coalesce(t.last_served, 0)), array_agg(false), array_agg(false),
           array_agg(false)
      into names, running, weights, caps, turns, served, exhausted, held
      from ready r
      left join gristmill.tenants t on t.tenant = r.tenant
      left join busy b on b.tenant = r.tenant
     where r.tenant is not null;
    while claimed < max_jobs and names is not null loop
        -- The next slots in fair order: the k-th more job of a tenant at key
        -- (running + k) / weight, ties to the fewer taken now, then the longest unserved.
        batch := 2 * (max_jobs - claimed) + 8;
        picks := array(
            select s.i from unnest(names, running, weights, caps, turns, exhausted)
                   with ordinality as s(name, run, weight, cap, turn, gone, i)
             cross join generate_series(1, least(max_jobs - claimed, s.cap - s.run)) as k
             where not s.gone
             order by (s.run + k) / s.weight, k, s.turn, s.name
             limit batch);
        foreach i in array picks loop
            continue when exhausted[i];
            if caps[i] < 2147483647 and not held[i] then
                -- A cap is exact: one claim at a time serves a capped tenant, holding its
                -- row, and counts its running jobs afresh (other claims' committed).
                perform 1 from gristmill.tenants t where t.tenant = names[i]
                    for update skip locked;
                if not found then
                    exhausted[i] := true;  -- another claim is serving it
                    continue;
                end if;
                held[i] := true;
                running[i] := (select count(*) from gristmill.jobs j
                                where j.state = 'running' and j.tenant = names[i]);
            end if;
            if running[i] >= caps[i] then
                exhausted[i] := true;
                continue;
            end if;
            select j.id into picked from gristmill.jobs j
             where j.state = 'queued' and j.tenant = names[i] and j.run_after <= now()
             order by j.priority desc, j.run_after, j.enqueued_at
             limit 1 for update skip locked;
            if not found then
                exhausted[i] := true;  -- nothing (more) ready for this tenant
                continue;
            end if;
            update gristmill.jobs j
               set state = 'running', attempts = j.attempts + 1,
                   lease_token = nextval('gristmill.lease_tokens'), leased_by = worker,
                   lease_expires_at = now() + make_interval(secs => lease_s),
                   started_at = coalesce(j.started_at, now())
             where j.id = picked
            returning j.* into job;
            return next job;
            claimed := claimed + 1;
            running[i] := running[i] + 1;
            turns[i] := nextval('gristmill.tenant_turns');
            served[i] := true;
            exit when claimed = max_jobs;
        end loop;
        -- A shorter list held every slot there was; a full one may have lost some to
        -- tenants with nothing ready: choose again (each pass claims or rules one out).
        exit when cardinality(picks) < batch;
    end loop;
    -- Turns matter only between tenants: a claim with one tenant waiting writes none,
    -- so a queue of one tenant never contends on its row. In name order: no deadlock
    -- between two claims serving the same tenants.
    if cardinality(names) > 1 then
        insert into gristmill.tenants as t (tenant, last_served)
        select s.name, s.turn from unnest(names, turns, served) as s(name, turn, hit)
         where s.hit order by s.name
        on conflict (tenant) do update set last_served = excluded.last_served;
    end if;
end $$;
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "jobs table, enqueue", _V1),
    Migration(2, "cancellation, notifications", _V2),
    Migration(3, "fair claims between tenants", _V3),
)

_BOOKKEEPING = """
create schema if not exists gristmill;
create table if not exists gristmill.schema_migrations (
    version integer primary key,
    name text not null,
    applied_at timestamptz not null default now()
)
"""


def current_version(conn: psycopg.Connection[object]) -> int:
    """The newest migration applied to the database (0 when none)."""
    exists = conn.execute("select to_regclass('gristmill.schema_migrations')").fetchone()
    if exists is None or exists[0] is None:  # type: ignore[index]
        return 0
    row = conn.execute("select coalesce(max(version), 0) from gristmill.schema_migrations")
    found = row.fetchone()
    return int(found[0]) if found else 0  # type: ignore[index]


def migrate(conninfo: str, target: int | None = None) -> list[int]:
    """Applies the migrations missing up to `target` (default: all); returns those applied."""
    applied: list[int] = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for migration in MIGRATIONS:
            if target is not None and migration.version > target:
                break
            with conn.transaction():
                conn.execute("select pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
                conn.execute(_BOOKKEEPING)
                done = conn.execute(
                    "select 1 from gristmill.schema_migrations where version = %s",
                    (migration.version,),
                ).fetchone()
                if done:
                    continue
                conn.execute(migration.sql.encode())
                conn.execute(
                    "insert into gristmill.schema_migrations (version, name) values (%s, %s)",
                    (migration.version, migration.name),
                )
                applied.append(migration.version)
    return applied
