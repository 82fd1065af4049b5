# HAProxy inside a Docker network, for scripts/bench-deploy: an image built
# FROM scratch out of the host's /usr/sbin/haproxy (Debian's) and the
# libraries ldd lists for it, one config style for every strategy, and a
# few Runtime API helpers over its TCP admin socket. Source after stage.sh
# (uses STAGE_DIR, STAGE_ID, STAGE_LABEL).

# The haproxy image (labelled for stage_cleanup); sets BENCH_HAPROXY_IMAGE.
bench_haproxy_image() {
    local ctx="$STAGE_DIR/haproxy-image" lib
    local haproxy_bin
    haproxy_bin=$(command -v haproxy || echo /usr/sbin/haproxy)
    haproxy_bin=$(readlink -f "$haproxy_bin")
    mkdir -p "$ctx/rootfs"
    # Every library ldd resolves, plus the dynamic loader (the line without
    # "=>"), copied with their paths (symlinks followed).
    for lib in "$haproxy_bin" $(ldd "$haproxy_bin" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $2 != "=>" && $1 ~ /^\// {print $1}'); do
        cp -L --parents "$lib" "$ctx/rootfs/" || die "cannot copy $lib into the haproxy image context"
    done
    # The image runs /usr/sbin/haproxy whatever the host's path was.
    if [ "$haproxy_bin" != /usr/sbin/haproxy ]; then
        mkdir -p "$ctx/rootfs/usr/sbin"
        cp "$haproxy_bin" "$ctx/rootfs/usr/sbin/haproxy"
    fi
    cat > "$ctx/Dockerfile" <<DOCKERFILE
FROM scratch
COPY rootfs/ /
LABEL $STAGE_LABEL=$STAGE_ID
ENTRYPOINT ["/usr/sbin/haproxy", "-db", "-f", "/etc/haproxy/haproxy.cfg"]
DOCKERFILE
    BENCH_HAPROXY_IMAGE="zdd-bench-haproxy:$STAGE_ID"
    docker build -q -t "$BENCH_HAPROXY_IMAGE" "$ctx" > /dev/null 2> "$ctx/build.log" \
        || { cat "$ctx/build.log" >&2; die "building the haproxy image failed"; }
}

# bench_haproxy_cfg FILE BACKEND_LINES: the config every strategy uses; only
# the servers of `backend app` differ. Listens on :8080 (traffic) and :9999
# (Runtime API, level admin) inside the container.
bench_haproxy_cfg() {
    local file=$1 servers=$2
    # Docker DNS, for the naive strategy's server-template.
    haproxy_config "    maxconn 4096
    stats socket ipv4@0.0.0.0:9999 level admin
resolvers docker
    nameserver dns 127.0.0.11:53
    hold valid 1s" ":8080" "$servers" > "$file"
}

# hap_cmd PORT COMMAND: one Runtime API command over 127.0.0.1:PORT; the answer on stdout.
hap_cmd() {
    local port=$1 fd; shift
    exec {fd}<>"/dev/tcp/127.0.0.1/$port" || return 1
    printf '%s\n' "$*" >&"$fd"
    timeout 5 cat <&"$fd"
    exec {fd}<&-
}

# hap_servers PORT: one line per server of backend app: "NAME ADDR STATUS".
hap_servers() {
    hap_cmd "$1" "show stat app 4 -1" 2>/dev/null | awk -F, '
        NR == 1 && /^# / { sub(/^# /, ""); for (i = 1; i <= NF; i++) col[$i] = i; next }
        col["svname"] && $1 == "app" && $col["svname"] != "BACKEND" {
            addr = col["addr"] ? $col["addr"] : "-"; if (addr == "") addr = "-"
            print $col["svname"], addr, $col["status"]
        }'
}

# hap_wait_api PORT TIMEOUT_S: wait until the Runtime API answers.
hap_wait_api() {
    local port=$1 deadline=$(( SECONDS + $2 ))
    while [ $SECONDS -lt $deadline ]; do
        hap_cmd "$port" "show info" 2>/dev/null | grep -q '^Name: HAProxy' && return 0
        sleep 0.2
    done
    return 1
}

# hap_backend_counters PORT: backend app's connection counters as JSON:
# {"new": connections opened to servers, "reused": requests sent on a reused one}.
hap_backend_counters() {
    hap_cmd "$1" "show stat app 2 -1" 2>/dev/null | awk -F, '
        NR == 1 && /^# / { sub(/^# /, ""); for (i = 1; i <= NF; i++) col[$i] = i; next }
        $1 == "app" && $2 == "BACKEND" && col["connect"] {
            printf "{\"new\":%d,\"reused\":%d}\n", $col["connect"], $col["reuse"]; found = 1 }
        END { if (!found) print "null" }'
}
