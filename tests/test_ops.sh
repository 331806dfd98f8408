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

finish
