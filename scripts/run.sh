#!/usr/bin/env bash
# The main job: a local missived on its embedded SQLite default, and a client
# that uses it (missive-demo plays a conversation between three devices).
# Everything runs on loopback in a scratch directory and is stopped at the end.
set -euo pipefail
build=$(cd "${1:-build}" && pwd)
work=$(mktemp -d)
pid=
cleanup() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        wait "$pid" || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

echo "Starting missived (data in $work/data, log in $work/missived.log)"
MISSIVED_SERVER_LISTEN_PORT=0 MISSIVED_HTTP_LISTEN_PORT=0 \
    "$build/missived" --data-dir "$work/data" 2>"$work/missived.log" &
pid=$!
for _ in $(seq 100); do
    [ -s "$work/data/missived.ports" ] && break
    kill -0 "$pid" 2>/dev/null || { cat "$work/missived.log"; exit 1; }
    sleep 0.1
done
[ -s "$work/data/missived.ports" ] || { echo "missived did not start" >&2; exit 1; }

"$build/missive-demo" --server-dir "$work/data" --server-log "$work/missived.log"

http=$(awk '/^http/{print $2}' "$work/data/missived.ports")
printf '\nThe server afterwards (GET /health on its local HTTP port):\n   '
/usr/bin/python3 -c "import urllib.request,sys; print(urllib.request.urlopen('http://127.0.0.1:$http/health').read().decode().strip())"
printf 'Its log, one structured line per event (no keys, no message contents):\n'
sed 's/^/   /' "$work/missived.log" | tail -8
