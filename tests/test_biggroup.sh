#!/usr/bin/env bash
# A group whose messages do not fit one send to the relay, through missive and
# its daemon against a real missived: 80 members (one of whose devices has no
# MLS KeyPackage, so the group stays on per-device copies) and a
# 7,900-byte text make more envelope bytes than one frame takes, so the message
# goes as several sends of the same message, missive says how far it got on
# stderr, and every member gets it once. The 79 others in a group of their own
# are on MLS: its Welcome, larger than one send, goes by reference through the
# attachment store, and the long text goes once. (tests/test_biggroup.c runs
# groups of hundreds.)
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
M=$(realpath "${1:?usage: test_biggroup.sh MISSIVE MISSIVED}")
D=$(realpath "${2:?usage: test_biggroup.sh MISSIVE MISSIVED}")
in_scratch

export MISSIVED_ACCOUNTS_REGISTER_BURST=1000
start_missived || bad "missived started"
register_people alice
members=()
for i in $(seq -w 1 80); do
    who=m$i
    "$M" --data-dir "dev-$who" register "$who@example.org" --server "$server" >/dev/null 2>&1
    code=$(grep "handle=$who@example.org code=" srv.log | tail -1 | sed 's/.*code=//')
    "$M" --data-dir "dev-$who" register "$who@example.org" --code "$code" >/dev/null ||
        bad "register $who"
    members+=("$who@example.org")
done
# m80's device has published no KeyPackage (as an older client's): the group stays per-device
sqlite3 -cmd ".timeout 5000" srv/missive.db "DELETE FROM mls_key_packages WHERE device_id IN
    (SELECT d.id FROM devices d JOIN account_handles h ON h.account_id = d.account_id
     WHERE h.handle = 'm80@example.org');" && ok || bad "m80's KeyPackages dropped"
expect 0 "alice makes a group of 81" -- as alice groups create big "${members[@]}"
long=$(python3 -c 'print("a long line of text to many people. " * 219)')

expect 0 "a long message to all of them" -- as alice send --group big --text "$long"
grep -Eq "^missive: sent to [0-9]+ of 81 recipients$" err.txt && ok ||
    bad "progress on stderr: $(cat err.txt)"
[ "$(grep -c "recipients$" err.txt)" -ge 1 ] && ok || bad "split sends: $(cat err.txt)"
for who in m01 m40 m80; do
    expect 0 "$who gets it" -- as $who receive
    [ "$(grep -c "a long line of text to many people" out.txt)" -eq 1 ] && ok ||
        bad "$who got it once: $(head -c 300 out.txt)"
done

# the same through alice's daemon: the answer carries the progress, schema 2 holds; the three
# who answered have sent alice their profile keys, so theirs go sealed, one by one, and the
# split send is to the other 78
sock=$work/dev-alice/alice@example.org/daemon.sock
(exec "$M" --data-dir dev-alice daemon >daemon.out 2>daemon.err) &
daemon=$!
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
daemon_rpc "$sock" --schema 2 \
    "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"send\",\"params\":{\"group\":\"big\",\"text\":\"again: $long\"}}" >rpc.txt
grep -q '"id": *1, *"result"\|"result".*"id": *1' rpc.txt && ok || bad "send through the daemon: $(head -c 400 rpc.txt)"
grep -q 'sent to [0-9]* of 78 recipients' rpc.txt && ok ||
    bad "progress in the answer: $(grep -o '"stderr": *"[^"]*"' rpc.txt)"
daemon_schema_ok 2 rpc.txt && ok || bad "schema 2 answers"
kill -TERM "$daemon" && wait "$daemon"
daemon=
expect 0 "m77 gets the daemon's message" -- as m77 receive
grep -q "again: a long line" out.txt && ok || bad "m77: $(head -c 300 out.txt)"

# the 79 whose devices all speak MLS, in a group of 80 with alice: on MLS at once
in_before=$(metric blob_bytes_in_total)
expect 0 "alice makes a group of 80 on MLS" -- as alice groups create mlsbig "${members[@]:0:79}"
# its Welcome (the ratchet tree of 80 devices inside) went through the attachment store
[ "$(($(metric blob_bytes_in_total) - in_before))" -gt 16384 ] && ok ||
    bad "the Welcome by reference: $in_before -> $(metric blob_bytes_in_total) bytes uploaded"
expect 0 "alice's groups" -- as alice -o json groups
python3 - out.txt <<'PY' && ok || bad "mlsbig on MLS, big not: $(cat out.txt)"
import json, sys
rows = {r["name"]: r for r in map(json.loads, open(sys.argv[1]))}
assert rows["mlsbig"]["mls"] is True and rows["big"]["mls"] is False, rows
PY
expect 0 "the long text to the MLS group" -- as alice send --group mlsbig --text "mls: $long"
! grep -q "recipients$" err.txt && ok || bad "one send, no progress: $(cat err.txt)"
for who in m01 m79; do
    expect 0 "$who joins and reads it" -- as $who receive
    [ "$(grep -c "mls: a long line" out.txt)" -eq 1 ] && ok || bad "$who: $(head -c 300 out.txt)"
    expect 0 "$who's groups" -- as $who -o json groups
    python3 -c 'import json, sys; assert any(r["name"] == "mlsbig" and r["mls"] for r in map(json.loads, open(sys.argv[1])))' out.txt &&
        ok || bad "$who is on MLS: $(cat out.txt)"
done
finish
