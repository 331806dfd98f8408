#!/usr/bin/env python3
"""Reads `perf script` output (call chains) on standard input and prints the share of samples
in each category: the library or kernel path a sample's innermost frame is in, kernel samples
by the system call (or network path) in their chain. Used by bench/profile.sh."""
import collections
import re
import sys

FRAME = re.compile(r"^\s*[0-9a-f]+\s+(\S+?)(?:\+0x[0-9a-f]+)?\s+\((.*)\)\s*$")
KERNEL = [  # (category, any of these in the chain), first match wins
    ("kernel: fcntl (SQLite's file locks)", ("do_fcntl", "fcntl_setlk")),
    ("kernel: fdatasync", ("fdatasync", "do_fsync")),
    ("kernel: pread/pwrite (SQLite files)", ("pwrite64", "pread64", "ftruncate")),
    ("kernel: epoll_wait", ("epoll_wait",)),
    ("kernel: epoll_ctl", ("epoll_ctl",)),
    ("kernel: futex", ("futex",)),
    ("kernel: TCP and sockets", ("tcp_", "sock_", "inet", "ip_", "skb", "net_rx", "napi",
                                 "loopback", "netif", "sk_")),
    ("kernel: interrupts", ("irq",)),
    ("kernel: read/write", ("ksys_write", "ksys_read", "vfs_write", "vfs_read")),
]
LIBS = [
    ("SQLite", "libsqlite3"),
    ("TLS (OpenSSL)", "libssl"),
    ("TLS (OpenSSL)", "libcrypto"),
    ("libevent", "libevent"),
    ("protobuf-c", "libprotobuf-c"),
    ("libsodium", "libsodium"),
]


def category(chain):
    name, dso = chain[0]
    names = " ".join(n for n, _ in chain)
    if dso.startswith("[kernel") or dso.startswith("[vdso"):
        for cat, keys in KERNEL:
            if any(k in names for k in keys):
                return cat
        return "kernel: other"
    for cat, lib in LIBS:
        if lib in dso:
            return cat
    if "libc.so" in dso:
        if re.search(r"mem(move|cpy|set)", name):
            return "libc: memcpy/memset"
        if re.search(r"malloc|free|alloc|unlink_chunk|consolidate", name):
            return "libc: malloc/free"
        if "mutex" in name or "lll_" in name:
            return "libc: mutex"
        return "libc: other"
    if dso.endswith("missived"):
        return "missived"
    return "other"


def main():
    counts = collections.Counter()
    chain = []
    for line in list(sys.stdin) + [""]:
        if not line.strip():
            if chain:
                counts[category(chain)] += 1
            chain = []
            continue
        m = FRAME.match(line)
        if m:
            chain.append((m.group(1), m.group(2)))
    total = sum(counts.values())
    if total == 0:
        sys.exit("profile: no samples")
    print(f"| share of missived's CPU samples ({total}) | category |")
    print("|---|---|")
    for cat, n in counts.most_common():
        print(f"| {100 * n / total:.1f}% | {cat} |")


if __name__ == "__main__":
    main()
