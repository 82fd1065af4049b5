#!/usr/bin/env bash
# Measures the two figures issue 5 asks for, with the release binary:
#
#   - `zdd-migrate lint` of 1,000 migration files (aim: under 1 s);
#   - `zdd-migrate status` on a database with 1,000 applied migrations
#     (aim: under 100 ms), on SQLite and on a throwaway PostgreSQL.
#
# Each command runs 5 times; the best and the median wall-clock times are
# printed (process start, reading and hashing the files, connecting and
# querying included).
#
#   zdd-migrate/bench.sh              build the release binary, measure
#   N=5000 zdd-migrate/bench.sh       another number of migrations
#   ZDD_MIGRATE_BIN=path bench.sh     measure that binary instead
#   SKIP_POSTGRES=1 bench.sh          SQLite only
#
# PostgreSQL comes from Debian's packages (apt-get install postgresql); the
# server is started as the postgres user in a temporary folder, listening
# on a unix socket only, and stopped at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-1000}
RUNS=5

say() { printf '\033[1mbench-migrate:\033[0m %s\n' "$*" >&2; }

if [ -z "${ZDD_MIGRATE_BIN:-}" ]; then
    say "cargo build --release -p zdd-migrate"
    cargo build --release --quiet -p zdd-migrate
    ZDD_MIGRATE_BIN=$PWD/target/release/zdd-migrate
fi
BIN=$ZDD_MIGRATE_BIN

WORK=$(mktemp -d /tmp/zdd-migrate-bench.XXXXXX)
chmod 755 "$WORK"
PG_PID=
cleanup() {
    if [ -n "$PG_PID" ]; then
        # The postmaster itself (PG_PID is runuser): fast shutdown.
        local postmaster
        postmaster=$(head -1 "$WORK/pg/data/postmaster.pid" 2>/dev/null || true)
        [ -z "$postmaster" ] || kill -INT "$postmaster" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$PG_PID" 2>/dev/null || break; sleep 0.1; done
    fi
    [ -n "${KEEP_BENCH:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

# N migrations a real project might have: tables, columns on existing
# tables, indexes, backfills. generate DIR postgres|sqlite
generate() {
    local dir=$1 dialect=$2 i v
    mkdir -p "$dir"
    for i in $(seq 1 "$N"); do
        v=$(printf '%05d' "$i")
        case $dialect/$((i % 4)) in
        postgres/1)
            printf -- '-- zdd: phase=expand\nCREATE TABLE t%d (\n    id bigserial PRIMARY KEY,\n    name text NOT NULL,\n    note varchar(200),\n    created_at timestamptz NOT NULL DEFAULT now()\n);\nCREATE INDEX t%d_name ON t%d (name);\n' \
                "$i" "$i" "$i" >"$dir/${v}_create_t$i.sql" ;;
        postgres/2)
            printf -- '-- zdd: phase=expand\nALTER TABLE t%d ADD COLUMN score integer;\nALTER TABLE t%d ALTER COLUMN note TYPE varchar(400);\nCOMMENT ON COLUMN t%d.score IS %s;\n' \
                "$((i - 1))" "$((i - 1))" "$((i - 1))" "'points'" >"$dir/${v}_score_t$((i - 1)).sql" ;;
        postgres/0)
            printf -- '-- zdd: phase=expand\n-- zdd: transaction=off\nCREATE INDEX CONCURRENTLY IF NOT EXISTS t%d_score ON t%d (score);\n' \
                "$((i - 3))" "$((i - 3))" >"$dir/${v}_index_t$((i - 3)).sql" ;;
        sqlite/1)
            printf -- '-- zdd: phase=expand\nCREATE TABLE t%d (\n    id INTEGER PRIMARY KEY,\n    name TEXT NOT NULL,\n    note TEXT,\n    created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP\n);\nCREATE INDEX t%d_name ON t%d (name);\n' \
                "$i" "$i" "$i" >"$dir/${v}_create_t$i.sql" ;;
        sqlite/2)
            printf -- '-- zdd: phase=expand\nALTER TABLE t%d ADD COLUMN score INTEGER;\n' \
                "$((i - 1))" >"$dir/${v}_score_t$((i - 1)).sql" ;;
        sqlite/0)
            printf -- '-- zdd: phase=expand\nCREATE INDEX IF NOT EXISTS t%d_score ON t%d (score);\n' \
                "$((i - 3))" "$((i - 3))" >"$dir/${v}_index_t$((i - 3)).sql" ;;
        */3)
            printf -- '-- zdd: phase=data\nUPDATE t%d SET score = 0 WHERE score IS NULL AND id IN (SELECT id FROM t%d ORDER BY id LIMIT 1000);\n' \
                "$((i - 2))" "$((i - 2))" >"$dir/${v}_backfill_t$((i - 2)).sql" ;;
        esac
    done
}
say "writing $N PostgreSQL and $N SQLite migration files"
DIR=$WORK/migrations
generate "$DIR" postgres
generate "$WORK/migrations-sqlite" sqlite

