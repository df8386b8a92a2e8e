#!/usr/bin/env python3
"""Fan-in of `edgestat intake`: how many nodes' payloads one intake absorbs.

Two steps (perf/fanin.sh runs both):

  record  -- run a real `edgestat run` shipping to a recorder, load it with
             `edgestat bench --target` (the perf workload), keep the raw
             request bodies and headers of one steady-state flush: "one
             node's flush".
  replay  -- start `edgestat intake`, then N simulated nodes each send that
             flush once per flush interval (staggered, persistent
             connections, a bounded worker pool), for a bounded time.
             Reports requests answered 202 / failed, latency, how far the
             senders fell behind schedule, and the intake's CPU time and
             RSS from /proc. Traffic goes to 127.0.0.1 only.

Standard library only.
"""

import argparse
import http.client
import http.server
import json
import os
import queue
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time


def free_port(kind=socket.SOCK_STREAM):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


# ---------------------------------------------------------------- record

def record(args):
    got = []  # (arrival, path, headers, body)
    lock = threading.Lock()

    class Rec(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            n = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(n)
            keep = {k: v for k, v in self.headers.items() if k.lower() in
                    ("content-type", "content-encoding", "dd-agent-payload", "dd-api-key", "dd-agent-version", "user-agent")}
            with lock:
                got.append((time.time(), self.path, keep, body))
            self.send_response(202)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def do_GET(self):  # API key validation
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Rec)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_address[1]}"
    udp = free_port(socket.SOCK_DGRAM)
    env = dict(os.environ,
               DD_DD_URL=url, DD_API_KEY="fanin-test-key", DD_HOSTNAME="node-0001",
               DD_DOGSTATSD_PORT=str(udp), DD_DOGSTATSD_SO_RCVBUF="4194304",
               EDGESTAT_API_ADDR="off", EDGESTAT_SHARDS="1",
               EDGESTAT_FLUSH_INTERVAL=f"{args.interval}s", DD_LOG_LEVEL="warn")
    agent = subprocess.Popen([args.bin, "run"], env=env, stdout=subprocess.DEVNULL)
    time.sleep(1.0)
    bench = [args.bin, "bench", "--no-progress", "--target", f"127.0.0.1:{udp}", "--target-pid", str(agent.pid),
             "--contexts", str(args.contexts), "--rate", str(args.rate), "--duration", str(args.duration),
             "--drain", "1", "--json", os.path.join(args.out, "record-bench.json")]
    subprocess.run(bench, check=True, stdout=subprocess.DEVNULL)
    agent.send_signal(signal.SIGTERM)
    agent.wait(timeout=60)
    srv.shutdown()

    # Group requests into flushes (a flush's payloads arrive together) and
    # keep the biggest full one that is not the final (shutdown) flush.
    got.sort(key=lambda g: g[0])
    flushes, cur = [], []
    for g in got:
        if cur and g[0] - cur[-1][0] > args.interval / 3:
            flushes.append(cur)
            cur = []
        cur.append(g)
    if cur:
        flushes.append(cur)
    steady = flushes[:-1] or flushes
    best = max(steady, key=lambda f: sum(len(g[3]) for g in f))
    os.makedirs(args.out, exist_ok=True)
    index = []
    for i, (_, path, headers, body) in enumerate(best):
        name = f"payload-{i:03d}.bin"
        with open(os.path.join(args.out, name), "wb") as f:
            f.write(body)
        index.append({"file": name, "path": path, "headers": headers, "bytes": len(body)})
    meta = {"contexts": args.contexts, "rate": args.rate, "interval_s": args.interval, "flushes_seen": len(flushes),
            "payloads": index, "bytes_per_flush": sum(p["bytes"] for p in index)}
    with open(os.path.join(args.out, "flush.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(f"recorded one node's flush: {len(index)} payloads, {meta['bytes_per_flush']} compressed bytes "
          f"({args.contexts} contexts, {args.rate} lines/s, {len(flushes)} flushes seen)")


# ---------------------------------------------------------------- replay

def proc_cpu_rss(pid):
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    cpu = (int(parts[11]) + int(parts[12])) / tick
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
    return cpu, rss


def replay(args):
    with open(os.path.join(args.payloads, "flush.json")) as f:
        meta = json.load(f)
    payloads = []
    for p in meta["payloads"]:
        with open(os.path.join(args.payloads, p["file"]), "rb") as f:
            payloads.append((p["path"], p["headers"], f.read()))
    port = free_port()
    intake = subprocess.Popen([args.bin, "intake", "--listen", f"127.0.0.1:{port}",
                               "--max-stored-payloads", str(args.max_stored)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    intake.stdout.readline()  # "listening on ..."

    interval = meta["interval_s"]
    work = queue.Queue(maxsize=10_000)
    lat, errors, lag = [], [0], []
    ok = [0]
    lock = threading.Lock()

    def worker():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while True:
            item = work.get()
            if item is None:
                return
            due, node = item
            now = time.monotonic()
            for path, headers, body in payloads:
                h = dict(headers)
                h["Content-Length"] = str(len(body))
                t0 = time.monotonic()
                try:
                    conn.request("POST", path, body=body, headers=h)
                    r = conn.getresponse()
                    r.read()
                    good = r.status == 202
                except (OSError, http.client.HTTPException):
                    good = False
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                with lock:
                    lat.append(time.monotonic() - t0)
                    if good:
                        ok[0] += 1
                    else:
                        errors[0] += 1
            with lock:
                lag.append(now - due)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(args.workers)]
    for t in threads:
        t.start()
    cpu0, _ = proc_cpu_rss(intake.pid)
    start = time.monotonic()
    end = start + args.duration
    # Node k flushes at start + k*interval/N + m*interval.
    schedule = sorted((start + k * interval / args.nodes + m * interval, k)
                      for k in range(args.nodes) for m in range(int(args.duration // interval) + 1)
                      if start + k * interval / args.nodes + m * interval < end)
    peak_rss = 0
    for due, k in schedule:
        while True:
            now = time.monotonic()
            if now >= due:
                break
            time.sleep(min(due - now, 0.05))
        work.put((due, k))
        peak_rss = max(peak_rss, proc_cpu_rss(intake.pid)[1])
    for _ in threads:
        work.put(None)
    for t in threads:
        t.join(timeout=120)
    wall = time.monotonic() - start
    cpu1, rss = proc_cpu_rss(intake.pid)
    peak_rss = max(peak_rss, rss)
    intake.send_signal(signal.SIGTERM)
    intake.wait(timeout=30)
    flushes = len(schedule)
    res = {
        "nodes": args.nodes, "interval_s": interval, "duration_s": round(wall, 1),
        "node_flushes": flushes, "requests_ok": ok[0], "requests_failed": errors[0],
        "bytes_per_node_flush": meta["bytes_per_flush"], "payloads_per_node_flush": len(payloads),
        "latency_ms_p50": round(statistics.median(lat) * 1000, 2) if lat else None,
        "latency_ms_p99": round(sorted(lat)[int(len(lat) * 0.99) - 1] * 1000, 2) if lat else None,
        "lag_s_max": round(max(lag), 2) if lag else None,
        "intake_cpu_s": round(cpu1 - cpu0, 2),
        "intake_cpu_ms_per_node_flush": round((cpu1 - cpu0) * 1000 / max(flushes, 1), 2),
        "intake_cpu_share_of_one_core": round((cpu1 - cpu0) / wall, 3),
        "intake_peak_rss_mib": round(peak_rss / 2**20, 1),
    }
    # The load-independent figure: node flushes one intake core can take per
    # interval, from the intake's own CPU time (wall-clock absorption also
    # depends on the load generator getting CPU on the same machine).
    per = (cpu1 - cpu0) / max(flushes, 1)
    res["nodes_per_intake_core"] = int(interval / per) if per > 0 else None
    # Absorbed: every request answered 202 and no node fell behind by a
    # flush interval.
    res["absorbed"] = errors[0] == 0 and ok[0] == flushes * len(payloads) and (res["lag_s_max"] or 0) < interval
    print(json.dumps(res))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("--bin", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--contexts", type=int, default=3000)
    r.add_argument("--rate", type=int, default=100000)
    r.add_argument("--interval", type=int, default=15)
    r.add_argument("--duration", type=float, default=40)
    p = sub.add_parser("replay")
    p.add_argument("--bin", required=True)
    p.add_argument("--payloads", required=True)
    p.add_argument("--nodes", type=int, required=True)
    p.add_argument("--duration", type=float, default=60)
    p.add_argument("--workers", type=int, default=16)
    p.add_argument("--max-stored", type=int, default=1000)
    a = ap.parse_args()
    os.makedirs(getattr(a, "out", ".") or ".", exist_ok=True)
    record(a) if a.cmd == "record" else replay(a)


if __name__ == "__main__":
    sys.exit(main())
