#!/usr/bin/env bash
# The shell tests' servers end with their test: a test script killed outright (SIGKILL, as
# ctest does on a timeout, which runs no EXIT trap) leaves no missived behind, and neither
# its chats' tmux server nor its directory.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
D=$(realpath "${1:?usage: test_harness.sh MISSIVED}")
in_scratch

# a test that starts its server and a chat window as the others do, says what it made,
# then hangs
cat >hung.sh <<EOS
. '$here/lib.sh'
D='$D'
outer='$work'
in_scratch
start_missived || exit 1
tm new-session -d -s hung "sleep 300"
echo "\$pid \$work \$(tm_socket)" >"\$outer/made.txt"
exec sleep 300
EOS
bash hung.sh >hung.out 2>&1 &
test_pid=$!
for _ in $(seq 100); do [ -s made.txt ] && break; sleep 0.1; done
read -r server hung_dir socket <made.txt
alive() { [ -n "$1" ] && [ -d "/proc/$1" ] && ! grep -q '^[^)]*) [ZX]' "/proc/$1/stat" 2>/dev/null; }
# gone WHAT PID: ok once PID has ended (within 10 s), else bad (and PID is killed)
gone() {
    for _ in $(seq 100); do alive "$2" || break; sleep 0.1; done
    if alive "$2"; then
        bad "$1 $2 outlived its killed test"
        kill -KILL "$2"
    else
        ok
    fi
}
alive "$server" && ok || bad "the hung test's missived runs ($(cat hung.out))"
tmux -L "$socket" has-session -t hung 2>/dev/null && ok || bad "the hung test's chat window is open"
[ -d "$hung_dir" ] && ok || bad "the hung test's directory is there"
kill -KILL "$test_pid"
wait "$test_pid" 2>/dev/null
gone "missived" "$server"
for _ in $(seq 50); do tmux -L "$socket" has-session 2>/dev/null || break; sleep 0.1; done
if tmux -L "$socket" has-session 2>/dev/null; then
    bad "the killed test's tmux server is still there"
    tmux -L "$socket" kill-server
else
    ok
fi
for _ in $(seq 50); do [ -d "$hung_dir" ] || break; sleep 0.1; done
[ -d "$hung_dir" ] && bad "the killed test's directory $hung_dir is still there" || ok

# the Python tests' children (tests/tied.py) too
python3 -c 'import subprocess, sys, time
sys.path.insert(0, sys.argv[1])
from tied import tied
print(subprocess.Popen(["sleep", "300"], preexec_fn=tied()).pid, flush=True)
time.sleep(300)' "$here" >py.pid &
test_pid=$!
for _ in $(seq 100); do [ -s py.pid ] && break; sleep 0.1; done
child=$(cat py.pid)
alive "$child" && ok || bad "the Python test's child runs"
kill -KILL "$test_pid"
wait "$test_pid" 2>/dev/null
gone "the Python test's child" "$child"
finish
