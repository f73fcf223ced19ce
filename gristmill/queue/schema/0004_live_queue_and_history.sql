-- Version 4: the live queue apart from the finished jobs. `gristmill.queue` holds the
-- queued, scheduled (`run_after` ahead) and running jobs in narrow rows updated in place
-- (HOT for heartbeats, lease and cancel flags); `gristmill.payloads` the job as Execute
-- takes it; `gristmill.history` the finished ones, moved there in the write-back's
-- statement (`gristmill.finish`), partitioned by day of finish and dropped whole past the
-- retention (`gristmill.maintain`). Keys are uuids (UUIDv7 when generated); a producer's
-- text id maps to a uuid (`gristmill.job_uid`) and is kept beside it. `gristmill.jobs` is
-- now a view over all of it, with the columns it had, and takes INSERTs as before.
-- Routing: a job's `language` and `tags` (labels its server must have) are in the live
-- row, the claim takes only what the worker's servers run, and `gristmill.workers` /
-- `gristmill.routes` mark the jobs no live worker can run.

-- Version 3's table, renamed: its rows move below, then it goes.
alter table gristmill.jobs rename to jobs_v3;

-- Ids: a uuid key everywhere; the producer's text id, when it is not that uuid's own text,
-- kept beside it (`key`) and mapped to its uuid by a name hash.
create function gristmill.uuidv7() returns uuid language sql volatile parallel safe as $$
    -- 48 bits of Unix milliseconds, then version 7 and 74 random bits (RFC 9562).
    select encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid())
               placing substring(int8send((extract(epoch from clock_timestamp()) * 1000)::bigint)
                                 from 3)
               from 1 for 6), 52, 1), 53, 1), 'hex')::uuid
$$;

create function gristmill.job_uid(job_id text) returns uuid
language sql immutable strict parallel safe as $$
    select case
        when job_id ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
            then job_id::uuid
        -- a name-based uuid (version 8, variant 10): md5 of the id in a namespace of ours
        else encode(set_bit(set_bit(set_bit(set_bit(decode(md5('gristmill.job:' || job_id),
                 'hex'), 55, 1), 54, 0), 71, 1), 70, 0), 'hex')::uuid
    end
$$;

-- The live queue: queued, scheduled (run_after still ahead) and running jobs, narrow and
-- updated in place. Only the claim (queued -> running) and a retry move a row between
-- indexes; heartbeats, cancel requests and lease changes touch no indexed column (HOT).
-- Vacuumed early (it churns), never truncated: a truncation's exclusive lock stalled
-- claims for ~0.3 s when the queue ran empty.
create table gristmill.queue (
    uid uuid primary key,
    -- what a worker's servers must run for it: its language and the labels it requires
    language text not null,
    tags text[] not null default '{}',
    tenant text not null default '',
    priority integer not null default 0,
    run_after timestamptz not null default now(),
    enqueued_at timestamptz not null default now(),
    state text not null default 'queued' check (state in ('scheduled', 'queued', 'running')),
    attempts integer not null default 0,
    max_attempts integer not null default 5 check (max_attempts >= 1),
    lease_token bigint,
    leased_by text,
    lease_expires_at timestamptz,
    retries integer not null default 0,
    last_error text,
    started_at timestamptz,
    cancel_requested boolean not null default false
) with (fillfactor = 50, vacuum_truncate = false,
        autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 2000,
        autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 10000,
        autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 5000,
        autovacuum_vacuum_cost_delay = 0);

create index queue_ready on gristmill.queue (tenant, priority desc, run_after, enqueued_at)
    where state = 'queued';
create index queue_running on gristmill.queue (tenant) where state = 'running';
create index queue_scheduled on gristmill.queue (run_after) where state = 'scheduled';

-- The job as Execute takes it, written once at enqueue, read at the claim.
create table gristmill.payloads (
    uid uuid primary key,
    key text check (key ~ '^[A-Za-z0-9._:-]{1,128}$'),
    code text not null,
    entry_point text not null default '',
    args jsonb not null default '{}' check (jsonb_typeof(args) = 'object'),
    files jsonb not null default '{}' check (jsonb_typeof(files) = 'object'),
    env jsonb not null default '{}' check (jsonb_typeof(env) = 'object'),
    limits jsonb not null default '{}' check (jsonb_typeof(limits) = 'object'),
    lockfile text
) with (vacuum_truncate = false,
        autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 2000,
        autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 10000,
        autovacuum_vacuum_cost_delay = 0);

