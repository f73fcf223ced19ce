#!/bin/sh
# The compile step of a Go job, run by the service in the build sandbox, in /job (a
# copy of the job's files plus the plugin's gristmill_entry.go). The user's code is the
# module gristmill.job (package inner); wrapper.go becomes its real main package.
#
# The compiler cache: cacheprog (built by prime.sh) reads the shared, read-only cache
# the trusted prime step filled, and writes this build's own entries to /tmp only, so
# no job's build can change what another's reads. No network: GOPROXY=off, and the
# modules come read-only from the job's environment (go.mod + go.sum are its lockfile).
set -eu
export GOCACHE=/tmp/gocache
export GOCACHEPROG="/gristmill/shared/cacheprog /tmp/gocache /gristmill/shared/cache"
if [ -n "${GRISTMILL_ENVIRONMENT:-}" ]; then
    cp "$GRISTMILL_ENVIRONMENT/go.mod" "$GRISTMILL_ENVIRONMENT/go.sum" .
    export GOMODCACHE="$GRISTMILL_ENVIRONMENT/mod"
else
    rm -f go.mod go.sum
    printf 'module gristmill.job\n\ngo 1.26\n' > go.mod
    export GOMODCACHE=/tmp/gomod
fi
mkdir -p gristmill_main
cp /gristmill/runtime/wrapper.go gristmill_main/main.go
exec go build -o /gristmill/build/main ./gristmill_main
