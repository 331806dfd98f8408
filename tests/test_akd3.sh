#!/usr/bin/env bash
# The key directory's append-only proofs, end to end against a real missived on
# loopback: missive-audit checks every log entry's step in the key directory
# (its version proven new to the tree, the tree after it computed) and every
# head's signed root against the tree the steps build, keeping only the last
# root. An honest directory passes, also across restarts (the tree rebuilt from
# the log is the same); a directory that changes an entry of its tree in place,
# removes one, or forks its tree ([testing] keydir_rewrite, keydir_forge) is
# caught, by an auditor that followed it (also one that started at an epoch, not
# at the log's start) and by a fresh one, with exit status 1.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
M=$(realpath "${1:?usage: test_akd3.sh MISSIVE MISSIVED MISSIVE_AUDIT}")
D=$(realpath "${2:?usage: test_akd3.sh MISSIVE MISSIVED MISSIVE_AUDIT}")
A=$(realpath "${3:?usage: test_akd3.sh MISSIVE MISSIVED MISSIVE_AUDIT}")
in_scratch
# version-3 leaves (not the default): the labels computed from the handles they name
export MISSIVED_DIRECTORY_LEAF_VERSION=3
trap 'kill -TERM "$pid" 2>/dev/null && wait "$pid"; rm -rf "$work"' EXIT
alarm="THE LOG DOES NOT CHECK OUT: "
stop() { kill -TERM "$pid" && wait "$pid"; pid=; }
restart() { stop; start_missived "$@" || bad "missived restarted $*"; }
# caught STATE WHAT WORDS: an auditor on STATE (a copy) exits 1 with WORDS
caught() {
    cp "$1" try.state
    expect 1 "$2" -- "$A" --state try.state --quiet
    grep -qF "$alarm$3" err.txt && ok || bad "$2: $(cat out.txt err.txt)"
}
fresh_caught() {
    rm -f fresh.state
    expect 1 "$1 (a fresh auditor)" -- "$A" --state fresh.state --server "$server" --fingerprint "$fp" --quiet
    grep -qF "$alarm$2" err.txt && ok || bad "$1, fresh: $(cat out.txt err.txt)"
}
honest() {
    expect 0 "$1" -- "$A" --state st
    grep -q "the log checks out: $2 entries" out.txt && grep -q "^keydir $2 [0-9a-f]\{64\}$" st &&
        ok || bad "$1: $(cat out.txt err.txt; tail -1 st)"
    cp st "st$2"
}
changed="the key directory changed behind the log's back"
signed="the key directory's signed root for"

start_missived || bad "missived started"
register_people alice bob
fp=$(cat srv/server.fingerprint)
expect 0 "the first audit" -- "$A" --state st --server "$server" --fingerprint "$fp" --log-key "$(cat srv/log.pub)"
grep -q "the log checks out: 2 entries (2 new)" out.txt && grep -q "^missive-audit-state 4$" st &&
    grep -q "^keydir 2 [0-9a-f]\{64\}$" st && ok || bad "the first audit: $(cat out.txt err.txt)"
cp st st2
register_people carol
honest "the audit follows the key directory" 3
# each entry's label written with it, in the transaction that appends it
[ "$(sqlite3 srv/missive.db 'SELECT COUNT(*) FROM kt_labels;')" = 3 ] && ok ||
    bad "the labels kept beside the log: $(sqlite3 srv/missive.db 'SELECT idx FROM kt_labels;')"
restart
honest "the tree built from the stored labels is the same" 3
grep "kt_tree_built" srv.log | tail -1 | grep -q "entries=3 labels_stored=3 labels_computed=0" && ok ||
    bad "the start read the labels: $(grep kt_tree_built srv.log | tail -1)"
# labels missing (as after a crash between the log's write and theirs): computed, kept again
stop
sqlite3 srv/missive.db 'DELETE FROM kt_labels WHERE idx >= 1;'
start_missived || bad "missived restarted"
grep "kt_tree_built" srv.log | tail -1 | grep -q "labels_stored=1 labels_computed=2" && ok ||
    bad "the missing labels computed: $(grep kt_tree_built srv.log | tail -1)"
honest "the tree with labels computed again is the same" 3
[ "$(sqlite3 srv/missive.db 'SELECT COUNT(*) FROM kt_labels;')" = 3 ] && ok || bad "the labels kept again"
# labels of another VRF key (the first checked): all computed again and replaced
stop
sqlite3 srv/missive.db "UPDATE kt_labels SET label = zeroblob(32);"
start_missived || bad "missived restarted"
grep "kt_tree_built" srv.log | tail -1 | grep -q "labels_computed=3 (the stored labels are not the VRF key's" && ok ||
    bad "labels of another key: $(grep kt_tree_built srv.log | tail -1)"
