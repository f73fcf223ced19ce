"""The gRPC transport: access (who may call) and tenants, validation and conversion at
the boundary, admission, the job table.

`start` and `BackgroundServer` (in `app`) are the entry points.
"""

from gristmill.server.app import BackgroundServer, Server, start

__all__ = ["BackgroundServer", "Server", "start"]
