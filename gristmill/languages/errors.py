"""The one way dependencies fail: the job's fault or its registry's, never the service's.

It is not a `GristmillError` (those are the service failing): the executor turns it
into a DEPENDENCY_ERROR outcome, the Resolve RPC into its `error` field, each with
the resolver's own message rather than a stack trace of ours.
"""

from __future__ import annotations


class DependencyFailure(Exception):
    """A package does not exist, versions conflict, the registry is unreachable, a build
    failed, or the resolver ran out of time or memory; `str()` is the tool's own message.
    """