-- Finished jobs, by finish time: a day a partition, created ahead and dropped whole.
create table gristmill.history (
    uid uuid not null,
    key text,
    language text not null,
    code text not null,
    entry_point text not null,
    args jsonb not null,
    files jsonb not null,
    env jsonb not null,
    limits jsonb not null,
    lockfile text,
    tenant text not null,
    priority integer not null,
    run_after timestamptz not null,
    attempts integer not null,
    max_attempts integer not null,
    state text not null check (state in ('done', 'failed', 'cancelled')),
    lease_token bigint,
    leased_by text,
    retries integer not null,
    last_error text,
    cancel_requested boolean not null,
    enqueued_at timestamptz not null,
    started_at timestamptz,
    finished_at timestamptz not null,
    verdict text,
    result jsonb,
    error jsonb,
    stdout text,
    stderr text,
    exit_code integer,
    usage jsonb,
    outcome_lockfile text,
    detail text,
    tags text[] not null default '{}'
) partition by range (finished_at);
create index history_uid on gristmill.history (uid);
-- Rows outside every day's partition (none while `maintain` runs): kept, never lost.
create table gristmill.history_default partition of gristmill.history default;

-- Finished jobs per day and state, for `queue status` (no count over the history);
-- sharded by backend so that concurrent write-backs rarely wait on one row.
create table gristmill.finished_counts (
    day date not null,
    state text not null,
    shard integer not null,
    n bigint not null,
    primary key (day, state, shard)
);

-- Every job, live or finished, as one relation with the columns of versions 1-3.
create view gristmill.live as
select coalesce(p.key, q.uid::text) as id, q.language, p.code, p.entry_point, p.args,
       p.files, p.env, p.limits, p.lockfile, q.tenant, q.priority, q.attempts,
       q.max_attempts, case q.state when 'scheduled' then 'queued' else q.state end as state,
       q.lease_token, q.retries, q.last_error, q.cancel_requested, q.enqueued_at,
       q.started_at, null::timestamptz as finished_at, null::text as verdict,
       null::jsonb as result, null::jsonb as error, null::text as stdout,
       null::text as stderr, null::integer as exit_code, null::jsonb as usage,
       null::text as outcome_lockfile, null::text as detail, q.uid, q.run_after,
       q.leased_by, q.lease_expires_at, q.tags
  from gristmill.queue q join gristmill.payloads p on p.uid = q.uid;

create view gristmill.jobs as
select * from gristmill.live
union all
select coalesce(h.key, h.uid::text), h.language, h.code, h.entry_point, h.args, h.files,
       h.env, h.limits, h.lockfile, h.tenant, h.priority, h.attempts, h.max_attempts,
       h.state, h.lease_token, h.retries, h.last_error, h.cancel_requested, h.enqueued_at,
       h.started_at, h.finished_at, h.verdict, h.result, h.error, h.stdout, h.stderr,
       h.exit_code, h.usage, h.outcome_lockfile, h.detail, h.uid, h.run_after, h.leased_by,
       null::timestamptz, h.tags
  from gristmill.history h;

-- One job by its id, with index probes only (`where id = ...` on the view scans history).
create function gristmill.job(job_id text) returns setof gristmill.jobs
language sql stable as $$
    select * from gristmill.jobs where uid = gristmill.job_uid(job_id)
$$;

-- Jobs into the live queue, from a set of rows (one statement for a batch): a producer's
-- id is refused when a job holds it, live (the primary key) or finished (a probe).
create function gristmill.submit(jobs gristmill.jobs[]) returns setof text
language plpgsql as $$
begin
    if exists (select 1 from unnest(jobs) j join gristmill.history h
                on h.uid = gristmill.job_uid(j.id) where j.id is not null) then
        raise unique_violation using message = 'a job with this id exists already';
    end if;
    return query
    with given as (
        select j.*, coalesce(gristmill.job_uid(j.id), gristmill.uuidv7()) as new_uid
          from unnest(jobs) j
    ), payload as (
        insert into gristmill.payloads (uid, key, code, entry_point, args, files, env,
                                        limits, lockfile)
        select new_uid, case when g.id is distinct from new_uid::text then g.id end,
               g.code, coalesce(g.entry_point, ''), coalesce(g.args, '{}'),
               coalesce(g.files, '{}'), coalesce(g.env, '{}'), coalesce(g.limits, '{}'),
               g.lockfile
          from given g
        returning uid, key
    ), live as (
        insert into gristmill.queue (uid, language, tags, tenant, priority, run_after,
                                     enqueued_at, state, max_attempts)
        select new_uid, g.language, coalesce(g.tags, '{}'), coalesce(g.tenant, ''),
               coalesce(g.priority, 0),
               coalesce(g.run_after, now()), coalesce(g.enqueued_at, now()),
               case when g.run_after > now() then 'scheduled' else 'queued' end,
               coalesce(g.max_attempts, 5)
          from given g
        returning uid
    )
    select coalesce(p.key, p.uid::text) from payload p;
    -- Once per transaction (PostgreSQL folds equal notifications), after its commit.
    perform pg_notify('gristmill_jobs', '');
