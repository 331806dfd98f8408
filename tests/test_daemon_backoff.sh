#!/usr/bin/env bash
# A daemon whose receives keep failing (its disk fails every write: tests/faulty_io.c preloaded,
# its data directory matched) connects again after a second, then twice as long each time, not
# every second; once the disk works again, a receive asked of it takes the message that was
# waiting at once, and once.
set -u
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"
M=$(realpath "${1:?usage: test_daemon_backoff.sh MISSIVE MISSIVED FAULTY_IO}")
D=$(realpath "${2:?usage: test_daemon_backoff.sh MISSIVE MISSIVED FAULTY_IO}")
F=$(realpath "${3:?usage: test_daemon_backoff.sh MISSIVE MISSIVED FAULTY_IO}")
in_scratch

start_missived || bad "missived started"
register_people alice bob
sock=dev-bob/bob@example.org/daemon.sock
(ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0" \
    MSV_FAULTY_IO_MATCH="$work/dev-bob/" MSV_FAULTY_IO_TRIGGER="$work/failing" LD_PRELOAD="$F" \
    exec "$M" --data-dir dev-bob daemon >daemon.out 2>daemon.err) &
daemon=$!
online() {
    daemon_rpc "$sock" '{"jsonrpc":"2.0","id":1,"method":"status"}' >out.txt 2>/dev/null &&
        [ "$(field 'r["result"]["online"]')" = True ]
}
for _ in $(seq 100); do online && break; sleep 0.1; done
online && ok || bad "bob's daemon is online: $(cat daemon.err)"

# the disk fails; a message comes that the daemon cannot store: each receive fails
touch failing
before=$(metric connections_total)
expect 0 "alice writes to bob" -- as alice send bob@example.org --text "through a failing disk"
sleep 16
# alice's connection, then bob's at about 1, 3, 7 and 15 s (every second: 9 or more)
made=$(($(metric connections_total) - before))
[ "$made" -le 6 ] && ok || bad "connections in 16 s of failing receives: $made"

# the disk works again, with the next try some 15 s off: a receive asked of the daemon tries at
# once, and takes the message
: >got.txt
rm failing
end=$((SECONDS + 8))
while [ "$SECONDS" -lt "$end" ]; do
    as bob receive >>got.txt 2>&1
    grep -q "through a failing disk" got.txt && break
    sleep 0.5
done
[ "$(grep -c "through a failing disk" got.txt)" = 1 ] && ok || bad "the message within 8 s: $(cat got.txt)"
expect 0 "and no more" -- as bob receive
grep -q "through a failing disk" out.txt && bad "shown twice: $(cat out.txt)" || ok
finish
