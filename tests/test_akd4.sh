#!/usr/bin/env bash
# Leaves that name no handle, end to end against a real missived on loopback:
# with [directory] leaf_version = 4 the log cuts over (an entry of its own) and
# from then on publishes each device set as its key directory entry (label and
# value) only, while lookups carry the device set beside it. Clients check that
# the device set is the version the leaf commits to (a directory that shows
# another entry's leaf is refused); missive-audit checks that each such leaf is
# the entry its step adds to the key directory (a tree that differs from the
# log's leaves is caught by a fresh auditor); a start takes the tree's entries
# from the leaves (no VRF output for them).
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
M=$(realpath "${1:?usage: test_akd4.sh MISSIVE MISSIVED MISSIVE_AUDIT}")
D=$(realpath "${2:?usage: test_akd4.sh MISSIVE MISSIVED MISSIVE_AUDIT}")
A=$(realpath "${3:?usage: test_akd4.sh MISSIVE MISSIVED MISSIVE_AUDIT}")
in_scratch
alarm="THE LOG DOES NOT CHECK OUT: "
stop() { kill -TERM "$pid" && wait "$pid"; pid=; }
restart() { stop; start_missived "$@" || bad "missived restarted $*"; }
v3="env MISSIVED_DIRECTORY_LEAF_VERSION=3"
v4="env MISSIVED_DIRECTORY_LEAF_VERSION=4"
kinds() { sqlite3 srv/missive.db "SELECT idx || ':' || hex(substr(leaf, 1, 1)) || ':' || COALESCE(hex(substr(pub, 1, 1)), '') FROM kt_log ORDER BY idx;" | tr '\n' ' '; }

# alice registers on a log of version-3 leaves (no longer the default), then it cuts over
start_missived $v3 || bad "missived started"
register_people alice
restart $v4
grep -q "kt_cutover.*index=1 " srv.log && ok || bad "the cut-over entry: $(grep kt_cutover srv.log)"
register_people bob carol
as alice contacts add bob@example.org bob@example.org >/dev/null || bad "alice's contact bob"
restart $v4
grep -c "kt_cutover" srv.log | grep -qx 1 && ok || bad "one cut-over: $(grep kt_cutover srv.log)"

# lookups of version-4 leaves: checked, and messages flow
expect 0 "alice sends to bob" -- as alice send bob@example.org --text "hello bob"
expect 0 "bob receives" -- as bob receive
grep -q "hello bob" out.txt && ok || bad "bob's message: $(cat out.txt err.txt)"
expect 0 "bob answers alice (a leaf from before the cut-over)" -- as bob send alice@example.org --text "hi alice"
expect 0 "alice receives" -- as alice receive
grep -q "hi alice" out.txt && ok || bad "alice's message: $(cat out.txt err.txt)"
# alice's leaf from before stays; the cut-over; bob's and carol's published as version-4 leaves
[ "$(kinds)" = "0:06: 1:05: 2:06:04 3:06:04 " ] && ok || bad "the log's leaves: $(kinds)"

# the auditor: every version-4 leaf is the entry its step adds
fp=$(cat srv/server.fingerprint)
expect 0 "an audit" -- "$A" --state st --server "$server" --fingerprint "$fp" --log-key "$(cat srv/log.pub)"
grep -q "the log checks out: 4 entries" out.txt && grep -q "^keydir 4 [0-9a-f]\{64\} cutover 1$" st && ok ||
    bad "the audit: $(cat out.txt err.txt; tail -1 st)"

# a start takes the entries after the cut-over from their leaves: no label computed for them
stop
sqlite3 srv/missive.db 'DELETE FROM kt_labels;'
start_missived $v4 || bad "missived restarted"
grep "kt_tree_built" srv.log | tail -1 | grep -q "entries=4 labels_stored=0 labels_computed=1" && ok ||
    bad "the tree from the leaves: $(grep kt_tree_built srv.log | tail -1)"
expect 0 "the auditor follows across the restart" -- "$A" --state st
grep -q "the log checks out: 4 entries (0 new)" out.txt && ok || bad "follows: $(cat out.txt err.txt)"
# a log that has cut over stays so, whatever the setting says
restart $v3
register_people dave
expect 0 "the auditor follows" -- "$A" --state st
grep -q "the log checks out: 5 entries (1 new)" out.txt && ok || bad "follows: $(cat out.txt err.txt)"
[ "$(kinds | awk '{print $5}')" = "4:06:04" ] && ok || bad "after the setting went back: $(kinds)"

