#!/usr/bin/env bash
# Bash's toolchain is the machine's /bin/bash; bash-builtins adds the loadable `unlink` the
# wrapper uses instead of an rm process (it falls back to rm without it). Idempotent.
set -euo pipefail
"$ROOT/scripts/install-system.sh" apt bash-builtins
