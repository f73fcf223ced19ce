#!/usr/bin/env bash
# Starts each image built by images/build.sh with podman, with the least privileges its
# sandbox needs, and runs the conformance suite for its languages against the server
# inside, from outside the container (`gristmill conformance --target`).
#
# Usage: images/test.sh [TARGET...]    (default: every image; `make images-test`)
#
# The privileges (found by trying less, see README "Deployment"):
#   --security-opt systempaths=unconfined   the sandbox mounts a fresh /proc, which
#                                           podman's masked /proc paths forbid
#   --security-opt seccomp=unconfined       the container's seccomp filter refuses
#                                           unshare(CLONE_NEWUSER); jobs keep gristmill's own
#   cgroup subtrees bind-mounted read-write one per controller (memory, pids, cpu, cpuacct):
#                                           the jobs' memory/pids/CPU limits and verdicts
#   --cap-add SYS_ADMIN,NET_ADMIN --device /dev/net/tun   network-on jobs and resolvers:
#                                           their network namespace, nft rules, slirp4netns
# Jobs without the network need none of the last line. (nsjail: SANDBOX=nsjail, podman's
# seccomp filter left on.)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${IMAGES_DIR:-$ROOT/var/images}"
export CONTAINERS_CONF="$ROOT/images/containers.conf"
PREFIX=localhost/gristmill
GRISTMILL="$ROOT/.venv/bin/gristmill"
SANDBOX="${SANDBOX:-process}"
CGROUP_CONTROLLERS=(memory pids cpu cpuacct)
HOST_CA="${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}"

declare -A LANGUAGES=(
    [python]=python [bash]=bash [sql]=sql [typescript]=typescript [go]=go [java]=java
    [csharp]=csharp [all]="bash csharp go java python sql typescript"
)

log() { printf '  %-10s %s\n' "$1" "$2"; }
die() { printf 'images-test: error: %s\n' "$*" >&2; exit 1; }

((EUID == 0)) || die "run as root (podman rootful, cgroup delegation)"
[[ -x "$GRISTMILL" ]] || die "run 'make install' first"

privileges() {
    local cgroup=$1 controller
    printf '%s\n' --security-opt systempaths=unconfined
    # Network-on jobs and dependency resolution: a network namespace made by the server
    # (SYS_ADMIN), its egress rules (nft: NET_ADMIN), slirp4netns's tap device.
    printf '%s\n' --cap-add SYS_ADMIN,NET_ADMIN --device /dev/net/tun
    [[ "$SANDBOX" == nsjail ]] || printf '%s\n' --security-opt seccomp=unconfined
    for controller in "${CGROUP_CONTROLLERS[@]}"; do
        [[ -d "/sys/fs/cgroup/$controller" ]] || continue
        mkdir -p "/sys/fs/cgroup/$controller/$cgroup"
        printf '%s\n' -v "/sys/fs/cgroup/$controller/$cgroup:/sys/fs/cgroup/$controller:rw"
    done
}

remove_cgroups() {
    local cgroup=$1 controller
    for controller in "${CGROUP_CONTROLLERS[@]}"; do
        [[ -d "/sys/fs/cgroup/$controller/$cgroup" ]] || continue
        find "/sys/fs/cgroup/$controller/$cgroup" -depth -type d -exec rmdir {} + 2>/dev/null || true
    done
}

free_port() {
    "$ROOT/.venv/bin/python" -c \
        'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

test_image() {
    local target=$1 name="gristmill-test-$1" cgroup="gristmill-images-$1" port start=$SECONDS
    port="$(free_port)"
    podman image exists "$PREFIX/$target:latest" || die "no image $PREFIX/$target: run 'make images'"
    podman rm -f "$name" >/dev/null 2>&1 || true
    local options java_truststore=()
    mapfile -t options < <(privileges "$cgroup")
    [[ -f /etc/ssl/certs/java/cacerts ]] \
        && java_truststore=(-v /etc/ssl/certs/java/cacerts:/etc/ssl/certs/java/cacerts:ro)
    # The host's CA bundle and Java truststore: dependency resolution where HTTPS goes
    # through a proxy's CA (a deployment that has none needs neither).
    # The host's network, the server on a free loopback port: podman's CNI bridge works
    # too (-p) but its network namespaces under /run/netns are shared with every other
    # user of this host, and that proved flaky here.
    podman run -d --rm --name "$name" --network host -e GRISTMILL_ADDRESS="127.0.0.1:$port" \
        "${options[@]}" \
        -v "$HOST_CA:/etc/ssl/certs/ca-certificates.crt:ro" "${java_truststore[@]}" \
        -e GRISTMILL_SANDBOX_BACKEND="$SANDBOX" -e GRISTMILL_MAX_LIMITS_NETWORK=true \
        "$PREFIX/$target:latest" >/dev/null
    # shellcheck disable=SC2064
    trap "podman rm -f '$name' >/dev/null 2>&1 || true; remove_cgroups '$cgroup'; trap - RETURN" RETURN
    local tries=0
    until "$GRISTMILL" runtimes --target "127.0.0.1:$port" --json >"$OUT/runtimes-$target.json" 2>/dev/null; do
        ((++tries < 60)) || { podman logs "$name" >&2; die "$target: server did not answer"; }
        sleep 1
    done
    local args=() language rc=0
    for language in ${LANGUAGES[$target]}; do args+=(--language "$language"); done
    "$GRISTMILL" conformance --target "127.0.0.1:$port" "${args[@]}" >"$OUT/conformance-$target.txt" 2>&1 \
        || rc=$?
    local summary
    # The report's "passed" row: passed/ran per language.
    summary="$(grep -E '^│ passed ' "$OUT/conformance-$target.txt" | tr -s ' │' ' ' | sed 's/^ *passed *//' || true)"
    printf '%s\t%s\t%s\t%s\n' "$target" "${summary:-no summary}" "$((SECONDS - start))" "$rc" \
        >>"$OUT/conformance.tsv"
    log "$target" "${summary:-see $OUT/conformance-$target.txt} ($((SECONDS - start)) s, exit $rc)"
    return "$rc"
}

targets=("$@")
((${#targets[@]})) || targets=(python bash sql typescript go java csharp all)
printf 'image\tresult\tseconds\texit\n' >"$OUT/conformance.tsv"
failed=()
for target in "${targets[@]}"; do
    test_image "$target" || failed+=("$target")
done
column -t -s $'\t' "$OUT/conformance.tsv"
((${#failed[@]} == 0)) || die "conformance failed in: ${failed[*]}"
