"""``python -m fastserver serve`` under idle and trickling clients, from a
checkout: ``python bench/serve_idle.py [--idle 1000] [--trickling 1000]
[--stdlib]`` (``--stdlib``: ``python -m http.server``, the same handler
on a thread per connection, for comparison).

Starts the command on a temporary directory, opens ``--idle`` connections
that send nothing and ``--trickling`` connections that send a request one
byte a second (slowloris), then times ``--gets`` GET requests of a new
client, one after the other, and reads the server's RSS and thread count
from /proc.  Prints the median and the slowest GET.  Linux only.
"""
import argparse
import http.client
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REQUEST = b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n"


def status_of(pid):
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "Threads"):
                values[key] = int(rest.split()[0])
    return values


def timed_get(port):
    started = time.monotonic()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("GET", "/hello.txt")
    body = connection.getresponse().read()
    connection.close()
    if body != b"hello\n":
        raise SystemExit(f"unexpected answer {body!r}")
    return (time.monotonic() - started) * 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--trickling", type=int, default=1000)
    parser.add_argument("--gets", type=int, default=20)
    parser.add_argument("--stdlib", action="store_true",
                        help="measure python -m http.server instead")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        with open(os.path.join(root, "hello.txt"), "wb") as f:
            f.write(b"hello\n")
        module = ["http.server"] if args.stdlib else ["fastserver", "serve"]
        server = subprocess.Popen(
            [sys.executable, "-m", *module, "-b", "127.0.0.1", "-d", root, "0"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        clients = []
        stop = threading.Event()
        trickler = None
        try:
            port = int(re.search(r"port (\d+)", server.stdout.readline()).group(1))
            before = status_of(server.pid)
            for _ in range(args.idle + args.trickling):
                clients.append(socket.create_connection(("127.0.0.1", port), timeout=60))
            trickling = clients[args.idle:]

            def trickle():
                for i in range(len(REQUEST)):
                    for client in trickling:
                        client.send(REQUEST[i:i + 1])
                    if stop.wait(1.0):
                        return

            trickler = threading.Thread(target=trickle)
            trickler.start()
            time.sleep(3)  # a few bytes in: every trickling request is half-sent
            times = [timed_get(port) for _ in range(args.gets)]
            held = status_of(server.pid)
        finally:
            stop.set()
            if trickler is not None:
                trickler.join()
            for client in clients:
                client.close()
            server.terminate()
            _, err = server.communicate(timeout=30)
    connections = args.idle + args.trickling
    print("python -m http.server" if args.stdlib else err.splitlines()[0])
    print(f"{args.idle} idle + {args.trickling} trickling connections: GET median "
          f"{statistics.median(times):.2f} ms, slowest {max(times):.2f} ms "
          f"({args.gets} GETs); RSS {held['VmRSS'] / 1024:.0f} MiB "
          f"(+{(held['VmRSS'] - before['VmRSS']) / connections:.1f} KiB per connection), "
          f"{held['Threads']} threads")


if __name__ == "__main__":
    main()
