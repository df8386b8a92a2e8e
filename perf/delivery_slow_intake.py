#!/usr/bin/env python3
"""Large contexts over the Unix socket into a slow intake: how many arrive?

Starts a small Python HTTP sink (a thread per request, 202 to everything,
bodies kept in a temp file), starts `edgestat run` shipping to it, sends
N contexts of ~2.1 KB lines (2-50 tags of 3-150 B, names of 1-200 B) round
robin over the Unix socket at a fixed datagram rate for a fixed time, lets
the agent run `--settle` more seconds, stops it with SIGTERM, then decodes
what the sink got (zstd + series v2 protobuf) and prints one JSON line:
contexts sent/delivered, counter increments sent/delivered, the forwarder's
stop line counters and the agent's exit status.

Needs the `zstandard` Python package (pip install zstandard).

  python3 perf/delivery_slow_intake.py --bin target/release/edgestat \
      --contexts 100000 --rate 20000 --duration 16
"""

import argparse
import http.server
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

import zstandard

ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"


def lines(n, seed, target):
    """n unique counter lines averaging about `target` bytes."""
    rnd = random.Random(seed)
    pool = "".join(rnd.choices(ALNUM, k=1 << 20))

    def text(k):
        off = rnd.randrange(0, len(pool) - k)
        return pool[off : off + k]

    out = []
    for i in range(n):
        name = f"c{i}." + text(rnd.randint(1, 190))
        tags = []
        size = len(name)
        ntags = rnd.randint(2, 50)
        for j in range(ntags):
            budget = max(3, min(150, (target - size) // max(1, ntags - j)))
            t = f"t{j}:" + text(rnd.randint(max(1, budget // 2), budget))
            tags.append(t[:150])
            size += len(tags[-1]) + 1
        out.append(f"{name}:1|c|#{','.join(tags)}".encode())
    return out


class Sink(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    store = None
    lock = threading.Lock()

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)
        with Sink.lock:
            path = self.path.encode()
            Sink.store.write(struct.pack("<II", len(path), len(body)) + path + body)
        self.send_response(202)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *a):
        pass


def varint(b, i):
    x = s = 0
    while True:
        c = b[i]
        i += 1
        x |= (c & 0x7F) << s
        if c < 0x80:
            return x, i
        s += 7


def fields(b):
    i = 0
    while i < len(b):
        key, i = varint(b, i)
        f, wt = key >> 3, key & 7
        if wt == 0:
            v, i = varint(b, i)
        elif wt == 1:
            v = b[i : i + 8]
            i += 8
        elif wt == 2:
            ln, i = varint(b, i)
            v = b[i : i + ln]
            i += ln
        elif wt == 5:
            v = b[i : i + 4]
            i += 4
        else:
            raise ValueError("wire type %d" % wt)
        yield f, v


def decode(store_path):
    """Sum of counter values per metric name in every series v2 payload."""
    d = zstandard.ZstdDecompressor()
    sums = {}
    with open(store_path, "rb") as fh:
        while True:
            h = fh.read(8)
            if len(h) < 8:
                break
            lp, lb = struct.unpack("<II", h)
            path = fh.read(lp).decode()
            body = fh.read(lb)
            if path != "/api/v2/series":
                continue
            raw = d.decompressobj().decompress(body)
            for f, s in fields(raw):
                if f != 1:
                    continue
                name, total, interval = None, 0.0, 0
                for g, v in fields(s):
                    if g == 2:
                        name = bytes(v).decode()
                    elif g == 4:
                        for h2, pv in fields(v):
                            if h2 == 1:
                                total += struct.unpack("<d", pv)[0]
                    elif g == 8:
                        interval = v
                # Counters flush as rates: value × interval is the count.
                if name and name.startswith("c"):
                    sums[name] = sums.get(name, 0.0) + total * max(1, interval)
    return sums


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--contexts", type=int, default=100000)
    ap.add_argument("--line-bytes", type=int, default=2100)
    ap.add_argument("--rate", type=float, default=20000, help="datagrams/s (one line each)")
    ap.add_argument("--duration", type=float, default=16)
    ap.add_argument("--settle", type=float, default=30, help="seconds the agent keeps running after the last send")
    ap.add_argument("--env", action="append", default=[], help="KEY=VALUE for edgestat")
    a = ap.parse_args()

    work = tempfile.mkdtemp(prefix="edgestat-slow-intake-")
    store_path = os.path.join(work, "bodies.bin")
    Sink.store = open(store_path, "wb")
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = "http://127.0.0.1:%d" % srv.server_address[1]

    sock_path = os.path.join(work, "dsd.socket")
    env = {
        "PATH": os.environ.get("PATH", ""),
        "DD_HOSTNAME": "perf",
        "DD_API_KEY": "perf-key",
        "DD_DD_URL": url,
        "DD_DOGSTATSD_SOCKET": sock_path,
        "DD_DOGSTATSD_PORT": "0",
        "EDGESTAT_API_ADDR": "off",
        "EDGESTAT_DATA_DIR": os.path.join(work, "data"),
        "DD_LOG_LEVEL": "info",
    }
    for kv in a.env:
        k, v = kv.split("=", 1)
        env[k] = v
    log = open(os.path.join(work, "edgestat.log"), "w+")
    agent = subprocess.Popen([a.bin, "run"], env=env, stdout=log, stderr=subprocess.STDOUT)
    for _ in range(200):
        if os.path.exists(sock_path):
            break
        time.sleep(0.05)

    ls = lines(a.contexts, 1, a.line_bytes)
    avg = sum(map(len, ls)) / len(ls)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    start = time.monotonic()
    sent = 0
    total = int(a.rate * a.duration)
    while sent < total:
        due = start + sent / a.rate
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        s.sendto(ls[sent % len(ls)], sock_path)  # blocking: nothing lost before the agent
        sent += 1
    send_s = time.monotonic() - start
    time.sleep(a.settle)
    agent.send_signal(signal.SIGTERM)
    try:
        code = agent.wait(timeout=120)
    except subprocess.TimeoutExpired:
        agent.kill()
        code = "killed"
    srv.shutdown()
    Sink.store.close()
    log.seek(0)
    text = log.read()
    stop = [l for l in text.splitlines() if "forwarder stopped:" in l]
    fw = {}
    if stop:
        for kv in stop[-1].split("forwarder stopped:")[1].split():
            if "=" in kv:
                k, v = kv.split("=", 1)
                fw[k] = int(v) if v.isdigit() else v
    sums = decode(store_path)
    print(
        json.dumps(
            {
                "contexts_sent": min(a.contexts, sent),
                "contexts_delivered": len(sums),
                "increments_sent": sent,
                "increments_delivered": int(round(sum(sums.values()))),
                "avg_line_bytes": round(avg),
                "send_seconds": round(send_s, 2),
                "exit": code,
                "forwarder": {k: fw.get(k) for k in ("input", "input_bytes", "success", "errors", "dropped", "dropped_retry_queue_full", "dropped_intake_too_slow", "dropped_shutdown")},
                "retry_queue_full_logged": "retry queue full" in text,
                "log": log.name,
            }
        )
    )


if __name__ == "__main__":
    sys.exit(main())
