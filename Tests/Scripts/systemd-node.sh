#!/usr/bin/env bash
# A "node" running a real systemd as PID 1, for tests that install twill as a systemd unit.
#
# The node is a Docker container with `--network host` under a private dockerd that runs
# inside a test network namespace, so the container's network IS that namespace.
#
#   systemd-node.sh image                 build (once) and print the cached rootfs tarball
#   systemd-node.sh start DIR NS BINARY   dockerd in netns NS (state in DIR), container
#                                         `twill-node` booted to running/degraded; BINARY is
#                                         mounted at /usr/local/bin/twill, DIR/share at /share
#   systemd-node.sh exec DIR CMD...       docker exec -i twill-node CMD... (stdio and status)
#   systemd-node.sh stop DIR              remove container, stop dockerd, unmount, rm DIR
#
# A failed `start` prints why and removes what it had started. `stop` deletes DIR/share too:
# copy logs out first. BINARY is bind-mounted by inode: after rebuilding it, start a new node.
# Needs: docker.io (dockerd, docker), iproute2/util-linux (nsenter), debootstrap (installed on
# demand), cgroup v1/hybrid as on this machine kind. Root only.
#
# Environment: TWILL_DEBIAN_MIRROR (default http://deb.debian.org/debian),
#              TWILL_NODE_BOOT_TIMEOUT (s, default 90), TWILL_DOCKERD_TIMEOUT (s, default 60),
#              TWILL_NODE_STORAGE_DRIVER (default overlay2 unless DIR is on overlayfs, else vfs).
set -euo pipefail