end $$;

drop function gristmill.enqueue(text, text, jsonb, jsonb, jsonb, text, integer, timestamptz,
                              integer, text, text, jsonb, text);
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
    lockfile text default null,
    tags text[] default '{}'
) returns text language sql as $$
    select gristmill.submit(array[row(
        enqueue.id, enqueue.language, enqueue.code, enqueue.entry_point, enqueue.args,
        enqueue.files, enqueue.env, enqueue.limits, enqueue.lockfile, enqueue.tenant,
        enqueue.priority, null, enqueue.max_attempts, null, null, null, null, null, null,
        null, null, null, null, null, null, null, null, null, null, null, null,
        enqueue.run_after, null, null, enqueue.tags)::gristmill.jobs])
$$;

-- A plain INSERT into gristmill.jobs, as in versions 1-3.
create function gristmill.insert_job() returns trigger language plpgsql as $$
begin
    new.id := gristmill.submit(array[new]);
    return new;
end $$;
create trigger jobs_insert instead of insert on gristmill.jobs
    for each row execute function gristmill.insert_job();

-- Finished jobs out of the live queue into the history, in one statement for a batch:
-- a job moves only while `token` still holds its lease (null: only a job not running).
-- Returns the uids moved.
create function gristmill.finish(
    uids uuid[], tokens bigint[], states text[], verdicts text[], results text[],
    errors text[], stdouts text[], stderrs text[], exit_codes integer[], usages text[],
    lockfiles text[], details text[], last_errors text[]
) returns setof uuid language sql as $$
    with o as (
        select * from unnest(uids, tokens, states, verdicts, results, errors, stdouts,
                             stderrs, exit_codes, usages, lockfiles, details, last_errors)
            as o(uid, token, state, verdict, result, error, stdout, stderr, exit_code,
                 usage, lockfile, detail, last_error)
    ), ended as (
        delete from gristmill.queue q using o
         where q.uid = o.uid
           and case when o.token is null then q.state <> 'running'
                    else q.state = 'running' and q.lease_token = o.token end
        returning q.*, o.state as final_state, o.verdict, o.result, o.error, o.stdout,
                  o.stderr, o.exit_code, o.usage, o.lockfile, o.detail,
                  o.last_error as final_error
    ), payload as (
        delete from gristmill.payloads p using ended e where p.uid = e.uid returning p.*
    ), counted as (
        insert into gristmill.finished_counts as c (day, state, shard, n)
        select current_date, e.final_state, pg_backend_pid() % 8, count(*)
          from ended e group by e.final_state order by e.final_state
        on conflict (day, state, shard) do update set n = c.n + excluded.n
    )
    insert into gristmill.history
    select e.uid, p.key, e.language, p.code, p.entry_point, p.args, p.files, p.env,
           p.limits, p.lockfile, e.tenant, e.priority, e.run_after, e.attempts,
           e.max_attempts, e.final_state, e.lease_token, e.leased_by, e.retries,
           coalesce(e.final_error, e.last_error), e.cancel_requested, e.enqueued_at,
           e.started_at, now(), e.verdict, e.result::jsonb, e.error::jsonb, e.stdout,
           e.stderr, e.exit_code, e.usage::jsonb, e.lockfile, e.detail, e.tags
      from ended e join payload p on p.uid = e.uid
    returning uid
$$;

-- gristmill_done once per statement: the ids of the jobs it finished, space-separated
-- (several notifications when they do not fit in one).
create function gristmill.notify_done() returns trigger language plpgsql as $$
declare
    chunk text;
begin
    for chunk in
        select string_agg(id, ' ') from (
            select coalesce(key, uid::text) as id,
                   sum(length(coalesce(key, uid::text)) + 1) over (order by uid) / 7000 as part
              from ended) parts
         group by part
    loop
        perform pg_notify('gristmill_done', chunk);
    end loop;
    return null;
