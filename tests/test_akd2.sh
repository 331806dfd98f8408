#!/usr/bin/env bash
# The owner's history proof end to end, against a real missived on loopback: a
# directory that holds a version of alice's handle in its key directory that no
# log entry is (version 8, above her version 1) passes bob's lookups, but alice's
# monitor raises the alarm on the command line (text and -o json), in the daemon
# (the alarm, and the schema-2 event kt_history, which a schema-1 subscriber
# does not get) and in the chat; the honest directory raises none but, once, that its tree
# does not grow from the forged one alice's monitor checked.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
M=$(realpath "${1:?usage: test_akd2.sh MISSIVE MISSIVED}")
D=$(realpath "${2:?usage: test_akd2.sh MISSIVE MISSIVED}")
in_scratch
trap 'tm kill-server 2>/dev/null; for p in $daemon $pid; do kill -TERM "$p" 2>/dev/null && wait "$p"; done; kill_left "$work"; rm -rf "$work"' EXIT
daemon=
alarm="does not prove the history of this account's handle alice@example.org"
forged() { start_missived env MISSIVED_TESTING_KEYDIR_FORGE="alice@example.org 8"; }
stop() { kill -TERM "$pid" && wait "$pid"; pid=; }
# the monitor checks the account's own entry when it read one, and hourly: due now
due() {
    sqlite3 dev-alice/alice@example.org/state.db "DELETE FROM settings WHERE key = 'kt_monitor_checked';"
}

forged || bad "missived started"
register_people alice bob
expect 0 "bob writes to alice (the forged version passes his lookup)" -- as bob send alice@example.org --text "hello alice"
expect 0 "alice receives" -- as alice receive
grep -q "hello alice" out.txt && ok || bad "alice gets bob's message: $(cat out.txt err.txt)"
grep -qF "WARNING: the directory $alarm" err.txt && ok || bad "the alarm on the command line: $(cat err.txt)"
due
expect 0 "alice receives, -o json" -- as alice -o json receive
grep -qF "\"alarm\"" out.txt && grep -qF "$alarm" out.txt && ok || bad "the alarm in json: $(cat out.txt err.txt)"
expect 0 "bob's monitor" -- as bob receive
grep -q "WARNING" err.txt && bad "bob's monitor raised an alarm: $(cat err.txt)" || ok

# the daemon: the alarm, and kt_history for schema 2 only (its monitor runs when it connects)
sock=$work/dev-alice/alice@example.org/daemon.sock
(exec "$M" --data-dir dev-alice daemon >daemon.out 2>daemon.err) &
daemon=$!
for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
reconnect() {
    stop
    due
    forged || bad "missived restarted"
    for _ in $(seq 50); do grep -q kt_history ev2.txt && break; sleep 0.1; done
}
events_both "$sock" reconnect
grep -q '"type": *"kt_history"' ev2.txt && grep -q '"handle": *"alice@example.org"' ev2.txt &&
    grep -qF "$alarm" ev2.txt && ok || bad "schema-2 kt_history: $(cat ev2.txt)"
grep -q '"kt_history"' ev1.txt && bad "a schema-1 subscriber got kt_history: $(cat ev1.txt)" || ok
grep -q '"type": *"alarm"' ev1.txt && grep -qF "$alarm" ev1.txt && ok || bad "schema-1 alarm: $(cat ev1.txt)"
daemon_schema_ok 2 ev2.txt && ok || bad "schema 2"
daemon_schema_ok 1 ev1.txt && ok || bad "schema 1 events"
kill -TERM "$daemon" && wait "$daemon"
daemon=

# the chat: the monitor's alarm is shown
command -v tmux >/dev/null || { bad "tmux is not installed (scripts/deps.sh installs it)"; finish; exit; }
due
chat_in alice dev-alice 200 bob@example.org
waitfor alice "online" && ok || bad "alice's chat starts: $(screen alice)"
waitfor alice "does not prove the history" 100 && ok || bad "the alarm in the chat: $(screen alice)"
tm send-keys -t alice "/quit" Enter
sleep 0.5
tm kill-server 2>/dev/null

# the honest directory: the proof holds, no alarm (the log grows first: the same size with
# another key directory root would be a fork, which clients refuse)
stop
start_missived || bad "missived restarted honest"
register_people carol
due
expect 0 "alice receives from the honest directory" -- as alice receive
grep -qF "$alarm" err.txt && bad "the history alarm from the honest directory: $(cat err.txt)" || ok
# the tree her monitor pinned held the forged version: the honest one does not grow from it
# (docs/transparency.md, "The monitor's lineage"), said once
grep -qF "does not grow from the one this device checked" err.txt && ok ||
    bad "the lineage alarm: $(cat err.txt)"
expect 0 "alice receives again" -- as alice receive
grep -q "WARNING" err.txt && bad "an alarm from the honest directory: $(cat err.txt)" || ok
sqlite3 dev-alice/alice@example.org/state.db "SELECT count(*) FROM settings WHERE key = 'kt_history:alice@example.org';" >state.txt
[ "$(cat state.txt)" = 1 ] && ok || bad "the history proven and kept: $(cat state.txt)"
finish
