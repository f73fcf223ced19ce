#!/bin/sh
# Go: the toolchain is part of the machine image (/usr/local/go); this checks it and
# puts `go` beside the service's interpreter, where the resolver's programs are found.
set -eu
GO=/usr/local/go/bin/go
if [ ! -x "$GO" ]; then
    echo "runtimes/go: $GO is missing (the machine image provides Go 1.26)" >&2
    exit 1
fi
"$GO" version
ln -sf "$GO" "$VENV/bin/go"
