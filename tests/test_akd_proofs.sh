#!/usr/bin/env bash
# The key directory's lookup proofs are made when the log grows and, after a
# restart, in the background: lookups of registered handles make no VRF proof
# of their own (missived_keydir_lookup_proofs_made_total stays put), and the
# proofs kept after the restart are the same number as before it.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
M=$(realpath "${1:?usage: test_akd_proofs.sh MISSIVE MISSIVED}")
D=$(realpath "${2:?usage: test_akd_proofs.sh MISSIVE MISSIVED}")
in_scratch

metric() { python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())' "http://127.0.0.1:$(awk '/^http/{print $2}' srv/missived.ports)/metrics" | awk -v m="missived_$1" '$1 == m {print $2}'; }

start_missived || bad "missived started"
register_people alice bob carol dave
made=$(metric keydir_lookup_proofs_made_total)
[ -n "$made" ] && ok || bad "no keydir_lookup_proofs_made_total"
# the log's new entries are read (and proven) by the first head made after them
expect 0 "alice looks bob up (sending)" -- as alice send bob@example.org --text "hello"
expect 0 "bob looks alice up" -- as bob send alice@example.org --text "hi"
[ "$(metric keydir_lookup_proofs_made_total)" = "$made" ] && ok ||
    bad "lookups made VRF proofs: $made -> $(metric keydir_lookup_proofs_made_total)"
kept=$(metric keydir_proofs_kept)
[ "${kept:-0}" -ge 8 ] && ok || bad "proofs kept for four handles: '$kept'"

kill -TERM "$pid" && wait "$pid"
pid=
start_missived || bad "missived restarted"
# the background thread makes the proofs of the log read at start
for _ in $(seq 100); do
    [ "$(metric keydir_proofs_kept)" = "$kept" ] && break
    sleep 0.2
done
[ "$(metric keydir_proofs_kept)" = "$kept" ] && ok || bad "proofs kept after the restart: $(metric keydir_proofs_kept), before: $kept"
made=$(metric keydir_lookup_proofs_made_total)
expect 0 "carol looks dave up after the restart" -- as carol send dave@example.org --text "hey"
[ "$(metric keydir_lookup_proofs_made_total)" = "$made" ] && ok ||
    bad "lookups after the restart made VRF proofs: $made -> $(metric keydir_lookup_proofs_made_total)"
finish
