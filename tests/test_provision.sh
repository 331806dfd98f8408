#!/usr/bin/env bash
# What a device linked by QR code gets in its provisioning message, against a
# real missived on loopback: the account's contacts, blocks, synced settings
# (privacy, a conversation's mute and pin), profile key and profile, verified
# marks and groups with their states, at once and without the history; the
# same through the daemon (schema 2) and the chat. Then the bound: what does
# not fit follows by sync, and groups that do not fit need the history.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
M=$(realpath "${1:?usage: test_provision.sh MISSIVE MISSIVED}")
D=$(realpath "${2:?usage: test_provision.sh MISSIVE MISSIVED}")
in_scratch
waiter=
trap 'tm kill-server 2>/dev/null; for p in $waiter $daemon $pid; do kill -TERM "$p" 2>/dev/null && wait "$p"; done; kill_left "$work"; rm -rf "$work"' EXIT

export MISSIVED_ACCOUNTS_REGISTER_BURST=100
start_missived || bad "missived started"
register_people alice bob carol dave
unset MISSIVE_PASSWORD

on() { local dir=$1; shift; "$M" --data-dir "$dir" --account alice@example.org "$@"; }
nomls='import json, sys
rows = [json.loads(l) for l in sys.stdin if l.strip()]
for r in rows:
    r.pop("mls", None) if isinstance(r, dict) else None
print("".join(sorted(json.dumps(r, sort_keys=True) + "\n" for r in rows)))'
# same DIR WHAT COMMAND...: COMMAND -o json on alice's phone and on device DIR, equal and not empty
same() {
    local dir=$1 what=$2
    shift 2
    # (whether a group is on MLS is each device's own: a new device joins at the next receive)
    as alice -o json "$@" | python3 -c "$nomls" >phone.json
    on "$dir" -o json "$@" | python3 -c "$nomls" >other.json
    [ -n "$(tr -d '[:space:]' <phone.json)" ] && cmp -s phone.json other.json && ok ||
        bad "$what on $dir as on the phone: $(diff phone.json other.json | head -10)"
}

# ---- alice's account: contacts, a block, settings, a profile, a verified contact, groups
expect 0 "a contact name" -- as alice contacts add Bobby bob@example.org
expect 0 "alice writes to bob" -- as alice send bob@example.org --text "hello bob"
expect 0 "bob receives" -- receive_until "hello bob" as bob receive
expect 0 "alice blocks carol" -- as alice block carol@example.org
expect 0 "read receipts off" -- as alice settings set read-receipts off
expect 0 "bob's conversation muted" -- as alice conversations mute bob@example.org forever
expect 0 "and pinned" -- as alice conversations pin bob@example.org
expect 0 "a profile" -- as alice profile set --name "Alice Liddell"
expect 0 "bob verified" -- as alice verify bob@example.org --accept
expect 0 "a group alice makes" -- as alice groups create family bob@example.org
expect 0 "a group bob makes with alice" -- as bob groups create club alice@example.org
expect 0 "alice receives the invitation" -- as alice receive
expect 0 "alice's groups" -- as alice groups -o json
[ "$(grep -c . out.txt)" -eq 2 ] && ok || bad "two groups: $(cat out.txt)"

