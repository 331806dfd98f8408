#!/usr/bin/env bash
# missive-admin against a running missived: accounts with their devices and
# queues, suspension (refused at once for new connections, and connected
# devices cut off at once through the control socket), statistics, expiry,
# the log key's rotation, and its errors.
set -u
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"
A=$(realpath "${1:?usage: test_admin.sh MISSIVE_ADMIN MISSIVE MISSIVED}")
M=$(realpath "${2:?usage: test_admin.sh MISSIVE_ADMIN MISSIVE MISSIVED}")
D=$(realpath "${3:?usage: test_admin.sh MISSIVE_ADMIN MISSIVE MISSIVED}")
in_scratch

start_missived || bad "missived started"
server=127.0.0.1:$port
export MISSIVE_PASSWORD="correct horse battery"
code() { grep "handle=$1 code=" srv.log | tail -1 | sed 's/.*code=//'; }
for who in alice bob; do
    "$M" --data-dir "dev-$who" register "$who@example.org" --server "$server" >/dev/null 2>&1 &&
        "$M" --data-dir "dev-$who" register "$who@example.org" --code "$(code "$who@example.org")" >/dev/null 2>&1 &&
        ok || bad "register $who"
done
as() { local who=$1; shift; "$M" --data-dir "dev-$who" --account "$who@example.org" "$@"; }

expect 0 "--help" -- "$A" --help
grep -q '^usage: missive-admin' out.txt && ok || bad "help"
expect 2 "no command" -- "$A" --data-dir srv
expect 2 "unknown command" -- "$A" --data-dir srv frobnicate
expect 2 "suspend without a handle" -- "$A" --data-dir srv suspend
expect 2 "stats with an argument" -- "$A" --data-dir srv stats extra
expect 1 "no database there" -- "$A" --data-dir nowhere accounts
[ ! -e nowhere ] && ok || bad "a directory was made for a mistyped path"

expect 0 "bob writes to alice" -- as bob send alice@example.org --text "hello"
expect 0 "accounts" -- "$A" --data-dir srv accounts
grep -Eq '^alice@example.org +[0-9T:Z-]+ +1 +0 +1 +[1-9][0-9]* +0 +0 +0 active$' out.txt && grep -Eq '^bob@example.org +[0-9T:Z-]+ +1 +0 +0 +0 +1 +[1-9][0-9]* +0 active$' out.txt && ok || bad "accounts: $(cat out.txt)"
expect 0 "accounts as JSON" -- "$A" --data-dir srv -o json accounts
python3 -c "import json,sys; rows=[json.loads(l) for l in open('out.txt')]; a=[r for r in rows if r['handle']=='alice@example.org'][0]; sys.exit(not (a['devices']==1 and a['queued']==1 and a['queued_bytes']>0 and a['sending']==0 and a['attachment_bytes']==0 and a['suspended'] is False))" && ok || bad "accounts JSON: $(cat out.txt)"
expect 0 "stats" -- "$A" --data-dir srv stats
grep -q '^accounts          2 (0 suspended)$' out.txt && grep -q '^queued envelopes  1, [0-9]* bytes, oldest 20' out.txt && ok || bad "stats: $(cat out.txt)"
expect 0 "stats as JSON" -- "$A" --data-dir srv -o json stats
python3 -c "import json; s=json.load(open('out.txt')); assert s['accounts']==2 and s['queued']==1 and s['log_leaves']>=2 and s['database_bytes']>0" && ok || bad "stats JSON: $(cat out.txt)"
# a handle with a direction override and a C1 CSI: missived refuses to register it; one
# already in a database (registered before handles were restricted) is listed as escapes
evil=$'eve\xe2\x80\xae\xc2\x9b2j@example.org'
expect 1 "register eve" -- "$M" --data-dir dev-eve register "$evil" --server "$server"
python3 -c "import sqlite3,sys; d=sqlite3.connect('srv/missive.db', timeout=10); d.execute('INSERT INTO accounts (handle, password_hash, created_ms) VALUES (?, ?, 0)', (sys.argv[1], 'x')); d.commit()" "$evil" && ok || bad "eve's old account"
for how in "" "-o json"; do
    expect 0 "accounts $how with eve" -- "$A" --data-dir srv $how accounts
    LC_ALL=C grep -q $'[\x80-\xff]' out.txt && bad "accounts $how: $(od -c out.txt | head)" || ok
done
expect 0 "accounts with eve" -- "$A" --data-dir srv accounts
grep -qF 'eve\u202e\u009b2j@example.org' out.txt && ok || bad "eve's handle: $(cat out.txt)"

