-- Version 5: one trace from enqueue to outcome. Each job keeps the W3C `traceparent` of
-- its producer (or a new one, when it came without), in its payload and then in the
-- history; the worker's span for the job continues it and passes its own to the server
-- in the call's metadata, so that the server's spans are in the producer's trace.
-- Rows already queued or finished keep theirs null (a worker starts a trace for them).

alter table gristmill.payloads add column traceparent text
    check (traceparent ~ '^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$'
           and traceparent !~ '^00-0{32}-' and traceparent !~ '-0{16}-[0-9a-f]{2}$');
alter table gristmill.history add column traceparent text;

-- A new trace: random trace and parent ids (from version 4 uuids), sampled.
create function gristmill.new_traceparent() returns text language sql volatile as $$
    select '00-' || replace(gen_random_uuid()::text, '-', '') || '-'
           || left(replace(gen_random_uuid()::text, '-', ''), 16) || '-01'
$$;

create or replace view gristmill.live as
select coalesce(p.key, q.uid::text) as id, q.language, p.code, p.entry_point, p.args,
       p.files, p.env, p.limits, p.lockfile, q.tenant, q.priority, q.attempts,
       q.max_attempts, case q.state when 'scheduled' then 'queued' else q.state end as state,
       q.lease_token, q.retries, q.last_error, q.cancel_requested, q.enqueued_at,
       q.started_at, null::timestamptz as finished_at, null::text as verdict,
       null::jsonb as result, null::jsonb as error, null::text as stdout,
       null::text as stderr, null::integer as exit_code, null::jsonb as usage,
       null::text as outcome_lockfile, null::text as detail, q.uid, q.run_after,
       q.leased_by, q.lease_expires_at, q.tags, p.traceparent
  from gristmill.queue q join gristmill.payloads p on p.uid = q.uid;

create or replace view gristmill.jobs as
select * from gristmill.live
union all
select coalesce(h.key, h.uid::text), h.language, h.code, h.entry_point, h.args, h.files,
       h.env, h.limits, h.lockfile, h.tenant, h.priority, h.attempts, h.max_attempts,
       h.state, h.lease_token, h.retries, h.last_error, h.cancel_requested, h.enqueued_at,
       h.started_at, h.finished_at, h.verdict, h.result, h.error, h.stdout, h.stderr,
       h.exit_code, h.usage, h.outcome_lockfile, h.detail, h.uid, h.run_after, h.leased_by,
       null::timestamptz, h.tags, h.traceparent
  from gristmill.history h;

-- Version 4's, storing the job's traceparent (a new one when it has none).
create or replace function gristmill.submit(jobs gristmill.jobs[]) returns setof text
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
                                        limits, lockfile, traceparent)
        select new_uid, case when g.id is distinct from new_uid::text then g.id end,
               g.code, coalesce(g.entry_point, ''), coalesce(g.args, '{}'),
               coalesce(g.files, '{}'), coalesce(g.env, '{}'), coalesce(g.limits, '{}'),
               g.lockfile, coalesce(g.traceparent, gristmill.new_traceparent())
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
    perform pg_notify('gristmill_jobs', '');
end $$;

drop function gristmill.enqueue(text, text, jsonb, jsonb, jsonb, text, integer, timestamptz,
                              integer, text, text, jsonb, text, text[]);
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
    tags text[] default '{}',
    traceparent text default null
) returns text language sql as $$
    select gristmill.submit(array[row(
        enqueue.id, enqueue.language, enqueue.code, enqueue.entry_point, enqueue.args,
        enqueue.files, enqueue.env, enqueue.limits, enqueue.lockfile, enqueue.tenant,
        enqueue.priority, null, enqueue.max_attempts, null, null, null, null, null, null,
        null, null, null, null, null, null, null, null, null, null, null, null,
        enqueue.run_after, null, null, enqueue.tags, enqueue.traceparent)::gristmill.jobs])
$$;

-- Version 4's, carrying the traceparent into the history.
create or replace function gristmill.finish(
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
           e.stderr, e.exit_code, e.usage::jsonb, e.lockfile, e.detail, e.tags,
           p.traceparent
      from ended e join payload p on p.uid = e.uid
    returning uid
$$;
