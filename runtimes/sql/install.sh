#!/usr/bin/env bash
# SQL's toolchain: Debian's python3 (its sqlite3 module runs SQLite jobs in the sandbox)
# and the PostgreSQL server that tests start with scripts/postgres.sh. Both are Debian
# packages at the distribution's version (Debian 12: Python 3.11, SQLite 3.40,
# PostgreSQL 15); psycopg, which the service uses to reach PostgreSQL, is a Python
# dependency of gristmill. Idempotent: present packages are skipped.
set -euo pipefail
"$ROOT/scripts/install-system.sh" apt python3 postgresql
# The wrapper's module must import in Debian's interpreter.
/usr/bin/python3 -c 'import sqlite3' \
    || { echo "sql/install.sh: Debian's python3 has no sqlite3 module" >&2; exit 1; }
