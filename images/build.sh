#!/usr/bin/env bash
# Builds gristmill's container images without a Docker engine: a Debian base from
# `debootstrap --variant=minbase bookworm`, then each target of images/Containerfile with
# `buildah bud --isolation chroot`, each exported as an OCI archive; prints each image's
# size and build time (also written to var/images/report.tsv).
#
# Usage: images/build.sh [TARGET...]    (default: every target; `make images`)
#        TARGETS: service python bash sql typescript go java csharp all
# Needs root (debootstrap, buildah's chroot isolation); idempotent: the base is made once.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${IMAGES_DIR:-$ROOT/var/images}"
export CONTAINERS_CONF="$ROOT/images/containers.conf"
BASE=localhost/gristmill/debian:bookworm
PREFIX=localhost/gristmill
ALL_TARGETS=(python bash sql typescript go java csharp all)
VENV="${VENV:-$ROOT/.venv}"
HOST_CA="${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}"
TEMURIN=/usr/lib/jvm/temurin-25-jdk-amd64

log() { printf '  %-8s %s\n' "$1" "$2"; }
die() { printf 'images: error: %s\n' "$*" >&2; exit 1; }

((EUID == 0)) || die "run as root (debootstrap and buildah need it)"
"$ROOT/scripts/install-system.sh" apt debootstrap buildah podman skopeo runc uidmap
[[ -x "$VENV/bin/uv" ]] || die "no uv in $VENV: run 'make install' first"
mkdir -p "$OUT"

# The base: Debian's packages only, without apt's downloads and caches (every image would
# carry them).
base() {
    if podman image exists "$BASE"; then
        log base "ok ($BASE)"
        return
    fi
    local rootfs="$OUT/rootfs-bookworm" start=$SECONDS
    if [[ ! -x "$rootfs/usr/bin/apt-get" ]]; then
        rm -rf "$rootfs"
        log base "debootstrap --variant=minbase bookworm"
        debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian \
            >"$OUT/debootstrap.log" 2>&1 || die "debootstrap failed: see $OUT/debootstrap.log"
    fi
    rm -f "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin
    rm -rf "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | podman import -q - "$BASE" >/dev/null
    log base "ok ($BASE, $((SECONDS - start)) s)"
}

# A host toolchain's folder into the context, again only when its version changed.
copy_tool() {
    local source=$1 name=$2 version=$3 dir="$OUT/context/tools"
    [[ -d "$source" ]] || die "$source is missing (the machine image provides it)"
    if [[ "$(cat "$dir/$name.version" 2>/dev/null)" != "$version" ]]; then
        rm -rf "${dir:?}/$name" && cp -a "$source" "$dir/$name"
        printf '%s\n' "$version" >"$dir/$name.version"
    fi
}

# The build context: the wheel built from this checkout, and the toolchains Debian lacks.
context() {
    local dir="$OUT/context"
    rm -rf "$dir/dist" && mkdir -p "$dir/dist" "$dir/tools"
    "$VENV/bin/uv" build --quiet --wheel --out-dir "$dir/dist" "$ROOT"
    cp -f /usr/local/lib/gristmill/bun-1.4.5/bun "$dir/tools/bun"
    # nsjail's pid 1 and the supervisor, as `make install` compiled them (static: they run
    # on the image's libc too).
    cp -f "$VENV/bin/gristmill-nsjail-init" "$VENV/bin/gristmill-nsjail-supervisor" "$dir/tools/"
    copy_tool /usr/local/go go "$(/usr/local/go/bin/go version)"
    copy_tool "$TEMURIN" temurin-25 "$("$TEMURIN/bin/java" -version 2>&1 | head -n 1)"
    printf '%s\n' "$dir"
}

# buildah's working containers made since `before` (a list of ids): a multi-stage build
# with --layers leaves some (e.g. `bash-working-container`), each holding an overlay
# mount and its layer on disk, even with --force-rm.
remove_new_containers() {
    local before=$1 id
    for id in $(buildah containers --quiet); do
        grep -qx "$id" <<<"$before" || buildah rm "$id" >/dev/null
    done
}

build() {
    local target=$1 dir=$2 start=$SECONDS before
    before="$(buildah containers --quiet)"
    log "$target" "buildah bud --target $target"
    buildah bud --quiet --isolation chroot --layers --force-rm --target "$target" \
        -v "$HOST_CA:/run/host-ca.crt:ro" --build-arg PIP_CERT=/run/host-ca.crt \
        -f "$ROOT/images/Containerfile" -t "$PREFIX/$target:latest" "$dir" \
        >"$OUT/build-$target.log" 2>&1 || {
        remove_new_containers "$before"
        tail -n 30 "$OUT/build-$target.log" >&2
        die "$target failed"
    }
    remove_new_containers "$before"
    local seconds=$((SECONDS - start))
    rm -f "$OUT/gristmill-$target.oci.tar"
    skopeo copy -q "containers-storage:$PREFIX/$target:latest" \
        "oci-archive:$OUT/gristmill-$target.oci.tar:gristmill/$target:latest"
    local size
    size="$(podman image inspect --format '{{.Size}}' "$PREFIX/$target:latest")"
    printf '%s\t%s\t%s\t%s\n' "$target" "$((size / 1000000))" "$seconds" \
        "$(du -m "$OUT/gristmill-$target.oci.tar" | cut -f1)" >>"$OUT/report.tsv"
    log "$target" "ok ($((size / 1000000)) MB, built in ${seconds} s, $OUT/gristmill-$target.oci.tar)"
}

targets=("$@")
((${#targets[@]})) || targets=("${ALL_TARGETS[@]}")
base
dir="$(context)"
printf 'target\tsize_mb\tbuild_s\toci_archive_mb\n' >"$OUT/report.tsv"
for target in "${targets[@]}"; do
    build "$target" "$dir"
done
column -t "$OUT/report.tsv"
