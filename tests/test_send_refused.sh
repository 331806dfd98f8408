#!/usr/bin/env bash
# A send the server answers but cannot store (its disk fails: tests/faulty_io.c
# preloaded into missived) ends with its own exit status and words, not with
# "server unreachable"; once the disk works again the send goes through.
set -u
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"
M=$(realpath "${1:?usage: test_send_refused.sh MISSIVE MISSIVED FAULTY_IO}")
D=$(realpath "${2:?usage: test_send_refused.sh MISSIVE MISSIVED FAULTY_IO}")
F=$(realpath "${3:?usage: test_send_refused.sh MISSIVE MISSIVED FAULTY_IO}")
in_scratch

# (in sanitizer builds the shim comes before the sanitizer's runtime: allowed here)
start_missived env ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0" \
    LD_PRELOAD="$F" MSV_FAULTY_IO_MATCH="$work/srv/missive.db" \
    MSV_FAULTY_IO_TRIGGER="$work/disk-fails" || bad "missived started"
register_people alice bob
expect 0 "a send while the disk works" -- as alice send bob@example.org --text "first"
touch disk-fails
expect 5 "a send the server cannot store" -- as alice send bob@example.org --text "second"
grep -q "the server could not store it" err.txt && ok || bad "storage refusal words: $(cat err.txt)"
grep -q "unreachable" err.txt && bad "called unreachable: $(cat err.txt)" || ok
rm -f disk-fails
expect 0 "the same send once the disk works" -- as alice send bob@example.org --text "second"
# a server that is gone is still unreachable (4)
kill -TERM "$pid" && wait "$pid"
pid=
expect 4 "no server" -- as alice send bob@example.org --text "third"
finish
