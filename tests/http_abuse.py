#!/usr/bin/env python3
"""Abuses missived's HTTP port (/health, /metrics) the way a hostile local
client would, and checks the port holds: python3 http_abuse.py PORT PID KIND.
  header - one endless header line (up to 8 MiB): refused (413, or closed), the
           server's memory not grown by what was sent
  slow   - a request trickled a byte a second: closed within SECONDS (argv[4])
Exit status 0 when the port held, 1 (with the reason) when it did not."""
import socket
import sys
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def endless_header(port, pid):
    before = rss_kib(pid)
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Endless: ")
    chunk = b"a" * 65536
    sent = 0
    refused = False
    try:
        while sent < 8 * 1024 * 1024 and not refused:
            s.sendall(chunk)
            sent += len(chunk)
            s.setblocking(False)
            try:
                s.recv(4096)  # an answer (413) or the end of the connection
                refused = True
            except BlockingIOError:
                pass
            s.settimeout(10)
    except (BrokenPipeError, ConnectionResetError):
        refused = True
    except socket.timeout:
        return f"the server stopped reading after {sent} bytes of one header, unanswered"
    grown = rss_kib(pid) - before
    s.close()
    if not refused:
        return f"{sent} bytes of one header taken without a refusal"
    if grown > 16 * 1024:
        return f"the server grew by {grown} KiB"
    return None


def slow(port, seconds):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    start = time.monotonic()
    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
    try:
        while time.monotonic() - start < seconds + 10:
            s.sendall(b"X")
            s.settimeout(1)
            try:
                if s.recv(4096) == b"":
                    break
            except socket.timeout:
                pass
    except (BrokenPipeError, ConnectionResetError):
        pass
    held = time.monotonic() - start
    s.close()
    if held > seconds + 2:
        return f"a trickling client held its connection for {held:.1f} s"
    return None


def main():
    port, pid, kind = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    why = endless_header(port, pid) if kind == "header" else slow(port, float(sys.argv[4]))
    if why:
        print(why)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