end $$;
create trigger history_notify after insert on gristmill.history
    referencing new table as ended for each statement execute function gristmill.notify_done();

-- A day's partition of the history (no-op when it exists).
create function gristmill.history_partition(day date) returns void language plpgsql as $$
begin
    execute format('create table if not exists gristmill.%I partition of gristmill.history'
                   ' for values from (%L) to (%L)', 'history_' || to_char(day, 'YYYYMMDD'),
                   day::timestamptz, (day + 1)::timestamptz);
end $$;

-- Housekeeping, run by the workers now and then (one at a time: an advisory lock, others
-- skip): the history's partitions for today and `ahead` days are created, those wholly
-- older than `retention` dropped (no DELETE), with their counts. Returns the partitions
-- created and dropped, or nothing when another session is at it.
create function gristmill.maintain(retention interval default '7 days', ahead integer default 2)
returns table (created text[], dropped text[]) language plpgsql as $$
declare
    day date;
    part record;
    made text[] := '{}';
    gone text[] := '{}';
begin
    if not pg_try_advisory_xact_lock(1735291251) then
        return;
    end if;
    -- A drop waits for the history's readers: never long, so as not to queue writers.
    perform set_config('lock_timeout', '2s', true);
    for day in select generate_series(current_date, current_date + ahead, '1 day')::date loop
        if to_regclass(format('gristmill.history_%s', to_char(day, 'YYYYMMDD'))) is null then
            begin
                perform gristmill.history_partition(day);
                made := made || format('history_%s', to_char(day, 'YYYYMMDD'));
            exception when check_violation then
                -- that day's rows are in the default partition already: they stay there
                raise notice 'history for % stays in the default partition', day;
            end;
        end if;
    end loop;
    for part in
        select c.relname, to_date(substring(c.relname from 9), 'YYYYMMDD') as day
          from pg_inherits i join pg_class c on c.oid = i.inhrelid
         where i.inhparent = 'gristmill.history'::regclass
           and c.relname ~ '^history_[0-9]{8}$'
    loop
        if (part.day + 1)::timestamptz <= now() - retention then
            begin
                execute format('drop table gristmill.%I', part.relname);
                delete from gristmill.finished_counts where finished_counts.day = part.day;
                gone := gone || part.relname::text;
            exception when lock_not_available then
                raise notice '% is being read: dropped next time', part.relname;
            end;
        end if;
    end loop;
    created := made;
    dropped := gone;
    return next;
end $$;
-- Scheduled jobs whose time has come join the ready index, a batch at a time.
create function gristmill.promote(max_jobs integer default 1000) returns integer
language plpgsql as $$
declare
    promoted integer;
begin
    update gristmill.queue q set state = 'queued'
     where q.uid in (select s.uid from gristmill.queue s
                      where s.state = 'scheduled' and s.run_after <= now()
                      order by s.run_after limit max_jobs for update skip locked);
    get diagnostics promoted = row_count;
    if promoted > 0 then
        perform pg_notify('gristmill_jobs', '');
    end if;
    return promoted;
end $$;

-- The fair claim of version 3 over the live queue (its rule is unchanged), after
-- promoting the scheduled jobs that are due.
drop function gristmill.claim(text, integer, double precision);
create function gristmill.claim(worker text, max_jobs integer, lease_s double precision,
                                languages text[] default null, labels text[] default '{}')
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
    taken uuid[] := '{}';
    batch integer;
    claimed integer := 0;
    i integer;
    picked uuid;
