#!/usr/bin/env bash
# Runs every benchmark in full and writes bench/RESULTS.md: the machine, the
# date, the commands, and the results (medians, and ratios against the peers
# or limits measured in the same run). Installs the peers first (Mosquitto,
# nginx, strace, ejabberd, Prosody: Debian packages). Takes about 15 minutes on 2 cores.
#   bench/run.sh [BUILD_DIR] [BENCHMARK...]    default: build, all
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
shift || true
which=("$@")
[ ${#which[@]} -gt 0 ] || which=(all)
out=bench/RESULTS.md
bash scripts/deps.sh --bench
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$(nproc)" --target missive-bench missived >/dev/null
{
    echo "# Missive benchmark results"
    echo
    echo "- date: $(date -u +%Y-%m-%dT%H:%MZ)"
    echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "- machine: $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1); open-file limit $(ulimit -Hn)"
    echo "- system: $(uname -sr); $(openssl version); libsodium $(pkg-config --modversion libsodium); $(/usr/sbin/mosquitto -h 2>/dev/null | head -1); $(/usr/sbin/nginx -v 2>&1); ejabberd $(dpkg-query -W -f='${Version}' ejabberd 2>/dev/null); Prosody $(dpkg-query -W -f='${Version}' prosody 2>/dev/null)"
    echo "- method: B1 on one core, medians of 7 runs, each primitive and the envelopes timed back to back for 0.05 s each, the ratio the median of the per-run ratios. B2-B6: servers pinned to core 1, the load generator (missive-bench itself, one event loop) to core 0; loopback only; medians of 3 runs, the systems compared alternating within each run; measurement windows of 5 s after a warm-up; server CPU from /proc/PID/stat"
    echo "- command: bench/run.sh ($build/missive-bench ${which[*]})"
    echo
    # B7 needs PostgreSQL and Redis: services.sh starts both on loopback (fsync on)
    scripts/services.sh --durable "$build/missive-bench" "${which[@]}"
} > "$out.tmp"
# the web client's section, written by bench/web_bench.py --write (a browser's run of its own), stays
if [ -f "$out" ] && grep -q '^## Web client' "$out"; then
    { echo; sed -n '/^## Web client/,$p' "$out"; } >> "$out.tmp"
fi
mv "$out.tmp" "$out"
echo "wrote $out"
