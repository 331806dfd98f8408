#!/usr/bin/env bash
# A handle whose account was deleted and registered again is a new account to
# everyone who knew the old one, against a real missived on loopback: the CLI
# (send and receive), the daemon's schema-2 event and the chat each say so once;
# the old sessions go, the safety number changes and a verified mark stops sends
# until accepted; the send that finds the new account does not go to it (it was
# written to the old).
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
usage="usage: test_life2.sh MISSIVE MISSIVED MISSIVE-ADMIN FAULTY-IO-LIBRARY"
M=$(realpath "${1:?$usage}")
D=$(realpath "${2:?$usage}")
A=$(realpath "${3:?$usage}")
FAULTY=$(realpath "${4:?$usage}")
in_scratch
trap 'tm kill-server 2>/dev/null; for p in $daemon $pid; do kill -TERM "$p" 2>/dev/null && wait "$p"; done; kill_left "$work"; rm -rf "$work"' EXIT

MISSIVED_ACCOUNTS_REGISTER_BURST=40 start_missived || bad "missived started"
register_people alice bob carol dave erin
for who in bob carol dave erin; do
    expect 0 "$who writes to alice" -- as "$who" send alice@example.org --text "hello from $who"
done
expect 0 "alice receives" -- as alice receive
number=$(as bob -o json verify alice@example.org | python3 -c 'import json,sys; print(json.load(sys.stdin)["safety_number"])')
expect 0 "bob verifies alice" -- as bob verify alice@example.org "$number"
expect 0 "bob's mark" -- as bob -o json verify alice@example.org
grep -q '"state": *"verified"' out.txt && ok || bad "bob verified alice: $(cat out.txt err.txt)"

# alice deletes her account and registers her handle again, as a new account
expect 0 "alice deletes her account" -- as alice account delete --yes
expect 0 "the handle registers again" -- "$M" --data-dir dev-alice register alice@example.org --server "$server"
code=$(grep "handle=alice@example.org code=" srv.log | tail -1 | sed 's/.*code=//')
expect 0 "with its code" -- "$M" --data-dir dev-alice register alice@example.org --code "$code"

# the CLI: bob's send says so once, and does not go (he wrote it to the account he knew); his
# verified mark stays, no longer matching: the safety number changed, and his sends stop until
# he accepts it; what he writes after that goes
expect 1 "bob's send finds the new account" -- as bob send alice@example.org --text "is that you?"
grep -q "alice@example.org is a new account: the account you knew was deleted" err.txt && ok ||
    bad "bob's send says alice is a new account: $(cat out.txt err.txt)"
grep -q "the account this was written to was deleted .*send it again" err.txt && ok ||
    bad "bob's send says why it did not go: $(cat out.txt err.txt)"
expect 0 "bob's mark after" -- as bob -o json verify alice@example.org
grep -q '"state": *"changed since verified"' out.txt && ok || bad "the verified mark no longer matches: $(cat out.txt err.txt)"
grep -q "$number" out.txt && bad "the safety number did not change: $(cat out.txt)" || ok
expect 3 "bob's send stops at his verified mark" -- as bob send alice@example.org --text "stopped"
grep -q "changed since you verified them" err.txt && ok || bad "bob's send says why: $(cat out.txt err.txt)"
grep -q "is a new account" err.txt && bad "said twice: $(cat err.txt)" || ok
expect 0 "bob accepts the new safety number" -- as bob verify alice@example.org --accept
expect 0 "bob writes again" -- as bob send alice@example.org --text "written after the telling"
expect 0 "the new alice reads bob" -- as alice receive
grep -q "written after the telling" out.txt && ok || bad "the new account gets bob's message: $(cat out.txt err.txt)"
grep -q "is that you?" out.txt && bad "the new account got what bob wrote before: $(cat out.txt)" || ok

# receive: dave hears from the new account first
expect 0 "the new alice writes to dave" -- as alice send dave@example.org --text "new me"
expect 0 "dave receives" -- as dave receive
grep -q "new me" out.txt && ok || bad "dave gets the message: $(cat out.txt err.txt)"
grep -q "alice@example.org is a new account" err.txt && ok || bad "dave's receive says so: $(cat err.txt)"

# the daemon: carol's; the schema-2 subscriber gets account_new, the schema-1 one does not
sock=$work/dev-carol/carol@example.org/daemon.sock
(exec "$M" --data-dir dev-carol daemon >daemon.out 2>daemon.err) &
daemon=$!
for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
send_through() {
    daemon_rpc "$sock" --schema 2 '{"jsonrpc":"2.0","id":1,"method":"send","params":{"args":["alice@example.org"],"text":"through the daemon"}}' >rpc.txt
}
events_both "$sock" send_through
grep -q '"type": *"account_new".*"handle": *"alice@example.org"' ev2.txt && grep -q "is a new account" ev2.txt &&
    ok || bad "schema-2 account_new: $(cat ev2.txt rpc.txt)"
