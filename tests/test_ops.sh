#!/usr/bin/env bash
# The operator's side of missived: verification codes mailed by dist/verify-sendmail,
# an online backup restored into an empty data directory.
set -u
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"
usage="usage: test_ops.sh MISSIVE_ADMIN MISSIVE MISSIVED SOURCE_DIR"
A=$(realpath "${1:?$usage}")
M=$(realpath "${2:?$usage}")
D=$(realpath "${3:?$usage}")
HOOK=$(realpath "${4:?$usage}/dist/verify-sendmail")
in_scratch

# ---- dist/verify-sendmail ------------------------------------------------------------------
# a fake sendmail that keeps its arguments and the message it was given
cat >fake-sendmail <<'SH'
#!/bin/sh
printf '%s\n' "$@" >"$(dirname "$0")/sendmail.args"
cat >"$(dirname "$0")/sendmail.msg"
exit "${FAKE_SENDMAIL_STATUS:-0}"
SH
chmod 755 fake-sendmail
export SENDMAIL=$work/fake-sendmail MISSIVE_MAIL_FROM=codes@missive.example.org
expect 0 "a code mailed" -- "$HOOK" -- alice@example.org 123456
printf -- '-t\n-i\n' | cmp -s - sendmail.args && ok || bad "sendmail's arguments: $(cat sendmail.args)"
grep -qx 'To: alice@example.org' sendmail.msg && grep -qx 'From: codes@missive.example.org' sendmail.msg &&
    grep -qx 'Subject: Your Missive verification code' sendmail.msg &&
    grep -qx 'Content-Type: text/plain; charset=us-ascii' sendmail.msg &&
    grep -qx 'Your Missive verification code is 123456' sendmail.msg && ok || bad "the message: $(cat sendmail.msg)"
# the headers end at the first empty line, and only these five and To are there
[ "$(sed '/^$/q' sendmail.msg | grep -c ':')" = 6 ] && ok || bad "headers: $(sed '/^$/q' sendmail.msg)"
rm -f sendmail.msg sendmail.args
expect 2 "a phone number" -- "$HOOK" -- +15551234567 123456
grep -q "is a phone number; this hook only sends e-mail" err.txt && ok || bad "phone: $(cat err.txt)"
touch pwned
for evil in $'alice@example.org\nBcc: eve@example.org' 'alice@example.org, eve@example.org' \
    '-oQ/tmp/x@example.org' 'a@b.org;rm pwned' '$(rm pwned)@example.org' 'alice@-example.org' \
    'alice@example..org' '@example.org' 'alice' "$(printf 'a%.0s' $(seq 65))@example.org"; do
    expect 2 "refused handle $evil" -- "$HOOK" -- "$evil" 123456
    grep -q "not an e-mail address missived accepts" err.txt && ok || bad "handle $evil: $(cat err.txt)"
done
for evil in '12345' '1234567' $'123456\nBcc: eve@example.org' 'abcdef'; do
    expect 2 "refused code $evil" -- "$HOOK" -- alice@example.org "$evil"
done
expect 2 "no --" -- "$HOOK" alice@example.org 123456
expect 2 "an option instead of a handle" -- "$HOOK" -- -t 123456
MISSIVE_MAIL_FROM=$'x@example.org\nBcc: eve@example.org' expect 2 "a From with a header" -- "$HOOK" -- alice@example.org 123456
[ ! -e sendmail.msg ] && [ -e pwned ] && ok || bad "a refused argument reached sendmail or a shell"
FAKE_SENDMAIL_STATUS=75 expect 1 "sendmail fails" -- "$HOOK" -- alice@example.org 123456
grep -q "exited with status 75; no code was sent to alice@example.org" err.txt && ok || bad "failure: $(cat err.txt)"
rm -f sendmail.msg sendmail.args

# missived runs it as its hook: registration with the mailed code
MISSIVED_ACCOUNTS_VERIFICATION=hook MISSIVED_ACCOUNTS_VERIFICATION_HOOK=$HOOK start_missived ||
    bad "missived with the hook started"