begin
    perform gristmill.promote();
    with recursive ready(tenant) as (
        (select j.tenant from gristmill.queue j where j.state = 'queued'
          order by j.tenant limit 1)
        union all
        select (select j.tenant from gristmill.queue j
                 where j.state = 'queued' and j.tenant > r.tenant
                 order by j.tenant limit 1)
          from ready r where r.tenant is not null
    ), busy as (
        select j.tenant, count(*)::integer as n from gristmill.queue j
         where j.state = 'running' group by j.tenant
    )
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
                perform 1 from gristmill.tenants t where t.tenant = names[i]
                    for update skip locked;
                if not found then
                    exhausted[i] := true;
                    continue;
                end if;
                held[i] := true;
                running[i] := (select count(*) from gristmill.queue j
                                where j.state = 'running' and j.tenant = names[i]);
            end if;
            if running[i] >= caps[i] then
                exhausted[i] := true;
                continue;
            end if;
            select j.uid into picked from gristmill.queue j
             where j.state = 'queued' and j.tenant = names[i]
               and (languages is null or j.language = any(languages))
               and j.tags <@ coalesce(labels, '{}')
             order by j.priority desc, j.run_after, j.enqueued_at
             limit 1 for update skip locked;
            if not found then
                exhausted[i] := true;
                continue;
            end if;
            update gristmill.queue j
               set state = 'running', attempts = j.attempts + 1,
                   lease_token = nextval('gristmill.lease_tokens'), leased_by = worker,
                   lease_expires_at = now() + make_interval(secs => lease_s),
                   started_at = coalesce(j.started_at, now())
             where j.uid = picked;
            taken := taken || picked;
            claimed := claimed + 1;
            running[i] := running[i] + 1;
            turns[i] := nextval('gristmill.tenant_turns');
            served[i] := true;
            exit when claimed = max_jobs;
        end loop;
        exit when cardinality(picks) < batch;
    end loop;
    if cardinality(names) > 1 then
        insert into gristmill.tenants as t (tenant, last_served)
        select s.name, s.turn from unnest(names, turns, served) as s(name, turn, hit)
         where s.hit order by s.name
        on conflict (tenant) do update set last_served = excluded.last_served;
    end if;
    return query select l.* from unnest(taken) with ordinality as t(uid, n)
                 join gristmill.live l on l.uid = t.uid order by t.n;
end $$;

-- Back to the queue after a failure of the service, `backoff_s` later (scheduled), or
-- finished when cancelled meanwhile or out of attempts (`free`: this attempt does not
-- count). Only under the lease's token. Returns the job's state, or null when fenced.
create function gristmill.retry(job uuid, token bigint, message text, backoff_s double precision,
                                free boolean default false)
returns text language plpgsql as $$
declare
    row gristmill.queue;
begin
    select * into row from gristmill.queue q
     where q.uid = job and q.state = 'running' and q.lease_token = token for update;
    if not found then
        return null;
    end if;
    if row.cancel_requested or row.attempts - free::integer >= row.max_attempts then
        update gristmill.queue q set attempts = q.attempts - free::integer,
               retries = q.retries + 1 where q.uid = job;
        perform gristmill.finish(array[job], array[token],
            array[case when row.cancel_requested then 'cancelled' else 'failed' end],
            array[case when row.cancel_requested then 'CANCELLED' end], array[null],
            array[null], array[null], array[null], array[null::integer], array[null],
            array[null], array[null], array[message]);
        return case when row.cancel_requested then 'cancelled' else 'failed' end;
    end if;
    update gristmill.queue q
       set attempts = q.attempts - free::integer, retries = q.retries + 1,
           last_error = message, run_after = now() + make_interval(secs => backoff_s),
           state = case when backoff_s > 0 then 'scheduled' else 'queued' end,
           lease_expires_at = null
     where q.uid = job;
    if backoff_s <= 0 then
        perform pg_notify('gristmill_jobs', '');
    end if;
    return 'queued';
end $$;

-- The jobs of lost workers (lease expired) back to the queue after a backoff, or
-- finished (cancelled when asked, failed when out of attempts). Returns how many.
create function gristmill.reap(initial_s double precision, max_s double precision)
returns integer language plpgsql as $$
declare
    lost record;
    n integer := 0;
begin
    for lost in
        select q.uid, q.lease_token, q.attempts, q.leased_by from gristmill.queue q
         where q.state = 'running' and q.lease_expires_at < now()
         for update skip locked
    loop
        perform gristmill.retry(lost.uid, lost.lease_token,
            'lease expired: worker ' || coalesce(lost.leased_by, '?') || ' lost',
            least(max_s, initial_s * power(2, greatest(lost.attempts - 1, 0))));
        n := n + 1;
    end loop;
    return n;
end $$;

create or replace function gristmill.cancel(job_id text) returns text language plpgsql as $$
declare
    job uuid := gristmill.job_uid(job_id);
    current text;
begin
    select state into current from gristmill.queue where uid = job for update;
    if current in ('queued', 'scheduled') then
        perform gristmill.finish(array[job], array[null::bigint], array['cancelled'],
            array['CANCELLED'], array[null], array[null], array[null], array[null],
            array[null::integer], array[null], array[null], array['cancelled while queued'],
            array[null]);
        return 'cancelled';
    elsif current = 'running' then
        update gristmill.queue set cancel_requested = true where uid = job;
        perform pg_notify('gristmill_cancel', job_id);
        return 'cancelling';
    end if;
    return (select h.state from gristmill.history h where h.uid = job limit 1);