grep -q '"account_new"' ev1.txt && bad "a schema-1 subscriber got account_new: $(cat ev1.txt)" || ok
grep -q '"error".*is a new account: the account this was written to' rpc.txt && ok ||
    bad "the daemon's send, written before carol knew, fails saying why: $(cat rpc.txt)"
cat ev2.txt rpc.txt >wire2.jsonl
daemon_schema_ok 2 wire2.jsonl && ok || bad "schema 2"
daemon_schema_ok 1 ev1.txt && ok || bad "schema 1 events"
kill -TERM "$daemon" && wait "$daemon"
daemon=

# the chat: erin writes to alice in the chat, and is told there
command -v tmux >/dev/null || { bad "tmux is not installed (scripts/deps.sh installs it)"; finish; exit; }
chat_in erin dev-erin 160 alice@example.org
waitfor erin "online" && ok || bad "erin's chat starts: $(screen erin)"
tm send-keys -t erin "are you new?" Enter
waitfor erin "alice@example.org is a new account" 100 && ok || bad "the chat says so: $(screen erin)"
tm send-keys -t erin "/quit" Enter

# a crash at any point of a deletion (missive-admin delete, killed at each write or sync of the
# database in turn): all of dave's account is left, or none of it; files of attachments whose
# records went are swept by missived
head -c 3000 /dev/urandom >photo.bin
expect 0 "dave sends erin a file" -- as dave send erin@example.org --file photo.bin
expect 0 "erin writes to dave (it waits for him)" -- as erin send dave@example.org --text "waiting for dave"
kill -TERM "$pid" && wait "$pid"
pid=
cp -a srv snap
cat >state.py <<'PY'
import os, sqlite3, sys
db = sqlite3.connect(os.path.join(sys.argv[1], "missive.db"))
snap = sqlite3.connect("file:%s?mode=ro" % os.path.join(sys.argv[2], "missive.db"), uri=True)
acc = snap.execute("SELECT id FROM accounts WHERE handle = 'dave@example.org'").fetchone()[0]
devs = [r[0] for r in snap.execute("SELECT id FROM devices WHERE account_id = ?", (acc,))]
q = ",".join("?" * len(devs))
def rows(d):
    return (d.execute("SELECT COUNT(*) FROM accounts WHERE id = ?", (acc,)).fetchone()[0],
            d.execute("SELECT COUNT(*) FROM devices WHERE id IN (%s)" % q, devs).fetchone()[0],
            d.execute("SELECT COUNT(*) FROM queue WHERE device_id IN (%s)" % q, devs).fetchone()[0],
            d.execute("SELECT COUNT(*) FROM blobs WHERE owner_device IN (%s)" % q, devs).fetchone()[0],
            d.execute("SELECT COUNT(*) FROM signed_prekeys WHERE device_id IN (%s)" % q, devs).fetchone()[0],
            d.execute("SELECT COUNT(*) FROM kt_log WHERE handle = 'dave@example.org' AND "
                      "substr(leaf, 1, 1) = x'03'").fetchone()[0])
blobs = [bytes(r[0]).hex() for r in snap.execute(
    "SELECT id FROM blobs WHERE owner_device IN (%s)" % q, devs)]
before, now = rows(snap), rows(db)
files = [b for b in blobs if os.path.exists(os.path.join(sys.argv[1], "blobs", b))]
assert min(before[:5]) > 0 and before[5] == 0 and blobs, before
if now == before:
    print("whole")
elif now == (0, 0, 0, 0, 0, 1):
    print("gone" + (" files-left" if files else ""))
else:
    print("half", before, now)
PY
crashes=0 orphans=
for k in $(seq 0 400); do
    rm -rf crash
    cp -a snap crash
    MSV_FAULTY_IO_MATCH="$work/crash/" MSV_FAULTY_IO_CRASH_AFTER=$k LD_PRELOAD="$FAULTY" \
        ASAN_OPTIONS=verify_asan_link_order=0 "$A" --data-dir crash delete --yes dave@example.org >crash.out 2>&1
    rc=$?
    state=$(python3 state.py crash snap 2>&1)
    case "$state" in
    whole | gone | "gone files-left") ;;
    *) bad "a crash at write $k left: $state"; break ;;
    esac
    [ "$rc" = 0 ] && { [ "$state" = gone ] && ok || bad "the finished deletion left: $state"; break; }
    [ "$rc" = 137 ] || { bad "missive-admin delete exited $rc: $(cat crash.out)"; break; }
    crashes=$((crashes + 1))
    [ "$state" = "gone files-left" ] && [ -z "$orphans" ] && { orphans=$k; cp -a crash orphaned; }