export MISSIVE_PASSWORD="correct horse battery"
expect 0 "carol asks for a code" -- "$M" --data-dir dev-carol register carol@example.org --server 127.0.0.1:$port
for _ in $(seq 50); do [ -s sendmail.msg ] && break; sleep 0.1; done
mailed=$(sed -n 's/^Your Missive verification code is \([0-9]\{6\}\)$/\1/p' sendmail.msg 2>/dev/null)
grep -qx 'To: carol@example.org' sendmail.msg && [ -n "$mailed" ] && ok || bad "no mail for carol: $(cat sendmail.msg 2>&1)"
grep -q "code=" srv.log && bad "the code was logged with the hook" || ok
expect 0 "carol registers with the mailed code" -- "$M" --data-dir dev-carol register carol@example.org --code "${mailed:-0}"
kill -TERM "$pid"; wait "$pid"; pid=
rm -rf srv srv.log dev-carol

# ---- backup while sends go on, restore into an empty directory ------------------------------
start_missived || bad "missived started"
register_people alice bob carol
expect 0 "alice pins the log" -- as alice log-head
head -c 200000 /dev/urandom >photo.jpg
for i in 1 2 3; do
    expect 0 "bob writes to alice ($i)" -- as bob send alice@example.org --text "before the backup $i"
done
expect 0 "bob sends alice a file" -- as bob send alice@example.org --text "the photo" --file photo.jpg
# carol writes on to bob all through the backup
# (until the backup has ended, and at most 400 sends: a fixed count can be over first on a fast machine)
rm -f sends.stop
(for i in $(seq 400); do [ -e sends.stop ] && exit 0; as carol send bob@example.org --text "meanwhile $i" >/dev/null 2>&1; done; exit 1) &
sender=$!
sleep 1
expect 1 "backup without a database" -- "$A" --data-dir nowhere backup nowhere-copy
[ ! -e nowhere-copy ] && ok || bad "a backup directory was left for nothing"
expect 0 "backup while missived runs and carol sends" -- "$A" --data-dir srv backup copy
grep -q "^backed up srv into copy: the database, the log key and 1 attachments$" out.txt && ok || bad "backup: $(cat out.txt)"
grep -q "database: [0-9]* of [0-9]* pages copied" err.txt && ok || bad "no progress: $(cat err.txt)"
touch sends.stop
wait "$sender" && ok || bad "carol's sends were over before the backup ended"
expect 1 "backup over an existing directory" -- "$A" --data-dir srv backup copy
[ "$(stat -c %a copy)" = 700 ] && [ "$(stat -c %a copy/missive.db)" = 600 ] && [ "$(stat -c %a copy/log.key)" = 600 ] &&
    [ -s copy/backup.ok ] && [ "$(ls copy/blobs | wc -l)" = 1 ] && ok || bad "the backup's files: $(ls -lR copy)"
# an attachment file the database still records, gone (a directory unmounted, a file lost):
# the backup fails, and says which
live=$(ls srv/blobs | head -1)
mv "srv/blobs/$live" gone.blob
expect 1 "backup with an attachment's file lost" -- "$A" --data-dir srv backup copy2
grep -q "attachment .*$live cannot be copied" err.txt && [ ! -e copy2/backup.ok ] && ok ||
    bad "lost: $(cat err.txt)"
rm -rf copy2
# one that goes while the backup runs, its record with it (it expired, or its account was
# deleted, after the database was copied): left out of the backup, said, and the backup is
# whole without it (before, the backup failed)
mv gone.blob "srv/blobs/$live"
MISSIVE_ADMIN_TEST_PAUSE_MS=4000 "$A" --data-dir srv backup copy2 >out.txt 2>err.txt &
backup=$!
for _ in $(seq 300); do [ -e copy2.paused ] && break; sleep 0.1; done
python3 -c "import sqlite3, sys; d = sqlite3.connect(sys.argv[1], timeout=10); d.execute('DELETE FROM blobs WHERE hex(id) = upper(?)', (sys.argv[2],)); d.commit()" srv/missive.db "$live"
mv "srv/blobs/$live" gone.blob
wait "$backup" && ok || bad "backup with an attachment gone meanwhile: $(cat err.txt)"
grep -q "attachment $live went while the backup ran" err.txt && grep -q "and 0 attachments$" out.txt && ok ||
    bad "gone meanwhile: $(cat out.txt err.txt)"
