#!/usr/bin/env bash
# missive-bench keeps working: its command line, and a short run of every
# benchmark (tiny sizes; the figures are not results). Peers that are not
# installed are reported as such; everything missive-bench starts is stopped.
set -u
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"
B=$(realpath "${1:?usage: test_bench.sh PATH_TO_MISSIVE_BENCH}")
CATEGORIES=$(cd "$(dirname "$0")/../bench" && pwd)/profile_categories.py
work=$(mktemp -d)
system_python
trap 'rm -rf "$work"' EXIT
cd "$work" || exit 1
export TMPDIR=$work

expect 0 "--help" -- "$B" --help
grep -q '^usage: missive-bench' out.txt && ok || bad "help text"
expect 2 "no benchmark named" -- "$B"
expect 2 "unknown benchmark" -- "$B" teleport
grep -q "unknown benchmark 'teleport'" err.txt && ok || bad "unknown benchmark named"
expect 2 "bad --runs" -- "$B" --runs 0 crypto
expect 2 "bad --window" -- "$B" --window -1 relay
expect 2 "unknown option" -- "$B" --fast crypto

# B8 (xmpp) has a test of its own, test_bench_xmpp.sh
expect 0 "quick run of every benchmark" -- "$B" --quick crypto relay fanout idle queue storage cluster keydir
cp out.txt all.txt
for b in B1 B2 B3 B4 B5 B6 B7 B9; do
    grep -q "^### $b" all.txt && ok || bad "section $b missing"
done
grep -Eq '^Worst ratio: [0-9]+\.[0-9]+' all.txt && ok || bad "B1 ratio"
for op in "ML-KEM-768 key generation" "ML-KEM-768 encapsulation" "ML-KEM-768 decapsulation" \
    "X25519 agreement (variable base)"; do
    grep -Fq "| $op | " all.txt && grep -F "| $op | " all.txt | grep -Eq '\| [0-9]+\.[0-9] \|$' && ok || bad "B1 $op"
done
grep -Eq "^\| VRF verify \(ELL2\) \| [0-9]+\.[0-9] \|$" all.txt && ok || bad "B1 VRF row"
# hybrid session starts: both kinds timed, and the bytes a hybrid session adds per message bounded
grep -Eq '^Hybrid/classical session start: [0-9]+\.[0-9]+$' all.txt && ok || bad "B1 session start ratio"
awk '/^Hybrid minus classical, bytes per message:/ {found = 1; if ($NF + 0 > 100 || $NF + 0 < 0) bad = 1}
     END {exit !found || bad}' all.txt && ok || bad "B1 hybrid bytes per message: $(grep 'Hybrid minus' all.txt)"
# sealed outer layers: both timed, and the hybrid one adds the KEM id and ciphertext exactly
grep -Eq '^Hybrid/classical sealed outer layer: seal [0-9]+\.[0-9]+, open [0-9]+\.[0-9]+$' all.txt && ok ||
    bad "B1 sealed outer layer ratio"
grep -q '^Hybrid minus classical, bytes per sealed envelope: 1092$' all.txt && ok || bad "B1 sealed bytes"
# every measured rate is a positive number: the load really flowed
awk -F'|' '$3 == " missived " && $2+0 > 0 && $4+0 <= 0 {bad=1} END {exit bad}' all.txt && ok || bad "B2 missived delivered nothing"
grep -Eq '^\| 100 \| missived \| [1-9][0-9]* \|' all.txt && ok || bad "B2 row"
grep -Eq '^\| 1 device \| [1-9][0-9]* \|' all.txt && ok || bad "B3 row"
# B3 over MLS: the delivery service copied messages to every group, and a message is one upload
grep -q '^### B3 (MLS relay)' all.txt && ok || bad "B3 MLS relay section"
for n in 10 100; do
    awk -F'|' -v n="$n devices" '$2 == " " n " " && $3+0 > 0 && $4+0 > 0 && $5+0 > 0 &&
        $7+0 > 0 && $7+0 < ($8+0) / 5 {found=1} END {exit !found}' all.txt &&
        ok || bad "B3 MLS relay row for $n: $(grep "^| $n devices" all.txt)"
done
grep -Eq '^\| 200 \| [0-9]+\.[0-9] \|' all.txt && ok || bad "B4 row"
grep -Eq '^\| drain: envelopes/s .* \| [1-9][0-9.]* \|' all.txt && ok || bad "B5 drain"
grep -Eq '^\| lookups/s .* \| [1-9][0-9]* \|' all.txt && ok || bad "B6 lookups"
grep -Eq '^\| download 1 MiB, MB/s \| [1-9][0-9]* \|' all.txt && ok || bad "B6 download"
# B9: the prefix tree at 1,000 and 5,000 entries: proofs of sane sizes, verified, epochs audited
for n in 1000 5000; do
    # columns: entries, build, memory, v1 B and µs, v7 B and µs, v15 B and µs, history B and µs,
    # one VRF, one path, publish, its proof, audit
    awk -F'|' -v n=$n '$2+0 == n && $5+0 > 500 && $5+0 < 3072 && $6+0 > 0 && $9+0 > $5+0 &&
        $10+0 > 0 && $11+0 > $5+0 && $13+0 > 0 && $17+0 > 0 {found=1} END {exit !found}' all.txt &&
        ok || bad "B9 row for $n"
