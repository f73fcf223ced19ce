#!/bin/sh
# The trusted prime step of Go builds, run once per toolchain by the service with no
# job's input. With exactly the flags and environment of a job's build (GOFLAGS etc.
# from runtime.toml's [build] env) and the shared cache as a plain GOCACHE, it builds
# cacheprog (which builds read that cache through) and the standard library packages
# jobs commonly import (prime_imports.go).
set -eu
out=/gristmill/build
export GOCACHE="$out/cache" GOMODCACHE=/tmp/gomod
go build -o "$out/cacheprog" /gristmill/runtime/cacheprog.go
mkdir -p /tmp/prime && cd /tmp/prime
printf 'module gristmill.prime\n\ngo 1.26\n' > go.mod
cp /gristmill/runtime/prime_imports.go main.go
go build -o /tmp/prime/main .
