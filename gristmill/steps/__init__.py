"""Running one command of the service's own in a sandbox, capped and streamed.

Below both `gristmill.jobs` (a job's run, a language's build step) and `gristmill.deps`
(the resolver's lock and install steps), which use it: `run` drives a sandbox to its
end, `output` caps what it writes, `paths` keeps a path from a request inside the job's
directory.
"""
