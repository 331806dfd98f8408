#!/usr/bin/env bash
# Installs every Debian package Missive needs to build, test and run.
# Idempotent: packages already present are not fetched again, and the package
# lists are refreshed at most once per run of this script.
#   scripts/deps.sh --bench   also the peers and tools of the full benchmark run
#                             (Mosquitto, nginx, strace); their system services
#                             are not started by the installation.
# ejabberd and Prosody (B8's peers, which its test runs) are always installed;
# their system services are stopped and disabled.
set -euo pipefail

packages=(
    build-essential cmake pkg-config clang libclang-rt-14-dev clang-format
    libssl-dev libsodium-dev libevent-dev
    protobuf-c-compiler libprotobuf-c-dev
    libsqlite3-dev libjansson-dev libinih-dev libcmocka-dev libqrencode-dev libpng-dev libzbar-dev zbar-tools
    python3 python3-cryptography python3-jsonschema openssl valgrind groff-base
    libpq-dev libhiredis-dev postgresql redis-server libncurses-dev tmux
    libwebsockets-dev libuv1-dev chromium chromium-driver python3-selenium
    ejabberd prosody prosody-modules eatmydata
)
bench=0
if [ "${1:-}" = "--bench" ]; then
    bench=1
    packages+=(mosquitto nginx-light strace linux-perf)
elif [ $# -gt 0 ]; then
    echo "usage: scripts/deps.sh [--bench]" >&2
    exit 2
fi

if [ "$(id -u)" -ne 0 ]; then
    SUDO=sudo
else
    SUDO=
fi
# ejabberd and Prosody (B8, and its test): missive-bench runs its own, as the current user,
# from bench/xmpp's configurations; the system-wide services stay stopped and disabled
quiet_xmpp_services() {
    local s
    for s in ejabberd prosody; do
        [ -e "/lib/systemd/system/$s.service" ] || [ -e "/etc/init.d/$s" ] || continue
        if [ -d /run/systemd/system ]; then
            $SUDO systemctl disable --now "$s" >/dev/null 2>&1 || true
        else
            $SUDO update-rc.d "$s" disable >/dev/null 2>&1 || true
            # only when running: ejabberd's stop starts an Erlang node (and a port mapper)
            if pgrep -u "$s" >/dev/null 2>&1; then
                $SUDO service "$s" stop >/dev/null 2>&1 || true
            fi
        fi
    done
}

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    quiet_xmpp_services
    echo "deps: all ${#packages[@]} packages present"
    exit 0
fi

echo "deps: installing ${missing[*]}"
$SUDO apt-get update -qq
if [ ! -e /usr/sbin/policy-rc.d ]; then
    # the packages would start system-wide PostgreSQL, Redis, Mosquitto and nginx on their
    # default ports; the tests (scripts/services.sh) and missive-bench start their own on loopback
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod 755 /usr/sbin/policy-rc.d
    trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
quiet_xmpp_services
