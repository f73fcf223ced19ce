#!/usr/bin/env bash
# TypeScript's toolchain: Bun, pinned, where every sandbox can run it.
#
# Jobs run `bun` inside the sandbox, which mounts /usr read-only but not this work
# tree (nor /root, 0700), so the binary is copied to a versioned path under
# /usr/local/lib/gristmill (readable by the jail's uid 65534). It comes from the npm
# registry: the `bun` package's optional dependency @oven/bun-linux-<arch> carries
# the binary, so nothing is downloaded from anywhere else and no install script runs.
# scripts/install-system.sh (section 3) may already have fetched the same version
# into $TOOLS_DIR/bun; that copy is reused when present.
#
# Run by `make install` (scripts/install-system.sh) with ROOT, VENV and TOOLS_DIR set;
# idempotent: a second run only checks the version.
set -euo pipefail

BUN_VERSION="1.4.5"
TARGET_DIR="/usr/local/lib/gristmill/bun-$BUN_VERSION"
TARGET="$TARGET_DIR/bun"
TOOLS_DIR="${TOOLS_DIR:-${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}/.tools}"

log() { printf '  %-8s %s\n' typescript "$1"; }
die() { printf 'typescript install: error: %s\n' "$*" >&2; exit 1; }

# The resolver's program: the service finds `bun` beside its interpreter ($VENV/bin) and
# copies it into the resolve sandbox. scripts/install-system.sh may have linked one there.
link_resolver() {
    if [[ -n "${VENV:-}" && -d "$VENV/bin" && ! -e "$VENV/bin/bun" ]]; then
        ln -sfn "$TARGET" "$VENV/bin/bun"
    fi
}

if [[ -x "$TARGET" && "$("$TARGET" --version 2>/dev/null)" == "$BUN_VERSION" ]]; then
    link_resolver
    log "ok (bun $BUN_VERSION, $TARGET)"
    exit 0
fi

case "$(uname -m)" in
    x86_64) arch=x64 ;;
    aarch64) arch=aarch64 ;;
    *) die "unsupported machine $(uname -m)" ;;
esac
source_binary="$TOOLS_DIR/bun/node_modules/@oven/bun-linux-$arch/bin/bun"
if ! [[ -x "$source_binary" && "$("$source_binary" --version 2>/dev/null)" == "$BUN_VERSION" ]]; then
    command -v npm >/dev/null || die "npm not found (needed to fetch bun $BUN_VERSION)"
    staging="$TOOLS_DIR/typescript-bun"
    mkdir -p "$staging"
    [[ -f "$TOOLS_DIR/.gitignore" ]] || printf '*\n' >"$TOOLS_DIR/.gitignore"
    log "npm install bun@$BUN_VERSION"
    printf '{"name": "gristmill-typescript-bun", "private": true, "dependencies": {"bun": "%s"}}\n' \
        "$BUN_VERSION" >"$staging/package.json"
    (cd "$staging" && npm install --no-audit --no-fund --ignore-scripts --loglevel=error \
        --no-update-notifier </dev/null >/dev/null) || die "npm install bun@$BUN_VERSION failed"
    source_binary="$staging/node_modules/@oven/bun-linux-$arch/bin/bun"
    [[ -x "$source_binary" ]] || die "no bun binary at $source_binary"
fi

mkdir -p "$TARGET_DIR"
chmod 0755 /usr/local/lib/gristmill "$TARGET_DIR"
cp "$source_binary" "$TARGET.new"
chmod 0755 "$TARGET.new"
mv -f "$TARGET.new" "$TARGET"
got="$("$TARGET" --version 2>&1)" || die "bun does not run: $got"
[[ "$got" == "$BUN_VERSION" ]] || die "bun reports $got, expected $BUN_VERSION"
link_resolver
log "ok (bun $BUN_VERSION, $TARGET)"
