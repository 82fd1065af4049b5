# A stage for the demo and the deploy benchmarks: the tools built, the
# example app's build contexts, and a HAProxy in front of the replicas.
# Source after common.sh. Everything made is labelled $STAGE_LABEL=$STAGE_ID
# (images, and so containers) or lives in $STAGE_DIR, and stage_cleanup
# removes it all.

STAGE_LABEL=zdd.stage
root_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
ZDD_BIN="$root_dir/target/release"
export ZDD_BIN
APP_BIN="$root_dir/target/static/x86_64-unknown-linux-gnu/release/zdd-example-app"

# stage_init NAME: a unique id, a work folder, cleanup on exit.
stage_init() {
    STAGE_ID="$1-$$"
    STAGE_DIR=$(mktemp -d "/tmp/zdd-$1.XXXXXX")
    trap stage_cleanup EXIT
    trap 'exit 130' INT TERM
}

stage_cleanup() {
    local ids
    [ -z "${LOAD_PID:-}" ] || kill "$LOAD_PID" 2>/dev/null
    [ ! -f "$STAGE_DIR/haproxy.pid" ] || kill "$(cat "$STAGE_DIR/haproxy.pid")" 2>/dev/null
    [ -z "${STAGE_CADDY_PID:-}" ] || kill "$STAGE_CADDY_PID" 2>/dev/null
    [ -z "${STAGE_MIGRATE_RESTORE:-}" ] || echo 0 > /proc/sys/net/ipv4/tcp_migrate_req
    [ -z "${STAGE_NGINX_PID:-}" ] || [ ! -f "$STAGE_NGINX_PID" ] || kill "$(cat "$STAGE_NGINX_PID")" 2>/dev/null
    [ -z "${STAGE_PG_STOP:-}" ] || "${STAGE_PG_STOP[@]}" 2>/dev/null
    [ -z "${STAGE_PG_DIR:-}" ] || [ -n "${STAGE_KEEP:-}" ] || rm -rf "$STAGE_PG_DIR"
    ids=$(docker ps -aq --filter "label=$STAGE_LABEL=$STAGE_ID")
    [ -z "$ids" ] || docker rm -f $ids >/dev/null
    ids=$(docker images -q --filter "label=$STAGE_LABEL=$STAGE_ID" | sort -u)
    [ -z "$ids" ] || docker rmi -f $ids >/dev/null
    [ -n "${STAGE_KEEP:-}" ] || rm -rf "$STAGE_DIR"
}

# stage_build [PACKAGE...]: the deploy tools (release), the load generator,
# the static example app, and any other PACKAGE (zdd-assets, zdd-migrate).
stage_build() {
    need_docker
    need jq
    need haproxy
    need curl
    need_static_libc
    # Only the tools a deploy runs, the load generator, and what the caller
    # names: zdd-migrate and zdd-assets (a bundled SQLite, an SQL parser)
    # add minutes to a first run.
    local extra=() package
    for package in "$@"; do extra+=(-p "$package"); done
    say "building the deploy tools and the example app (cargo build --release)"
    (cd "$root_dir" && cargo build --release --quiet \
        -p zdd-build -p zdd-ps -p zdd-scale -p zdd-health -p zdd-route -p zdd-retire -p zdd-run -p zdd-releases -p zdd-watch -p zdd-loadgen "${extra[@]}") \
        || die "cargo build failed"
    (cd "$root_dir" && RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --quiet \
        --target x86_64-unknown-linux-gnu -p zdd-example-app --target-dir target/static) \
        || die "building the static example app failed"
}

# stage_context VERSION [KEY=VALUE...]: a build context of the example app
# answering VERSION, with extra ENV; prints its folder. What every version
# shares comes first and what varies last, in one ENV: the engine's classic
# builder commits a layer per instruction (~0.8 s each on fuse-overlayfs),
# and the shared ones are a cache hit from the second build on.
stage_context() {
    local version=$1; shift
    local dir="$STAGE_DIR/context-$version" env="APP_VERSION=$version" kv
    mkdir -p "$dir"
    cp "$APP_BIN" "$dir/app"
    for kv in "$@"; do env+=" $kv"; done
    {
        echo "FROM scratch"
        echo "COPY app /app"
        echo "EXPOSE 8080"
        echo 'HEALTHCHECK --interval=500ms --timeout=1s --retries=3 --start-period=30s CMD ["/app", "--probe"]'
        echo 'ENTRYPOINT ["/app"]'
        echo "LABEL $STAGE_LABEL=$STAGE_ID"
        echo "ENV $env"
    } > "$dir/Dockerfile"
    echo "$dir"
}

# free_port: a free TCP port on 127.0.0.1.
free_port() {
    local port
    for _ in $(seq 1 50); do
        port=$(( 20000 + RANDOM % 20000 ))
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return; }
    done
    die "no free port found"
}

# haproxy_config GLOBAL_LINES BIND SERVER_LINES: the HAProxy configuration
# the demo and the benchmarks share; only the global section, the frontend's
# address and the backend's servers differ.
haproxy_config() {
    cat <<CFG
global
$1
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    # A connection a replica refuses or closes before answering is tried
    # again on another replica (safe: the request never reached the app).
    retries 3
    option redispatch
    retry-on conn-failure empty-response
frontend fe
    bind $2
    default_backend app
backend app
    balance roundrobin
    option httpchk GET /healthz
$3
CFG
}