# ---- the tablet, without the history: all of it at once, before it receives anything
link_wait alice tablet -o json || bad "the tablet's code: $(cat tablet.out tablet.err)"
expect 0 "alice adds the tablet without the history" -- as alice devices add "$code" --yes --no-history
link_done && ok || bad "the tablet is linked: $(cat tablet.out tablet.err)"
python3 - tablet.out <<'PY' && ok || bad "the linked line counts the state: $(cat tablet.out)"
import json, sys
r = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{") and '"linked"' in l][0]
assert r["groups"] == 2 and r["settings"] >= 8, r
PY
same tablet "contacts" contacts
same tablet "blocked handles" sync list
same tablet "settings" settings
same tablet "the profile" profile
same tablet "groups" groups
expect 0 "bob on the tablet" -- on tablet -o json verify bob@example.org
grep -q '"state": *"verified"' out.txt && ok || bad "bob is verified on the tablet: $(cat out.txt)"
expect 0 "blocked on the tablet" -- on tablet blocked
grep -q "carol@example.org" out.txt && ok || bad "carol is blocked on the tablet: $(cat out.txt)"
expect 0 "history on the tablet" -- on tablet history
! grep -q "hello bob" out.txt && ok || bad "--no-history brought no messages: $(cat out.txt)"
# usable at once: the tablet writes to the group it got, by name, and bob reads it
expect 0 "the tablet writes to the family" -- on tablet send --group family --text "from the tablet"
expect 0 "bob receives" -- receive_until "from the tablet" as bob receive
grep -q "from the tablet" out.txt && ok || bad "bob got the tablet's group message: $(cat out.txt err.txt)"
# a blocked sender stays blocked on the tablet: carol's message is dropped, counted
expect 0 "carol writes to alice" -- as carol send alice@example.org --text "let me in"
expect 0 "the tablet receives" -- on tablet receive
! grep -q "let me in" out.txt && ok || bad "the tablet drops carol's message: $(cat out.txt)"

# ---- the daemon: devices add --no-history as a method, schema 2; the watch has the state too
sock=$work/dev-alice/alice@example.org/daemon.sock
(exec "$M" --data-dir dev-alice daemon >daemon.out 2>daemon.err) &
daemon=$!
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
link_wait alice watch -o json || bad "the watch's code: $(cat watch.out watch.err)"
add_by_daemon() {
    daemon_rpc "$sock" --schema 2 \
        "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"devices\",\"params\":{\"args\":[\"add\",\"$code\"],\"no-history\":true,\"yes\":true,\"output\":\"json\"}}" >rpc.txt
}
events_both "$sock" add_by_daemon
grep -q '"type": *"device_added"' rpc.txt && ok || bad "added by the daemon: $(cat rpc.txt)"
daemon_schema_ok 2 rpc.txt && ok || bad "schema 2 answers: $(cat rpc.txt)"
daemon_schema_ok 2 ev2.txt && ok || bad "schema 2 events: $(cat ev2.txt)"
link_done && ok || bad "the watch is linked through the daemon: $(cat watch.out watch.err)"
kill -TERM "$daemon" && wait "$daemon"
daemon=
same watch "contacts" contacts
same watch "groups" groups
same watch "the profile" profile

# ---- the chat: /link CODE yes; the pad has the groups and contacts
link_wait alice pad -o json || bad "the pad's code: $(cat pad.out pad.err)"
CHAT_ROWS=40 chat_in alice dev-alice 300
waitfor alice "online" 150 && ok || bad "alice's chat starts: $(screen alice)"
tm send-keys -t alice "/link $code yes" Enter
waitfor alice "added device" 150 && ok || bad "/link yes adds it: $(screen alice)"
link_done && ok || bad "the pad is linked from the chat: $(cat pad.out pad.err)"
tm kill-session -t alice
same pad "contacts" contacts
same pad "groups" groups

# ---- a history whose import fails is kept and imported again with --resume-history
printf 'the file\001\002' >doc.bin
expect 0 "bob sends alice a file" -- as bob send alice@example.org --file doc.bin --text "a file"
expect 0 "alice receives it" -- receive_until "a file" as alice receive
# the new phone's attachments/ is a plain file: the history's files cannot be written
mkdir -p -m 700 phone2/alice@example.org && : >phone2/alice@example.org/attachments
link_wait alice phone2 || bad "phone2's code: $(cat phone2.out phone2.err)"
expect 0 "alice adds phone2 with the history" -- as alice devices add "$code" --yes
link_done && grep -q "linked: this is device" phone2.out && ok ||
    bad "linked, its history to come: $(grep -v '[▀▄█]' phone2.out) $(cat phone2.err)"
# a message that arrives meanwhile is kept, on both of alice's devices
expect 0 "bob writes while the history waits" -- as bob send alice@example.org --text "while it waits"
expect 0 "phone2 receives" -- receive_until "was not imported" on phone2 receive
grep -q "while it waits" out.txt && ok || bad "phone2 got bob's message: $(cat out.txt err.txt)"
grep -q "the history from device 1 was not imported: .*--resume-history" out.txt && ok ||
    bad "the history not imported, said: $(cat out.txt err.txt)"
expect 0 "the phone receives" -- as alice receive
rm phone2/alice@example.org/attachments
expect 0 "the history again" -- "$M" --data-dir phone2 link alice@example.org --resume-history
grep -q "history imported" out.txt && ok || bad "imported: $(cat out.txt err.txt)"
as alice history -o json | sed 's#dev-alice/alice@example.org/attachments/#ATTACHMENTS/#g' >phone.history
on phone2 history -o json | sed 's#phone2/alice@example.org/attachments/#ATTACHMENTS/#g' >phone2.history
grep -q "while it waits" phone2.history && grep -q '"text":"hello bob"' phone2.history && ok ||
    bad "the message received meanwhile and the history: $(cat phone2.history)"
cmp -s phone.history phone2.history && ok || bad "phone2's history is the phone's: $(diff phone.history phone2.history | head)"
cmp -s doc.bin "$(ls phone2/alice@example.org/attachments/* | head -1)" && ok || bad "the file came"
expect 1 "nothing more to resume" -- "$M" --data-dir phone2 link alice@example.org --resume-history
grep -q "no history waits" err.txt && ok || bad "none waits: $(cat err.txt)"

# ---- the bound: dave's synced state is larger than a provisioning message holds
python3 - dev-dave/dave@example.org/state.db <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
for i in range(200):
    db.execute("INSERT INTO settings (key, value) VALUES (?, ?)", ("sync:note:%03d" % i, b"n" * 400))
db.commit()
PY
link_wait dave dave-tablet -o json || bad "dave's tablet's code"
expect 0 "dave adds his tablet without the history" -- "$M" --data-dir dev-dave --account dave@example.org devices add "$code" --yes --no-history
link_done && ok || bad "dave's tablet is linked: $(cat dave-tablet.out dave-tablet.err)"
dave_sync() { "$M" --data-dir "$1" --account dave@example.org sync list | grep -c "sync:note:"; }
n=$(dave_sync dave-tablet)
[ "$n" -gt 50 ] && [ "$n" -lt 200 ] && ok || bad "as much as fits came in the message: $n of 200"
# the rest follows by sync
expect 0 "dave's phone sends what is pending" -- "$M" --data-dir dev-dave --account dave@example.org receive
expect 0 "the tablet receives it" -- "$M" --data-dir dave-tablet --account dave@example.org receive
[ "$(dave_sync dave-tablet)" -eq 200 ] && ok || bad "the rest came by sync: $(dave_sync dave-tablet) of 200"

# groups that do not fit need the history: refused before any device is added
python3 - dev-dave/dave@example.org/state.db <<'PY'
import os, sqlite3, sys
db = sqlite3.connect(sys.argv[1])
members = "\n".join("member%03d@example.org" % i for i in range(120))
for i in range(40):
    db.execute("INSERT INTO groups (group_id, name, members, updated_ms, accepted) VALUES (?, ?, ?, 0, 1)",
               (os.urandom(16), "big%02d" % i, "dave@example.org\n" + members))
db.commit()
PY
"$M" --data-dir dev-dave --account dave@example.org devices >devices.before
link_wait dave dave-desk -o json || bad "dave's desk's code"
expect 1 "groups too large for the message" -- "$M" --data-dir dev-dave --account dave@example.org devices add "$code" --yes --no-history
grep -q "do not fit in the provisioning message (64 KiB): add the device with its history" err.txt && ok ||
    bad "why: $(cat err.txt)"
"$M" --data-dir dev-dave --account dave@example.org devices >devices.after
cmp -s devices.before devices.after && ok || bad "no device was added: $(diff devices.before devices.after)"
expect 0 "with its history it is added" -- "$M" --data-dir dev-dave --account dave@example.org devices add "$code" --yes
link_done && ok || bad "dave's desk is linked with its history: $(cat dave-desk.out dave-desk.err)"
expect 0 "the desk receives its history" -- receive_until "history imported" "$M" --data-dir dave-desk --account dave@example.org receive
[ "$("$M" --data-dir dave-desk --account dave@example.org groups | grep -c big)" -eq 40 ] && ok ||
    bad "the desk has dave's 40 groups from the history"

finish
