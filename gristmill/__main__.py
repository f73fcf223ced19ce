"""`python -m gristmill` is the CLI."""

from gristmill.cli import main

raise SystemExit(main())
