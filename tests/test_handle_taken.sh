#!/usr/bin/env bash
# A handle the server takes away by itself, end to end against a real missived on loopback: a
# tombstone of one of alice's handles that none of her devices asked for (written into the
# stopped server's store, as a dishonest or careless operator could) reaches her on the command
# line (the warning; -o json: the alarm and handle_taken), in the daemon (the alarm, and the
# schema-2 event handle_taken, which a schema-1 subscriber does not get) and in the chat. A
# handle her own device removed raises nothing. Only public commands drive the monitor.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
M=$(realpath "${1:?usage: test_handle_taken.sh MISSIVE MISSIVED}")
D=$(realpath "${2:?usage: test_handle_taken.sh MISSIVE MISSIVED}")
in_scratch
trap 'tm kill-server 2>/dev/null; for p in $daemon $pid; do kill -TERM "$p" 2>/dev/null && wait "$p"; done; kill_left "$work"; rm -rf "$work"' EXIT
daemon=
stop() { kill -TERM "$pid" && wait "$pid"; pid=; }
words="was removed"

export MISSIVED_ACCOUNTS_REGISTER_BURST=200 # five handles added in a row
start_missived || bad "missived started"
register_people alice bob
for n in 2 3 4 5 6; do
    expect 0 "alice adds +1555000$n" -- as alice handles add "+1555000$n"
    code=$(grep "handle=+1555000$n code=" srv.log | tail -1 | sed 's/.*code=//')
    expect 0 "alice verifies +1555000$n" -- as alice handles verify "+1555000$n" --code "$code"
done
expect 0 "alice removes +15550006 herself" -- as alice handles remove +15550006 --yes
expect 0 "alice's monitor reads her own removal" -- as alice receive
grep -q WARNING err.txt && bad "an alarm for a removal alice asked for: $(cat err.txt)" || ok

# take HANDLE: the stopped server logs HANDLE's tombstone and drops it from alice's account,
# telling none of her devices; then it starts again
take() {
    stop
    python3 - "$1" <<'PY' >leaf.hex
import struct, sys, time
h = sys.argv[1].encode()
# a tombstone leaf (docs/transparency.md, "The log"): u8 3, u64be time, u8 length, handle, u8 0
print((bytes([3]) + struct.pack(">Q", int(time.time() * 1000)) + bytes([len(h)]) + h + b"\0").hex())
PY
    sqlite3 srv/missive.db "INSERT INTO kt_log (idx, handle, leaf) VALUES ((SELECT max(idx) + 1 FROM kt_log), '$1', x'$(cat leaf.hex)'); DELETE FROM account_handles WHERE handle = '$1';" ||
        bad "the tombstone of $1 written"
    start_missived || bad "missived restarted"
}

# ---- the command line: the warning; -o json the alarm and which handle ---------------------
take +15550002
expect 0 "alice receives" -- as alice receive
grep -q "WARNING: .*this account's handle +15550002 $words" err.txt && ok ||
    bad "the warning on the command line: $(cat err.txt)"
grep -q "none of its devices removed it" err.txt && ok || bad "the warning's words: $(cat err.txt)"
expect 0 "alice receives again" -- as alice receive
grep -q WARNING err.txt && bad "the alarm came twice: $(cat err.txt)" || ok
expect 0 "bob's monitor (alice's handle is not his)" -- as bob receive
grep -q "WARNING" err.txt && bad "bob's monitor raised an alarm: $(cat err.txt)" || ok
take +15550003
expect 0 "alice receives, -o json" -- as alice -o json receive
python3 - <<'PY' && ok || bad "the alarm in json: $(cat out.txt err.txt)"
import json
lines = [json.loads(l) for l in open("out.txt") if l.strip()]
alarms = [l["alarm"] for l in lines if "alarm" in l]
taken = [l for l in lines if "handle_taken" in l]
assert len(alarms) == 1 and "+15550003 was removed" in alarms[0], alarms
assert len(taken) == 1 and taken[0]["handle_taken"] == "+15550003", taken
assert isinstance(taken[0]["log_index"], int) and taken[0]["log_index"] > 0, taken
PY

# ---- the daemon: the alarm, and handle_taken for schema 2 only ------------------------------
sock=$work/dev-alice/alice@example.org/daemon.sock
(exec "$M" --data-dir dev-alice daemon >daemon.out 2>daemon.err) &
daemon=$!
for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
# a handle added while the daemon runs: the command goes through it, --code too
expect 0 "alice adds +15550007 through her daemon" -- as alice handles add +15550007
code=$(grep "handle=+15550007 code=" srv.log | tail -1 | sed 's/.*code=//')
expect 0 "alice verifies +15550007 through her daemon" -- as alice handles verify +15550007 --code "$code"
reconnect() {
    take +15550004
    for _ in $(seq 100); do grep -q handle_taken ev2.txt && break; sleep 0.1; done
}
events_both "$sock" reconnect
grep -q '"type": *"handle_taken"' ev2.txt && grep -q '"handle": *"+15550004"' ev2.txt &&
    grep -q "+15550004 $words" ev2.txt && ok || bad "schema-2 handle_taken: $(cat ev2.txt)"
grep -q '"handle_taken"' ev1.txt && bad "a schema-1 subscriber got handle_taken: $(cat ev1.txt)" || ok
grep -q '"type": *"alarm"' ev1.txt && grep -q "+15550004 $words" ev1.txt && ok ||
    bad "schema-1 alarm: $(cat ev1.txt)"
daemon_schema_ok 2 ev2.txt && ok || bad "schema 2"
daemon_schema_ok 1 ev1.txt && ok || bad "schema 1 events"
kill -TERM "$daemon" && wait "$daemon"
daemon=

# ---- the chat: the warning, and that the handle is no longer the account's -----------------
command -v tmux >/dev/null || { bad "tmux is not installed (scripts/deps.sh installs it)"; finish; exit; }
take +15550005
chat_in alice dev-alice 200 bob@example.org
waitfor alice "online" && ok || bad "alice's chat starts: $(screen alice)"
waitfor alice "+15550005 $words" 200 && ok || bad "the alarm in the chat: $(screen alice)"
waitfor alice "+15550005 is no longer this account's" 50 && ok || bad "the chat's note: $(screen alice)"
tm send-keys -t alice "/quit" Enter
sleep 0.5
tm kill-server 2>/dev/null
finish
