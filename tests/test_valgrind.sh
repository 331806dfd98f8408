#!/usr/bin/env bash
# missived and missive under valgrind's memcheck: two accounts register,
# one sends a text and a file, the other receives them, backs up and
# restores the account elsewhere, runs a daemon that commands go through,
# and missived stops
# on SIGTERM. Every run must end without a memory error and without a
# definitely or indirectly lost block (valgrind exits 99 otherwise).
set -u
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"
M=$(realpath "${1:?usage: test_valgrind.sh MISSIVE MISSIVED}")
D=$(realpath "${2:?usage: test_valgrind.sh MISSIVE MISSIVED}")
in_scratch

vg=(valgrind --quiet --error-exitcode=99 --leak-check=full
    --errors-for-leak-kinds=definite,indirect --log-file="$work/vg.%p.log")

start_missived "${vg[@]}" && ok || { bad "missived did not start under valgrind"; cat srv.log >&2; }
server=127.0.0.1:$port
export MISSIVE_PASSWORD="correct horse battery"
code() { grep "handle=$1 code=" srv.log | tail -1 | sed 's/.*code=//'; }
for who in alice bob; do
    expect 0 "$who asks for a code" -- "${vg[@]}" "$M" --data-dir "dev-$who" register "$who@example.org" --server "$server"
    expect 0 "$who registers" -- "${vg[@]}" "$M" --data-dir "dev-$who" register "$who@example.org" --code "$(code "$who@example.org")"
done
head -c 100000 /dev/urandom >photo.jpg
expect 0 "send a text and a file" -- "${vg[@]}" "$M" --data-dir dev-alice --account alice@example.org send bob@example.org --text "under the microscope" --file photo.jpg
expect 0 "receive them" -- "${vg[@]}" "$M" --data-dir dev-bob --account bob@example.org receive --wait 2
grep -q "under the microscope" out.txt && ok || bad "message received: $(cat out.txt)"
saved=$(sed -n 's/.*\[file: \(.*\) (100000 bytes)\].*/\1/p' out.txt)
[ -n "$saved" ] && cmp -s photo.jpg "$saved" && ok || bad "file round trip: $(cat out.txt)"
expect 0 "history" -- "${vg[@]}" "$M" --data-dir dev-bob --account bob@example.org history
expect 2 "a usage error" -- "${vg[@]}" "$M" --data-dir dev-bob --account bob@example.org send
export MISSIVE_BACKUP_PASSPHRASE="a backup passphrase"
expect 0 "back up" -- "${vg[@]}" "$M" --data-dir dev-bob --account bob@example.org backup bob.msvb --kdf-memory 64 --kdf-passes 1
expect 0 "restore elsewhere" -- "${vg[@]}" "$M" --data-dir restored restore bob.msvb
MISSIVE_BACKUP_PASSPHRASE="not the one" expect 3 "a wrong passphrase" -- "${vg[@]}" "$M" --data-dir again restore bob.msvb
# bob's daemon under memcheck: commands through it, a message arriving, bad requests, a stop
(exec "${vg[@]}" "$M" --data-dir dev-bob --account bob@example.org daemon 2>daemon.err) &
daemon=$!
sock=$work/dev-bob/bob@example.org/daemon.sock
for _ in $(seq 300); do [ -S "$sock" ] && break; sleep 0.1; done
expect 0 "a contact added through the daemon" -- "$M" --data-dir dev-bob --account bob@example.org contacts add al alice@example.org
expect 0 "a send through the daemon" -- "$M" --data-dir dev-bob --account bob@example.org send al --text "from the daemon"
expect 0 "alice writes back" -- "${vg[@]}" "$M" --data-dir dev-alice --account alice@example.org send bob@example.org --text "to the daemon"
expect 0 "a receive through the daemon" -- "$M" --data-dir dev-bob --account bob@example.org receive --wait 3
grep -q "to the daemon" out.txt && ok || bad "receive through the daemon: $(cat out.txt)"
python3 - "$sock" >out.txt <<'EOF'
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
s.sendall(b'nonsense\n{"jsonrpc":"2.0","id":1,"method":"send","params":{"bogus":1}}\n'
          b'[{"jsonrpc":"2.0","id":2,"method":"status"}]\n{"jsonrpc":"2.0","id":3,"method":"subscribe"}\n')
s.settimeout(10)
got = b""
while got.count(b"\n") < 4:
    d = s.recv(65536)
    if not d:
        break
    got += d
sys.stdout.write(got.decode())
EOF
[ "$(wc -l <out.txt)" = 4 ] && ok || bad "the daemon's answers under valgrind: $(cat out.txt)"
kill -TERM "$daemon"
wait "$daemon"
[ $? -eq 0 ] && ok || bad "the daemon under valgrind: $(cat daemon.err)"
kill -TERM "$pid"
wait "$pid"
rc=$?
pid=
[ "$rc" -eq 0 ] && ok || bad "missived under valgrind exited $rc"
# reports are "==PID==" lines; "--PID--" lines are valgrind's own notes (mlock2 unknown to it)
for log in vg.*.log; do
    grep -q '^==[0-9]*==' "$log" && bad "valgrind reported: $(head -40 "$log")" || ok
done
finish
