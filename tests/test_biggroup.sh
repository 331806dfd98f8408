#!/usr/bin/env bash
# A group whose messages do not fit one send to the relay, through missive and
# its daemon against a real missived: 80 members and a 7,900-byte text make
# more envelope bytes than one frame takes, so the message goes as several
# sends of the same message, missive says how far it got on stderr, and every
# member gets it once. (tests/test_biggroup.c runs groups of hundreds.)
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
finish
