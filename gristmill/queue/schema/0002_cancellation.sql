-- Version 2: cancellation (`cancel_requested`, `gristmill.cancel(id)`) and the
-- notifications that workers and waiters listen to, sent by triggers so that a plain
-- `INSERT` wakes the workers as well as `gristmill.enqueue` does.

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
