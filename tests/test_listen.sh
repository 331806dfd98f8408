#!/usr/bin/env bash
# missive listen against a real missived on loopback: while it runs, the
# account's other commands go through it instead of connecting as the same
# device (which would take the listener's connection from it: the server keeps
# one connection per device), so it keeps printing what arrives; it notices a
# lost connection at once and picks the stream up again when the server is back.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
M=$(realpath "${1:?usage: test_listen.sh MISSIVE MISSIVED}")
D=$(realpath "${2:?usage: test_listen.sh MISSIVE MISSIVED}")
in_scratch
listener=
trap 'for p in $listener $pid; do kill -TERM "$p" 2>/dev/null && wait "$p"; done; rm -rf "$work"' EXIT

start_missived || bad "missived started"
register_people alice bob
# waits up to 10 s for TEXT in bob's listen output
heard() { for _ in $(seq 100); do grep -q "$1" listen.out && return 0; sleep 0.1; done; return 1; }

(exec "$M" --data-dir dev-bob --account bob@example.org listen >listen.out 2>listen.err) &
listener=$!
for _ in $(seq 100); do [ -S dev-bob/bob@example.org/daemon.sock ] && break; sleep 0.1; done
expect 0 "a message while listening" -- as alice send bob@example.org --text "first"
heard "alice@example.org: first" && ok || bad "listen: $(cat listen.out listen.err)"

# bob's other commands run through the listener: none connects as bob's device beside it
expect 0 "devices, while bob listens" -- as bob devices
grep -q "this device" out.txt && ok || bad "devices through the listener: $(cat out.txt err.txt)"
expect 1 "a command that cannot reach the listener's socket does not run beside it" -- as bob --socket "$work/elsewhere.sock" devices
grep -q "owned by a missive daemon or chat (pid $listener)" err.txt && ok || bad "beside the listener: $(cat err.txt)"
for i in 1 2 3; do
    expect 0 "bob sends ($i), while he listens" -- as bob send alice@example.org --text "from bob $i"
    expect 0 "alice answers ($i)" -- as alice send bob@example.org --text "answer $i"
    heard "alice@example.org: answer $i" && ok || bad "the listener went deaf after bob's command ($i): $(cat listen.out listen.err)"
done
expect 0 "a receive through the listener" -- as bob receive
grep -q "answer 3" out.txt && ok || bad "receive through the listener: $(cat out.txt err.txt)"
# what a command run through the listener tells (a send's reading on its way, a change) is
# the listener's to print, not the command's (it was printed into the command's answer)
expect 0 "bob mutes alice, while he listens" -- as bob conversations mute alice@example.org
heard "alice@example.org is muted" && ok || bad "the listener did not print the change: $(cat listen.out listen.err)"
grep -q "is muted" out.txt && bad "the listener's line in the command's output: $(cat out.txt)" || ok

# the server goes away and comes back: the listener notices and hears what comes later
kill -TERM "$pid"
wait "$pid"
pid=
for _ in $(seq 50); do grep -q "not connected" listen.err && break; sleep 0.1; done
grep -q "not connected" listen.err && ok || bad "the lost connection went unnoticed: $(cat listen.err)"
start_missived || bad "missived back"
expect 0 "alice writes once the server is back" -- as alice send bob@example.org --text "after the restart"
heard "alice@example.org: after the restart" && ok || bad "after the restart: $(cat listen.out listen.err)"

kill -TERM "$listener"
wait "$listener" && ok || bad "listen stops cleanly on SIGTERM"
listener=
[ ! -e dev-bob/bob@example.org/daemon.sock ] && ok || bad "the listener's socket is removed"
expect 0 "and bob's commands run on their own again" -- as bob devices

# a listener whose output cannot be written stops, and leaves the message it
# could not print to be shown by the next receive (it used to go on taking
# messages, each recorded as shown, that nobody saw)
(exec "$M" --data-dir dev-bob --account bob@example.org listen >/dev/full 2>listen.err) &
listener=$!
for _ in $(seq 100); do [ -S dev-bob/bob@example.org/daemon.sock ] && break; sleep 0.1; done
expect 0 "a message the listener cannot print" -- as alice send bob@example.org --text "unseen"
for _ in $(seq 300); do kill -0 "$listener" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$listener" 2>/dev/null; then
    bad "a listener that cannot write its output goes on: $(cat listen.err)"
    kill -TERM "$listener"
    wait "$listener"
else
    wait "$listener"
    [ $? = 1 ] && ok || bad "a listener that cannot write its output exits 1: $(cat listen.err)"
fi
listener=
expect 0 "the next receive shows what the listener could not" -- as bob receive
grep -q "alice@example.org: unseen" out.txt && ok || bad "the unprinted message: $(cat out.txt err.txt)"
finish