expect 0 "that backup restores" -- "$A" --data-dir fresh2 restore copy2
rm -rf copy2 copy2.paused fresh2 gone.blob
kill -TERM "$pid"; wait "$pid"; pid=

# bad backups and a directory in use are refused before anything is written
cp -a copy broken
rm broken/backup.ok
expect 1 "an incomplete backup" -- "$A" --data-dir fresh restore broken
grep -q "not a complete missive-admin backup" err.txt && [ ! -e fresh ] && ok || bad "incomplete: $(cat err.txt)"
rm -rf broken && cp -a copy broken
python3 -c "import sys; f=open(sys.argv[1],'r+b'); [(f.seek(p * 4096), f.write(b'\xff' * 16)) for p in range(1, 8)]" broken/missive.db
expect 1 "a damaged database" -- "$A" --data-dir fresh restore broken
grep -Eq "integrity check|not a SQLite database|not a missived database" err.txt && [ ! -e fresh ] && ok || bad "damaged: $(cat err.txt)"
rm -rf broken && cp -a copy broken
blob=$(ls broken/blobs)
flip_byte "broken/blobs/$blob" 1000
expect 1 "a changed attachment" -- "$A" --data-dir fresh restore broken
grep -q "does not have the size and SHA-256 its record names" err.txt && [ ! -e fresh ] && ok || bad "attachment: $(cat err.txt)"
rm -rf broken && cp -a copy broken
rm "broken/blobs/$blob"
expect 1 "a missing attachment" -- "$A" --data-dir fresh restore broken
[ ! -e fresh ] && ok || bad "a restore began from a backup without its attachment"
rm -rf broken && cp -a copy broken
printf '%064d\n' 0 >broken/log.pub
expect 1 "a log.pub of another key" -- "$A" --data-dir fresh restore broken
grep -q "is not the public half of log.key" err.txt && [ ! -e fresh ] && ok || bad "log.pub: $(cat err.txt)"
rm -rf broken
expect 1 "restore over the old data directory" -- "$A" --data-dir srv restore copy
grep -q "srv is not empty" err.txt && ok || bad "not empty: $(cat err.txt)"

# the server is lost; the backup comes back into a new, empty directory
rm -rf srv && mkdir srv
expect 0 "restore" -- "$A" --data-dir srv restore copy
grep -q "^restored srv from copy: the database, the log key and 1 attachments$" out.txt && ok || bad "restore: $(cat out.txt)"
start_missived || bad "missived started on the restored directory"
expect 0 "alice receives what was queued before the backup" -- as alice receive --wait 2
for i in 1 2 3; do grep -q "before the backup $i" out.txt && ok || bad "message $i lost: $(cat out.txt)"; done
saved=$(sed -n 's/.*\[file: \(.*\) (200000 bytes)\].*/\1/p' out.txt)
[ -n "$saved" ] && cmp -s photo.jpg "$saved" && ok || bad "the attachment after the restore: $(cat out.txt)"
expect 0 "alice's client verifies the restored log" -- as alice log-head
expect 0 "alice answers bob" -- as alice send bob@example.org --text "after the restore"
expect 0 "bob reads it" -- as bob receive --wait 2
grep -q "after the restore" out.txt && ok || bad "bob after the restore: $(cat out.txt)"
expect 0 "carol still sends" -- as carol send alice@example.org --text "carol after the restore"
expect 0 "alice reads carol" -- as alice receive --wait 2
grep -q "carol after the restore" out.txt && ok || bad "alice from carol: $(cat out.txt)"
kill -TERM "$pid"; wait "$pid"; pid=

