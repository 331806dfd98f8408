#!/usr/bin/env bash
# Who may create an account ([accounts] registration): by invitation, with
# codes from missive-admin invites (used up, expired, revoked, typed loosely),
# and closed; a refused registration sends no verification code and creates
# nothing.
set -u
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"
A=$(realpath "${1:?usage: test_registration.sh MISSIVE_ADMIN MISSIVE MISSIVED}")
M=$(realpath "${2:?usage: test_registration.sh MISSIVE_ADMIN MISSIVE MISSIVED}")
D=$(realpath "${3:?usage: test_registration.sh MISSIVE_ADMIN MISSIVE MISSIVED}")
in_scratch

export MISSIVED_ACCOUNTS_REGISTRATION=invite MISSIVED_ACCOUNTS_REGISTER_BURST=20
start_missived || bad "missived started"
server=127.0.0.1:$port
export MISSIVE_PASSWORD="correct horse battery"
code() { grep "handle=$1 code=" srv.log | tail -1 | sed 's/.*code=//'; }
sent_codes() { grep -c "handle=$1 code=" srv.log; }
# start WHO ARGS: the first step, on a new device each time
start() { local who=$1; shift; rm -rf "dev-$who"; "$M" --data-dir "dev-$who" register "$who@example.org" --server "$server" "$@"; }
finish_reg() { "$M" --data-dir "dev-$1" register "$1@example.org" --code "$(code "$1@example.org")"; }
json() { python3 -c 'import json,sys; r=[json.loads(l) for l in open("out.txt")]; print(eval(sys.argv[1]))' "$1"; }

# ---- the operator's side -------------------------------------------------------------------
expect 2 "invites with an unknown action" -- "$A" --data-dir srv invites frobnicate
expect 2 "revoke without an id" -- "$A" --data-dir srv invites revoke
expect 2 "--uses 0" -- "$A" --data-dir srv --uses 0 invites create
expect 2 "--days too many" -- "$A" --data-dir srv --days 99999 invites create
expect 2 "--uses on list" -- "$A" --data-dir srv --uses 2 invites list
expect 0 "no invites yet" -- "$A" --data-dir srv invites
[ ! -s out.txt ] && ok || bad "an empty list: $(cat out.txt)"
expect 0 "an invite for two" -- "$A" --data-dir srv -o json --uses 2 --note "book club" invites create
two=$(json 'r[0]["code"]')
[[ $two =~ ^[0-9A-HJKMNP-TV-Z]{4}(-[0-9A-HJKMNP-TV-Z]{4}){3}$ ]] && ok || bad "the code's form: $two"
[ "$(json 'r[0]["uses"], r[0]["expires"] != "never"')" = "(2, True)" ] && ok || bad "create -o json: $(cat out.txt)"
expect 0 "an invite for one, for ever" -- "$A" --data-dir srv --days 0 invites create
one=$(sed -n 's/^invite [0-9]*: \(.*\)$/\1/p' out.txt)
one_id=$(sed -n 's/^invite \([0-9]*\): .*$/\1/p' out.txt)
grep -q "good for 1 account, no expiry" out.txt && grep -q -- "--invite $one" out.txt && ok || bad "create: $(cat out.txt)"
grep -rq -- "$two" srv/ && bad "the code itself is stored" || ok

# ---- people ----------------------------------------------------------------------------------
expect 3 "no invite: refused" -- start alice
grep -q "registers by invitation" err.txt && ok || bad "the refusal says why: $(cat err.txt)"
[ "$(sent_codes alice@example.org)" = 0 ] && ok || bad "a code went out without an invite"
expect 1 "not an invite code" -- start alice --invite "hello"
grep -q "not an invite code" err.txt && ok || bad "not a code: $(cat err.txt)"
expect 3 "an unknown code" -- start alice --invite "0000-0000-0000-0000"
grep -q "not valid" err.txt && ok || bad "unknown code: $(cat err.txt)"
[ "$(sent_codes alice@example.org)" = 0 ] && ok || bad "a code went out for a bad invite"
expect 2 "--invite with --code" -- "$M" --data-dir dev-alice register alice@example.org --code 123456 --invite "$two"
# typed loosely: lower case, no dashes, O for 0
loose=$(echo "$two" | tr -d '-' | tr 'A-Z' 'a-z' | sed 's/0/o/g')
expect 0 "alice, invited" -- start alice --invite "$loose"
expect 0 "alice's account" -- finish_reg alice
expect 0 "bob, the invite's second use" -- start bob --invite "$two"
expect 0 "bob's account" -- finish_reg bob
expect 3 "carol: the invite is used up" -- start carol --invite "$two"
[ "$(sent_codes carol@example.org)" = 0 ] && ok || bad "a code went out for a used-up invite"
# the check at the start is not the use: a use is taken only when an account is made
expect 0 "carol and dave start with the one-use invite" -- start carol --invite "$one"
expect 0 "..." -- start dave --invite "$one"
expect 0 "carol finishes first" -- finish_reg carol
expect 3 "dave finds it used" -- finish_reg dave
grep -q "not valid" err.txt && ok || bad "dave's refusal: $(cat err.txt)"
expect 0 "the list" -- "$A" --data-dir srv -o json invites
[ "$(json '[(x["uses_left"], x["used"], x["state"], x["note"]) for x in r]')" = "[(0, 2, 'used up', 'book club'), (0, 1, 'used up', '')]" ] &&
    ok || bad "list: $(cat out.txt)"
expect 0 "a third invite" -- "$A" --data-dir srv invites create
third=$(sed -n 's/^invite [0-9]*: \(.*\)$/\1/p' out.txt)
third_id=$(sed -n 's/^invite \([0-9]*\): .*$/\1/p' out.txt)
expect 0 "revoked" -- "$A" --data-dir srv invites revoke "$third_id"
expect 1 "revoking what is not there" -- "$A" --data-dir srv invites revoke 999
expect 3 "dave with the revoked one" -- start dave --invite "$third"
expect 0 "the text list" -- "$A" --data-dir srv invites
grep -q "^$third_id .* revoked *$" out.txt && ok || bad "text list: $(cat out.txt)"
expect 0 "the invited talk" -- as alice send bob@example.org --text "we got in"
expect 0 "..." -- as bob receive
grep -q "we got in" out.txt && ok || bad "bob got: $(cat out.txt)"
curl_metrics=$(python3 -c 'import sys,urllib.request; print(urllib.request.urlopen("http://127.0.0.1:%s/metrics" % sys.argv[1]).read().decode())' "$(awk '/^http/{print $2}' srv/missived.ports)" 2>/dev/null)
echo "$curl_metrics" | grep -q "^missived_invites_used_total 3$" && ok || bad "invites_used_total: $(echo "$curl_metrics" | grep invites)"
echo "$curl_metrics" | grep -Eq "^missived_registrations_refused_total [1-9]" && ok || bad "registrations_refused_total"

# ---- closed -----------------------------------------------------------------------------------
kill -TERM "$pid"; wait "$pid"
export MISSIVED_ACCOUNTS_REGISTRATION=closed
start_missived || bad "missived restarted, closed"
expect 3 "closed: refused" -- start erin
grep -q "takes no new accounts" err.txt && ok || bad "closed: $(cat err.txt)"
expect 0 "the members still talk" -- as bob send alice@example.org --text "still here"
kill -TERM "$pid"; wait "$pid"
export MISSIVED_ACCOUNTS_REGISTRATION=sometimes
expect 2 "a policy that is none" -- "$D" --data-dir srv --check-config
grep -q "registration: expected open, invite or closed" err.txt && ok || bad "config error: $(cat err.txt)"
finish
