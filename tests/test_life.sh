#!/usr/bin/env bash
# An account's life after it exists, against a real missived on loopback: the
# password changes only with the current one (a device's session alone is not
# enough), every other device of the account is told (receive, the daemon's
# schema-2 events, the chat), and the old password no longer links a device.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
M=$(realpath "${1:?usage: test_life.sh MISSIVE MISSIVED}")
D=$(realpath "${2:?usage: test_life.sh MISSIVE MISSIVED}")
in_scratch

MISSIVED_ACCOUNTS_REGISTER_BURST=40 start_missived || bad "missived started"
register_people alice bob
old_pw=$MISSIVE_PASSWORD

# alice's second device, approved by her first
expect 0 "alice links a laptop" -- "$M" --data-dir dev-alice2 link alice@example.org --server "$server"
laptop=$(sed -n 's/.*this is device \([0-9]*\) .*/\1/p' out.txt)
[ -n "$laptop" ] && ok || bad "the laptop's device id: $(cat out.txt err.txt)"
expect 0 "alice approves it" -- as alice devices approve "$laptop"
expect 0 "the laptop takes its notices" -- "$M" --data-dir dev-alice2 receive --wait 0.5
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
expect 0 "the laptop receives" -- "$M" --data-dir dev-alice2 receive --wait 1
grep -q "notice: the account's password was changed from device $phone" out.txt && ok ||
    bad "the laptop is told: $(cat out.txt err.txt)"
expect 0 "the phone itself gets no notice of its own change" -- as alice receive --wait 0.5
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
trap 'tm kill-server 2>/dev/null; for p in $daemon $daemon2 $pid; do kill -TERM "$p" 2>/dev/null && wait "$p"; done; rm -rf "$work"' EXIT
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
    "$M" --data-dir "$1" receive --wait 0.3 >/dev/null 2>&1
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
expect 0 "the phone is told" -- as alice receive --wait 1
grep -q "device $tablet was removed from this account" out.txt && ok || bad "the removal notice: $(cat out.txt)"
# through the daemon that owns the account: it answers, then stops (nothing is left to own)
reader=$(link_approved dev-reader)
(exec "$M" --data-dir dev-reader daemon >daemon3.out 2>daemon3.err) &
daemon=$!
for _ in $(seq 50); do [ -S dev-reader/alice@example.org/daemon.sock ] && break; sleep 0.1; done
expect 0 "leave through the daemon" -- "$M" --data-dir dev-reader leave --yes
grep -q "device $reader left alice@example.org" out.txt && ok || bad "leave through the daemon: $(cat out.txt err.txt)"
for _ in $(seq 50); do kill -0 "$daemon" 2>/dev/null || break; sleep 0.1; done
kill -0 "$daemon" 2>/dev/null && { bad "the daemon goes on after its device left"; kill -TERM "$daemon"; } || ok
wait "$daemon"
daemon=
[ ! -e dev-reader/alice@example.org ] && ok || bad "the reader's state is left: $(ls -R dev-reader)"
expect 1 "a device that left cannot be approved back" -- as alice devices approve "$reader"

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
