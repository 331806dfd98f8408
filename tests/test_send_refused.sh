#!/usr/bin/env bash
# A send the server answers but cannot store (its disk fails: tests/faulty_io.c
# preloaded into missived) ends with its own exit status and words, not with
# "server unreachable"; once the disk works again the send goes through. A
# message of the outbox that cannot go is named to the daemon's subscribers
# and does not hold back the next conversation's.
set -u
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"
M=$(realpath "${1:?usage: test_send_refused.sh MISSIVE MISSIVED FAULTY_IO}")
D=$(realpath "${2:?usage: test_send_refused.sh MISSIVE MISSIVED FAULTY_IO}")
F=$(realpath "${3:?usage: test_send_refused.sh MISSIVE MISSIVED FAULTY_IO}")
in_scratch
daemon=

# (in sanitizer builds the shim comes before the sanitizer's runtime: allowed here)
start_missived env ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0" \
    LD_PRELOAD="$F" MSV_FAULTY_IO_MATCH="$work/srv/missive.db" \
    MSV_FAULTY_IO_TRIGGER="$work/disk-fails" || bad "missived started"
register_people alice bob carol
expect 0 "a send while the disk works" -- as alice send bob@example.org --text "first"
touch disk-fails
expect 5 "a send the server cannot store" -- as alice send bob@example.org --text "second"
grep -q "the server could not store it" err.txt && ok || bad "storage refusal words: $(cat err.txt)"
grep -q "unreachable" err.txt && bad "called unreachable: $(cat err.txt)" || ok
rm -f disk-fails
expect 0 "the same send once the disk works" -- as alice send bob@example.org --text "second"
# a server that is gone is still unreachable (4); both messages wait in the outbox
kill -TERM "$pid" && wait "$pid"
pid=
expect 4 "no server" -- as alice send carol@example.org --text "to carol"
expect 4 "no server" -- as alice send bob@example.org --text "third"

# the server back, but refusing the prekeys a first message to carol needs: alice's daemon
# sends the outbox as it connects; carol's message stays queued, named (schema 2's
# outbox_held, with why), and bob's, queued after it, goes all the same
sock=$work/dev-alice/alice@example.org/daemon.sock
(exec "$M" --data-dir dev-alice daemon >daemon.out 2>daemon.err) &
daemon=$!
for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
back() {
    start_missived env MISSIVED_TESTING_REFUSE_PREKEY_CLAIMS=true || bad "missived restarted"
    for _ in $(seq 150); do grep -q outbox_held ev2.txt && break; sleep 0.1; done
}
events_both "$sock" back
grep -q '"type": *"outbox_held"' ev2.txt && grep -q '"status": *"queued"' ev2.txt &&
    grep -q 'did not give the post-quantum prekeys' ev2.txt && ok || bad "outbox_held: $(cat ev2.txt)"
grep -q outbox_held ev1.txt && bad "a schema-1 subscriber got outbox_held: $(cat ev1.txt)" || ok
daemon_schema_ok 2 ev2.txt && ok || bad "schema 2"
grep -q "is still queued: .*did not give the post-quantum prekeys" daemon.err && ok ||
    bad "the daemon's own words: $(cat daemon.err)"
kill -TERM "$daemon" && wait "$daemon"
expect 0 "bob reads" -- as bob receive
grep -q "third" out.txt && ok || bad "bob's message queued after carol's did not go: $(cat out.txt)"
expect 0 "carol reads" -- as carol receive
grep -q "to carol" out.txt && bad "carol's message went though her prekeys were refused" || ok
finish
