#!/usr/bin/env bash
# Faults of the services a cluster node depends on (run under
# scripts/services.sh, which starts PostgreSQL and Redis on loopback): a
# store that fails is answered as a temporary failure, never as a wrong
# password, and suspension checks fail closed; PostgreSQL connections the
# server closed are made again before use, a paused PostgreSQL holds a node
# only for [store] timeout_ms, and a failed queue read is tried again; a
# Redis that stops answering is given up on within a bound and the queues
# polled; the HTTP port bounds a request's headers and time.
#   scripts/services.sh tests/test_cluster_faults.sh MISSIVE MISSIVED [HOLD_CONN]
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
M=$(realpath "${1:?usage: test_cluster_faults.sh MISSIVE MISSIVED}")
D=$(realpath "${2:?usage: test_cluster_faults.sh MISSIVE MISSIVED}")
HOLD=$(realpath "${3:-$(dirname "$D")/tests/hold_conn}")
: "${MSV_TEST_POSTGRES:?run under scripts/services.sh}" "${MSV_TEST_REDIS:?}"
psql_do() { psql -q -X -v ON_ERROR_STOP=1 -d "$MSV_TEST_POSTGRES" -c "$1" >/dev/null; }

work=$(mktemp -d)
system_python
declare -A pids ports
pg_pids() { echo "$MSV_SERVICES_PG_PID" $(ps -o pid= --ppid "$MSV_SERVICES_PG_PID"); }
cleanup() {
    kill -CONT "$MSV_SERVICES_REDIS_PID" $(pg_pids) 2>/dev/null
    rm -f "$work/relay.cut"
    [ -n "${relay:-}" ] && kill "$relay" 2>/dev/null
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

cluster_node A 0 "$(printf '[store]\ntimeout_ms = 1500')" && ok || bad "node A started ($(tail -3 node-A.log))"
export MISSIVE_PASSWORD="correct horse battery"
code() { grep -h "handle=$1 code=" node-*.log | tail -1 | sed 's/.*code=//'; }
# register WHO [NODE]: WHO's device talks to NODE (A)
register() {
    "$M" --data-dir "dev-$1" register "$1@example.org" --server "127.0.0.1:${ports[${2:-A}]}" >/dev/null 2>&1 &&
        "$M" --data-dir "dev-$1" register "$1@example.org" --code "$(code "$1@example.org")" >/dev/null 2>&1
}
register alice && register bob && ok || bad "registered"
as() { local who=$1; shift; "$M" --data-dir "dev-$who" --account "$who@example.org" "$@"; }
expect 0 "alice writes to bob" -- as alice send bob@example.org --text "before the outage"

# the devices table goes away (as in a database restart or failover): the device's
# authentication cannot be decided, which is the server's storage failing (exit 5), not a
# wrong key (3)
psql_do "ALTER TABLE devices RENAME TO devices_away;"
expect 5 "a send while storage fails is a server failure" -- as alice send bob@example.org --text "during the outage"
grep -q "try again" err.txt && ok || bad "the refusal does not say to try again: $(cat err.txt)"
psql_do "ALTER TABLE devices_away RENAME TO devices;"
[ "$(metric A store_unavailable_total)" -ge 1 ] && ok || bad "store_unavailable_total: $(metric A store_unavailable_total)"
# the node's log names the cause: PostgreSQL's SQLSTATE and words, not a bare storage failure
grep -q 'event=database_error cause="other" sqlstate=42P01 message="ERROR:  relation .devices. does not exist' node-A.log &&
    ok || bad "no database_error with its SQLSTATE in the log: $(grep database_error node-A.log | tail -2)"
[ "$(metric A database_faults_other_total)" -ge 1 ] && ok || bad "database_faults_other_total: $(metric A database_faults_other_total)"
expect 0 "alice writes again once storage is back" -- as alice send bob@example.org --text "after the outage"
expect 0 "bob reads" -- as bob receive
for m in "before the outage" "during the outage" "after the outage"; do
    grep -q "$m" out.txt && ok || bad "bob did not get \"$m\": $(cat out.txt)"
done

# linking a device when the account cannot be read is a server failure too, not a wrong password
psql_do "ALTER TABLE accounts RENAME TO accounts_away;"
expect 5 "linking while storage fails is a server failure" -- "$M" --data-dir dev-bob2 link bob@example.org --server "127.0.0.1:${ports[A]}"
psql_do "ALTER TABLE accounts_away RENAME TO accounts;"

# the suspension check cannot be read: the device is not let in (fails closed)
psql_do "ALTER TABLE accounts RENAME COLUMN suspended TO suspended_away;"
expect 5 "a send while the suspension check fails is refused" -- as alice send bob@example.org --text "unchecked"
psql_do "ALTER TABLE accounts RENAME COLUMN suspended_away TO suspended;"

# after a reload, a connected device's suspension is looked at again with its next request
# (here bob's acknowledgement); when only bob's cannot be read, that request is refused as
# a server failure instead of passing unchecked
(exec "$M" --data-dir dev-bob --account bob@example.org receive --wait 6 >bob.out 2>&1) &
bob=$!
sleep 1.5
psql_do "ALTER TABLE accounts RENAME TO accounts_real;
CREATE VIEW accounts AS SELECT id, handle, password_hash, created_ms,
  CASE WHEN handle = 'bob@example.org' THEN 1 / (id - id) = 1 ELSE suspended END AS suspended
  FROM accounts_real;"
refusals() { grep -c "event=store_unavailable" node-A.log; }
before=$(refusals)
kill -HUP "${pids[A]}"
sleep 0.5
expect 0 "alice writes to bob, connected, after a reload" -- as alice send bob@example.org --text "after a reload"
for _ in $(seq 30); do [ "$(refusals)" -gt "$before" ] && break; sleep 0.1; done
[ "$(refusals)" -gt "$before" ] && ok || bad "bob's request after the reload passed without its suspension checked"
psql_do "DROP VIEW accounts; ALTER TABLE accounts_real RENAME TO accounts;"
kill "$bob" 2>/dev/null # its part is over once the refusal is counted
wait "$bob"

# every PostgreSQL connection of the node is ended by the server (as in a restart) while it
# sits in the pool: each is found closed before use and made again, so nothing fails (no
# warning or error logged: the clients' own retries would hide failed requests)
problems() { grep -c 'level=\(warn\|error\)' node-A.log; }
before=$(problems)
psql_do "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'missive' AND pid <> pg_backend_pid();"
for i in 1 2 3; do
    expect 0 "alice sends $i after the node's connections were ended" -- as alice send bob@example.org --text "after the restart $i"
done
expect 0 "bob reads after the node's connections were ended" -- as bob receive
grep -q "after the restart 3" out.txt && ok || bad "bob's messages after the restart: $(cat out.txt)"
[ "$(problems)" = "$before" ] && ok || bad "storage failed after the connections were ended: $(grep 'level=\(warn\|error\)' node-A.log | tail -3)"

# PostgreSQL paused (SIGSTOP: connections open, nothing answered): the node gives up on a
# statement after [store] timeout_ms (1.5 s here) instead of hanging; /health says so
kill -STOP $(pg_pids)
start=$(date +%s%N)
http_get A /health >health.txt 2>&1
took=$((($(date +%s%N) - start) / 1000000))
kill -CONT $(pg_pids)
grep -q '"store":"failing"' health.txt && [ "$took" -lt 6000 ] && ok || bad "/health with PostgreSQL paused, after ${took} ms: $(cat health.txt)"
# the same while clients keep the node's workers waiting on the paused database: the HTTP
# port has a thread of its own, so its answer waits only for its own statement
kill -STOP $(pg_pids)
senders=()
for i in $(seq 12); do
    (as "$([ $((i % 2)) = 0 ] && echo alice || echo bob)" devices list >/dev/null 2>&1) &
    senders+=($!)
done
sleep 1.5
start=$(date +%s%N)
http_get A /health >health.txt 2>&1
took=$((($(date +%s%N) - start) / 1000000))
start=$(date +%s%N)
http_get A /metrics | grep -q '^missived_connections_open' && took_metrics=$((($(date +%s%N) - start) / 1000000)) || took_metrics=failed
kill -CONT $(pg_pids)
wait "${senders[@]}"
echo "with PostgreSQL paused under load, /health took ${took} ms and /metrics ${took_metrics} ms"
grep -q '"store":"failing"' health.txt && [ "$took" -lt 8000 ] && ok || bad "/health with PostgreSQL paused under load, after ${took} ms: $(cat health.txt)"
[ "$took_metrics" != failed ] && [ "$took_metrics" -lt 8000 ] && ok || bad "/metrics with PostgreSQL paused under load: ${took_metrics} ms"
expect 0 "alice sends once PostgreSQL runs again" -- as alice send bob@example.org --text "after the pause"
expect 0 "bob reads after the pause" -- as bob receive
grep -q "after the pause" out.txt && ok || bad "bob's message after the pause: $(cat out.txt)"

# bob's queue read fails (a lock held for 5 s, past the statement timeout) after his client's
# own requests are answered: it is tried again every second until it succeeds, although no
# wake-up or answer comes to read it again (his receive waits up to 10 s for it)
expect 0 "alice writes to bob, offline" -- as alice send bob@example.org --text "behind a lock"
psql -q -X -d "$MSV_TEST_POSTGRES" -c "BEGIN; LOCK TABLE queue IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(5); COMMIT;" >/dev/null 2>&1 &
locker=$!
sleep 0.5
expect 0 "bob waits for his queue" -- as bob receive --wait 10
wait "$locker"
grep -q "behind a lock" out.txt && ok || bad "bob's queued message after a failed read: $(cat out.txt) $(cat err.txt)"
[ "$(metric A queue_fetch_failures_total)" -ge 1 ] && ok || bad "queue_fetch_failures_total: $(metric A queue_fetch_failures_total)"
# a paused database, given up on, is the database unavailable
[ "$(metric A database_faults_unavailable_total)" -ge 1 ] && ok || bad "database_faults_unavailable_total: $(metric A database_faults_unavailable_total)"
grep -q 'event=database_error cause="database unavailable" sqlstate=none message="' node-A.log && ok ||
    bad "no unavailable database_error in the log: $(grep database_error node-A.log | tail -2)"

# Redis is paused (SIGSTOP: connections stay open, nothing is answered): node B gives it up
# within [cluster] redis_timeout_ms and reads its devices' queues every second, so carol, on
# B, gets what alice sends through node A long before Redis answers again
cluster_node B && ok || bad "node B started ($(tail -3 node-B.log))"
register carol B && ok || bad "carol registered on node B"
(exec "$M" --data-dir dev-carol --account carol@example.org receive --wait 16 >carol.out 2>&1) &
carol=$!
sleep 1.5
connected_before=$(grep -c "event=redis_connected" node-B.log)
fds_before=$(ls "/proc/${pids[B]}/fd" | wc -l)
kill -STOP "$MSV_SERVICES_REDIS_PID"
start=$(date +%s%N)
expect 0 "alice writes to carol while Redis is paused" -- as alice send carol@example.org --text "redis is paused"
wait_for carol.out "redis is paused" 50 && ok ||
    bad "carol did not get it within 5 s while Redis was paused"
echo "delivered across nodes with Redis paused within $((($(date +%s%N) - start) / 1000000)) ms of the send starting"
grep -q "event=redis_unresponsive" node-B.log && ok || bad "node B did not log that Redis stopped answering"
[ "$(metric B cluster_redis_timeouts_total)" -ge 1 ] && ok || bad "cluster_redis_timeouts_total: $(metric B cluster_redis_timeouts_total)"
# the paused Redis still lets the kernel accept new connections: node B, trying again every
# second, neither takes one for Redis being back nor keeps them piling up
while [ $((($(date +%s%N) - start) / 1000000)) -lt 5000 ]; do sleep 0.2; done
[ "$(grep -c "event=redis_connected" node-B.log)" = "$connected_before" ] && ok ||
    bad "node B logged redis_connected while Redis was paused"
[ "$(ls "/proc/${pids[B]}/fd" | wc -l)" -le $((fds_before + 2)) ] && ok ||
    bad "node B holds $(ls "/proc/${pids[B]}/fd" | wc -l) descriptors after 5 s of Redis paused, $fds_before before"
kill -CONT "$MSV_SERVICES_REDIS_PID"
for n in A B; do
    rejoined "$n" && ok || bad "node $n did not take Redis up again"
done
expect 0 "alice writes to carol with Redis answering again" -- as alice send carol@example.org --text "redis answers again"
wait_for carol.out "redis answers again" 50 && ok || bad "carol missed what was sent after Redis answered again"
kill "$carol" 2>/dev/null
wait "$carol" 2>/dev/null

# the HTTP port: one endless header is refused early; a trickling client is cut off at
# [http] request_timeout_s (4 s here: node A starts again with it) although every byte
# restarts evhttp's own timeout
# (node A reaches Redis through a relay from now on, which the section after this one cuts)
python3 "$here/cut_relay.py" relay.port "$MSV_TEST_REDIS" relay.cut 120 &
relay=$!
for _ in $(seq 100); do [ -s relay.port ] && break; sleep 0.1; done
kill -TERM "${pids[A]}" && wait "${pids[A]}"
MSV_TEST_REDIS=127.0.0.1:$(cat relay.port) \
    cluster_node A "${ports[A]}" "$(printf '[store]\ntimeout_ms = 1500\n[http]\nrequest_timeout_s = 4')" &&
    ok || bad "node A started again ($(tail -3 node-A.log))"
http_port=$(awk '/^http/{print $2}' node-A/missived.ports)
why=$(python3 "$here/http_abuse.py" "$http_port" "${pids[A]}" header) && ok || bad "endless header: $why"
why=$(python3 "$here/http_abuse.py" "$http_port" "${pids[A]}" slow 4) && ok || bad "slow request: $why"
http_get A /health | grep -q '"status":"ok"' && ok || bad "the HTTP port no longer answers"
[ "$(metric A http_requests_refused_total)" -ge 1 ] && ok || bad "http_requests_refused_total: $(metric A http_requests_refused_total)"
[ "$(metric A http_timeouts_total)" -ge 1 ] && ok || bad "http_timeouts_total: $(metric A http_timeouts_total)"

# node A alone loses Redis (the relay loses its traffic, as a network that stops carrying one
# node's packets): what alice sends through A meanwhile is stored, but A cannot publish the
# wake-up, and node B, whose Redis answers, reads queues on wake-ups alone. Back on Redis, A
# asks every node to read its devices' queues once (msv:sweep): carol, on B, gets it then, not
# at her next connection
carol_dev=$(device_of carol)
# carol_on_b OUT SECONDS: carol waits on node B, printing to OUT; $carol is her missive
carol_on_b() {
    (exec "$M" --data-dir dev-carol --account carol@example.org receive --wait "$2" >"$1" 2>&1) &
    carol=$!
    # connected to node B, and known there (else she would read her queue on connecting)
    for _ in $(seq 100); do [ "$(presence_of "$carol_dev")" = B ] && break; sleep 0.1; done
    [ "$(presence_of "$carol_dev")" = B ] && ok || bad "carol is not connected to node B: $(presence_of "$carol_dev")"
}
# a_log_grows EVENT COUNT: waits up to 10 s for node A's log to hold more than COUNT EVENT lines
a_log_grows() {
    for _ in $(seq 100); do [ "$(grep -c "event=$1" node-A.log)" -gt "$2" ] && return 0; sleep 0.1; done
    return 1
}
carol_on_b carol2.out 30
unresponsive=$(grep -c "event=redis_unresponsive" node-A.log)
connected=$(grep -c "event=redis_connected" node-A.log)
asked=$(grep -c "event=cluster_sweep_asked" node-A.log)
done_b=$(metric B cluster_sweeps_done_total)
touch relay.cut
a_log_grows redis_unresponsive "$unresponsive" && ok || bad "node A did not give up the Redis it was cut off from"
expect 0 "alice writes to carol while node A is away from Redis" -- as alice send carol@example.org --text "node A was away"
rm -f relay.cut
a_log_grows redis_connected "$connected" && ok || bad "node A did not come back to Redis"
wait_for carol2.out "node A was away" 100 && ok ||
    bad "carol did not get what was sent while node A was away from Redis once it was back: $(cat carol2.out)"
[ "$(grep -c "event=cluster_sweep_asked node=A" node-A.log)" -gt "$asked" ] &&
    [ "$(metric B cluster_sweeps_done_total)" -gt "$done_b" ] && ok ||
    bad "the sweep: asked by A $(grep -c "event=cluster_sweep_asked" node-A.log) times ($asked before), done on B $(metric B cluster_sweeps_done_total) ($done_b before)"
kill "$carol" 2>/dev/null
wait "$carol" 2>/dev/null

# carol waits on node B; her device connects again to node A while A is away from Redis (A
# cannot say so, and B keeps the older connection); back on Redis, A says so, and B closes it
carol_on_b carol3.out 60
unresponsive=$(grep -c "event=redis_unresponsive" node-A.log)
connected=$(grep -c "event=redis_connected" node-A.log)
touch relay.cut
a_log_grows redis_unresponsive "$unresponsive" && ok || bad "node A did not give up the Redis it was cut off from again"
revoked_b=$(metric B connections_revoked_total)
("$HOLD" dev-carol/carol@example.org 60 "${ports[A]}" deliveries >hold.out 2>&1) &
hold=$!
for _ in $(seq 100); do grep -q connected hold.out && break; sleep 0.1; done
sleep 1
grep -q connected hold.out && [ "$(metric B connections_revoked_total)" = "$revoked_b" ] && ok ||
    bad "while node A was away from Redis: $(cat hold.out), node B revoked $(metric B connections_revoked_total) ($revoked_b before)"
rm -f relay.cut
a_log_grows redis_connected "$connected" && ok || bad "node A did not come back to Redis again"
for _ in $(seq 100); do [ "$(metric B connections_revoked_total)" -gt "$revoked_b" ] && break; sleep 0.1; done
[ "$(metric B connections_revoked_total)" -gt "$revoked_b" ] && ok ||
    bad "node B kept carol's older connection after node A came back to Redis (revoked $(metric B connections_revoked_total), $revoked_b before)"
kill "$carol" "$hold" "$relay" 2>/dev/null
wait "$carol" "$hold" "$relay" 2>/dev/null

# the check a node makes once it listens to a device's channel (a removal published before
# reached nobody there), when the store cannot answer it, is made again until it can: node B
# starts again holding its new subscriptions back while a gate file exists; alice's second
# device connects to it for requests alone and is removed; the devices table goes away before
# the gate opens, so the check fails (logged), and once the table is back the connection closes
gated_node B && ok || bad "node B started again ($(tail -3 node-B.log))"
link_approved alice dev-alice2 B
second=$linked
touch gate
("$HOLD" dev-alice2/alice@example.org 40 "${ports[B]}" >hold4.out 2>&1) &
hold=$!
for _ in $(seq 100); do grep -q connected hold4.out && break; sleep 0.1; done
expect 0 "alice removes her second device" -- as alice devices remove "$second"
failed=$(grep -c "event=recheck_failed" node-B.log)
psql_do "ALTER TABLE devices RENAME TO devices_away;"
rm gate
for _ in $(seq 100); do [ "$(grep -c "event=recheck_failed" node-B.log)" -gt "$failed" ] && break; sleep 0.1; done
[ "$(grep -c "event=recheck_failed" node-B.log)" -gt "$failed" ] && kill -0 "$hold" 2>/dev/null && ok ||
    bad "node B's check of the removed device did not fail with the devices table away: $(cat hold4.out)"
[ "$(metric B device_checks_failed_total)" -ge 1 ] && [ "$(metric B device_checks_waiting)" -ge 1 ] && ok ||
    bad "device_checks_failed_total $(metric B device_checks_failed_total), device_checks_waiting $(metric B device_checks_waiting)"
psql_do "ALTER TABLE devices_away RENAME TO devices;"
wait "$hold"
hold_rc=$?
[ "$hold_rc" = 0 ] && grep -q "event=removed_closed.* device=$second" node-B.log && ok ||
    bad "node B did not check the removed device again once the store answered (status $hold_rc: $(cat hold4.out))"
[ "$(metric B device_checks_waiting)" = 0 ] && ok || bad "device_checks_waiting $(metric B device_checks_waiting) once the check was made"

finish