# suspended: alice cannot connect; lifted: she can
expect 1 "an unknown handle" -- "$A" --data-dir srv suspend nobody@example.org
expect 0 "suspend alice" -- "$A" --data-dir srv suspend alice@example.org
grep -q "alice@example.org is suspended" out.txt && ok || bad "suspend output: $(cat out.txt)"
expect 3 "a suspended account cannot connect" -- as alice receive
grep -q "this account is suspended" err.txt && ok || bad "suspended message: $(cat err.txt)"
expect 0 "unsuspend alice" -- "$A" --data-dir srv unsuspend alice@example.org
expect 0 "alice connects again" -- as alice receive
grep -q "hello" out.txt && ok || bad "alice's message after unsuspend: $(cat out.txt)"

# a device connected while its account is suspended is cut off at once, with no reload:
# missive-admin tells the server through its control socket
as bob receive --wait 20 >bob.out 2>bob.err &
bob=$!
for _ in $(seq 50); do [ -S srv/missived.ctl ] && break; sleep 0.1; done
sleep 1
expect 0 "suspend bob" -- "$A" --data-dir srv suspend bob@example.org
grep -q "bob@example.org is suspended; its connected devices are cut off now" out.txt && ok || bad "suspend output: $(cat out.txt)"
for _ in $(seq 50); do grep -q "event=suspended_closed" srv.log && break; sleep 0.1; done
grep -q "event=suspended_closed" srv.log && ok || bad "bob was not cut off without a reload: $(tail -5 srv.log)"
grep -q "event=reloaded" srv.log && bad "the server was reloaded" || ok
wait "$bob"
[ $? -ne 0 ] && ok || bad "bob's receive ended normally"
# an order for an account that is not suspended, and one that is no order, close nothing
as alice receive --wait 3 >alice.out 2>alice.err &
alice=$!
sleep 1
alice_id=$(python3 -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute("select id from accounts where handle=?", ("alice@example.org",)).fetchone()[0])' srv/missive.db 2>/dev/null)
[ -n "$alice_id" ] && ok || bad "alice's account id"
python3 -c 'import socket,sys
s=socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
for m in (b"suspended " + sys.argv[2].encode(), b"suspended 18446744073709551616", b"frobnicate"):
    s.sendto(m, sys.argv[1])' srv/missived.ctl "${alice_id:-1}"
for _ in $(seq 50); do grep -q "event=control_refused" srv.log && break; sleep 0.1; done
grep -q "event=control_refused" srv.log && ok || bad "a bad order was not refused: $(tail -3 srv.log)"
wait "$alice"
[ $? -eq 0 ] && ok || bad "alice, not suspended, was cut off: $(cat alice.err)"
[ "$(grep -c "event=suspended_closed" srv.log)" = 1 ] && ok || bad "more connections closed than bob's"
expect 0 "unsuspend bob" -- "$A" --data-dir srv unsuspend bob@example.org

# expiry now: with the server's clock 40 days ahead, what is queued has expired
expect 0 "bob's message waits for alice" -- as bob send alice@example.org --text "too late"
printf '[testing]\nclock_file = %s/clock\n' "$work" >admin.ini
echo $(( $(date +%s) * 1000 + 40 * 86400 * 1000 )) >clock
expect 0 "expire" -- "$A" --config admin.ini --data-dir srv expire
grep -Eq '^expired [1-9][0-9]* envelopes and 0 attachments$' out.txt && ok || bad "expire: $(cat out.txt)"
expect 0 "stats after expiry" -- "$A" --data-dir srv stats
grep -q '^queued envelopes  0, 0 bytes, oldest -$' out.txt && ok || bad "queue after expiry: $(cat out.txt)"

# the transparency log key rotated: clients follow it, messages still flow
expect 0 "alice pins the log key" -- as alice log-head
old_key=$(cat srv/log.pub)
expect 2 "log-rotate-key with an argument" -- "$A" --data-dir srv log-rotate-key extra
expect 0 "log-rotate-key" -- "$A" --data-dir srv log-rotate-key
new_key=$(sed -n 's/^log key rotated at entry [0-9]*; the new key: \([0-9a-f]\{64\}\)$/\1/p' out.txt)
[ -n "$new_key" ] && [ "$new_key" != "$old_key" ] && ok || bad "rotation output: $(cat out.txt)"
[ ! -e srv/log.key.new ] && [ "$(stat -c %a srv/log.key)" = 600 ] && ok || bad "log.key after the rotation"
kill -TERM "$pid"; wait "$pid"
start_missived || bad "missived restarted"
[ "$(cat srv/log.pub)" = "$new_key" ] && ok || bad "missived's key: $(cat srv/log.pub)"
expect 0 "alice follows the rotation" -- as alice log-head
expect 0 "bob writes after the rotation" -- as bob send alice@example.org --text "after the rotation"
expect 0 "alice reads it" -- as alice receive
grep -q "after the rotation" out.txt && ok || bad "message after the rotation: $(cat out.txt)"
finish
