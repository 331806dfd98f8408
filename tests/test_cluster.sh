#!/usr/bin/env bash
# Three missived nodes on one PostgreSQL database and one Redis (run under
# scripts/services.sh, which starts both on loopback): a sender on node A
# reaches devices connected to nodes B and C at once (Redis wake-ups) and
# offline devices through the shared queue; presence names each device's
# node; a device's newest connection, on any node, closes its older ones, and
# news of an older one come late closes nothing; a device change on one node reaches the others' caches; killing a
# node moves its devices to the others with no message lost; a Redis restart
# loses nothing, not even what was sent while it was down. Attachments go
# through the directory the nodes share. A suspension made through any node's
# configuration cuts the account's devices off on every node at once. Rate limits (wrong
# codes, envelopes, lookups of usernames nobody has) are the cluster's, not each node's.
#   scripts/services.sh tests/test_cluster.sh MISSIVE MISSIVED [MISSIVE_ADMIN [HOLD_CONN]]
set -u
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"
M=$(realpath "${1:?usage: test_cluster.sh MISSIVE MISSIVED}")
D=$(realpath "${2:?usage: test_cluster.sh MISSIVE MISSIVED}")
A=$(realpath "${3:-$(dirname "$D")/missive-admin}")
HOLD=$(realpath "${4:-$(dirname "$D")/tests/hold_conn}")
: "${MSV_TEST_POSTGRES:?run under scripts/services.sh}" "${MSV_TEST_REDIS:?}"
redis_host=${MSV_TEST_REDIS%:*}
redis_port=${MSV_TEST_REDIS##*:}
rcli() { redis-cli -h "$redis_host" -p "$redis_port" "$@"; }

work=$(mktemp -d)
system_python
declare -A pids ports
redis_restarted=0
cleanup() {
    for n in "${!pids[@]}"; do kill -TERM "${pids[$n]}" 2>/dev/null; done
    wait 2>/dev/null
    # the Redis this test started again is its own to stop
    if [ "$redis_restarted" = 1 ]; then rcli SHUTDOWN NOSAVE >/dev/null 2>&1; fi
    rm -rf "$work"
}
trap cleanup EXIT
cd "$work" || exit 1

# node NAME [PORT]: starts (or restarts, on the same port) a node (lib.sh)
node() { cluster_node "$1" "${2:-0}"; }

# the first node makes the shared certificate and log key; the others use them
node A && node B && node C && ok || bad "three nodes started ($(tail -3 node-*.log))"
[ -s shared/server.crt ] && [ -s shared/log.key ] && [ ! -e node-B/server.crt ] && ok || bad "shared certificate and log key"
for n in B C; do
    cmp -s node-A/server.fingerprint "node-$n/server.fingerprint" && ok || bad "node $n shows another certificate"
done
grep -q "store=postgres" node-A.log && ok || bad "node A does not use PostgreSQL"

export MISSIVE_PASSWORD="correct horse battery"
code() { grep -h "handle=$1 code=" node-*.log | tail -1 | sed 's/.*code=//'; }
# register WHO NODE: WHO's device talks to NODE first, the other nodes after it
register() {
    local who=$1 first=$2 list=127.0.0.1:${ports[$2]}
    for n in A B C; do [ "$n" = "$first" ] || list="$list,127.0.0.1:${ports[$n]}"; done
    "$M" --data-dir "dev-$who" register "$who@example.org" --server "$list" >/dev/null 2>&1 &&
        "$M" --data-dir "dev-$who" register "$who@example.org" --code "$(code "$who@example.org")" >/dev/null 2>&1
}
register alice A && register bob B && register carol C && register dave B && ok || bad "registered on three nodes"
as() { local who=$1; shift; "$M" --data-dir "dev-$who" --account "$who@example.org" "$@"; }
# listen WHO SECONDS: WHO's device waits connected, printing to WHO.out; $! is missive itself
listen() { (exec "$M" --data-dir "dev-$1" --account "$1@example.org" receive --wait "$2" >"$1.out" 2>&1) & }
metric() { python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())' "http://127.0.0.1:$(awk '/^http/{print $2}' "node-$1/missived.ports")/metrics" | awk -v m="missived_$2" '$1 == m {print $2}'; }

# bob waits on B and carol on C while alice, on A, writes to both: Redis wakes them
bob_dev=$(device_of bob)
carol_dev=$(device_of carol)
# connected: each one's presence names its node
present() { [ "$(presence_of "$1")" = "$2" ]; }
listen bob 15
bob=$!
listen carol 15
carol=$!
for _ in $(seq 100); do present "$bob_dev" B && present "$carol_dev" C && break; sleep 0.05; done
[ -n "$bob_dev" ] && [ "$(rcli GET "msv:presence:$bob_dev")" = B ] && ok || bad "presence of bob's device ($bob_dev): $(rcli GET "msv:presence:$bob_dev")"
[ -n "$(rcli GET msv:node:A)" ] && [ -n "$(rcli GET msv:node:C)" ] && ok || bad "node heartbeats"
start=$(date +%s%N)
expect 0 "alice sends to bob and carol from node A" -- as alice send bob@example.org carol@example.org --text "hello across nodes"
for _ in $(seq 100); do grep -q "hello across nodes" bob.out && grep -q "hello across nodes" carol.out && break; sleep 0.05; done
took=$((($(date +%s%N) - start) / 1000000))
grep -q "hello across nodes" bob.out && ok || bad "bob on node B did not get it while connected: $(cat bob.out)"
grep -q "hello across nodes" carol.out && ok || bad "carol on node C did not get it while connected: $(cat carol.out)"
echo "delivered across nodes while connected within ${took} ms of the send starting"
[ "$(metric B cluster_wakeups_received_total)" -ge 1 ] && [ "$(metric A cluster_wakeups_sent_total)" -ge 2 ] && ok || bad "wake-ups were not counted"
kill "$bob" "$carol" 2>/dev/null
wait "$bob" "$carol" 2>/dev/null

# a device keeps one connection that takes deliveries: one made on another node closes the
# older one, and news of an older one, come late, closes nothing. PostgreSQL orders the
# connections (connection_order); Redis keeps the newest's order and publishes no
# announcement of an older one; a node closes only what authenticated before the one announced
("$HOLD" dev-bob/bob@example.org 30 "${ports[B]}" deliveries >hold-b.out 2>&1) &
hold_b=$!
for _ in $(seq 100); do grep -q connected hold-b.out && present "$bob_dev" B && break; sleep 0.05; done
order=$(rcli GET "msv:order:$bob_dev")
present "$bob_dev" B && [ "${order:-0}" -gt 1 ] && ok || bad "bob's connection on node B and its order: $(rcli GET "msv:presence:$bob_dev") ${order:-none} $(cat hold-b.out)"
older=$(metric B cluster_older_announcements_total)
rcli PUBLISH "msv:wake:$bob_dev" "g$((order - 1)):A" >/dev/null
for _ in $(seq 50); do [ "$(metric B cluster_older_announcements_total)" -gt "$older" ] && break; sleep 0.1; done
[ "$(metric B cluster_older_announcements_total)" = $((older + 1)) ] && kill -0 "$hold_b" 2>/dev/null && ! grep -q closed hold-b.out &&
    ok || bad "news of an older connection on node A closed node B's: $(cat hold-b.out)"
# node A's announcement comes after Redis learned of a newer connection (the order raised by
# hand stands for it): it changes neither the presence nor node B's connection, and node A
# closes its own, the older
rcli SET "msv:order:$bob_dev" $((order + 1000000000)) >/dev/null
("$HOLD" dev-bob/bob@example.org 30 "${ports[A]}" deliveries >hold-a.out 2>&1) &
hold_a=$!
wait "$hold_a"
rc_a=$?
[ "$rc_a" = 0 ] && present "$bob_dev" B && kill -0 "$hold_b" 2>/dev/null && ! grep -q closed hold-b.out &&
    ok || bad "a late announcement on node A: node A kept its connection ($rc_a $(cat hold-a.out)) or node B's closed ($(rcli GET "msv:presence:$bob_dev") $(cat hold-b.out))"
# a newer one on node C closes node B's
rcli DEL "msv:order:$bob_dev" >/dev/null
("$HOLD" dev-bob/bob@example.org 30 "${ports[C]}" deliveries >hold-c.out 2>&1) &
hold_c=$!
wait "$hold_b"
rc_b=$?
[ "$rc_b" = 0 ] && present "$bob_dev" C && ok || bad "bob's connection on node C did not close node B's: $rc_b $(rcli GET "msv:presence:$bob_dev") $(cat hold-b.out)"
kill "$hold_c" 2>/dev/null
wait "$hold_c" 2>/dev/null

# dave is offline: his message waits in PostgreSQL, and he reads it from node C
expect 0 "alice writes to dave, offline" -- as alice send dave@example.org --text "waiting for you"
expect 0 "dave reads it through node C" -- "$M" --data-dir dev-dave --account dave@example.org receive
grep -q "waiting for you" out.txt && ok || bad "dave's queued message: $(cat out.txt)"

# an attachment uploaded through node A is fetched through node C (shared_dir/blobs)
head -c 200000 /dev/urandom > photo.jpg
expect 0 "alice sends a file through node A" -- as alice send carol@example.org --text "photo" --file photo.jpg
expect 0 "carol fetches it through node C" -- as carol receive
saved=$(sed -n 's/.*\[file: \(.*\) (200000 bytes)\].*/\1/p' out.txt)
[ -n "$saved" ] && cmp -s photo.jpg "$saved" && ok || bad "file across nodes: $(cat out.txt) $(cat err.txt)"
[ -n "$(ls shared/blobs 2>/dev/null)" ] && [ ! -e node-A/blobs ] && ok || bad "attachments not in the shared directory"

# a device change on node A reaches node B's cache: bob's new device is addressed at once
expect 0 "bob links a second device through node A" -- "$M" --data-dir dev-bob2 link bob@example.org --server "127.0.0.1:${ports[A]}"
new=$(sed -n 's/.*this is device \([0-9]*\).*/\1/p' out.txt)
expect 0 "bob approves it through node B" -- as bob devices approve "$new"
expect 0 "carol writes to bob from node C" -- as carol send bob@example.org --text "to both of bob"
expect 0 "bob's second device reads it" -- "$M" --data-dir dev-bob2 --account bob@example.org receive
grep -q "to both of bob" out.txt && ok || bad "bob's new device missed it: $(cat out.txt) $(cat err.txt)"

# the wrong-code allowance of one handle from one address (code_guesses_per_address, 5) is
# the cluster's, not each node's: three wrong codes through node A and two through node B use
# it up, and the next one, through node B, is refused without being checked
# (a device talks to the node it was made with: eve has one made with each; B's own code
# request is refused, A's code being pending)
for n in A B; do
    "$M" --data-dir "dev-eve-$n" register eve@example.org --server "127.0.0.1:${ports[$n]}" >/dev/null 2>&1
done
eve_code=$(code eve@example.org)
[ -n "$eve_code" ] && ok || bad "no code for eve"
wrong=$(printf '%06d' $(((10#${eve_code:-0} + 1) % 1000000)))
guess() { "$M" --data-dir "dev-eve-$1" register eve@example.org --code "$wrong" >out.txt 2>err.txt; }
for n in A A A B B; do guess "$n"; done
[ "$(metric A code_guesses_refused_total)" = 0 ] && [ "$(metric B code_guesses_refused_total)" = 0 ] && ok || bad "a wrong code within the allowance was refused: $(cat err.txt)"
guess B
[ "$(metric B code_guesses_refused_total)" = 1 ] && ok || bad "node B checked a sixth wrong code for eve: refused $(metric B code_guesses_refused_total) ($(cat err.txt))"
[ -n "$(rcli --scan --pattern 'msv:limit:guess-address:*')" ] && ok || bad "no shared bucket in Redis"
[ "$(metric A shared_limits_fallback_total)" = 0 ] && ok || bad "node A fell back to its own buckets with Redis up"

# the envelope rate of one account is the cluster's too: gina's device on node A and her
# second one on node B share send_burst (4 envelopes; a send to carol costs 2, one for carol
# and one for gina's other device), so the third send is refused whichever node takes it
register gina A && ok || bad "gina registered"
expect 0 "gina links a second device through node B" -- "$M" --data-dir dev-gina2 link gina@example.org --server "127.0.0.1:${ports[B]}"
gina2=$(sed -n 's/.*this is device \([0-9]*\).*/\1/p' out.txt)
expect 0 "gina approves it" -- as gina devices approve "$gina2"
# reload N [INI-LINES]: node N's config with INI-LINES added, applied by SIGHUP
reload() {
    local before
    before=$(grep -c "event=reloaded" "node-$1.log")
    sed -i '/^\[relay\]$/,$d' "node-$1.ini"
    [ -z "${2:-}" ] || printf '%s\n' "$2" >>"node-$1.ini"
    kill -HUP "${pids[$1]}"
    for _ in $(seq 50); do [ "$(grep -c "event=reloaded" "node-$1.log")" -gt "$before" ] && break; sleep 0.1; done
}
# the two devices first settle what they sync (the new device's snapshot and its own
# changes), so that the budget below holds messages only
for _ in 1 2; do
    as gina receive --wait 2 >/dev/null 2>&1
    "$M" --data-dir dev-gina2 --account gina@example.org receive --wait 2 >/dev/null 2>&1
done
for n in A B; do reload "$n" "$(printf '[relay]\nsend_rate = 0.01\nsend_burst = 4')"; done
expect 0 "gina sends through node A" -- as gina send carol@example.org --text "gina 1"
expect 0 "gina sends through node B" -- "$M" --data-dir dev-gina2 --account gina@example.org send carol@example.org --text "gina 2"
"$M" --data-dir dev-gina2 --account gina@example.org send carol@example.org --text "gina 3" >out.txt 2>err.txt &&
    bad "gina's third send was taken"
[ "$(metric B sends_rate_limited_total)" -ge 1 ] && ok || bad "node B did not refuse gina's third send: A $(metric A sends_rate_limited_total) B $(metric B sends_rate_limited_total): $(cat err.txt)"

# lookups of usernames nobody has are limited across nodes too (unknown_lookup_burst, 4):
# gina looks up two names through node A and two through node B, and the fifth, through
# node B, is refused; node A refused none (lookups, not sends: a send that fails stays
# queued and is tried again, so each later send would look its name up again)
for n in A B; do
    reload "$n" "$(printf '[relay]\n[directory]\nunknown_lookup_rate = 0.0001\nunknown_lookup_burst = 4')"
done
look_up() {
    if [ "$1" = A ]; then as gina fingerprint "$2"; else "$M" --data-dir dev-gina2 --account gina@example.org fingerprint "$2"; fi >out.txt 2>err.txt
}
for i in 1 2; do
    for n in A B; do
        look_up "$n" "zed.$i$([ "$n" = A ] && echo 1 || echo 2)"
        grep -q "too many lookups" err.txt && bad "guess $i through node $n refused: $(cat err.txt)" || ok
    done
done
look_up B zed.31
grep -q "too many lookups of usernames that no account has" err.txt && ok ||
    bad "the fifth guess was not refused: $(cat out.txt err.txt)"
[ "$(metric B unknown_lookups_refused_total)" = 1 ] && [ "$(metric A unknown_lookups_refused_total)" = 0 ] &&
    ok || bad "refused A $(metric A unknown_lookups_refused_total) B $(metric B unknown_lookups_refused_total)"
for n in A B; do reload "$n"; done

# a paused Redis (connections open, no answers) is given up on within redis_timeout_ms (1 s):
# hank's code comes from node A's own bucket, a moment late, and the fallback is counted
fallbacks=$(metric A shared_limits_fallback_total)
kill -STOP "$MSV_SERVICES_REDIS_PID"
start=$(date +%s%N)
expect 0 "a code for hank while Redis is paused" -- "$M" --data-dir dev-hank register hank@example.org --server "127.0.0.1:${ports[A]}"
took=$((($(date +%s%N) - start) / 1000000))
kill -CONT "$MSV_SERVICES_REDIS_PID"
[ "$took" -lt 5000 ] && [ "$(metric A shared_limits_fallback_total)" -gt "$fallbacks" ] && ok || bad "node A waited ${took} ms for a paused Redis, fallbacks $(metric A shared_limits_fallback_total)"

# node B dies while bob waits on it: bob moves to another node and loses nothing
listen bob 20
bob=$!
for _ in $(seq 100); do present "$bob_dev" B && break; sleep 0.05; done
kill -KILL "${pids[B]}"
wait "${pids[B]}" 2>/dev/null
unset 'pids[B]'
for i in 1 2 3; do
    expect 0 "alice sends $i while node B is down" -- as alice send bob@example.org --text "while B was down $i"
done
wait "$bob" 2>/dev/null
expect 0 "bob reads through another node" -- as bob receive
for i in 1 2 3; do
    grep -q "while B was down $i" out.txt bob.out && ok || bad "message $i lost with node B: $(cat out.txt)"
done
# the nodes write presence from their cluster threads, after the connection's work: on a loaded
# machine a moment after the receive ended; a node still back on its way to Redis after the pause
# above writes none for a connection that came and went meanwhile, so bob connects once more
# (twice at most) if the presence still names the dead node after 10 s
for round in 1 2 3; do
    for _ in $(seq 200); do [ "$(rcli GET "msv:presence:$bob_dev")" != B ] && break; sleep 0.05; done
    [ "$(rcli GET "msv:presence:$bob_dev")" != B ] && break
    [ "$round" -lt 3 ] && as bob receive >/dev/null 2>&1
done
[ "$(rcli GET "msv:presence:$bob_dev")" != B ] && ok || bad "presence still names the dead node"
node B "${ports[B]}" && ok || bad "node B came back"

# Redis restarts: nothing is lost, not even what was sent while it was away, nor a
# suspension made meanwhile (bob, on node B, is cut off once B is back on Redis)
# (carol waits longer than bob: she must still be connected once bob's wait has ended)
listen carol 60
carol=$!
listen bob 25
bob=$!
for _ in $(seq 100); do present "$bob_dev" B && present "$carol_dev" C && break; sleep 0.05; done
[ "$(rcli GET "msv:presence:$bob_dev")" = B ] && ok || bad "bob is not on node B"
redis_conf=$(rcli CONFIG GET dir | tail -1)
rcli SHUTDOWN NOSAVE >/dev/null 2>&1
for _ in $(seq 50); do rcli PING >/dev/null 2>&1 || break; sleep 0.1; done
expect 0 "suspend bob through node C while Redis is down" -- "$A" --config node-C.ini suspend bob@example.org
grep -q "Redis (.*) cannot be reached" err.txt && ok || bad "missive-admin did not say Redis was away: $(cat err.txt)"
expect 0 "alice writes to carol while Redis is down" -- as alice send carol@example.org --text "redis was down"
# limits fall back to each node's own bucket: frank still gets a code, the fallback counted
expect 0 "a code for frank while Redis is down" -- "$M" --data-dir dev-frank register frank@example.org --server "127.0.0.1:${ports[A]}"
[ "$(metric A shared_limits_fallback_total)" -ge 1 ] && grep -q "event=shared_limits_fallback" node-A.log && ok || bad "the fallback to node A's bucket was not counted and logged"
wait_for carol.out "redis was down" && ok || bad "carol missed what was sent while Redis was down"
redis-server --bind "$redis_host" --port "$redis_port" --save '' --appendonly no --dir "$redis_conf" \
    --logfile "$work/redis2.log" --daemonize yes >/dev/null
redis_restarted=1
for _ in $(seq 100); do rcli PING 2>/dev/null | grep -q PONG && break; sleep 0.1; done
for n in A C; do
    rejoined "$n" && ok || bad "node $n did not reconnect to Redis"
done
for _ in $(seq 100); do grep -q "event=suspended_closed.* device=$bob_dev" node-B.log && break; sleep 0.1; done
grep -q "event=suspended_closed.* device=$bob_dev" node-B.log && ok || bad "node B did not cut bob off after Redis came back"
wait "$bob" 2>/dev/null
expect 0 "unsuspend bob" -- "$A" --config node-A.ini unsuspend bob@example.org
expect 0 "alice writes to carol after Redis is back" -- as alice send carol@example.org --text "redis is back"
# up to 30 s: under the sanitizers, two tests at once, carol's output lacked it after 6 s twice
# with her listener still waiting; 30 s tells a slow machine from a wake-up lost (which would
# never come: node C reads queues on wake-ups alone once Redis is back)
wait_for carol.out "redis is back" 300 && ok || {
    bad "carol missed what was sent after Redis came back ($(kill -0 "$carol" 2>/dev/null && echo still waiting || echo her wait had ended)): $(cat carol.out)"
    # what the nodes said of Redis meanwhile: a node away from it publishes no wake-ups
    grep -h "event=redis_\|event=cluster" node-A.log node-C.log | tail -20 >&2
}
kill "$carol" 2>/dev/null
wait "$carol" 2>/dev/null

# missive-admin reads the cluster's store through any node's configuration
expect 0 "missive-admin accounts on PostgreSQL" -- "$A" --config node-C.ini accounts
# (it once failed now and then with "input/output error", not found since: the server's words)
grep -q "input/output" err.txt && { echo "PostgreSQL's log:"; tail -20 "$MSV_SERVICES_DIR/pg.log"; } >&2
[ "$(grep -c '@example.org' out.txt)" = 5 ] && grep -Eq '^bob@example.org +[0-9T:Z-]+ +2 ' out.txt && ok || bad "accounts: $(cat out.txt)"
expect 0 "missive-admin stats on PostgreSQL" -- "$A" --config node-A.ini -o json stats
python3 -c "import json; s=json.load(open('out.txt')); assert s['accounts'] == 5 and s['devices'] == 7 and s['database_bytes'] > 0" && ok || bad "stats: $(cat out.txt)"

# bob's second device holds a connection for requests alone on node C (as a plain command
# does: it takes no deliveries, so node C holds no presence of it), then waits on node A;
# removed through node B, it is told why on node A, and node C closes its connection too
# (node C may still be on its way back to Redis after the pause above: its subscription can
# take its reconnection's backoff, so up to 30 s)
("$HOLD" dev-bob2/bob@example.org 90 "${ports[C]}" >hold.out 2>&1) &
hold=$!
# (node C subscribes before its answer reaches the device, so wait for both)
for _ in $(seq 300); do grep -q connected hold.out && [ "$(rcli PUBSUB NUMSUB "msv:wake:$new" | tail -1)" = 1 ] && break; sleep 0.1; done
grep -q connected hold.out && [ "$(rcli PUBSUB NUMSUB "msv:wake:$new" | tail -1)" = 1 ] && ok || bad "node C does not listen for the removal of a device connected for requests alone: $(cat hold.out)"
("$M" --data-dir dev-bob2 --account bob@example.org receive --wait 20 >bob2.out 2>&1) &
bob2=$!
for _ in $(seq 50); do [ "$(rcli GET "msv:presence:$new")" = A ] && break; sleep 0.1; done
expect 0 "bob removes his second device through node B" -- as bob devices remove "$new"
for _ in $(seq 50); do grep -q "event=removed_closed.* device=$new" node-A.log && break; sleep 0.1; done
grep -q "event=removed_closed.* device=$new" node-A.log && ok || bad "node A closed the removed device without saying why: $(grep "device=$new" node-A.log | tail -2)"
wait "$hold"
hold_rc=$?
[ "$hold_rc" = 0 ] && grep -q "event=removed_closed.* device=$new" node-C.log && ok || bad "node C left the removed device's connection for requests open (status $hold_rc: $(cat hold.out))"
wait "$bob2" 2>/dev/null

# a removal published on Redis before a node listens to the device's channel reaches nobody
# there: node C asks the store once Redis confirms the subscription. Node C starts again with
# a gate that holds its new subscriptions back while the file exists; bob's third device
# connects for requests alone to node C, is removed through node B, and only then is the gate
# opened: node C closes the connection at once, not at a sweep or its end
gated_node C && ok || bad "node C started again ($(tail -3 node-C.log))"
link_approved bob dev-bob3 A
third=$linked
unresponsive=$(grep -c "event=redis_unresponsive" node-C.log)
touch gate
("$HOLD" dev-bob3/bob@example.org 30 "${ports[C]}" >hold3.out 2>&1) &
hold=$!
for _ in $(seq 100); do grep -q connected hold3.out && break; sleep 0.1; done
expect 0 "bob removes his third device through node B" -- as bob devices remove "$third"
sleep 0.5 # what node C would do on hearing of it
# the window: node C did not listen when the removal was published, and the connection is open
[ "$(rcli PUBSUB NUMSUB "msv:wake:$third" | tail -1)" = 0 ] && kill -0 "$hold" 2>/dev/null &&
    grep -q connected hold3.out && ! grep -q closed hold3.out && ok ||
    bad "node C listened to bob's third device before its removal: $(cat hold3.out)"
rm gate
wait "$hold"
hold_rc=$?
[ "$hold_rc" = 0 ] && grep -q "event=removed_closed.* device=$third" node-C.log && ok ||
    bad "node C left the connection of a device removed before it listened open (status $hold_rc: $(cat hold3.out))"
# closed by that check, not by a reconnection to Redis (which checks every connection)
[ "$(grep -c "event=redis_unresponsive" node-C.log)" = "$unresponsive" ] && ok ||
    bad "node C lost Redis meanwhile: $(grep "event=redis_" node-C.log | tail -3)"
# so would a newer connection's announcement: bob's device connects to node C while node C
# does not listen yet, then to node B; once node C listens it reads the device's order and
# closes its connection, the older
touch gate
("$HOLD" dev-bob/bob@example.org 30 "${ports[C]}" deliveries >hold-g.out 2>&1) &
hold_g=$!
for _ in $(seq 100); do grep -q connected hold-g.out && present "$bob_dev" C && break; sleep 0.1; done
("$HOLD" dev-bob/bob@example.org 30 "${ports[B]}" deliveries >hold-h.out 2>&1) &
hold_h=$!
for _ in $(seq 100); do grep -q connected hold-h.out && present "$bob_dev" B && break; sleep 0.1; done
sleep 0.5 # what node C would do on hearing of it
[ "$(rcli PUBSUB NUMSUB "msv:wake:$bob_dev" | tail -1)" = 1 ] && present "$bob_dev" B &&
    kill -0 "$hold_g" 2>/dev/null && ! grep -q closed hold-g.out && ok ||
    bad "node C listened to bob's device before his connection to node B: $(cat hold-g.out hold-h.out)"
rm gate
wait "$hold_g"
rc_g=$?
[ "$rc_g" = 0 ] && kill -0 "$hold_h" 2>/dev/null && ! grep -q closed hold-h.out && ok ||
    bad "node C kept bob's older connection once it listened (status $rc_g: $(cat hold-g.out)), or node B's closed ($(cat hold-h.out))"
kill "$hold_h" 2>/dev/null
wait "$hold_h" 2>/dev/null


# dave waits on node B; suspended through node A's configuration, node B cuts him off at
# once (missive-admin publishes on Redis), with no reload anywhere
("$M" --data-dir dev-dave --account dave@example.org receive --wait 20 >dave.out 2>&1) &
dave=$!
dave_dev=$(device_of dave)
for _ in $(seq 50); do [ "$(rcli GET "msv:presence:$dave_dev")" = B ] && break; sleep 0.1; done
[ "$(rcli GET "msv:presence:$dave_dev")" = B ] && ok || bad "dave is not on node B"
reloads=$(cat node-*.log | grep -c "event=reloaded")
expect 0 "suspend dave through node A's configuration" -- "$A" --config node-A.ini suspend dave@example.org
grep -q "cut off now" out.txt && ok || bad "suspend output: $(cat out.txt)"
for _ in $(seq 50); do grep -q "event=suspended_closed.* device=$dave_dev" node-B.log && break; sleep 0.1; done
grep -q "event=suspended_closed.* device=$dave_dev" node-B.log && ok || bad "node B did not cut dave off: $(grep "device=$dave_dev" node-B.log | tail -2)"
[ "$(cat node-*.log | grep -c "event=reloaded")" = "$reloads" ] && ok || bad "a node was reloaded"
[ "$(metric B suspensions_told_total)" -ge 1 ] && ok || bad "node B did not count the suspension"
wait "$dave"
[ $? -ne 0 ] && ok || bad "dave's receive ended normally"
expect 0 "unsuspend dave" -- "$A" --config node-C.ini unsuspend dave@example.org

# every node stops cleanly
for n in A B C; do
    kill -TERM "${pids[$n]}" && wait "${pids[$n]}" && ok || bad "node $n did not stop cleanly"
    unset "pids[$n]"
done
finish
