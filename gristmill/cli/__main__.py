"""`python -m gristmill.cli` is the CLI, as `python -m gristmill` is."""

from gristmill.cli import main

raise SystemExit(main())