# measure LABEL COMMAND...: runs it RUNS times, prints best and median.
measure() {
    local label=$1
    shift
    local times=()
    for _ in $(seq "$RUNS"); do
        local start end
        start=$(date +%s%N)
        "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; "$@" >/dev/null; exit 1; }
        end=$(date +%s%N)
        times+=($(((end - start) / 1000)))
    done
    mapfile -t sorted < <(printf '%s\n' "${times[@]}" | sort -n)
    printf '%-48s best %7.1f ms   median %7.1f ms\n' "$label" \
        "$(echo "${sorted[0]} / 1000" | bc -l)" "$(echo "${sorted[$((RUNS / 2))]} / 1000" | bc -l)"
}

command -v bc >/dev/null || { say "apt-get install -y bc"; apt-get install -y bc >/dev/null; }

echo "zdd-migrate figures ($N migrations, $RUNS runs each, $(nproc) cores)"
measure "lint of $N files" "$BIN" lint -q --dir "$DIR"

# SQLite: apply everything once, then status.
measure "lint of $N files (SQLite dialect)" "$BIN" lint -q --dialect sqlite --dir "$WORK/migrations-sqlite"
"$BIN" up -q --dir "$WORK/migrations-sqlite" --database "sqlite:$WORK/app.db" >/dev/null
measure "status, SQLite, $N applied" "$BIN" status -q --dir "$WORK/migrations-sqlite" --database "sqlite:$WORK/app.db"

if [ -z "${SKIP_POSTGRES:-}" ]; then
    PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
    [ -n "$PGBIN" ] || { say "PostgreSQL is not installed: apt-get install -y postgresql (or SKIP_POSTGRES=1)"; exit 1; }
    mkdir -p "$WORK/pg"
    chown postgres "$WORK/pg"
    runuser -u postgres -- "$PGBIN/initdb" -D "$WORK/pg/data" -U postgres --auth=trust -E UTF8 --locale=C --no-sync --no-instructions >/dev/null
    runuser -u postgres -- "$PGBIN/postgres" -D "$WORK/pg/data" -k "$WORK/pg" -p 5432 \
        -c listen_addresses= -c fsync=off -c synchronous_commit=off >"$WORK/pg.log" 2>&1 &
    PG_PID=$!
    for _ in $(seq 100); do
        runuser -u postgres -- "$PGBIN/pg_isready" -q -h "$WORK/pg" -p 5432 && break
        sleep 0.1
    done
    URL="postgres://postgres@$(echo "$WORK/pg" | sed 's|/|%2F|g'):5432/postgres"
    "$BIN" up -q --dir "$DIR" --database "$URL" >/dev/null
    measure "status, PostgreSQL, $N applied" "$BIN" status -q --dir "$DIR" --database "$URL"
fi
