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
(for i in $(seq 40); do as carol send bob@example.org --text "meanwhile $i" >/dev/null 2>&1; done) &
sender=$!
sleep 1
expect 1 "backup without a database" -- "$A" --data-dir nowhere backup nowhere-copy
[ ! -e nowhere-copy ] && ok || bad "a backup directory was left for nothing"
expect 0 "backup while missived runs and carol sends" -- "$A" --data-dir srv backup copy
grep -q "^backed up srv into copy: the database, the log key and 1 attachments$" out.txt && ok || bad "backup: $(cat out.txt)"
grep -q "database: [0-9]* of [0-9]* pages copied" err.txt && ok || bad "no progress: $(cat err.txt)"
kill -0 "$sender" 2>/dev/null && ok || bad "carol's sends were over before the backup ended"
wait "$sender"
expect 1 "backup over an existing directory" -- "$A" --data-dir srv backup copy
[ "$(stat -c %a copy)" = 700 ] && [ "$(stat -c %a copy/missive.db)" = 600 ] && [ "$(stat -c %a copy/log.key)" = 600 ] &&
    [ -s copy/backup.ok ] && [ "$(ls copy/blobs | wc -l)" = 1 ] && ok || bad "the backup's files: $(ls -lR copy)"
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
printf 'x' | dd of="broken/blobs/$blob" bs=1 seek=1000 conv=notrunc 2>/dev/null
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

finish