honest "the tree with labels of another key computed again is the same" 3
[ "$(sqlite3 srv/missive.db 'SELECT COUNT(*) FROM kt_labels WHERE label = zeroblob(32);')" = 0 ] && ok ||
    bad "the labels replaced"

# an entry changed in place in the tree (bob's, entry 1), the log untouched
restart env MISSIVED_TESTING_KEYDIR_REWRITE="change 1"
caught st3 "a root changed for the same size" "$signed 3 entries is not the tree"
register_people dave
caught st3 "an entry changed, then the log grew" "$changed: log entry 3's append-only proof starts from another tree than the one of 3 entries"
caught st2 "an entry changed, seen from an older epoch" "$changed: log entry 3's"
fresh_caught "an entry changed" "$changed: log entry 3's"

restart
honest "the honest directory again" 4
# an entry removed from the tree
restart env MISSIVED_TESTING_KEYDIR_REWRITE="remove 1"
caught st4 "an entry removed" "$signed 4 entries is not the tree"
fresh_caught "an entry removed" "$signed 4 entries is not the tree"
register_people erin
caught st4 "an entry removed, then the log grew" "$changed: log entry 4's"

restart
honest "the honest directory again" 5
# an auditor that starts at an epoch: entry 3 on, the key directory from the tree there
rm -f late.state
expect 0 "an auditor from entry 3" -- "$A" --state late.state --server "$server" --fingerprint "$fp" --start 3
grep -q "the log checks out: 5 entries (2 new)" out.txt && grep -q "^leaves 2 from 3$" late.state &&
    [ "$(grep '^keydir ' late.state)" = "$(grep '^keydir ' st5)" ] && ok ||
    bad "an auditor from entry 3: $(cat out.txt err.txt; grep -v '^[0-9a-f]*$' late.state)"
expect 0 "it follows" -- "$A" --state late.state
grep -q "the log checks out: 5 entries (0 new)" out.txt && ok || bad "it follows: $(cat out.txt err.txt)"
cp late.state late5.state
expect 2 "--start on a state that exists" -- "$A" --state late.state --start 1
grep -q "on the first run only" err.txt && ok || bad "--start again: $(cat err.txt)"
rm -f past.state
expect 2 "--start past the log" -- "$A" --state past.state --server "$server" --fingerprint "$fp" --start 9
grep -q "\-\-start 9: the log has 5 entries" err.txt && [ ! -e past.state ] && ok || bad "--start past: $(cat err.txt)"
# a fork: a version in the tree that no log entry is, the roots signed from then on another
# history of the tree than the one the auditor followed
restart env MISSIVED_TESTING_KEYDIR_FORGE="alice@example.org 8"
caught st5 "a forked tree" "$signed 5 entries is not the tree its append-only proof builds from the one this auditor checked: an entry was changed or removed behind the log's back, or the directory forked"
fresh_caught "a forked tree" "$signed 5 entries"
caught late5.state "a forked tree, seen by the auditor that started at entry 3" "$signed 5 entries is not the tree"

# a malformed option is refused at start
stop
MISSIVED_TESTING_KEYDIR_REWRITE="change 99" MISSIVED_SERVER_LISTEN_PORT=0 MISSIVED_HTTP_LISTEN_PORT=0 \
    timeout 60 "$D" --data-dir srv >out.txt 2>err.txt && bad "missived started with a rewrite of no entry" || ok
grep -q "keydir_rewrite takes" err.txt && ok || bad "the option's error: $(cat err.txt)"
start_missived || bad "missived restarted honest"
honest "the honest directory at last" 5

# a state file whose key directory line is missing or for another size: not one it wrote
sed '/^keydir /d' st >bad.state
expect 2 "a state without its key directory root" -- "$A" --state bad.state
grep -q "not an audit state this program wrote" err.txt && ok || bad "state without keydir: $(cat err.txt)"
sed 's/^keydir [0-9]* /keydir 4 /' st >bad.state
expect 2 "a state whose key directory root is for another size" -- "$A" --state bad.state
grep -q "not an audit state this program wrote" err.txt && ok || bad "state keydir size: $(cat err.txt)"

# the proof kept is bounded: past [directory] append_proof_kib the oldest entries' steps go, and
# a read of them is refused with the first entry still kept
restart env MISSIVED_DIRECTORY_APPEND_PROOF_KIB=1
register_people frank grace heidi ivan judy
rm -f fresh.state
expect 4 "a fresh auditor past the bound" -- "$A" --state fresh.state --server "$server" --fingerprint "$fp"
grep -q "no longer keeps the key directory.s proof this audit needs: the key directory.s append-only proof is kept from log entry [1-9][0-9]* on, not from 0" err.txt && ok ||
    bad "the proof gone: $(cat err.txt)"
first=$(sed -n 's/.*kept from log entry \([0-9]*\) on.*/\1/p' err.txt)
[ "$(metric keydir_append_proof_from)" = "$first" ] && ok || bad "the metric: $(metric keydir_append_proof_from), not $first"
finish
