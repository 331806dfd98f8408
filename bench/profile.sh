#!/usr/bin/env bash
# Where a server's CPU goes under B2's load: runs `missive-bench relay` (1,000 connections,
# one run, long windows), records SERVER (missived, or the Mosquitto it is compared with) with
# linux-perf for SECONDS at LOAD (full: once the load has started; half: in the window at half
# that rate, which follows), and prints the samples by category (bench/profile_categories.py).
#   bench/profile.sh [BUILD_DIR] [SECONDS] [SERVER] [LOAD]   default: build, 10, missived, full
# perf needs kernel.perf_event_paranoid <= 2 to profile a process of the same user
# (scripts/deps.sh --bench installs linux-perf).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
seconds=${2:-10}
name=${3:-missived}
load=${4:-full}
case "$seconds" in '' | *[!0-9]*) echo "usage: bench/profile.sh [BUILD_DIR] [SECONDS] [missived|mosquitto] [full|half]" >&2; exit 2 ;; esac
case "$name" in missived | mosquitto) ;; *) echo "profile: SERVER is missived or mosquitto" >&2; exit 2 ;; esac
case "$load" in full | half) ;; *) echo "profile: LOAD is full or half" >&2; exit 2 ;; esac
command -v perf >/dev/null || { echo "profile: perf is not installed (scripts/deps.sh --bench)" >&2; exit 1; }
[ -x "$build/missive-bench" ] || { echo "profile: no $build/missive-bench (build it first)" >&2; exit 1; }
[ "$name" = missived ] || command -v mosquitto >/dev/null ||
    { echo "profile: Mosquitto is not installed (scripts/deps.sh --bench)" >&2; exit 1; }
work=$(mktemp -d)
bench_pid=
cleanup() {
    [ -n "$bench_pid" ] && kill -INT "$bench_pid" 2>/dev/null && wait "$bench_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
"$build/missive-bench" --runs 1 --window $((seconds * 3)) relay >"$work/bench.out" 2>"$work/bench.err" &
bench_pid=$!
# the load has started when a server of the bench (the seeding may start a missived of its own
# before the measured one) uses more than 60% of a core over a second
hz=$(getconf CLK_TCK)
server=
prev=
loaded=0
for _ in $(seq 1 1200); do
    kill -0 "$bench_pid" 2>/dev/null || { cat "$work/bench.err" >&2; exit 1; }
    now=
    [ -n "$server" ] && now=$(awk '{print $14 + $15}' "/proc/$server/stat" 2>/dev/null)
    if [ -z "$now" ]; then
        server=$(pgrep -x "$name" -P "$bench_pid" | head -1 || true)
        prev=
    elif [ -n "$prev" ] && [ $((now - prev)) -gt $((hz * 6 / 10)) ]; then
        loaded=1
        break
    fi
    prev=$now
    sleep 1
done
[ "$loaded" = 1 ] || { echo "profile: $name never came under load" >&2; exit 1; }
if [ "$load" = half ]; then
    # the full-load window (3 x SECONDS) and the second of settling at half the rate after it
    sleep $((seconds * 3 + 2))
fi
echo "profile: $name (pid $server) under $load load; recording ${seconds}s" >&2
perf record -F 999 -g -p "$server" -o "$work/perf.data" -- sleep "$seconds" 2>"$work/perf.err" >/dev/null ||
    { echo "profile: perf record failed:" >&2; cat "$work/perf.err" >&2; exit 1; }
perf script -i "$work/perf.data" 2>/dev/null | python3 bench/profile_categories.py "$name"
