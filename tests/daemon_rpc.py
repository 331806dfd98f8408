"""Talks JSON-RPC to a missive daemon's socket, for the shell tests.

daemon_rpc.py SOCKET [--schema N] [--wait S] [--ready FILE] [--until FILE] REQUEST...

Asks for schema version N first (when given), sends each REQUEST line, and
prints every line the daemon writes until every request is answered (at most
30 s) and then S seconds pass without a line (by default 1 s when a request
subscribes, notifies or --until is given, else none: the answers are all there is); with --ready, makes FILE once the first answer is in (a subscription
stands); with --until, the S seconds count only once FILE exists (the action
whose events are awaited is over), within 60 s. The answer to the schema
request is printed too, so that a check of everything printed covers it.
"""
import argparse
import json
import os
import socket
import sys
import time

ap = argparse.ArgumentParser()
ap.add_argument("socket")
ap.add_argument("--schema", type=int)
ap.add_argument("--wait", type=float)
ap.add_argument("--ready")
ap.add_argument("--until")
ap.add_argument("requests", nargs="*")
a = ap.parse_intermixed_args()
s = socket.socket(socket.AF_UNIX)
s.connect(a.socket)
lines = list(a.requests)
if a.schema is not None:
    lines.insert(0, json.dumps({"jsonrpc": "2.0", "id": "schema", "method": "schema",
                                "params": {"version": a.schema}}))
for r in lines:
    s.sendall(r.encode() + b"\n")


def answered(line):
    try:
        r = json.loads(line)
    except ValueError:
        return 1
    return 0 if isinstance(r, dict) and r.get("method") == "event" else 1


def asked(line):
    try:
        r = json.loads(line)
    except ValueError:
        return 1
    if isinstance(r, list):
        return 1 if any(isinstance(x, dict) and "id" in x for x in r) or not r else 0
    return 0 if isinstance(r, dict) and "method" in r and "id" not in r else 1


want = sum(asked(l) for l in lines)


def notifies(line):
    try:
        r = json.loads(line)
    except ValueError:
        return False
    return any(isinstance(x, dict) and "id" not in x for x in (r if isinstance(r, list) else [r]))


# the quiet time is for what is not an answer: events, or a wrong answer to a notification
if a.wait is None:
    a.wait = 1.0 if (a.until is not None or want == 0 or any(notifies(l) for l in lines) or
                     any('"subscribe"' in l for l in lines)) else 0.0
got, ready, out, printed = 0, a.ready, b"", 0
deadline = time.monotonic() + 30
hold = time.monotonic() + 60


def holding():
    return a.until is not None and not os.path.exists(a.until) and time.monotonic() < hold


try:
    while True:
        if holding():
            s.settimeout(0.1)
            try:
                d = s.recv(65536)
            except socket.timeout:
                continue
        else:
            s.settimeout(a.wait if got >= want else max(0.1, deadline - time.monotonic()))
            d = s.recv(65536)
        if not d:
            break
        out += d
        # each whole line as it comes, so that a test can wait on it in the file
        end = out.rfind(b"\n") + 1
        if end > printed:
            sys.stdout.write(out[printed:end].decode())
            sys.stdout.flush()
            printed = end
        got = sum(answered(l) for l in out.split(b"\n")[:-1])
        if ready and got >= (2 if a.schema is not None else 1):
            open(ready, "w").close()
            ready = None
        if got >= want and a.wait == 0:
            break
except socket.timeout:
    pass
sys.stdout.write(out[printed:].decode())
