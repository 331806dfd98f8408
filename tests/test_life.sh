#!/usr/bin/env bash
# An account's life after it exists, against a real missived on loopback: the
# password changes only with the current one (a device's session alone is not
# enough), every other device of the account is told (receive, the daemon's
# schema-2 events, the chat), and the old password no longer links a device.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
M=$(realpath "${1:?usage: test_life.sh MISSIVE MISSIVED MISSIVE-ADMIN}")
D=$(realpath "${2:?usage: test_life.sh MISSIVE MISSIVED MISSIVE-ADMIN}")
A=$(realpath "${3:?usage: test_life.sh MISSIVE MISSIVED MISSIVE-ADMIN}")
in_scratch

MISSIVED_ACCOUNTS_REGISTER_BURST=40 start_missived || bad "missived started"
register_people alice bob carol
old_pw=$MISSIVE_PASSWORD

# alice's second device, approved by her first
expect 0 "alice links a laptop" -- "$M" --data-dir dev-alice2 link alice@example.org --server "$server"
laptop=$(sed -n 's/.*this is device \([0-9]*\) .*/\1/p' out.txt)
[ -n "$laptop" ] && ok || bad "the laptop's device id: $(cat out.txt err.txt)"
expect 0 "alice approves it" -- as alice devices approve "$laptop"
expect 0 "the laptop takes its notices" -- "$M" --data-dir dev-alice2 receive
phone=$(as alice -o json devices | python3 -c 'import json,sys
print([d["device_id"] for d in json.load(sys.stdin) if d["this_device"]][0])')

# a device without the current password changes nothing (a stolen session)
expect 3 "a wrong current password" -- env MISSIVE_PASSWORD="not the password" MISSIVE_NEW_PASSWORD="stolen and changed" "$M" --data-dir dev-alice password change
grep -q "wrong password" err.txt && ok || bad "wrong password's words: $(cat err.txt)"
expect 2 "a new password that is too short" -- env MISSIVE_NEW_PASSWORD=short "$M" --data-dir dev-alice password change
expect 2 "no new password and no terminal" -- env -u MISSIVE_NEW_PASSWORD setsid "$M" --data-dir dev-alice password change </dev/null
grep -q "MISSIVE_NEW_PASSWORD" err.txt && ok || bad "no new password: $(cat err.txt)"
expect 2 "password without change" -- "$M" --data-dir dev-alice password
expect 3 "the stolen password does not link" -- env MISSIVE_PASSWORD="stolen and changed" "$M" --data-dir dev-eve link alice@example.org --server "$server"

# the change, and the other device is told
expect 0 "alice changes her password" -- env MISSIVE_NEW_PASSWORD="a brand new secret" "$M" --data-dir dev-alice -o json password change
grep -q '"status": *"changed"' out.txt && ok || bad "password change -o json: $(cat out.txt err.txt)"
expect 0 "the laptop receives" -- "$M" --data-dir dev-alice2 receive
grep -q "notice: the account's password was changed from device $phone" out.txt && ok ||
    bad "the laptop is told: $(cat out.txt err.txt)"
expect 0 "the phone itself gets no notice of its own change" -- as alice receive
grep -q "password was changed" out.txt && bad "the changing device told: $(cat out.txt)" || ok
expect 3 "the old password no longer links" -- "$M" --data-dir dev-alice3 link alice@example.org --server "$server"
expect 0 "the new one does" -- env MISSIVE_PASSWORD="a brand new secret" "$M" --data-dir dev-alice4 link alice@example.org --server "$server"
expect 3 "and the old one no longer changes it" -- env MISSIVE_NEW_PASSWORD="yet another secret" "$M" --data-dir dev-alice password change

# the daemon: the laptop's owner runs the method; a schema-2 subscriber of the phone's
# owner gets the 'account' event, a schema-1 subscriber does not
export MISSIVE_PASSWORD="a brand new secret"
sock=$work/dev-alice/alice@example.org/daemon.sock
sock2=$work/dev-alice2/alice@example.org/daemon.sock
(exec "$M" --data-dir dev-alice daemon >daemon.out 2>daemon.err) &
daemon=$!
(exec "$M" --data-dir dev-alice2 daemon >daemon2.out 2>daemon2.err) &
daemon2=$!
trap 'tm kill-server 2>/dev/null; for p in $daemon $daemon2 $pid; do kill -TERM "$p" 2>/dev/null && wait "$p"; done; kill_left "$work"; rm -rf "$work"' EXIT
for _ in $(seq 50); do [ -S "$sock" ] && [ -S "$sock2" ] && break; sleep 0.1; done
change_on_laptop() {
    daemon_rpc "$sock2" --schema 2 '{"jsonrpc":"2.0","id":1,"method":"password","params":{"args":["change"],"password":"a brand new secret","new-password":"changed by the daemon"}}' \
        '{"jsonrpc":"2.0","id":2,"method":"password","params":{"args":["change"],"password":"a brand new secret","new-password":"again by the daemon"}}' >rpc.txt
}
events_both "$sock" change_on_laptop
python3 - rpc.txt <<'PY' && ok || bad "the daemon's password method: $(cat rpc.txt)"
import json, sys
r = {}
for l in open(sys.argv[1]):
    j = json.loads(l)
    if "id" in j: r[j["id"]] = j
assert r[1]["result"]["items"] == [{"status": "changed"}], r[1]
assert r[2]["error"]["code"] == -32003 and "wrong password" in r[2]["error"]["message"], r[2]
PY
grep -q '"type": *"account".*"status": *"password_changed"' ev2.txt && grep -q "changed from device $laptop" ev2.txt &&
    ok || bad "schema-2 account event: $(cat ev2.txt)"
grep -q '"account"' ev1.txt && bad "a schema-1 subscriber got the account event: $(cat ev1.txt)" || ok
cat ev2.txt rpc.txt >wire2.jsonl
daemon_schema_ok 2 wire2.jsonl && ok || bad "schema 2"
daemon_schema_ok 1 ev1.txt && ok || bad "schema 1 events"
# the CLI through the daemon that owns the account: the passwords go with the request
expect 0 "the CLI's change goes through the phone's daemon" -- env MISSIVE_PASSWORD="changed by the daemon" MISSIVE_NEW_PASSWORD="through the owner" "$M" --data-dir dev-alice password change
grep -q "password changed" out.txt && ok || bad "change through the daemon: $(cat out.txt err.txt)"
for p in $daemon $daemon2; do kill -TERM "$p" && wait "$p"; done
daemon=
daemon2=
export MISSIVE_PASSWORD="through the owner"

# a device that leaves: removed on the server, then its state here deleted, only with --yes
link_approved() { # link_approved DIR: a new device of alice's in DIR, approved; prints its id
    "$M" --data-dir "$1" link alice@example.org --server "$server" >link.out 2>&1 || bad "link $1: $(cat link.out)"
    local id
    id=$(sed -n 's/.*this is device \([0-9]*\) .*/\1/p' link.out)
    as alice devices approve "$id" >/dev/null 2>&1 || bad "approve $id"
    "$M" --data-dir "$1" receive >/dev/null 2>&1
    echo "$id"
}
tablet=$(link_approved dev-tablet)
expect 2 "leave without --yes" -- "$M" --data-dir dev-tablet leave
grep -q "deletes .*dev-tablet/alice@example.org" err.txt && grep -q -- "--yes" err.txt && ok || bad "leave says what it deletes: $(cat err.txt)"
expect 2 "removing this device itself without --yes" -- "$M" --data-dir dev-tablet devices remove "$tablet"
[ -s dev-tablet/alice@example.org/state.db ] && ok || bad "nothing deleted without --yes"
expect 0 "the tablet is still listed" -- as alice devices
grep -q "^ *$tablet " out.txt && ok || bad "the tablet was removed without --yes: $(cat out.txt)"
mkdir -p -m 700 dev-tablet/alice@example.org/attachments
ln -s "$work/keepme" dev-tablet/alice@example.org/attachments/link
echo kept >keepme
expect 0 "the tablet leaves" -- "$M" --data-dir dev-tablet -o json devices remove "$tablet" --yes
grep -q '"status": *"left"' out.txt && ok || bad "leave -o json: $(cat out.txt err.txt)"
[ ! -e dev-tablet/alice@example.org ] && ok || bad "the tablet's state is left: $(ls -R dev-tablet)"
[ "$(cat keepme)" = kept ] && ok || bad "leave followed a link out of the account directory"
expect 0 "alice's devices" -- as alice devices
grep -q "^ *$tablet " out.txt && bad "the tablet is still listed: $(cat out.txt)" || ok
expect 0 "the phone is told" -- as alice receive
grep -q "device $tablet was removed from this account" out.txt && ok || bad "the removal notice: $(cat out.txt)"
# through the daemon that owns the account: it answers, then stops (nothing is left to own)
reader=$(link_approved dev-reader)
(exec "$M" --data-dir dev-reader daemon >daemon3.out 2>daemon3.err) &
daemon=$!
for _ in $(seq 50); do [ -S dev-reader/alice@example.org/daemon.sock ] && break; sleep 0.1; done
# in a batch with a request after it: that one is refused (before, it ran on what was deleted)
daemon_rpc dev-reader/alice@example.org/daemon.sock \
    '[{"jsonrpc":"2.0","id":1,"method":"leave","params":{"yes":true,"output":"text"}},{"jsonrpc":"2.0","id":2,"method":"contacts"}]' >out.txt 2>err.txt
python3 -c 'import json,sys; a=json.loads(open("out.txt").readline()); sys.exit(not ("device '"$reader"' left alice@example.org" in a[0]["result"]["text"] and a[1]["error"]["code"] == -32001 and "left its account" in a[1]["error"]["message"]))' &&
    ok || bad "leave through the daemon, and a request after it: $(cat out.txt err.txt)"
for _ in $(seq 50); do kill -0 "$daemon" 2>/dev/null || break; sleep 0.1; done
kill -0 "$daemon" 2>/dev/null && { bad "the daemon goes on after its device left"; kill -TERM "$daemon"; } || ok
wait "$daemon"
daemon=
[ ! -e dev-reader/alice@example.org ] && ok || bad "the reader's state is left: $(ls -R dev-reader)"
expect 1 "a device that left cannot be approved back" -- as alice devices approve "$reader"
grep -q "no device of this account waits for approval" err.txt && ok || bad "the server's words: $(cat err.txt)"

# bob deletes his account: nothing of it is left on the server but its tombstone
expect 0 "bob links a second device" -- env MISSIVE_PASSWORD="$old_pw" "$M" --data-dir dev-bob2 link bob@example.org --server "$server"
bob2=$(sed -n 's/.*this is device \([0-9]*\) .*/\1/p' out.txt)
expect 0 "bob approves it" -- as bob devices approve "$bob2"
expect 0 "alice writes to bob (it waits for him)" -- as alice send bob@example.org --text "waiting for bob"
head -c 3000 /dev/urandom >photo.bin
expect 0 "bob sends alice a file (an attachment of his)" -- as bob send alice@example.org --file photo.bin
# what the server holds of bob now: his devices' keys, the envelopes waiting for them, his blob
python3 - srv/missive.db bob@example.org >bob-bytes.txt <<'PY' || bad "reading bob's rows"
import sqlite3, sys
db = sqlite3.connect("file:%s?mode=ro" % sys.argv[1], uri=True)
acc = db.execute("SELECT id FROM accounts WHERE handle = ?", (sys.argv[2],)).fetchone()[0]
devs = [r[0] for r in db.execute("SELECT id FROM devices WHERE account_id = ?", (acc,))]
for (ident,) in db.execute("SELECT identity FROM devices WHERE account_id = ?", (acc,)):
    print("key", bytes(ident).hex())
for d in devs:
    for (ct,) in db.execute("SELECT CASE WHEN body_id IS NULL THEN ciphertext ELSE"
                            " (SELECT body FROM queue_bodies WHERE id = body_id) END"
                            " FROM queue WHERE device_id = ?", (d,)):
        print("envelope", bytes(ct).hex())
    for (b,) in db.execute("SELECT id FROM blobs WHERE owner_device = ?", (d,)):
        print("blob", bytes(b).hex())
PY
[ "$(grep -c '^key' bob-bytes.txt)" = 2 ] && grep -q '^envelope' bob-bytes.txt && grep -q '^blob' bob-bytes.txt &&
    ok || bad "bob's rows before: $(cat bob-bytes.txt)"
blob=$(awk '/^blob/{print $2; exit}' bob-bytes.txt)
[ -n "$(find srv -name "$blob")" ] && ok || bad "bob's attachment's file before: $(ls -R srv | head)"

expect 2 "account delete without --yes" -- as bob account delete
grep -q "deletes the account bob@example.org on the server for good" err.txt && ok || bad "account delete says what it does: $(cat err.txt)"
expect 3 "account delete with a wrong password (a stolen session)" -- env MISSIVE_PASSWORD="not bob's password" "$M" --data-dir dev-bob account delete --yes
[ -s dev-bob/bob@example.org/state.db ] && ok || bad "bob's device deleted itself on a refusal"
expect 0 "alice still writes to bob" -- as alice send bob@example.org --text "still there?"
expect 0 "bob deletes his account" -- env MISSIVE_PASSWORD="$old_pw" "$M" --data-dir dev-bob -o json account delete --yes
grep -q '"status": *"deleted"' out.txt && ok || bad "account delete -o json: $(cat out.txt err.txt)"
[ ! -e dev-bob/bob@example.org ] && ok || bad "the deleting device's state is left: $(ls -R dev-bob)"

# his other device is told when it next connects, and cleans up on --yes
expect 3 "bob's other device is refused" -- "$M" --data-dir dev-bob2 receive
grep -q "the account bob@example.org was deleted" err.txt && grep -q "missive leave --yes" err.txt &&
    ok || bad "the other device is told: $(cat err.txt)"
expect 0 "and deletes its state" -- "$M" --data-dir dev-bob2 leave --yes
[ ! -e dev-bob2/bob@example.org ] && ok || bad "bob's second device's state is left"

# contacts: a send to the deleted account fails, and nothing is queued for it
expect 1 "alice writes to the deleted account" -- as alice send bob@example.org --text "anyone there?"
grep -q "bob@example.org deleted their account (its transparency log entry says so)" err.txt && ok ||
    bad "the sender is told the account was deleted: $(cat err.txt)"
grep -q "stays queued" err.txt && bad "a send to a deleted account said to stay queued: $(cat err.txt)" || ok
expect 0 "alice's history with bob" -- as alice -o json history bob@example.org
grep -q '"text":"anyone there?".*"status":"failed"' out.txt && ok || bad "not failed at once: $(cat out.txt)"

# nothing of bob in the database files (WAL included: the deletion truncated it) or blobs:
# the envelopes are in no byte of them; his public keys only in the log's earlier leaves,
# which an append-only log keeps (docs/transparency.md), in no other row
python3 - srv bob-bytes.txt <<'PY' && ok || bad "bob's data is left on the server"
import os, sqlite3, sys
files = [os.path.join(d, f) for d, _, fs in os.walk(sys.argv[1]) for f in fs
         if f.startswith("missive.db")]
data = b"".join(open(f, "rb").read() for f in files)
want = [(l.split()[0], bytes.fromhex(l.split()[1])) for l in open(sys.argv[2])]
left = [k for k, b in want if k == "envelope" and b in data]
db = sqlite3.connect("file:%s?mode=ro" % os.path.join(sys.argv[1], "missive.db"), uri=True)
tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
for t in tables:
    for row in db.execute("SELECT * FROM \"%s\"" % t):
        for v in row:
            v = bytes(v) if isinstance(v, (bytes, memoryview)) else str(v).encode()
            left += [(t, k) for k, b in want if b in v and not (t == "kt_log" and k == "key")]
assert len(files) >= 1 and not left, (files, left)
assert db.execute("SELECT COUNT(*) FROM accounts WHERE handle = 'bob@example.org'").fetchone()[0] == 0
PY
[ -z "$(find srv -name "$blob*")" ] && ok || bad "bob's attachment's file is left"
grep -q "event=account_deleted" srv.log && ok || bad "the deletion is logged: $(tail -3 srv.log)"

# the operator deletes carol's account while her daemon is connected: it is cut off at once
# (the node is told through its control socket), says so once in schema 2, deletes nothing
# until told to, then leaves and stops
csock=$work/dev-carol/carol@example.org/daemon.sock
(exec "$M" --data-dir dev-carol daemon >daemon4.out 2>daemon4.err) &
daemon=$!
for _ in $(seq 50); do [ -S "$csock" ] && break; sleep 0.1; done
expect 2 "missive-admin delete without --yes" -- "$A" --data-dir srv delete carol@example.org
expect 1 "missive-admin delete of an unknown handle" -- "$A" --data-dir srv delete --yes nobody@example.org
admin_delete() { "$A" --data-dir srv -o json delete --yes carol@example.org >admin.out 2>&1; }
events_both "$csock" admin_delete
grep -q '"deleted": *true' admin.out && grep -q '"cut_off": *true' admin.out && ok || bad "missive-admin delete: $(cat admin.out)"
grep -q "event=deleted_closed" srv.log && ok || bad "carol's connection is cut off: $(tail -3 srv.log)"
grep -q '"type": *"account".*"status": *"deleted"' ev2.txt && ok || bad "schema-2 account deleted event: $(cat ev2.txt)"
grep -q '"account"' ev1.txt && bad "a schema-1 subscriber got the account event: $(cat ev1.txt)" || ok
daemon_schema_ok 2 ev2.txt && ok || bad "schema 2 (deletion)"
[ -s dev-carol/carol@example.org/state.db ] && ok || bad "carol's device deleted itself on the server's word"
expect 0 "carol's device leaves, through its daemon" -- "$M" --data-dir dev-carol leave --yes
for _ in $(seq 50); do kill -0 "$daemon" 2>/dev/null || break; sleep 0.1; done
kill -0 "$daemon" 2>/dev/null && { bad "carol's daemon goes on"; kill -TERM "$daemon"; } || ok
wait "$daemon"
daemon=
[ ! -e dev-carol/carol@example.org ] && ok || bad "carol's state is left"
expect 0 "the handle registers again, as a new account" -- "$M" --data-dir dev-carol-new register carol@example.org --server "$server"
code=$(grep "handle=carol@example.org code=" srv.log | tail -1 | sed 's/.*code=//')
expect 0 "with the new code" -- "$M" --data-dir dev-carol-new register carol@example.org --code "$code"

# the operator resets alice's password: a code to her handle, which sets a new one
expect 1 "reset-password of an unknown handle" -- "$A" --data-dir srv reset-password nobody@example.org
expect 0 "the operator sends alice a code" -- "$A" --data-dir srv -o json reset-password alice@example.org
rcode=$(python3 -c 'import json,sys; print(json.load(open("out.txt"))["code"])')
[ ${#rcode} = 6 ] && ok || bad "the reset code: $(cat out.txt err.txt)"
expect 1 "a second code while the first is valid" -- "$A" --data-dir srv reset-password alice@example.org
wrong=$(printf '%06d' $(( (10#$rcode + 1) % 1000000 )))
expect 3 "a wrong code" -- env MISSIVE_NEW_PASSWORD="reset by a stranger" "$M" password reset alice@example.org --server "$server" --code "$wrong"
expect 3 "a registration's code is no reset code" -- env MISSIVE_NEW_PASSWORD="reset by a stranger" "$M" password reset carol@example.org --server "$server" --code "$code"
expect 2 "reset without --code" -- "$M" password reset alice@example.org --server "$server"
expect 0 "alice resets her password with the code" -- env MISSIVE_NEW_PASSWORD="reset by the operator" "$M" -o json password reset alice@example.org --server "$server" --code "$rcode"
grep -q '"status": *"reset"' out.txt && ok || bad "password reset -o json: $(cat out.txt err.txt)"
expect 3 "the code works once" -- env MISSIVE_NEW_PASSWORD="reset once more" "$M" password reset alice@example.org --server "$server" --code "$rcode"
expect 0 "alice's phone is told" -- as alice receive
grep -q "notice: the account's password was reset with a code the server's operator sent" out.txt && ok ||
    bad "the reset notice: $(cat out.txt err.txt)"
expect 3 "the old password no longer links" -- "$M" --data-dir dev-alice6 link alice@example.org --server "$server"
export MISSIVE_PASSWORD="reset by the operator"
expect 0 "the new one does" -- "$M" --data-dir dev-alice7 link alice@example.org --server "$server"

# the chat: /password points to the shell; a change elsewhere shows as a notice
command -v tmux >/dev/null || { bad "tmux is not installed (scripts/deps.sh installs it)"; finish; exit; }
chat_in laptop dev-alice2 120 bob@example.org
waitfor laptop "online" && ok || bad "the laptop's chat starts: $(screen laptop)"
tm send-keys -t laptop "/password" Enter
waitfor laptop "change the password in a shell: missive password change" && ok ||
    bad "/password in the chat: $(screen laptop)"
expect 0 "the phone changes the password while the laptop chats" -- env MISSIVE_NEW_PASSWORD="changed during the chat" "$M" --data-dir dev-alice password change
waitfor laptop "password was changed from device $phone" 100 && ok || bad "the notice in the chat: $(screen laptop)"
tm send-keys -t laptop "/quit" Enter

# guessing is limited as other password attempts are: per address, then refused unheard
limited=
for _ in $(seq 60); do
    env MISSIVE_PASSWORD="a wrong guess" MISSIVE_NEW_PASSWORD="guessed and changed" "$M" --data-dir dev-alice password change >/dev/null 2>err.txt
    grep -q "too many attempts" err.txt && { limited=1; break; }
done
[ -n "$limited" ] && ok || bad "password guesses are not limited: $(cat err.txt)"
sleep 6 # a token back (0.2 a second)
expect 0 "the password is still the owner's" -- env MISSIVE_PASSWORD="changed during the chat" "$M" --data-dir dev-alice5 link alice@example.org --server "$server"
finish
