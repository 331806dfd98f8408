#!/usr/bin/env bash
# Faults of the services a cluster node depends on (run under
# scripts/services.sh, which starts PostgreSQL and Redis on loopback): a
# store that fails is answered as a temporary failure, never as a wrong
# password, and suspension checks fail closed; the HTTP port bounds a
# request's headers and time.
#   scripts/services.sh tests/test_cluster_faults.sh MISSIVE MISSIVED
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
M=$(realpath "${1:?usage: test_cluster_faults.sh MISSIVE MISSIVED}")
D=$(realpath "${2:?usage: test_cluster_faults.sh MISSIVE MISSIVED}")
: "${MSV_TEST_POSTGRES:?run under scripts/services.sh}" "${MSV_TEST_REDIS:?}"
psql_do() { psql -q -X -v ON_ERROR_STOP=1 -d "$MSV_TEST_POSTGRES" -c "$1" >/dev/null; }

work=$(mktemp -d)
declare -A pids ports
cleanup() {
    for n in "${!pids[@]}"; do kill -CONT "${pids[$n]}" 2>/dev/null; kill -TERM "${pids[$n]}" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
cd "$work" || exit 1

http_get() { python3 - "http://127.0.0.1:$(awk '/^http/{print $2}' "node-$1/missived.ports")$2" <<'PY'
import sys, urllib.request, urllib.error
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())
except urllib.error.HTTPError as e:
    print(e.read().decode())
PY
}
metric() { http_get "$1" /metrics | awk -v m="missived_$2" '$1 == m {print $2}'; }

cluster_node A && ok || bad "node A started ($(tail -3 node-A.log))"
export MISSIVE_PASSWORD="correct horse battery"
code() { grep -h "handle=$1 code=" node-*.log | tail -1 | sed 's/.*code=//'; }
register() {
    "$M" --data-dir "dev-$1" register "$1@example.org" --server "127.0.0.1:${ports[A]}" >/dev/null 2>&1 &&
        "$M" --data-dir "dev-$1" register "$1@example.org" --code "$(code "$1@example.org")" >/dev/null 2>&1
}
register alice && register bob && ok || bad "registered"
as() { local who=$1; shift; "$M" --data-dir "dev-$who" --account "$who@example.org" "$@"; }
expect 0 "alice writes to bob" -- as alice send bob@example.org --text "before the outage"

# the devices table goes away (as in a database restart or failover): the device's
# authentication cannot be decided, which is a server failure (exit 4), not a wrong key (3)
psql_do "ALTER TABLE devices RENAME TO devices_away;"
expect 4 "a send while storage fails is a server failure" -- as alice send bob@example.org --text "during the outage"
grep -q "try again" err.txt && ok || bad "the refusal does not say to try again: $(cat err.txt)"
psql_do "ALTER TABLE devices_away RENAME TO devices;"
[ "$(metric A store_unavailable_total)" -ge 1 ] && ok || bad "store_unavailable_total: $(metric A store_unavailable_total)"
expect 0 "alice writes again once storage is back" -- as alice send bob@example.org --text "after the outage"
expect 0 "bob reads" -- as bob receive --wait 1
for m in "before the outage" "during the outage" "after the outage"; do
    grep -q "$m" out.txt && ok || bad "bob did not get \"$m\": $(cat out.txt)"
done

# the suspension check cannot be read: the device is not let in (fails closed)
psql_do "ALTER TABLE accounts RENAME COLUMN suspended TO suspended_away;"
expect 4 "a send while the suspension check fails is refused" -- as alice send bob@example.org --text "unchecked"
psql_do "ALTER TABLE accounts RENAME COLUMN suspended_away TO suspended;"

# the HTTP port: one endless header is refused early; a trickling client is cut off at
# [http] request_timeout_s (10 s by default) although every byte restarts evhttp's own timeout
http_port=$(awk '/^http/{print $2}' node-A/missived.ports)
why=$(python3 "$here/http_abuse.py" "$http_port" "${pids[A]}" header) && ok || bad "endless header: $why"
why=$(python3 "$here/http_abuse.py" "$http_port" "${pids[A]}" slow 10) && ok || bad "slow request: $why"
http_get A /health | grep -q '"status":"ok"' && ok || bad "the HTTP port no longer answers"
[ "$(metric A http_requests_refused_total)" -ge 1 ] && ok || bad "http_requests_refused_total: $(metric A http_requests_refused_total)"
[ "$(metric A http_timeouts_total)" -ge 1 ] && ok || bad "http_timeouts_total: $(metric A http_timeouts_total)"

finish
