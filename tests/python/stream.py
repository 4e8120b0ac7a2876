"""One long TCP stream of full-size segments, checked byte by byte.

    stream.py serve ADDR PORT        accepts one connection; prints `ready` once bound,
                                     then `got BYTES GAP` every 100 ms (GAP: the longest
                                     wait so far between two reads that brought data,
                                     seconds), `total BYTES GAP` at the sender's end;
                                     `error WHAT` and exit 1 if a byte is not the one
                                     sent or the connection breaks
    stream.py send ADDR PORT STOP    connects, prints `ready`, sends a known pattern in
                                     16 KiB writes (about 3 MB/s) until the file STOP
                                     exists, then ends its side, waits for the server
                                     to close and prints `sent BYTES`

The pattern is byte k = k mod 251, so a lost, repeated or reordered byte shows.
"""

import os
import socket
import sys
import threading
import time

PATTERN = bytes(range(251)) * 300


def chunk(offset, n):
    s = offset % 251
    return PATTERN[s:s + n]


def serve(addr, port):
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((addr, port))
    ls.listen(1)
    print("ready", flush=True)
    ls.settimeout(60)
    c, _ = ls.accept()
    c.settimeout(120)
    state = {"n": 0, "gap": 0.0, "done": False}

    def tell():
        while not state["done"]:
            print("got", state["n"], "%.3f" % state["gap"], flush=True)
            time.sleep(0.1)

    threading.Thread(target=tell, daemon=True).start()
    last = time.monotonic()
    try:
        while True:
            d = c.recv(65536)
            now = time.monotonic()
            if not d:
                break
            state["gap"] = max(state["gap"], now - last)
            last = now
            if d != chunk(state["n"], len(d)):
                print("error bytes at offset", state["n"], "are not the ones sent", flush=True)
                sys.exit(1)
            state["n"] += len(d)
    except OSError as e:
        print("error", e, "after", state["n"], "bytes", flush=True)
        sys.exit(1)
    state["done"] = True
    c.close()
    print("total", state["n"], "%.3f" % state["gap"], flush=True)


def send(addr, port, stop):
    s = socket.create_connection((addr, port), timeout=30)
    s.settimeout(120)
    print("ready", flush=True)
    n = 0
    while not os.path.exists(stop):
        d = chunk(n, 16384)
        s.sendall(d)
        n += len(d)
        time.sleep(0.005)
    s.shutdown(socket.SHUT_WR)
    while s.recv(4096):
        pass
    print("sent", n, flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]))
    else:
        send(sys.argv[2], int(sys.argv[3]), sys.argv[4])
