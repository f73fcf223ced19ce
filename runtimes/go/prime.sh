#!/bin/sh
# The trusted prime step of Go builds, run once per toolchain by the service with no
# job's input: it builds cacheprog and compiles the standard library packages jobs
# commonly use into the shared cache, with exactly the flags and environment of a
# job's build (GOFLAGS from runtime.toml), so that builds find those entries.
set -eu
out=/gristmill/build
GOCACHE=/tmp/bootstrap go build -o "$out/cacheprog" /gristmill/runtime/cacheprog.go
rm -rf /tmp/bootstrap
export GOCACHE=/tmp/gocache GOMODCACHE=/tmp/gomod
export GOCACHEPROG="$out/cacheprog $out/cache"
mkdir -p /tmp/prime && cd /tmp/prime
printf 'module gristmill.prime\n\ngo 1.26\n' > go.mod
cp /gristmill/runtime/prime_imports.go main.go
go build -o /tmp/prime/main .