# a tombstone after the cut-over: a version-4 leaf too, opened beside the lookup's answer; the
# handle registered again is a new account to whoever knew it
expect 0 "alice sends to dave" -- as alice send dave@example.org --text "hi dave"
expect 0 "dave deletes his account" -- as dave account delete --yes
as alice send dave@example.org --text "still there?" >out.txt 2>err.txt
grep -q "dave@example.org deleted their account" err.txt && ok || bad "the tombstone: $(cat out.txt err.txt)"
"$M" --data-dir dev-dave2 register dave@example.org --server "$server" >/dev/null 2>&1
code=$(grep "handle=dave@example.org code=" srv.log | tail -1 | sed 's/.*code=//')
"$M" --data-dir dev-dave2 register dave@example.org --code "$code" >/dev/null && ok || bad "dave registers again"
expect 1 "alice's send finds the new dave" -- as alice send dave@example.org --text "written to the old dave"
grep -q "dave@example.org is a new account" err.txt && ok || bad "the new account: $(cat out.txt err.txt)"
expect 0 "alice sends to the new dave" -- as alice send dave@example.org --text "who are you"
[ "$(kinds | awk '{print $6, $7}')" = "5:03:04 6:06:04" ] && ok || bad "the tombstone's leaf: $(kinds)"

# a directory that shows carol's device set beside another entry's leaf (bob's, proven in the
# log): refused, nothing sent
restart env MISSIVED_TESTING_KT_V4_LEAF_FAULT=true
expect 3 "alice's send to carol, beside bob's leaf" -- as alice send carol@example.org --text "hi carol"
grep -q "the directory's devices of carol@example.org are not the ones its log holds" err.txt && ok ||
    bad "the refusal: $(cat out.txt err.txt)"
sqlite3 dev-alice/alice@example.org/state.db "SELECT key FROM settings WHERE key LIKE 'kt_index:carol%';" >pins.txt 2>/dev/null
[ ! -s pins.txt ] && ok || bad "a refused answer was remembered: $(cat pins.txt)"
restart
expect 0 "the honest directory: alice's send to carol" -- as alice send carol@example.org --text "hi carol"

# a tree whose entry of the next log entry (7, erin's) is not the leaf's: the steps hold and end
# at the signed roots, but a fresh auditor finds the leaf is not what its step adds
restart env MISSIVED_TESTING_KEYDIR_V4_MISMATCH=7
register_people erin
rm -f fresh.state
expect 1 "a fresh auditor" -- "$A" --state fresh.state --server "$server" --fingerprint "$fp" --quiet
grep -qF "${alarm}log entry 7's leaf is not the entry the key directory adds for it" err.txt && ok ||
    bad "the tree that differs from the log: $(cat out.txt err.txt)"
# a version-4 leaf given as a hash hides what the tree holds: refused after the cut-over
restart env MISSIVED_TESTING_LOG_READ_HASH_FAULT=4
rm -f fresh.state
expect 1 "a fresh auditor given hashes of version-4 leaves" -- "$A" --state fresh.state --server "$server" --fingerprint "$fp" --quiet
grep -qF "${alarm}entry 2, after the log's cut-over (entry 1), is not a version-4 leaf given whole" err.txt && ok ||
    bad "a hash after the cut-over: $(cat out.txt err.txt)"
# an auditor that starts after the cut-over learns where it is from the answer (LogEntries.cutover)
# and refuses the hash all the same (before, it did not know the log had cut over)
rm -f fresh.state
expect 1 "an auditor from entry 3 given hashes of version-4 leaves" -- "$A" --state fresh.state --server "$server" --fingerprint "$fp" --quiet --start 3
grep -qF "${alarm}entry 3, after the log's cut-over (entry 1), is not a version-4 leaf given whole" err.txt && ok ||
    bad "a hash after the cut-over, from entry 3: $(cat out.txt err.txt)"
# a cut-over named at another entry than the log holds it: refused by a fresh auditor and by one
# that followed the log (it read the cut-over at entry 1)
restart
rm -f fresh.state
expect 0 "a fresh auditor, honest" -- "$A" --state fresh.state --server "$server" --fingerprint "$fp" --quiet
restart env MISSIVED_TESTING_LOG_CUTOVER_FAULT=true
register_people frank
expect 1 "the auditor that followed, the cut-over moved" -- "$A" --state fresh.state --quiet
grep -qF "${alarm}the log's cut-over the answer names (entry 2) is not a cut-over entry" err.txt && ok ||
    bad "the cut-over moved: $(cat out.txt err.txt)"
rm -f fresh.state
expect 1 "a fresh auditor, the cut-over moved" -- "$A" --state fresh.state --server "$server" --fingerprint "$fp" --quiet
grep -qF "the cut-over moved" err.txt && ok || bad "the cut-over moved, fresh: $(cat out.txt err.txt)"
# a setting other than 3 or 4 is refused at start
stop
MISSIVED_DIRECTORY_LEAF_VERSION=5 MISSIVED_SERVER_LISTEN_PORT=0 MISSIVED_HTTP_LISTEN_PORT=0 \
    timeout 60 "$D" --data-dir srv >out.txt 2>err.txt && bad "missived started with leaf_version 5" || ok
grep -qi "leaf_version" err.txt && grep -q "from 3 to 4" err.txt && ok || bad "the option's error: $(cat err.txt)"
finish