done
# B7 needs PostgreSQL and Redis (ctest runs this under scripts/services.sh): 1, 2, 3 nodes
if [ -n "${MSV_TEST_POSTGRES:-}" ]; then
    for k in 1 2 3; do
        grep -Eq "^\| $k \| 100 \| [1-9][0-9]* \| [0-9.]+ \| [0-9.]+ \|" all.txt && ok || bad "B7 row for $k nodes"
    done
else
    grep -q '^Not run: B7 needs a PostgreSQL and a Redis' all.txt && ok || bad "B7 without services"
fi

# B3's MLS side: a row per size, and at 100 devices a removal once the parents hold keys is
# far smaller than a fresh tree's (one path secret per node met, not per leaf), and so is an add
# without a path beside one with a path
expect 0 "quick MLS run" -- "$B" --quick mls
grep -q '^### B3 (MLS)' out.txt && ok || bad "MLS section missing"
awk -F'|' '/keying commits/ {exit} /^\| (2|10|100) \|/ {rows++} /^\| 100 \|/ {split($3, add, ",")
     split($4, bare, ","); split($5, fresh, ","); split($6, keyed, ",")
     if (keyed[1] + 0 > 0 && keyed[1] + 0 < fresh[1] / 4 && bare[1] + 0 > 0 && bare[1] + 0 < add[1] / 4) small = 1}
     END {exit !(rows == 3 && small)}' out.txt && ok || bad "MLS rows: $(grep '^| 100 |' out.txt)"
# and the clients' keying of a fresh tree of 10: some devices commit once, and the removal after it
# is smaller than the fresh tree's in the table above
awk -F'|' '/keying commits/ {keying = 1} !keying && /^\| 10 \|/ {split($5, f, ","); fresh = f[1] + 0}
     keying && /^\| 10 \|/ {if ($3 + 0 >= 1 && $3 + 0 < 10 && $5 + 0 > 0 && $5 + 0 < fresh) good = 1}
     END {exit !good}' out.txt && ok || bad "MLS keying row: $(grep -A3 'keying commits' out.txt)"

# bench/profile.sh's categories: a kernel sample by the call in its chain, a user one by its library
printf '%s\n' 'missived 1 1.0: 1001 cpu-clock:' \
    $'\tffffffff8226 _raw_spin_unlock+0x19 ([kernel.kallsyms])' $'\tffffffff8127 fcntl_setlk+0x3e ([kernel.kallsyms])' '' \
    'missived 1 1.1: 1001 cpu-clock:' $'\t7f01 sqlite3VdbeExec+0x12 (/usr/lib/x86_64-linux-gnu/libsqlite3.so.0.8.6)' '' \
    'missived 1 1.2: 1001 cpu-clock:' $'\t7f02 [unknown] (/usr/lib/x86_64-linux-gnu/libsqlite3.so.0.8.6)' '' \
    'missived 1 1.3: 1001 cpu-clock:' $'\t7f03 _int_malloc+0x4 (/usr/lib/x86_64-linux-gnu/libc.so.6)' >perf.txt
python3 "$CATEGORIES" <perf.txt >cat.txt
grep -q '^| share of missived.s CPU samples (4) | category |$' cat.txt &&
    grep -q '^| 50.0% | SQLite |$' cat.txt && grep -q '^| 25.0% | kernel: fcntl' cat.txt &&
    grep -q '^| 25.0% | libc: malloc/free |$' cat.txt && ok || bad "profile categories: $(cat cat.txt)"
: >empty.txt
python3 "$CATEGORIES" <empty.txt >/dev/null 2>&1 && bad "no samples accepted" || ok
# Mosquitto's samples: its own code by its name
printf '%s\n' 'mosquitto 1 1.0: 1001 cpu-clock:' $'\t5601 packet__read+0x21 (/usr/sbin/mosquitto)' '' \
    'mosquitto 1 1.1: 1001 cpu-clock:' $'\t7f01 SSL_read+0x4 (/usr/lib/x86_64-linux-gnu/libssl.so.3)' >perf.txt
python3 "$CATEGORIES" mosquitto <perf.txt >cat.txt
grep -q '^| share of mosquitto.s CPU samples (2) | category |$' cat.txt && grep -q '^| 50.0% | mosquitto |$' cat.txt &&
    grep -q '^| 50.0% | TLS (OpenSSL) |$' cat.txt && ok || bad "Mosquitto's categories: $(cat cat.txt)"

# nothing left behind: no server still running from this run, no scratch directory
bench_gone "$work" && ok || bad "left behind by the bench: $(bench_left "$work")"

# an interrupted run stops its servers too
"$B" --quick relay >/dev/null 2>&1 &
pid=$!
sleep 1.5
kill -INT $pid
wait $pid
bench_gone "$work" && ok || bad "left behind by an interrupted bench: $(bench_left "$work")"
finish
