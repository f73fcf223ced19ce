"""What the fork server loads: every module it imports is copied into each job's
supervisor, init and program by fork, so the heavy ones must stay in the service."""

from __future__ import annotations

import subprocess
import sys

_LOADED = """
import sys
import gristmill.isolation.forkserver
print(" ".join(sorted(sys.modules)))
"""

# libseccomp's binding (the filter comes compiled from the service), the profile
# loader (tomllib) and the service's own layers.
_SERVICE_ONLY = ("pyseccomp", "tomllib", "gristmill.isolation.profile", "gristmill.jobs", "grpc")


def test_the_fork_server_imports_nothing_that_only_the_service_needs() -> None:
    loaded = subprocess.run(
        [sys.executable, "-c", _LOADED], capture_output=True, text=True, check=True
    ).stdout.split()
    assert not [m for m in loaded if m.startswith(_SERVICE_ONLY)]
