# Shared by the scripts in scripts/: messages, and making sure what the
# project needs is on the machine (installed from Debian's packages when
# missing, so a fresh machine needs nothing done by hand).

say() { printf '%s: %s\n' "${ZDD_SCRIPT:-zdd}" "$*" >&2; }
die() { say "error: $*"; exit 1; }
# usage: the script's header comment, from line 2 to its `set -…` line, as --help.
usage() { sed -n '2,/^set -/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
# usage_error MESSAGE: exit 2 (nothing was changed), pointing at --help.
usage_error() { say "error: $*"; say "see: ${ZDD_SCRIPT:-$0} --help"; exit 2; }

is_root() { [ "$(id -u)" = 0 ]; }
# as_root COMMAND...: run COMMAND as root (through sudo unless we are root).
as_root() { if is_root; then "$@"; else sudo "$@"; fi; }

# apt-get update at most once per run.
_zdd_apt_updated=
apt_install() {
    command -v apt-get >/dev/null || die "cannot install $* (no apt-get); install it by hand"
    if [ -z "$_zdd_apt_updated" ]; then
        say "apt-get update"
        retry 3 as_root apt-get update -qq >&2 || die "apt-get update failed"
        _zdd_apt_updated=1
    fi
    say "installing $*"
    retry 3 as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2 \
        || die "apt-get install $* failed"
}

# retry N COMMAND...: run COMMAND up to N times, 5 s apart (a package
# mirror that drops one connection should not fail a whole run).
retry() {
    local tries=$1 n=1; shift
    until "$@"; do
        [ "$n" -lt "$tries" ] || return 1
        say "failed (try $n of $tries): $*; retrying in 5 s"
        n=$((n + 1))
        sleep 5
    done
}

# need COMMAND [PACKAGE]: install PACKAGE (default: COMMAND) if COMMAND is missing.
need() {
    command -v "$1" >/dev/null 2>&1 || apt_install "${2:-$1}"
}

# The Docker engine must answer. On a machine where it is installed but not
# running, start it: through the init script when that works, else dockerd
# directly (in containers and micro-VMs the init script can fail, e.g. on
# `ulimit -n`). A daemon that is already starting is given time: on
# fuse-overlayfs the first start can take a while.
need_docker() {
    local log=${ZDD_DOCKERD_LOG:-/var/log/zdd-dockerd.log}
    is_root || log=${ZDD_DOCKERD_LOG:-${TMPDIR:-/tmp}/zdd-dockerd.log}
    need docker docker.io
    docker info >/dev/null 2>&1 && return 0
    case "${DOCKER_HOST:-unix:///var/run/docker.sock}" in
        unix:///var/run/docker.sock | unix:///run/docker.sock) ;;
        *) die "no Docker engine answers at $DOCKER_HOST; start it and retry" ;;
    esac
    need pgrep procps
    if ! pgrep -x dockerd >/dev/null 2>&1; then
        command -v dockerd >/dev/null 2>&1 || apt_install docker.io
        say "the Docker engine is not running; starting it"
        if command -v service >/dev/null 2>&1; then as_root service docker start >/dev/null 2>&1 || true; fi
        sleep 1
        if ! pgrep -x dockerd >/dev/null 2>&1; then
            # A daemon that died leaves its pid file, and dockerd refuses to
            # start over one; no dockerd runs, so it is stale.
            as_root rm -f /var/run/docker.pid
            say "starting dockerd directly (log: $log)"
            (as_root setsid nohup dockerd >>"$log" 2>&1 </dev/null &)
        fi
    else
        say "the Docker engine is running but does not answer yet; waiting"
    fi
    local waited=0
    while [ "$waited" -lt 120 ]; do
        docker info >/dev/null 2>&1 && { say "the Docker engine answers (after ${waited}s)"; return 0; }
        sleep 1
        waited=$((waited + 1))
        [ $((waited % 20)) -ne 0 ] || say "still waiting for the Docker engine (${waited}s)"
    done
    if [ -s "$log" ]; then
        say "last lines of $log:"
        tail -n 20 "$log" >&2
    fi
    die "no Docker engine answers at ${DOCKER_HOST:-unix:///var/run/docker.sock} after ${waited}s; start one (dockerd) and retry"
}

# Static glibc for the example app, built to run in a FROM scratch image.
need_static_libc() {
    [ -e /usr/lib/x86_64-linux-gnu/libc.a ] || apt_install libc6-dev
}

# A PostgreSQL server binary (the tests start their own throwaway server).
need_postgres() {
    compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || apt_install postgresql
}

# zdd_bin_dir: where the zdd tools are: $ZDD_BIN, else the folder of the
# zdd-build on PATH, else this checkout's release build.
zdd_bin_dir() {
    if [ -n "${ZDD_BIN:-}" ]; then echo "$ZDD_BIN"
    elif command -v zdd-build >/dev/null 2>&1; then dirname "$(command -v zdd-build)"
    else echo "$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/target/release"
    fi
}

# zdd_duration_ok TEXT: whether TEXT is a duration the tools take (10, 10s,
# 500ms, 1m30s, 2h, 7d), so a script can refuse a bad one before anything
# changes rather than when the step that uses it runs.
zdd_duration_ok() {
    [[ "$1" =~ ^[0-9]+(\.[0-9]+)?$ ]] || [[ "$1" =~ ^([0-9]+(\.[0-9]+)?(ms|s|m|h|d))+$ ]]
}