# ---- the admin API on the HTTP port --------------------------------------------------------
tr -dc 'A-Za-z0-9' </dev/urandom | head -c 40 >token
chmod 644 token
export MISSIVED_HTTP_ADMIN_TOKEN_FILE=$work/token
# run_missived: missived in the foreground, for a start that must fail
run_missived() { MISSIVED_SERVER_LISTEN_PORT=0 MISSIVED_HTTP_LISTEN_PORT=0 timeout 20 "$D" --data-dir srv 2>>srv.log; }
run_missived && bad "missived started with a token file others may read" || ok
grep -q 'event=admin_api_refused reason=".*token must be your own file of mode 0600"' srv.log && ok || bad "mode: $(tail -3 srv.log)"
printf 'short\n' >token2 && chmod 600 token2
MISSIVED_HTTP_ADMIN_TOKEN_FILE=$work/token2 run_missived && bad "missived started with a short token" || ok
grep -q 'event=admin_api_refused reason=".*token2 must hold one line of 32 to 252' srv.log && ok || bad "short: $(tail -3 srv.log)"
chmod 600 token
TOKEN=$(cat token)
mv token token.off
start_missived || bad "missived started without its token file"
hport=$(awk '/^http/{print $2}' srv/missived.ports)
api="http://127.0.0.1:$hport"
grep -q 'event=admin_api state=off' srv.log && ok || bad "no admin_api off line"
[ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "$api/admin/stats")" = 404 ] && ok || bad "an admin API without a token file"
kill -TERM "$pid"; wait "$pid"; pid=
mv token.off token
start_missived || bad "missived started with the admin API"
hport=$(awk '/^http/{print $2}' srv/missived.ports)
api="http://127.0.0.1:$hport"
# code METHOD PATH [CURL-ARGS...]: the status of a request bearing the token (answer in api.json)
code() { local m=$1 p=$2; shift 2; curl -s -o api.json -w '%{http_code}' -X "$m" -H "Authorization: Bearer $TOKEN" "$@" "$api$p"; }
[ "$(curl -s -o api.json -D headers.txt -w '%{http_code}' "$api/admin/stats")" = 401 ] && grep -qi '^WWW-Authenticate: Bearer' headers.txt && ok || bad "no token: $(cat api.json)"
[ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer ${TOKEN}x" "$api/admin/stats")" = 401 ] && ok || bad "a longer token"
[ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer ${TOKEN%?}" "$api/admin/stats")" = 401 ] && ok || bad "a shorter token"
[ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Basic $TOKEN" "$api/admin/stats")" = 401 ] && ok || bad "not a bearer token"
curl -s "$api/metrics" | grep -q '^missived_admin_unauthorized_total 4$' && ok || bad "failures not counted: $(curl -s "$api/metrics" | grep admin)"
[ "$(code GET /admin/stats)" = 200 ] && python3 -c "import json; s=json.load(open('api.json')); assert s['accounts']==3 and s['devices']==3" && ok || bad "stats: $(cat api.json)"
[ "$(code POST /admin/stats)" = 405 ] && [ "$(code GET /admin/reload)" = 405 ] && [ "$(code GET /admin/disconnect)" = 405 ] && ok || bad "methods"
python3 -c 'import socket,sys
s=socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"GET /admin/x\"y\x1b[2J HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
s.recv(4096)' "$hport"
grep -q 'path="/admin/x?y?' srv.log && ! LC_ALL=C grep -q $'\x1b' srv.log && ok || bad "a path put into the log as it came: $(grep admin/x srv.log)"
[ "$(code GET /admin/nothing)" = 404 ] && grep -q '"error":"no such path"' api.json && ok || bad "unknown path: $(cat api.json)"
[ "$(code GET '/admin/accounts?limit=2')" = 200 ] &&
    python3 -c "import json; p=json.load(open('api.json')); assert [a['handle'] for a in p['accounts']]==['alice@example.org','bob@example.org'] and p['next']=='bob@example.org'" &&
    ok || bad "accounts page 1: $(cat api.json)"
[ "$(code GET '/admin/accounts?limit=2&after=bob@example.org')" = 200 ] &&
    python3 -c "import json; p=json.load(open('api.json')); assert [a['handle'] for a in p['accounts']]==['carol@example.org'] and p['next'] is None" &&
    ok || bad "accounts page 2: $(cat api.json)"
for q in 'limit=0' 'limit=1001' 'limit=abc' 'limit=-1' 'limit=1x'; do
    [ "$(code GET "/admin/accounts?$q")" = 400 ] && ok || bad "accounts?$q: $(cat api.json)"
