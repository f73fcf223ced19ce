"""Each of the executor's caches keeps to its own budget."""

from __future__ import annotations

from gristmill.config import DependencyConfig
from gristmill.jobs.executor import Executor
from gristmill.jobs.parts import compose
from gristmill.languages import Registry

from ..conftest import sandbox_work_dir


class NoBackend:
    """The executor's caches never touch the sandbox until a job runs."""

    name = "none"


def test_builds_and_environments_have_budgets_of_their_own():
    config = DependencyConfig(cache_max_bytes=10_000, build_cache_max_bytes=2_000)
    with sandbox_work_dir() as work_dir:
        executor = Executor(compose(Registry(), NoBackend(), work_dir, config))  # type: ignore[arg-type]
        assert executor.builds.cache.max_bytes == 2_000
        assert executor.deps.cache.max_bytes == 10_000
