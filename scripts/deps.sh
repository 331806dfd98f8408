#!/usr/bin/env bash
# Installs every Debian package Missive needs to build, test and run.
# Idempotent: packages already present are not fetched again, and the package
# lists are refreshed at most once per run of this script.
set -euo pipefail

packages=(
    build-essential cmake pkg-config clang libclang-rt-14-dev clang-format
    libssl-dev libsodium-dev libevent-dev
    protobuf-c-compiler libprotobuf-c-dev
    libsqlite3-dev libjansson-dev libinih-dev libcmocka-dev
    python3 python3-cryptography openssl
)

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "deps: all ${#packages[@]} packages present"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    SUDO=sudo
else
    SUDO=
fi
echo "deps: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