done
[ "$crashes" -ge 3 ] && ok || bad "the deletion was crashed at $crashes points only"
[ -n "$orphans" ] && ok || bad "no crash fell between the commit and the removal of the files"
# missived started on what the crash left sweeps the files no record names, once 10 minutes old
if [ -n "$orphans" ]; then
    find orphaned/blobs -type f -exec touch -d '20 minutes ago' {} +
    rm -rf srv
    cp -a orphaned srv
    start_missived || bad "missived starts after the crash"
    left=$(python3 state.py srv snap)
    [ "$left" = gone ] && ok || bad "the files are swept: $left"
    grep -q "event=blobs_swept count=1" srv.log && ok || bad "the sweep is logged: $(tail -3 srv.log)"
    expect 1 "a send to dave" -- as erin send dave@example.org --text "are you there?"
    grep -q "dave@example.org deleted their account" err.txt && ok || bad "the deletion holds: $(cat err.txt)"
fi

# a send refused for a full queue: the account's devices are told, once per device in ten
# minutes however many sends are refused; the sender's error stays as it was
[ -z "$pid" ] || { kill -TERM "$pid" && wait "$pid"; }
pid=
MISSIVED_RELAY_QUEUE_MAX_ENVELOPES=3 start_missived || bad "missived restarts with small queues"
hport=$(awk '/^http/{print $2}' srv/missived.ports)
expect 0 "carol takes what waits" -- as carol receive
for i in 1 2 3; do
    expect 0 "bob writes to carol, away ($i)" -- as bob send carol@example.org --text "note $i"
done
for i in 1 2 3 4 5; do
    expect 1 "refused, carol's queue is full ($i)" -- as bob send carol@example.org --text "refused $i"
done
grep -q "the recipient's queue is full; nothing was sent, try again later" err.txt && ok ||
    bad "the sender's error: $(cat err.txt)"
curl -s "http://127.0.0.1:$hport/metrics" | grep -q '^missived_quota_notices_total 1$' && ok ||
    bad "one notice for five refusals: $(curl -s "http://127.0.0.1:$hport/metrics" | grep quota)"
expect 0 "carol comes back" -- as carol receive
[ "$(grep -c "notice: a message to this account was refused: this device's queue on the server is full" out.txt)" = 1 ] &&
    grep -q "note 3" out.txt && ok || bad "carol is told once: $(cat out.txt err.txt)"

# the daemon: erin's second device is away; her daemon gets account_quota (schema 2 only)
expect 0 "erin links a second device" -- "$M" --data-dir dev-erin2 link erin@example.org --server "$server"
erin2=$(sed -n 's/.*this is device \([0-9]*\) .*/\1/p' out.txt)
expect 0 "erin approves it" -- as erin devices approve "$erin2"
sock=$work/dev-erin/erin@example.org/daemon.sock
(exec "$M" --data-dir dev-erin daemon >daemon.out 2>daemon.err) &
daemon=$!
for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
fill_erin() {
    for i in 1 2 3 4 5 6; do as bob send erin@example.org --text "to erin $i" >/dev/null 2>&1; done
}
events_both "$sock" fill_erin
[ "$(grep -c '"type": *"account_quota"' ev2.txt)" = 1 ] && grep -q "the queue of device $erin2 on the server is full" ev2.txt &&
    grep -q '"status": *"queue_full"' ev2.txt && ok || bad "schema-2 account_quota: $(cat ev2.txt)"
grep -q '"account_quota"' ev1.txt && bad "a schema-1 subscriber got account_quota: $(cat ev1.txt)" || ok
daemon_schema_ok 2 ev2.txt && ok || bad "schema 2 (quota)"
daemon_schema_ok 1 ev1.txt && ok || bad "schema 1 events (quota)"
kill -TERM "$daemon" && wait "$daemon"
daemon=

# the chat: alice's second device is away; her chat says so
expect 0 "alice links a second device" -- "$M" --data-dir dev-alice2 link alice@example.org --server "$server"
alice2=$(sed -n 's/.*this is device \([0-9]*\) .*/\1/p' out.txt)
expect 0 "alice approves it" -- as alice devices approve "$alice2"
# bob verified her (above): a device added stops his sends until he accepts it
expect 0 "bob accepts alice's new device" -- as bob verify alice@example.org --accept
chat_in alice dev-alice 160 bob@example.org
waitfor alice "online" && ok || bad "alice's chat starts: $(screen alice)"
for i in 1 2 3 4 5 6; do as bob send alice@example.org --text "to alice $i" >/dev/null 2>&1; done
waitfor alice "a message to this account was refused" 100 && ok || bad "the chat tells of the full queue: $(screen alice)"
tm send-keys -t alice "/quit" Enter
finish
