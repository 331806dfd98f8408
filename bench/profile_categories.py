#!/usr/bin/env python3
"""Reads `perf script` output (call chains) on standard input and prints the share of samples
in each category: the library or kernel path a sample's innermost frame is in, kernel samples
by the system call (or network path) in their chain; the server's own code by its name
(argument 1: missived, the default, or mosquitto). Used by bench/profile.sh."""
import collections
import re
import sys

FRAME = re.compile(r"^\s*[0-9a-f]+\s+(\S+?)(?:\+0x[0-9a-f]+)?\s+\((.*)\)\s*$")
KERNEL = [  # (category, kernel frame names starting with any of these), first match wins
    ("kernel: fcntl (SQLite's file locks)", ("do_fcntl", "fcntl_setlk", "__x64_sys_fcntl")),
    ("kernel: fdatasync", ("__x64_sys_fdatasync", "do_fsync", "__x64_sys_fsync")),
    ("kernel: pread/pwrite (SQLite files)", ("__x64_sys_pwrite64", "__x64_sys_pread64",
                                              "__x64_sys_ftruncate")),
    ("kernel: epoll_wait", ("__x64_sys_epoll_wait", "do_epoll_wait")),
    ("kernel: epoll_ctl", ("__x64_sys_epoll_ctl", "do_epoll_ctl")),
    ("kernel: futex", ("__x64_sys_futex", "do_futex")),
    ("kernel: TCP and sockets", ("tcp_", "__tcp_", "sock_", "sk_", "__sk_", "inet_", "__inet_",
                                 "ip_", "__ip_", "skb_", "__skb_", "net_rx_", "__napi_", "napi_",
                                 "loopback_", "__netif_", "netif_", "__dev_queue_xmit")),
    ("kernel: read/write", ("ksys_write", "ksys_read", "vfs_write", "vfs_read")),
    ("kernel: interrupts", ("__irq_", "irq_", "handle_softirqs", "__do_softirq",
                            "sysvec_", "asm_sysvec_")),
]
LIBS = [
    ("SQLite", "libsqlite3"),
    ("TLS (OpenSSL)", "libssl"),
    ("TLS (OpenSSL)", "libcrypto"),
    ("libevent", "libevent"),
    ("protobuf-c", "libprotobuf-c"),
    ("libsodium", "libsodium"),
]


def category(chain, server):
    name, dso = chain[0]
    if dso.startswith("[kernel") or dso.startswith("[vdso"):
        kernel = [n for n, d in chain if d.startswith("[kernel")]
        for cat, prefixes in KERNEL:
            if any(n.startswith(prefixes) for n in kernel):
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
    if dso.endswith(server):
        return server
    return "other"


def main():
    server = sys.argv[1] if len(sys.argv) > 1 else "missived"
    counts = collections.Counter()
    chain = []
    for line in list(sys.stdin) + [""]:
        if not line.strip():
            if chain:
                counts[category(chain, server)] += 1
            chain = []
            continue
        m = FRAME.match(line)
        if m:
            chain.append((m.group(1), m.group(2)))
    total = sum(counts.values())
    if total == 0:
        sys.exit("profile: no samples")
    print(f"| share of {server}'s CPU samples ({total}) | category |")
    print("|---|---|")
    for cat, n in counts.most_common():
        print(f"| {100 * n / total:.1f}% | {cat} |")


if __name__ == "__main__":
    main()
