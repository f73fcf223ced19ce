#!/usr/bin/env bash
# Generates the Go code of proto/gristmill/v1/runtime.proto into gen/ (a module of its own,
# gristmill.dev/go, named by the .proto's go_package), with protoc from the checkout's
# grpcio-tools and the Go plugins at pinned versions from the Go module proxy.
# Usage: examples/go-worker/generate.sh   (after `make install`; idempotent)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PROTOC_GEN_GO=v1.36.12
PROTOC_GEN_GO_GRPC=v1.6.2
export GOBIN="$HERE/gen/.bin"

[[ -x "$GOBIN/protoc-gen-go" ]] \
    || go install "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO"
[[ -x "$GOBIN/protoc-gen-go-grpc" ]] \
    || go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC"
rm -rf "$HERE/gen/gristmill"
"$ROOT/.venv/bin/python" -m grpc_tools.protoc -I"$ROOT/proto" \
    --plugin="protoc-gen-go=$GOBIN/protoc-gen-go" \
    --plugin="protoc-gen-go-grpc=$GOBIN/protoc-gen-go-grpc" \
    --go_out="$HERE/gen" --go_opt=module=gristmill.dev/go \
    --go-grpc_out="$HERE/gen" --go-grpc_opt=module=gristmill.dev/go \
    "$ROOT/proto/gristmill/v1/runtime.proto"
printf 'module gristmill.dev/go\n\ngo 1.24\n' >"$HERE/gen/go.mod"
(cd "$HERE/gen" && go mod tidy)
