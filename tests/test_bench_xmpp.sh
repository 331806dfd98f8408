#!/usr/bin/env bash
# B8 keeps working: a short run of missive-bench against ejabberd and Prosody
# (a few connections, under a second of load each), beside missived and
# Mosquitto. Messages must be delivered through each server; everything the
# bench starts is stopped. Skipped (77) only where a server is not installed
# (scripts/deps.sh installs both, so CI runs it).
set -u
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"
B=$(realpath "${1:?usage: test_bench_xmpp.sh PATH_TO_MISSIVE_BENCH}")
for exe in /usr/bin/erl /usr/sbin/ejabberdctl /usr/bin/prosody; do
    if [ ! -x "$exe" ]; then
        echo "SKIP: $exe is not installed (scripts/deps.sh installs ejabberd and prosody)"
        exit 77
    fi
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work" || exit 1
export TMPDIR=$work
epmd_before=$(pgrep -x epmd)

expect 0 "quick run of B8" -- "$B" --quick xmpp
cp out.txt b8.txt
grep -q '^### B8: the XMPP servers' b8.txt && ok || bad "section B8 missing"
# every server delivered messages (a rate, a latency), and its CPU and memory were read (at
# 10 connections and half a second the clock ticks of /proc and the pages of memory can be
# too coarse to show anything: numbers, not necessarily above 0)
num='^ -?[0-9]+[.][0-9]+ $'
for s in missived ejabberd prosody; do
    awk -F'|' -v s=" $s " -v num="$num" '$3 == s && $2+0 == 10 && $4+0 > 0 && $8+0 > 0 &&
        $5 ~ num && $7 ~ num && $10 ~ num {found=1} END {exit !found}' b8.txt && ok ||
        bad "B8 row for $s: $(grep "| $s |" b8.txt)"
done
if [ -x /usr/sbin/mosquitto ]; then
    awk -F'|' '$3 == " mosquitto " && $4+0 > 0 {found=1} END {exit !found}' b8.txt && ok ||
        bad "B8 row for mosquitto"
fi
grep -Eq '^\| 10 \| \*\*ratio\*\* missived / [a-z]+ \(the better XMPP server\) \| [0-9.]+ \| \*\*[0-9.]+\*\*' b8.txt &&
    ok || bad "B8 ratio to the better XMPP server"

# nothing left behind: no server of this run still running, no scratch directory
bench_gone "$work" && ok || bad "left behind by the bench: $(bench_left "$work")"
# ejabberd runs without Erlang distribution: no port mapper started for it
if [ -z "$epmd_before" ]; then
    pgrep -x epmd >/dev/null && bad "an Erlang port mapper was left running" || ok
fi
finish
