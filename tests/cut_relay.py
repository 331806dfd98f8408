#!/usr/bin/python3
"""A TCP relay on loopback that loses every byte, both ways, while a file exists: between one
cluster node and Redis, it is a network that stops carrying that node's packets (what was
sent meanwhile never arrives) while the other nodes' connections work on.

usage: cut_relay.py PORT_FILE UPSTREAM_HOST:PORT CUT_FILE [SECONDS]
Writes the port it listens on to PORT_FILE; stops by itself after SECONDS (120)."""
import os
import select
import socket
import sys
import threading
import time


def pipe(src, dst, cut):
    """Copies src to dst until either side closes; what is read while cut exists is lost."""
    try:
        while True:
            ready, _, _ = select.select([src], [], [], 0.05)
            if not ready:
                continue
            data = src.recv(65536)
            if not data:
                break
            if not os.path.exists(cut):
                dst.sendall(data)
    except OSError:
        pass
    for s in (src, dst):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def main():
    port_file, upstream, cut = sys.argv[1], sys.argv[2], sys.argv[3]
    lifetime = float(sys.argv[4]) if len(sys.argv) > 4 else 120.0
    host, port = upstream.rsplit(":", 1)
    lst = socket.socket()
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind(("127.0.0.1", 0))
    lst.listen(64)
    with open(port_file + ".tmp", "w") as f:
        f.write("%d\n" % lst.getsockname()[1])
    os.rename(port_file + ".tmp", port_file)
    end = time.time() + lifetime
    while time.time() < end:
        ready, _, _ = select.select([lst], [], [], 0.2)
        if not ready:
            continue
        client, _ = lst.accept()
        try:
            server = socket.create_connection((host, int(port)), timeout=5)
            server.settimeout(None)
        except OSError:
            client.close()
            continue
        for a, b in ((client, server), (server, client)):
            threading.Thread(target=pipe, args=(a, b, cut), daemon=True).start()


if __name__ == "__main__":
    main()
