#!/usr/bin/env python3
"""A plain sync API receiver for scripts/bench.sh's latency runs: not binsync's own.

    sync_receiver.py --expect N --ready F --out F

Python's stdlib ThreadingHTTPServer (HTTP/1.1, keep-alive) on 127.0.0.1, a free port, printed
as `listening on ADDR` on stdout. It answers every POST with the contract's success, an empty
`200` (docs/sync-api.md, Responses and retries), and notes when each operation arrived: the
time its request's body had been read. A `bench.live` row's delay is that time minus its
`after.updated_at` (NOW(6) at commit, UTC, as the stdout reader takes it). The first arrival of
each id counts (delivery is at least once). The sentinel row (id 0) writes "ready" to --ready.

Once N rows have arrived it writes the figures to --out (the same keys as `bench.py latency`)
and goes on answering until stopped; stopped (SIGTERM) before that, it writes what it has and
exits 1. Stdlib only.
"""

import argparse
import gzip
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import log, parse_utc, percentile  # noqa: E402


class State:
    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.cache = {}
        self.arrived = {}  # id -> delay (s), first arrival only
        self.requests = 0
        self.ops = 0
        self.ready = False
        self.written = False

    def take(self, body, now):
        batch = json.loads(body)
        with self.lock:
            self.requests += 1
            for ops in batch["entities"].values():
                for op in ops:
                    self.ops += 1
                    if op.get("table") != "live" or "after" not in op:
                        continue
                    after = op["after"]
                    i = int(after["id"])
                    if i == 0:  # the sentinel: binsync is streaming
                        if not self.ready:
                            self.ready = True
                            write(self.args.ready, "ready\n")
                        continue
                    if i not in self.arrived:
                        self.arrived[i] = now - parse_utc(after["updated_at"], self.cache)
            if len(self.arrived) >= self.args.expect and not self.written:
                self.report()

    def report(self):
        """Writes the figures to --out (under the lock)."""
        delays = sorted(self.arrived.values())
        ms = lambda v: None if v is None else round(v * 1000, 2)  # noqa: E731
        out = {
            "rows": len(delays),
            "requests": self.requests,
            "ops": self.ops,
            "p50_ms": ms(percentile(delays, 50)),
            "p99_ms": ms(percentile(delays, 99)),
            "max_ms": ms(delays[-1] if delays else None),
            "min_ms": ms(delays[0] if delays else None),
            "cpu_s": round(sum(os.times()[:2]), 2),  # user + system, this process's life
        }
        write(self.args.out, json.dumps(out))
        self.written = True
        return out


def write(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def handler(state):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as binsync's client expects
        disable_nagle_algorithm = True

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            now = time.time()
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            state.take(body, now)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):  # no line per request
            pass

    return Handler


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--expect", type=int, required=True, help="bench.live rows (besides the sentinel)")
    p.add_argument("--ready", required=True, help="file written once the sentinel row arrives")
    p.add_argument("--out", required=True, help="where the figures go (JSON)")
    args = p.parse_args()
    state = State(args)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler(state))
    server.daemon_threads = True
    host, port = server.server_address[:2]
    print(f"listening on {host}:{port}", flush=True)

    def stop(*_):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever(poll_interval=0.5)
    except SystemExit:
        pass
    with state.lock:
        if not state.written:
            out = state.report()
            log(f"sync receiver: stopped after {out['rows']} of {args.expect} rows")
            if not state.ready:
                write(args.ready, "failed\n")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
