#!/usr/bin/env bash
# The shell tests' servers end with their test: a test script killed outright (SIGKILL, as
# ctest does on a timeout, which runs no EXIT trap) leaves no missived behind.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
D=$(realpath "${1:?usage: test_harness.sh MISSIVED}")
in_scratch

# a test that starts its server as the others do, says the server's pid, then hangs
cat >hung.sh <<EOS
. '$here/lib.sh'
D='$D'
cd '$work' && start_missived || exit 1
echo "\$pid" >server.pid
exec sleep 300
EOS
bash hung.sh >hung.out 2>&1 &
test_pid=$!
for _ in $(seq 100); do [ -s server.pid ] && break; sleep 0.1; done
server=$(cat server.pid 2>/dev/null)
alive() { [ -n "$1" ] && [ -d "/proc/$1" ] && ! grep -q '^[^)]*) [ZX]' "/proc/$1/stat" 2>/dev/null; }
alive "$server" && ok || bad "the hung test's missived runs ($(cat srv.log))"
kill -KILL "$test_pid"
wait "$test_pid" 2>/dev/null
for _ in $(seq 100); do alive "$server" || break; sleep 0.1; done
if alive "$server"; then
    bad "missived $server outlived its killed test"
    kill -KILL "$server"
else
    ok
fi
finish