done
[ "$(code POST /admin/disconnect --data-binary "{\"handle\":\"$(printf 'a%.0s' $(seq 1100))\"}")" = 413 ] && ok || bad "a big body: $(cat api.json)"
for b in 'handle=bob' '{"handle":1}' '{"handle":"bob@example.org","x":1}' '[]' '{"handle":"a\u0000b"}' ''; do
    [ "$(code POST /admin/disconnect --data-binary "$b")" = 400 ] && ok || bad "body $b: $(cat api.json)"
done
[ "$(code POST /admin/disconnect --data-binary '{"handle":"nobody@example.org"}')" = 404 ] && ok || bad "an unknown handle: $(cat api.json)"

# missive-admin --url: stats, disconnect, reload
expect 0 "stats through the API" -- "$A" --url "$api" --token-file token stats
grep -q '^accounts          3 (0 suspended)$' out.txt && ok || bad "remote stats: $(cat out.txt)"
expect 0 "stats through the API as JSON" -- "$A" --url "$api" --token-file token -o json stats
python3 -c "import json; assert json.load(open('out.txt'))['accounts']==3" && ok || bad "remote JSON stats: $(cat out.txt)"
as bob receive --wait 20 >bob.out 2>bob.err &
bob=$!
sleep 1.5
expect 0 "disconnect bob" -- "$A" --url "$api" --token-file token disconnect bob@example.org
grep -q "^bob@example.org's connections are closed now (1 node told)$" out.txt && ok || bad "disconnect: $(cat out.txt)"
for _ in $(seq 50); do grep -q "event=disconnected_closed" srv.log && break; sleep 0.1; done
grep -q "event=disconnected_closed" srv.log && ok || bad "bob was not cut off: $(tail -3 srv.log)"
wait "$bob"
[ $? -ne 0 ] && ok || bad "bob's receive ended normally"
expect 0 "bob connects again" -- as bob receive
expect 1 "disconnect of nobody" -- "$A" --url "$api" --token-file token disconnect nobody@example.org
grep -q "the node answered 404: no account has that handle" err.txt && ok || bad "nobody: $(cat err.txt)"
expect 0 "reload through the API" -- "$A" --url "$api" --token-file token reload
for _ in $(seq 50); do grep -q "event=reloaded" srv.log && break; sleep 0.1; done
grep -q "event=reloaded" srv.log && ok || bad "no reload: $(tail -3 srv.log)"
expect 2 "--url without --token-file" -- "$A" --url "$api" stats
expect 2 "--url with another command" -- "$A" --url "$api" --token-file token accounts
expect 2 "reload without --url" -- "$A" --data-dir srv reload
expect 1 "--url that is no http URL" -- "$A" --url "ftp://127.0.0.1:$hport" --token-file token stats
expect 1 "a node that does not answer" -- "$A" --url "http://127.0.0.1:1" --token-file token stats
grep -q "no answer from" err.txt && ok || bad "no answer: $(cat err.txt)"
# the last character changed to another one (a token ending in y gets z)
last=y; [ "${TOKEN: -1}" = y ] && last=z
printf '%s\n' "${TOKEN%?}$last" >wrong && chmod 600 wrong
expect 1 "a wrong token" -- "$A" --url "$api" --token-file wrong stats
grep -q "the node refused the token (401)" err.txt && ok || bad "wrong token: $(cat err.txt)"
chmod 644 wrong
expect 1 "a token file others may read" -- "$A" --url "$api" --token-file wrong stats
grep -q "must be your own file of mode 0600" err.txt && ok || bad "client mode: $(cat err.txt)"
grep -F -q "$TOKEN" srv.log && bad "the token is in the log" || ok
grep -q 'event=admin_request method=GET path="/admin/stats" status=200' srv.log && ok || bad "requests not logged"
# failed tokens are limited: past ten in a minute, every request is refused unread
for _ in $(seq 8); do curl -s -o /dev/null -H "Authorization: Bearer nope" "$api/admin/stats"; done
[ "$(code GET /admin/stats)" = 429 ] && ok || bad "no limit on failed tokens: $(cat api.json)"
kill -TERM "$pid"; wait "$pid"; pid=
unset MISSIVED_HTTP_ADMIN_TOKEN_FILE

# ---- account usage: the command line, the daemon, the chat -----------------------------------
rm -rf srv srv.log dev-*
export MISSIVED_RELAY_QUEUE_MAX_ENVELOPES=3 MISSIVED_BLOBS_BYTES_PER_ACCOUNT=5000000
start_missived || bad "missived started with small queues"
register_people alice bob carol
head -c 100000 /dev/urandom >small.jpg
expect 0 "bob sends carol a file" -- as bob send carol@example.org --text "a file" --file small.jpg
for i in 1 2 3; do expect 0 "bob writes to alice ($i)" -- as bob send alice@example.org --text "fill $i"; done
expect 1 "a send to a full queue" -- as bob send alice@example.org --text "one too many"
grep -q "the recipient's queue is full; nothing was sent, try again later" err.txt && ok || bad "full queue: $(cat err.txt)"
# the fourth envelope: the server's notice of the refusal, beyond the cap by that one
expect 0 "alice's usage" -- as alice account usage
grep -Eq '^device [0-9]+: 4 of 3 envelopes, [1-9][0-9]* of 268435456 bytes queued; attachments 0 of [0-9]+ bytes, 0 of [0-9]+ uploads open$' out.txt &&
    grep -q '^account: attachments 0 of 5000000 bytes$' out.txt &&
    grep -Eq '^device [0-9]+: 1 send to this account was refused since you last asked: its queue was full$' out.txt &&
    ok || bad "usage: $(cat out.txt)"
expect 0 "alice's usage as JSON" -- as alice -o json account usage
python3 -c "import json; u=json.load(open('out.txt')); d=u['devices']; assert len(d)==1 and d[0]['queued']==4 and d[0]['refused_sends']==0 and u['queue_max_envelopes']==3 and u['attachment_bytes_per_account']==5000000, u" && ok || bad "usage JSON: $(cat out.txt)"
# carol's queue fills too: her chat tells her of the sends it refused (bob's outbox tries
# the refused message again with his next command)
for i in 1 2; do expect 0 "bob writes to carol ($i)" -- as bob send carol@example.org --text "for carol $i"; done
expect 1 "a send to carol's full queue" -- as bob send carol@example.org --text "refused"
expect 2 "account without usage" -- as alice account
expect 2 "account frobnicate" -- as alice account frobnicate
# bob's through his daemon: his attachment counts against his quota
sock=$work/dev-bob/bob@example.org/daemon.sock
(exec "$M" --data-dir dev-bob daemon >daemon.out 2>daemon.err) &
daemon=$!
for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
daemon_rpc "$sock" --schema 2 '{"jsonrpc":"2.0","id":1,"method":"account","params":{"args":["usage"]}}' >usage.jsonl
python3 -c "import json; r=[json.loads(l) for l in open('usage.jsonl') if l.strip()]; r=[x for x in r if x.get('id')==1][0]['result']['items'][0]; assert r['account_attachment_bytes']>=100000 and r['devices'][0]['attachment_bytes']>=100000 and r['queue_max_envelopes']==3, r" &&
    ok || bad "usage through the daemon: $(cat usage.jsonl | tail -c 600)"
daemon_schema_ok 2 usage.jsonl && ok || bad "the daemon's usage answer breaks schema 2"
kill -TERM "$daemon"; wait "$daemon"; daemon=
# carol's chat
chat carol
waitfor carol "online" || bad "carol's chat: $(screen carol)"
tm send-keys -t carol "/usage" Enter
waitfor carol "usage of the account: attachments 0/5000000 bytes" && screen carol | grep -Eq "usage of device [0-9]+: queue [0-9]+/3 envelopes" &&
    screen carol | grep -Eq "[1-9][0-9]* sends? to device [0-9]+ (was|were) refused: its queue was full" &&
    ok || bad "/usage in the chat: $(screen carol | grep -v "^ *│ *$")"
tm kill-server 2>/dev/null
kill -TERM "$pid"; wait "$pid"; pid=
unset MISSIVED_RELAY_QUEUE_MAX_ENVELOPES MISSIVED_BLOBS_BYTES_PER_ACCOUNT

finish
