#!/usr/bin/env bash
# Runs the benchmarks in full and writes bench/RESULTS.md: the machine, the
# date, the commands, and the results (medians, and ratios against the peers
# or limits measured in the same run).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
out=bench/RESULTS.md
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$(nproc)" --target missive-bench >/dev/null
{
    echo "# Missive benchmark results"
    echo
    echo "- date: $(date -u +%Y-%m-%dT%H:%MZ)"
    echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "- machine: $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
    echo "- system: $(uname -sr); $(openssl version); libsodium $(pkg-config --modversion libsodium)"
    echo "- method: medians of 7 runs; in every run each primitive and the envelopes are timed back to back for 0.05 s each, on one core (CPU 0); the ratio is the median of the per-run ratios"
    echo "- command: bench/run.sh ($build/missive-bench crypto)"
    echo
    "$build/missive-bench" crypto
} > "$out.tmp"
mv "$out.tmp" "$out"
echo "wrote $out"
