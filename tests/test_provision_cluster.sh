#!/usr/bin/env bash
# Linking a device by QR code across a cluster's nodes (run under
# scripts/services.sh): the new device holds its provisioning address on node A
# while the account's device, connected to node B, reads the code, links and
# approves it and leaves the message; node A hands it over. A code used twice,
# or whose device went away, is refused on node B too; the address's keys in
# Redis expire with it.
#   scripts/services.sh tests/test_provision_cluster.sh MISSIVE MISSIVED
set -u
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"
M=$(realpath "${1:?usage: test_provision_cluster.sh MISSIVE MISSIVED}")
D=$(realpath "${2:?usage: test_provision_cluster.sh MISSIVE MISSIVED}")
: "${MSV_TEST_POSTGRES:?run under scripts/services.sh}" "${MSV_TEST_REDIS:?}"
rcli() { redis-cli -h "${MSV_TEST_REDIS%:*}" -p "${MSV_TEST_REDIS##*:}" "$@"; }

work=$(mktemp -d)
declare -A pids ports
waiter=
cleanup() {
    [ -n "$waiter" ] && kill -TERM "$waiter" 2>/dev/null
    for n in "${!pids[@]}"; do kill -TERM "${pids[$n]}" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
cd "$work" || exit 1

cluster_node A && cluster_node B && ok || bad "two nodes started ($(tail -3 node-*.log))"
export MISSIVE_PASSWORD="correct horse battery"
code_of() { grep -h "handle=$1 code=" node-*.log | tail -1 | sed 's/.*code=//'; }
# alice's phone talks to node B only
"$M" --data-dir dev-alice register alice@example.org --server "127.0.0.1:${ports[B]}" >/dev/null 2>&1 &&
    "$M" --data-dir dev-alice register alice@example.org --code "$(code_of alice@example.org)" >/dev/null 2>&1 &&
    ok || bad "alice registered on node B"
unset MISSIVE_PASSWORD
as alice contacts add Friend alice@example.org >/dev/null || bad "a contact"
# the new devices talk to node A only
server=127.0.0.1:${ports[A]}

link_wait alice laptop || bad "the laptop's code on node A: $(cat laptop.out laptop.err)"
addr=${code#missive-link:1:}
addr=${addr%%:*}
ttl=$(rcli PTTL "msv:prov:$addr:dev")
[ "$ttl" -gt 0 ] && [ "$ttl" -le 600000 ] && ok || bad "the address is in Redis, expiring with it: $ttl"
expect 0 "alice's phone on node B adds the laptop" -- as alice devices add "$code" --yes --no-history
link_done && ok || bad "the laptop is linked across nodes: $(cat laptop.out laptop.err)"
grep -q "linked: this is device" laptop.out && ok || bad "linked: $(cat laptop.out)"
expect 0 "the laptop's contacts" -- "$M" --data-dir laptop --account alice@example.org contacts
grep -q "Friend" out.txt && ok || bad "the account's state came: $(cat out.txt)"
[ "$(rcli EXISTS "msv:prov:$addr:msg")" = 0 ] && ok || bad "the message left Redis when it was taken"
expect 1 "the same code again on node B" -- as alice devices add "$code" --yes --no-history
grep -q "linked already\|no device waits" err.txt && ok || bad "a code used twice: $(cat err.txt)"

# a device that went away cannot be linked from another node
link_wait alice desk || bad "the desk's code: $(cat desk.out desk.err)"
addr=${code#missive-link:1:}
addr=${addr%%:*}
kill -KILL "$waiter"; wait "$waiter" 2>/dev/null; waiter=
for _ in $(seq 50); do [ "$(rcli EXISTS "msv:prov:$addr:dev")" = 0 ] && break; sleep 0.1; done
[ "$(rcli EXISTS "msv:prov:$addr:dev")" = 0 ] && ok || bad "the gone device's address left Redis"
expect 1 "its code on node B" -- as alice devices add "$code" --yes --no-history
grep -q "no device waits at that address" err.txt && ok || bad "a gone device: $(cat err.txt)"
expect 0 "alice's devices" -- as alice devices
[ "$(grep -cE "^ *[0-9]+ " out.txt)" -eq 2 ] && ok || bad "the phone and the laptop only: $(cat out.txt)"

finish