# stage_haproxy: HAProxy on a free loopback port in front of an empty
# backend `app`; sets HAPROXY_PORT and HAPROXY_SOCKET, and PROXY_PORT and
# PROXY_ARGS (the zdd-deploy options that route through it).
stage_haproxy() {
    HAPROXY_PORT=$(free_port)
    HAPROXY_SOCKET="$STAGE_DIR/admin.sock"
    haproxy_config "    stats socket $HAPROXY_SOCKET mode 600 level admin
    pidfile $STAGE_DIR/haproxy.pid" "127.0.0.1:$HAPROXY_PORT" "" > "$STAGE_DIR/haproxy.cfg"
    haproxy -c -q -f "$STAGE_DIR/haproxy.cfg" || die "the generated haproxy config is invalid"
    haproxy -D -f "$STAGE_DIR/haproxy.cfg" || die "haproxy did not start"
    PROXY_NAME=HAProxy PROXY_PORT=$HAPROXY_PORT
    PROXY_ARGS=(--haproxy-socket "$HAPROXY_SOCKET" --backend app)
    for _ in $(seq 1 50); do [ -S "$HAPROXY_SOCKET" ] && return; sleep 0.1; done
    die "haproxy's admin socket did not appear"
}

# stage_caddy: Caddy 2 on a free loopback port, its admin API on another,
# with the two reverse_proxy handlers zdd routes through (docs/caddy.md):
# `api` (active health check on /healthz) and `api-draining`, which no
# request reaches. Sets PROXY_PORT and PROXY_ARGS as stage_haproxy does.
stage_caddy() {
    need caddy
    local admin_port
    PROXY_PORT=$(free_port) admin_port=$(free_port)
    jq -n --arg admin "127.0.0.1:$admin_port" --arg listen "127.0.0.1:$PROXY_PORT" '{
      admin: {listen: $admin},
      apps: {http: {servers: {zdd: {listen: [$listen], automatic_https: {disable: true}, routes: [
        {match: [{expression: "false"}], handle: [{handler: "reverse_proxy", "@id": "api-draining"}]},
        {handle: [{handler: "reverse_proxy", "@id": "api", upstreams: [],
          health_checks: {active: {uri: "/healthz", interval: "1s", timeout: "1s"}},
          load_balancing: {selection_policy: {policy: "round_robin"}, try_duration: "5s", try_interval: "50ms"}}]}
      ]}}}}
    }' > "$STAGE_DIR/caddy.json"
    # Caddy 2.6 opens a new listening socket at every config change; with
    # this Linux moves what waits in the old one's queue instead of
    # resetting it (docs/caddy.md). Set for the demo, put back after.
    local migrate=/proc/sys/net/ipv4/tcp_migrate_req
    if [ "$(cat "$migrate" 2>/dev/null)" = 0 ]; then
        if ( echo 1 > "$migrate" ) 2>/dev/null; then
            STAGE_MIGRATE_RESTORE=1
            say "set net.ipv4.tcp_migrate_req=1 for the demo (put back to 0 at the end)"
        else
            say "warning: net.ipv4.tcp_migrate_req is 0 and cannot be set here: a Caddy reload may reset a connection"
        fi
    fi
    # Its autosave and data in the stage folder, not the user's.
    XDG_CONFIG_HOME="$STAGE_DIR/caddy-config" XDG_DATA_HOME="$STAGE_DIR/caddy-data" \
        caddy run --config "$STAGE_DIR/caddy.json" > "$STAGE_DIR/caddy.log" 2>&1 &
    STAGE_CADDY_PID=$!
    PROXY_NAME=Caddy
    PROXY_ARGS=(--caddy-admin "127.0.0.1:$admin_port" --caddy-handler api --caddy-drain-handler api-draining)
    for _ in $(seq 1 50); do
        curl -sf "http://127.0.0.1:$admin_port/id/api" >/dev/null && return
        sleep 0.1
    done
    die "caddy's admin API did not answer; see $STAGE_DIR/caddy.log"
}

# stage_deploy CONTEXT [zdd-deploy options]: deploy the stage's service.
stage_deploy() {
    local context=$1; shift
    "$root_dir/scripts/zdd-deploy" --service "$STAGE_ID" "${PROXY_ARGS[@]}" \
        --runs-dir "$STAGE_DIR/runs" --grace 10s "$@" "$context"
}

# load_start OUTPUT [loadgen options]: load on $LOAD_URL (default: the
# proxy's frontend) until load_stop.
load_start() {
    local output=$1; shift
    rm -f "$STAGE_DIR/stop-load"
    "$ZDD_BIN/zdd-loadgen" --url "${LOAD_URL:-http://127.0.0.1:$PROXY_PORT/}" --until-file "$STAGE_DIR/stop-load" \
        --json "$@" > "$output" 2> "$output.log" &
    LOAD_PID=$!
    sleep 0.5
}

load_stop() {
    touch "$STAGE_DIR/stop-load"
    wait "$LOAD_PID" || true
    LOAD_PID=
}
