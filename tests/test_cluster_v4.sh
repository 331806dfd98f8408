#!/usr/bin/env bash
# Leaves that name no handle on a cluster (run under scripts/services.sh): two
# missived nodes on one PostgreSQL database, both with [directory]
# leaf_version = 4, append one cut-over entry between them; an account
# registered through one node gets its version-4 leaf kept once in the shared
# log (kt_log.pub), a lookup through the other node opens it, messages flow
# across the nodes, and an auditor of either node finds the log in order.
#   scripts/services.sh tests/test_cluster_v4.sh MISSIVE MISSIVED MISSIVE_AUDIT
set -u
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"
M=$(realpath "${1:?usage: test_cluster_v4.sh MISSIVE MISSIVED MISSIVE_AUDIT}")
D=$(realpath "${2:?usage: test_cluster_v4.sh MISSIVE MISSIVED MISSIVE_AUDIT}")
A=$(realpath "${3:?usage: test_cluster_v4.sh MISSIVE MISSIVED MISSIVE_AUDIT}")
: "${MSV_TEST_POSTGRES:?run under scripts/services.sh}" "${MSV_TEST_REDIS:?}"
work=$(mktemp -d)
declare -A pids ports
cleanup() {
    for n in "${!pids[@]}"; do kill -TERM "${pids[$n]}" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
cd "$work" || exit 1
v4="[directory]
leaf_version = 4"

cluster_node A 0 "$v4" && cluster_node B 0 "$v4" && ok || bad "two nodes started ($(tail -3 node-*.log))"
[ "$(grep -h "kt_cutover" node-*.log | wc -l)" = 1 ] && grep -q "kt_cutover index=0 " node-A.log && ok ||
    bad "one cut-over: $(grep -h kt_cutover node-*.log)"
export MISSIVE_PASSWORD="correct horse battery"
code() { grep -h "handle=$1 code=" node-*.log | tail -1 | sed 's/.*code=//'; }
register() {
    "$M" --data-dir "dev-$1" register "$1@example.org" --server "127.0.0.1:${ports[$2]}" >/dev/null 2>&1 &&
        "$M" --data-dir "dev-$1" register "$1@example.org" --code "$(code "$1@example.org")" >/dev/null 2>&1
}
as() { local who=$1; shift; "$M" --data-dir "dev-$who" --account "$who@example.org" "$@"; }
register alice A && register bob B && ok || bad "registered through both nodes"
expect 0 "alice (node A) sends to bob (node B)" -- as alice send bob@example.org --text "across"
expect 0 "bob receives" -- as bob receive
grep -q "across" out.txt && ok || bad "bob's message: $(cat out.txt err.txt)"
expect 0 "bob answers" -- as bob send alice@example.org --text "back"
expect 0 "alice receives" -- as alice receive
grep -q "back" out.txt && ok || bad "alice's message: $(cat out.txt err.txt)"
rows=$(psql "$MSV_TEST_POSTGRES" -Atc "SELECT idx || ':' || get_byte(leaf, 0) || ':' || COALESCE(get_byte(pub, 0)::text, '') FROM kt_log ORDER BY idx;" | tr '\n' ' ')
[ "$rows" = "0:5: 1:6:4 2:6:4 " ] && ok || bad "the shared log: $rows"
fp=$(cat node-A/server.fingerprint)
for n in A B; do
    expect 0 "an auditor of node $n" -- "$A" --state "audit-$n.state" --server "127.0.0.1:${ports[$n]}" --fingerprint "$fp"
    grep -q "the log checks out: 3 entries" out.txt && ok || bad "the audit of node $n: $(cat out.txt err.txt)"
done
finish
