-- Version 1: the jobs table, its fencing-token sequence and `gristmill.enqueue(...)`.

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