readonly CACHE_DIR=/var/cache/twill-test
readonly ROOTFS_TAR=$CACHE_DIR/systemd-rootfs-v1.tar # bump the version when the package list changes
readonly IMAGE=twill-systemd
readonly CONTAINER=twill-node
readonly MARKER=.twill-systemd-node # in DIR: `stop` removes only directories that carry it
readonly INCLUDE=systemd,systemd-sysv,dbus,libcurl4,libmnl0,libstdc++6,iproute2,iptables,nftables,iputils-ping,procps,ca-certificates,python3-minimal,kmod
MIRROR=${TWILL_DEBIAN_MIRROR:-http://deb.debian.org/debian}
BOOT_TIMEOUT=${TWILL_NODE_BOOT_TIMEOUT:-90}
DOCKERD_TIMEOUT=${TWILL_DOCKERD_TIMEOUT:-60}
STORAGE_DRIVER=${TWILL_NODE_STORAGE_DRIVER:-} # default: overlay2 where it can work, else vfs
DOCKER=/usr/bin/docker
[ -x "$DOCKER" ] || DOCKER=$(command -v docker || true)

die() { echo "systemd-node.sh: $*" >&2; exit 1; }
usage() { sed -n '7,12p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

# Lazily unmounts every mount at or under $1 (deepest first).
unmount_under() {
    local root=$1 m
    [ -n "$root" ] && [ "$root" != / ] || return 0
    awk '{print $2}' /proc/mounts | while read -r m; do
        m=$(printf '%b' "$m") # /proc/mounts escapes spaces as \040
        case $m in "$root" | "$root"/*) echo "$m" ;; esac
    done | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
}

# ---------------------------------------------------------------- image
cmd_image() {
    [ $# -eq 0 ] || usage
    mkdir -p "$CACHE_DIR"
    exec 9>"$CACHE_DIR/.lock"
    flock 9
    if [ -s "$ROOTFS_TAR" ]; then echo "$ROOTFS_TAR"; return 0; fi
    if ! command -v debootstrap >/dev/null; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >&2 ||
            { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >&2; } ||
            die "image: could not install debootstrap with apt-get"
    fi
    local tmp
    tmp=$(mktemp -d /var/tmp/twill-rootfs.XXXXXX)
    # shellcheck disable=SC2064
    trap "unmount_under '$tmp'; rm -rf --one-file-system '$tmp'" EXIT
    local root=$tmp/root log=$tmp/debootstrap.log
    if ! debootstrap --variant=minbase --include="$INCLUDE" bookworm "$root" "$MIRROR" >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        [ -f "$root/debootstrap/debootstrap.log" ] && tail -n 30 "$root/debootstrap/debootstrap.log" >&2
        die "image: debootstrap of bookworm from $MIRROR failed"
    fi
    unmount_under "$root"
    # Units that only fail or wait for hardware in a container.
    local u
    for u in getty@tty1.service console-getty.service serial-getty@.service systemd-udevd.service \
        systemd-udev-trigger.service systemd-remount-fs.service systemd-firstboot.service \
        systemd-modules-load.service sys-kernel-config.mount sys-kernel-debug.mount \
        sys-kernel-tracing.mount dev-hugepages.mount; do
        ln -sf /dev/null "$root/etc/systemd/system/$u"
    done
    : >"$root/etc/machine-id" # systemd makes a transient one at boot
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/archives/*.deb "$root"/debootstrap
    tar --numeric-owner --xattrs -C "$root" --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' \
        -cf "$tmp/rootfs.tar" . || die "image: tar of the rootfs failed"
    mv "$tmp/rootfs.tar" "$ROOTFS_TAR.partial"
    mv "$ROOTFS_TAR.partial" "$ROOTFS_TAR"
    rm -rf --one-file-system "$tmp"
    trap - EXIT
    exec 9>&-
    echo "$ROOTFS_TAR"
}

# ---------------------------------------------------------------- helpers for DIR
dir_abs() { # DIR as an absolute path (need not exist)
    [ -n "$1" ] || die "DIR is empty"
    realpath -m -- "$1"
}
dock() { "$DOCKER" -H "unix://$DIR/docker.sock" "$@"; }
# A cgroup parent of its own per DIR, so `stop` can remove every cgroup the node made.
cgroup_parent() { echo "twill-node-$(printf '%s' "$DIR" | sha256sum | cut -c1-12)"; }
dockerd_pid() { # prints the pid if our dockerd for DIR is alive
    local pid
    pid=$(cat "$DIR/dockerd.pid" 2>/dev/null) || return 1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    # the pid must still be our dockerd, not a recycled one
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "--data-root $DIR/data" || return 1
    echo "$pid"
}

# ---------------------------------------------------------------- start
cmd_start() {
    [ $# -eq 3 ] || usage
    DIR=$(dir_abs "$1")
    local ns=$2 binary=$3
    [ -e "/run/netns/$ns" ] || die "start: network namespace '$ns' not found (/run/netns/$ns)"
    { [ -f "$binary" ] && [ -x "$binary" ]; } || die "start: binary '$binary' is not an executable file"
    binary=$(realpath -- "$binary")
    [ -x /usr/sbin/dockerd ] || die "start: /usr/sbin/dockerd missing (apt-get install docker.io)"
    [ -n "$DOCKER" ] || die "start: docker client missing (apt-get install docker.io)"
    [ -c /dev/net/tun ] || die "start: /dev/net/tun missing on the host"
    # unix socket paths are limited to 108 bytes; containerd's lives under DIR/exec
    [ ${#DIR} -le 60 ] || die "start: DIR path too long for docker's unix sockets (${#DIR} > 60 chars): $DIR"
    if [ ! -s "$ROOTFS_TAR" ]; then
        cmd_image >/dev/null || die "start: building the rootfs image failed"
    fi
    if dockerd_pid >/dev/null; then die "start: a dockerd for $DIR is already running (stop it first)"; fi

    if [ -e "$DIR" ] && [ ! -e "$DIR/$MARKER" ] && [ -n "$(ls -A "$DIR")" ]; then
        die "start: $DIR exists, is not empty and was not made by start"
    fi
    mkdir -p "$DIR/share"
    : >"$DIR/$MARKER"
    # A failed start takes down what it started (the errors above say why).
    # shellcheck disable=SC2154
    trap 'rc=$?; if [ $rc -ne 0 ]; then cmd_stop "$DIR" || true; fi; exit $rc' EXIT
    if [ -z "$STORAGE_DRIVER" ]; then
        STORAGE_DRIVER=vfs
        if grep -qw overlay /proc/filesystems && [ "$(stat -f -c %T "$DIR")" != overlayfs ]; then STORAGE_DRIVER=overlay2; fi
    fi
    # dockerd: no bridge and no iptables rules, so the test namespace stays as the test made it.
    setsid nsenter --net="/run/netns/$ns" /usr/sbin/dockerd \
        --data-root "$DIR/data" --exec-root "$DIR/exec" --pidfile "$DIR/docker.pid" \
        -H "unix://$DIR/docker.sock" --storage-driver "$STORAGE_DRIVER" \
        --bridge=none --iptables=false --ip-forward=false --ip-masq=false \
        --cgroup-parent "/$(cgroup_parent)" \
        </dev/null >"$DIR/dockerd.log" 2>&1 &
    echo $! >"$DIR/dockerd.pid"

    local deadline=$((SECONDS + DOCKERD_TIMEOUT))
    until dock info --format '{{.ServerVersion}}' >/dev/null 2>&1; do
        if ! dockerd_pid >/dev/null; then
            tail -n 20 "$DIR/dockerd.log" >&2
            die "start: dockerd exited during startup (log: $DIR/dockerd.log)"
        fi
        [ $SECONDS -lt $deadline ] || { tail -n 20 "$DIR/dockerd.log" >&2; die "start: dockerd not ready after ${DOCKERD_TIMEOUT}s (log: $DIR/dockerd.log)"; }
        sleep 0.5
    done

    if ! dock image inspect "$IMAGE" >/dev/null 2>&1; then
        dock import "$ROOTFS_TAR" "$IMAGE" >/dev/null || die "start: docker import of $ROOTFS_TAR failed"
    fi

    local err
    if ! err=$(dock run -d --name "$CONTAINER" --hostname twill-node \
        --network host \
        --cap-add SYS_ADMIN --cap-add NET_ADMIN --cap-add NET_RAW \
        --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
        --security-opt systempaths=unconfined \
        --device /dev/net/tun \
        --cgroupns host \
        --tmpfs /run:mode=755 --tmpfs /run/lock --tmpfs /tmp:mode=1777 \
        -v /sys/fs/cgroup:/sys/fs/cgroup:rw \
        -v /opt/swift:/opt/swift:ro \
        -v "$binary:/usr/local/bin/twill:ro" \
        -v "$DIR/share:/share:rw" \
        -e container=docker \
        --stop-signal SIGRTMIN+3 \
        "$IMAGE" /lib/systemd/systemd 2>&1 >"$DIR/container.id"); then
        echo "$err" >&2
        die "start: docker run of $CONTAINER failed"
    fi

    deadline=$((SECONDS + BOOT_TIMEOUT))
    local state=""
    while :; do
        state=$(dock exec "$CONTAINER" systemctl is-system-running 2>/dev/null) || true
        case $state in running | degraded) break ;; esac
        if [ "$(dock inspect -f '{{.State.Running}}' "$CONTAINER" 2>/dev/null)" != true ]; then
            dock logs --tail 40 "$CONTAINER" >&2 2>&1 || true
            die "start: container $CONTAINER exited while systemd was booting"
        fi
        if [ $SECONDS -ge $deadline ]; then
            dock exec "$CONTAINER" systemctl list-jobs --no-pager >&2 2>&1 || true
            dock logs --tail 40 "$CONTAINER" >&2 2>&1 || true
            die "start: systemd in $CONTAINER not running after ${BOOT_TIMEOUT}s (state: '${state:-no answer}')"
        fi
        sleep 0.5
    done

    local missing
    missing=$(dock exec "$CONTAINER" ldd /usr/local/bin/twill 2>&1 | grep 'not found' || true)
    [ -z "$missing" ] || { echo "$missing" >&2; die "start: $binary lacks shared libraries inside the container (add packages to the rootfs)"; }
    trap - EXIT
}

# ---------------------------------------------------------------- exec
cmd_exec() {
    [ $# -ge 2 ] || usage
    DIR=$(dir_abs "$1"); shift
    dockerd_pid >/dev/null || die "exec: no dockerd running for $DIR (start it first)"
    exec "$DOCKER" -H "unix://$DIR/docker.sock" exec -i "$CONTAINER" "$@"
}

# ---------------------------------------------------------------- stop
cmd_stop() {
    [ $# -eq 1 ] || usage
    DIR=$(dir_abs "$1")
    [ -d "$DIR" ] || return 0
    if [ ! -e "$DIR/$MARKER" ]; then
        rmdir "$DIR" 2>/dev/null || echo "systemd-node.sh: stop: $DIR was not made by 'start'; leaving it alone" >&2
        return 0
    fi
    local pid
    if pid=$(dockerd_pid); then
        timeout 40 "$DOCKER" -H "unix://$DIR/docker.sock" rm -f "$CONTAINER" >/dev/null 2>&1 || true
        kill -TERM "$pid" 2>/dev/null || true
        local _
        for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    # Leftovers after a crash or SIGKILL: the container's processes (all in our cgroup parent),
    # then containerd and its shims (their command lines name DIR/exec).
    local cg pid2 comm
    for cg in /sys/fs/cgroup/"$(cgroup_parent)" /sys/fs/cgroup/*/"$(cgroup_parent)"; do
        [ -d "$cg" ] || continue
        find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u | while read -r pid2; do
            kill -KILL "$pid2" 2>/dev/null || true
        done
    done
    for pid2 in $(pgrep -f -- "$DIR/exec/" || true); do
        read -r comm <"/proc/$pid2/comm" 2>/dev/null || continue
        case $comm in dockerd | containerd | containerd-shim* | runc) kill -KILL "$pid2" 2>/dev/null || true ;; esac
    done
    sleep 0.2
    for cg in /sys/fs/cgroup/"$(cgroup_parent)" /sys/fs/cgroup/*/"$(cgroup_parent)"; do
        if [ -d "$cg" ]; then find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true; fi
    done
    unmount_under "$DIR"
    rm -rf --one-file-system "$DIR" 2>/dev/null || { sleep 1; unmount_under "$DIR"; rm -rf --one-file-system "$DIR" || true; }
}

case ${1:-} in
image) shift; cmd_image "$@" ;;
start) shift; cmd_start "$@" ;;
exec) shift; cmd_exec "$@" ;;
stop) shift; cmd_stop "$@" ;;
*) usage ;;
esac
