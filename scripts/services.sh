#!/usr/bin/env bash
# Runs a command next to a throwaway PostgreSQL and Redis on loopback, for the
# scale-out tests and benchmarks:
#   scripts/services.sh [--durable] COMMAND [ARG...]
# COMMAND sees MSV_TEST_POSTGRES (a libpq conninfo; the database "missive"
# exists and is empty), MSV_TEST_REDIS (HOST:PORT), MSV_TEST_PG_ADMIN (a
# conninfo for creating more databases), MSV_SERVICES_DIR (where the
# services keep their files, with pg.log and redis.log) and
# MSV_SERVICES_PG_PID and MSV_SERVICES_REDIS_PID. Both stop, and the
# directory goes, when the command ends; the exit status is the command's.
# PostgreSQL runs with fsync off unless --durable is given. Under root the
# services run as the postgres user (initdb refuses root).
set -euo pipefail

durable=0
if [ "${1:-}" = "--durable" ]; then
    durable=1
    shift
fi
if [ $# -eq 0 ] || [ "$1" = "--help" ]; then
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
    [ $# -eq 0 ] && exit 2 || exit 0
fi

pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [ -z "$pgbin" ] || [ ! -x "$pgbin/initdb" ]; then
    echo "services: PostgreSQL is not installed (scripts/deps.sh installs it)" >&2
    exit 2
fi
if ! command -v redis-server >/dev/null; then
    echo "services: redis-server is not installed (scripts/deps.sh installs it)" >&2
    exit 2
fi

# the system's python3 where there is one (a version manager's shim costs a shell per call)
py=python3
[ -x /usr/bin/python3 ] && py=/usr/bin/python3
free_port() {
    "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

dir=$(mktemp -d /tmp/msv-services-XXXXXX)
as_owner=()
if [ "$(id -u)" -eq 0 ]; then
    owner=postgres
    id "$owner" >/dev/null 2>&1 || owner=nobody
    chown "$owner" "$dir"
    as_owner=(runuser -u "$owner" --)
fi
pg_pid=
redis_pid=

stop() {
    local rc=$?
    if [ -n "$redis_pid" ]; then
        kill "$redis_pid" 2>/dev/null || true
        wait "$redis_pid" 2>/dev/null || true
    fi
    if [ -n "$pg_pid" ]; then
        "${as_owner[@]}" "$pgbin/pg_ctl" -D "$dir/pg" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
    exit "$rc"
}
trap stop EXIT
trap 'exit 130' INT TERM

"${as_owner[@]}" "$pgbin/initdb" -D "$dir/pg" -A trust -U missive --no-sync -E UTF8 \
    >"$dir/initdb.log" 2>&1 || {
    cat "$dir/initdb.log" >&2
    exit 1
}
opts="-c listen_addresses=127.0.0.1 -k $dir -c max_connections=200"
if [ "$durable" = 0 ]; then
    opts="$opts -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
fi
# a free port is free when asked, not for certain when taken (tests run at once): each server
# gets five tries, each on a port of its own
for try in 1 2 3 4 5; do
    pg_port=$(free_port)
    if "${as_owner[@]}" "$pgbin/pg_ctl" -D "$dir/pg" -l "$dir/pg.log" \
        -o "$opts -p $pg_port" -w -t 60 start >/dev/null; then
        pg_pid=started
        break
    fi
done
if [ -z "$pg_pid" ]; then
    cat "$dir/pg.log" >&2
    exit 1
fi
admin="host=127.0.0.1 port=$pg_port user=missive dbname=postgres"
"$pgbin/psql" -q -X -d "$admin" -c 'CREATE DATABASE missive;' >/dev/null

# Redis: no persistence (the queue lives in PostgreSQL); its own process group is not needed
# (up once it answers as this process: another test's Redis may hold a port just taken)
redis_up=
for try in 1 2 3 4 5; do
    redis_port=$(free_port)
    redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no \
        --logfile "$dir/redis.log" --dir "$dir" >/dev/null 2>&1 &
    redis_pid=$!
    for _ in $(seq 100); do
        kill -0 "$redis_pid" 2>/dev/null || break
        if redis-cli -p "$redis_port" info server 2>/dev/null | grep -q "^process_id:$redis_pid"; then
            redis_up=1
            break
        fi
        sleep 0.05
    done
    [ -n "$redis_up" ] && break
    kill "$redis_pid" 2>/dev/null
    wait "$redis_pid" 2>/dev/null
    redis_pid=
done
if [ -z "$redis_up" ]; then
    echo "services: Redis did not start: $(tail -3 "$dir/redis.log" 2>/dev/null)" >&2
    exit 1
fi

export MSV_TEST_POSTGRES="host=127.0.0.1 port=$pg_port user=missive dbname=missive"
export MSV_TEST_PG_ADMIN="$admin"
export MSV_TEST_REDIS="127.0.0.1:$redis_port"
export MSV_SERVICES_DIR="$dir"
# the benchmarks count the services' CPU time
export MSV_SERVICES_PG_PID=$(head -n 1 "$dir/pg/postmaster.pid")
export MSV_SERVICES_REDIS_PID=$redis_pid
set +e
"$@"
exit $?