end $$;

-- The workers and what their servers run (null languages: not yet known, any), each
-- refreshed every few seconds, so that a job no live worker can run is said so.
create table gristmill.workers (
    worker text primary key,
    languages text[],
    labels text[] not null default '{}',
    seen_at timestamptz not null default now()
);

create function gristmill.unroutable(language text, tags text[]) returns text
language sql immutable as $$
    select format('no worker''s servers run %s jobs', language)
           || case when tags <> '{}' then ' labelled ' || array_to_string(tags, ', ')
                   else '' end
$$;

-- Records what `worker`'s servers run, and marks the live jobs that no worker seen
-- within `seen_within` can run (`last_error`; they stay queued; one worker at a time).
-- Returns how many marks it set or took away.
create function gristmill.routes(worker text, languages text[], labels text[],
                                 seen_within interval default '1 minute')
returns integer language plpgsql as $$
declare
    marked integer;
begin
    insert into gristmill.workers as w (worker, languages, labels, seen_at)
    values (routes.worker, routes.languages, routes.labels, now())
    on conflict on constraint workers_pkey do update
        set languages = excluded.languages, labels = excluded.labels, seen_at = now();
    if not pg_try_advisory_xact_lock(1735291252) then
        return 0;
    end if;
    delete from gristmill.workers w where w.seen_at < now() - seen_within * 10;
    -- Jobs that waited longer than that: a worker that just started may run them.
    -- Once a worker can run one, its mark goes.
    update gristmill.queue q set last_error = r.reason
      from (select j.uid, case when exists (
                       select 1 from gristmill.workers w
                        where w.seen_at >= now() - seen_within
                          and (w.languages is null or j.language = any(w.languages))
                          and j.tags <@ w.labels)
                   then null else gristmill.unroutable(j.language, j.tags) end as reason
              from gristmill.queue j
             where j.state in ('queued', 'scheduled') and j.enqueued_at < now() - seen_within
           ) r
     where q.uid = r.uid and q.last_error is distinct from r.reason
       and (r.reason is not null or q.last_error = gristmill.unroutable(q.language, q.tags));
    get diagnostics marked = row_count;
    return marked;
end $$;

-- The rows of versions 1-3, moved: live ones to the queue, finished ones to the history
-- (into partitions of their days), with their ids.
create temporary table moved on commit drop as
select j.*, gristmill.job_uid(j.id) as new_uid from gristmill.jobs_v3 j;

insert into gristmill.payloads (uid, key, code, entry_point, args, files, env, limits,
                                lockfile)
select new_uid, case when id <> new_uid::text then id end, code, entry_point,
       args, files, env, limits, lockfile
  from moved where state in ('queued', 'running');
insert into gristmill.queue (uid, language, tenant, priority, run_after, enqueued_at, state,
                             attempts, max_attempts, lease_token, leased_by, lease_expires_at,
                             retries, last_error, started_at, cancel_requested)
select new_uid, language, tenant, priority, run_after, enqueued_at,
       case when state = 'queued' and run_after > now() then 'scheduled' else state end,
       attempts, max_attempts, lease_token, leased_by, lease_expires_at, retries, last_error,
       started_at, cancel_requested
  from moved where state in ('queued', 'running');

select gristmill.history_partition(d::date) from (
    select distinct coalesce(finished_at, started_at, enqueued_at)::date as d
      from moved where state not in ('queued', 'running')) days;
insert into gristmill.history
select new_uid, case when id <> new_uid::text then id end, language, code, entry_point, args,
       files, env, limits, lockfile, tenant, priority, run_after, attempts, max_attempts,
       state, lease_token, leased_by, retries, last_error, cancel_requested, enqueued_at,
       started_at, coalesce(finished_at, started_at, enqueued_at), verdict, result, error,
       stdout, stderr, exit_code, usage, outcome_lockfile, detail, '{}'
  from moved where state not in ('queued', 'running');
insert into gristmill.finished_counts (day, state, shard, n)
select coalesce(finished_at, started_at, enqueued_at)::date, state, 0, count(*)
  from moved where state not in ('queued', 'running') group by 1, 2;

drop table gristmill.jobs_v3;
drop function gristmill.notify_state();
select gristmill.maintain();
