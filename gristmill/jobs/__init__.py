"""The job lifecycle: prepare, run in a sandbox, and decide the verdict."""
