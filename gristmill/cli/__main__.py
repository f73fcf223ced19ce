"""`python -m gristmill.cli` is the CLI (how the local server is started)."""

from gristmill.cli import main

raise SystemExit(main())
