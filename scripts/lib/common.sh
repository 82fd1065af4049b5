# Shared by the scripts in scripts/: messages, and making sure what the
# project needs is on the machine (installed from Debian's packages when
# missing, so a fresh machine needs nothing done by hand).

say() { printf '%s: %s\n' "${ZDD_SCRIPT:-zdd}" "$*" >&2; }
die() { say "error: $*"; exit 1; }

# apt-get update at most once per run.
_zdd_apt_updated=
apt_install() {
    command -v apt-get >/dev/null || die "cannot install $* (no apt-get); install it by hand"
    local sudo=
    [ "$(id -u)" = 0 ] || sudo=sudo
    if [ -z "$_zdd_apt_updated" ]; then
        say "apt-get update"
        $sudo apt-get update -qq >&2 || die "apt-get update failed"
        _zdd_apt_updated=1
    fi
    say "installing $*"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >&2 \
        || die "apt-get install $* failed"
}

# need COMMAND [PACKAGE]: install PACKAGE (default: COMMAND) if COMMAND is missing.
need() {
    command -v "$1" >/dev/null 2>&1 || apt_install "${2:-$1}"
}

# The Docker engine must answer; start it if it is installed but stopped.
need_docker() {
    need docker docker.io
    docker info >/dev/null 2>&1 && return 0
    say "the Docker engine does not answer; trying to start it"
    if command -v service >/dev/null 2>&1; then service docker start >&2 2>&1 || true; fi
    for _ in $(seq 1 30); do
        docker info >/dev/null 2>&1 && return 0
        sleep 1
    done
    die "no Docker engine answers at ${DOCKER_HOST:-unix:///var/run/docker.sock}; start one (dockerd) and retry"
}

# Static glibc for the example app, built to run in a FROM scratch image.
need_static_libc() {
    [ -e /usr/lib/x86_64-linux-gnu/libc.a ] || apt_install libc6-dev
}

# A PostgreSQL server binary (the tests start their own throwaway server).
need_postgres() {
    compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || apt_install postgresql
}
