# The parts of a whole release for the demo: a PostgreSQL the containers
# reach, an nginx serving the asset root in front of HAProxy, and each
# version's migrations and frontend build. Source after stage.sh;
# stage_cleanup stops what is started here.

# stage_postgres: a throwaway PostgreSQL listening on 127.0.0.1 and on the
# Docker bridge's gateway (so the containers reach it), trust auth for the
# bridge's subnet. Sets DATABASE_URL (from the host) and APP_DATABASE_URL
# (from a container).
stage_postgres() {
    need_postgres
    need runuser util-linux
    local bin dir gateway subnet port
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
    # The bridge's gateway is the host's address on it; older engines leave
    # it out of the network's IPAM config, so ask the interface then.
    gateway=$(docker network inspect bridge -f '{{(index .IPAM.Config 0).Gateway}}') \
        || die "cannot inspect the Docker bridge network"
    if [ -z "$gateway" ]; then
        need ip iproute2
        local interface
        interface=$(docker network inspect bridge -f '{{index .Options "com.docker.network.bridge.name"}}')
        gateway=$(ip -4 -o addr show "${interface:-docker0}" | awk '{print $4}' | cut -d/ -f1 | head -1)
    fi
    [ -n "$gateway" ] || die "cannot find the Docker bridge's gateway address"
    subnet=$(docker network inspect bridge -f '{{(index .IPAM.Config 0).Subnet}}')
    port=$(free_port)
    # Its own folder: the server runs as `postgres` when we are root, and
    # the stage's folder is private.
    dir=$(mktemp -d /tmp/zdd-pg.XXXXXX)
    STAGE_PG_DIR=$dir
    # The server refuses to run as root.
    if is_root; then chown -R postgres "$dir"; pg=(runuser -u postgres --); else pg=(); fi
    "${pg[@]}" "$bin/initdb" -D "$dir/data" -U postgres --auth=trust --no-sync -E UTF8 --locale=C \
        > "$dir/initdb.log" 2>&1 || die "initdb failed: $(cat "$dir/initdb.log")"
    echo "host all all $subnet trust" >> "$dir/data/pg_hba.conf"
    "${pg[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -s \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1,$gateway -c fsync=off -c max_connections=100" start \
        || die "PostgreSQL did not start: $(tail -5 "$dir/server.log")"
    STAGE_PG_STOP=("${pg[@]}" "$bin/pg_ctl" -D "$dir/data" -m immediate -s stop)
    DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
    APP_DATABASE_URL="postgres://postgres@$gateway:$port/postgres"
    export DATABASE_URL
}

# stage_nginx: nginx on a free loopback port serving the asset root
# $STAGE_DIR/www (zdd-assets' snippet) and /api/ through HAProxy; sets
# NGINX_PORT. The root must exist (publish into it first).
stage_nginx() {
    need nginx
    local dir="$STAGE_DIR/nginx" mime
    NGINX_PORT=$(free_port)
    mkdir -p "$dir/tmp"
    # nginx's workers (another user when we are root) walk to the root.
    chmod o+x "$STAGE_DIR"
    "$ZDD_BIN/zdd-assets" nginx --root "$STAGE_DIR/www" > "$dir/zdd-assets.conf" || die "zdd-assets nginx failed"
    mime="types { text/html html; text/css css; application/javascript js; image/svg+xml svg; }"
    [ ! -f /etc/nginx/mime.types ] || mime="include /etc/nginx/mime.types;"
    cat > "$dir/nginx.conf" <<CFG
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log;
events { worker_connections 256; }
http {
    $mime
    access_log off;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    upstream backend { server 127.0.0.1:$PROXY_PORT; keepalive 16; }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location /api/ {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
        include $dir/zdd-assets.conf;
    }
}
CFG
    "$(command -v nginx || echo /usr/sbin/nginx)" -p "$dir" -c "$dir/nginx.conf" || die "nginx did not start: $(cat "$dir/error.log")"
    STAGE_NGINX_PID="$dir/nginx.pid"
}

# release_parts VERSION LAST_MIGRATION: the version's migrations folder
# (examples/app/migrations up to LAST_MIGRATION) and frontend build (the
# example web folder, marked with VERSION); sets MIGRATIONS and WEB.
release_parts() {
    local version=$1 last=$2 file
    MIGRATIONS="$STAGE_DIR/migrations-$version" WEB="$STAGE_DIR/web-$version"
    mkdir -p "$MIGRATIONS" "$WEB"
    for file in "$root_dir"/examples/app/migrations/*.sql; do
        [ "$(basename "$file" | cut -d_ -f1)" -gt "$last" ] || cp "$file" "$MIGRATIONS/"
    done
    for file in "$root_dir"/examples/app/web/*; do
        sed "s/@VERSION@/$version/g" "$file" > "$WEB/$(basename "$file")"
    done
}

# stage_release CONTEXT [zdd-release options]: release the stage's service
# through the staged proxy, its assets into $STAGE_DIR/www.
stage_release() {
    local context=$1; shift
    "$root_dir/scripts/zdd-release" --service "$STAGE_ID" "${PROXY_ARGS[@]}" \
        --runs-dir "$STAGE_DIR/runs" --grace 10s --assets-root "$STAGE_DIR/www" "$@" "$context"
}
