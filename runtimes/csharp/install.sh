#!/usr/bin/env bash
# C#'s toolchain: Mono 6.8 from Debian 12 (bookworm), pinned by the distribution's release
# (6.8.0.105+dfsg-3.3+deb12u1 when written).
#   mono-mcs          the compiler (`mcs`, C# up to 7.2)
#   mono-runtime      the runtime (`mono`)
#   libmono-corlib4.5-cil, libmono-system4.0-cil, libmono-system-core4.0-cil,
#   libmono-system-numerics4.0-cil
#                     the class libraries the wrapper and ordinary jobs use
#                     (mscorlib, System, System.Core: LINQ, HashSet; System.Numerics:
#                     BigInteger, for integers past 64 bits)
# The NuGet client is our own (runtimes/csharp/nuget.py, run by Debian's python3):
# Debian's `nuget` speaks only the v2 protocol.
# Run by `make install` (scripts/install-system.sh) with ROOT set; idempotent.
set -euo pipefail
ROOT="${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
"$ROOT/scripts/install-system.sh" apt \
    mono-mcs mono-runtime \
    libmono-corlib4.5-cil libmono-system4.0-cil libmono-system-core4.0-cil \
    libmono-system-numerics4.0-cil
