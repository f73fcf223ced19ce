-- Version 3: fair claims between tenants (`gristmill.tenants`, `gristmill.claim(...)`, the
-- ready index by tenant in place of the global one).
--
-- The fair claim. Between tenants, a slot goes to the tenant whose next job has the lowest
-- (running + 1) / weight (its jobs running on every worker, this claim's included), ties
-- to the tenant served longest ago (`last_served`, a turn number), then by name; a tenant
-- at its `max_running` gets none (exact under concurrent claims: one claim at a time
-- serves a capped tenant). Within a tenant: priority (higher first), run_after, enqueue
-- time. So a tenant alone gets every slot, and a tenant that arrives behind another's
-- backlog gets the next slot that frees. The tenants with ready jobs are found by a skip
-- scan of `jobs_ready_by_tenant` (one probe per tenant), each job by one probe of its
-- tenant's head under SKIP LOCKED: the cost grows with the tenants waiting, not the jobs.

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
