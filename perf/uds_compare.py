#!/usr/bin/env python3
"""Unbuffered Unix-socket clients against edgestat and a plain blocking reader.

The client behaves like hot-shots with `protocol: 'uds'` and no buffering, or
datadogpy's UDS mode: one datagram per metric on a non-blocking socket, and a
metric is dropped whenever the send is refused (EAGAIN: the receiver's queue
holds `net.unix.max_dgram_qlen` datagrams, 10 on a default Linux). It counts
the refused sends. The reference receiver is a plain blocking `recv` loop in
Python on its own socket.

    perf/uds_compare.py --edgestat target/release/edgestat [--sends 40000]
        [--rate 0] [--busy] [--client-cpu 1] [--runs 3] [--client-sndbuf BYTES]

--rate 0 sends as fast as it goes; --busy mimics a busy application (100 us
of work between sends, bursts of 20, 1 ms sleep). Prints one line per run.
Standard library only.
"""
import argparse
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

LINE_TAGS = 4


def make_lines(n_contexts, seed=1):
    rnd = random.Random(seed)
    alnum = "abcdefghijklmnopqrstuvwxyz0123456789"
    out = []
    for i in range(n_contexts):
        name = "bench.c.%x_" % i + "".join(rnd.choice(alnum) for _ in range(rnd.randint(12, 40)))
        tags = ",".join(
            "".join(rnd.choice(alnum) for _ in range(6)) + ":" + "".join(rnd.choice(alnum) for _ in range(rnd.randint(5, 25)))
            for _ in range(rnd.randint(3, 6))
        )
        out.append(("%s:1|c|#%s" % (name, tags)).encode())
    return out


def client(path, sends, rate, busy, sndbuf=0, seed=1):
    """Returns (sent, refused)."""
    lines = make_lines(3000, seed)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.setblocking(False)
    if sndbuf:
        # Capped by net.core.wmem_max (Datadog's clients raise SO_SNDBUF for UDS).
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    s.connect(path)
    sent = refused = 0
    start = time.perf_counter()
    for i in range(sends):
        if rate > 0:
            due = start + i / rate
            while time.perf_counter() < due:
                pass
        if busy:
            t = time.perf_counter() + 100e-6
            while time.perf_counter() < t:
                pass
            if i % 20 == 19:
                time.sleep(0.001)
        try:
            s.send(lines[i % len(lines)])
            sent += 1
        except BlockingIOError:
            refused += 1
    s.close()
    return sent, refused


def blocking_reader(path):
    """The reference: a plain blocking recv loop (run as a child process)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    n = 0
    signal.signal(signal.SIGTERM, lambda *_: (print(n, flush=True), os._exit(0)))
    print("ready", flush=True)
    while True:
        s.recv(65536)
        n += 1


# The receivers get every CPU this script started with, whatever the
# client was pinned to by an earlier run (a child inherits its parent's
# affinity: a receiver pinned to the client's CPU measures the scheduler).
ALL_CPUS = os.sched_getaffinity(0)


def unpinned():
    os.sched_setaffinity(0, ALL_CPUS)


def pin(cpu):
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


def wait_for_socket(path, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        if os.path.exists(path):
            return True
        time.sleep(0.05)
    return False


def run_one(kind, args, tmp):
    path = os.path.join(tmp, "%s.socket" % kind)
    if kind == "python":
        proc = subprocess.Popen([sys.executable, __file__, "--reader", path], stdout=subprocess.PIPE, text=True, preexec_fn=unpinned)
        proc.stdout.readline()
    else:
        env = {
            "PATH": os.environ.get("PATH", ""),
            "DD_HOSTNAME": "uds-compare",
            "DD_DOGSTATSD_PORT": "0",
            "DD_DOGSTATSD_SOCKET": path,
            "EDGESTAT_API_ADDR": "off",
            "EDGESTAT_DATA_DIR": os.path.join(tmp, "data-%d" % time.time_ns()),
            "DD_LOG_LEVEL": "warn",
        }
        env.update(dict(kv.split("=", 1) for kv in args.env))
        proc = subprocess.Popen([args.edgestat, "run"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=unpinned)
    if not wait_for_socket(path):
        proc.kill()
        raise SystemExit("%s did not create %s" % (kind, path))
    time.sleep(1.0)
    pin(args.client_cpu)
    t0 = time.perf_counter()
    sent, refused = client(path, args.sends, args.rate, args.busy, args.client_sndbuf)
    wall = time.perf_counter() - t0
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out = None
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    return sent, refused, wall


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reader", help=argparse.SUPPRESS)
    ap.add_argument("--edgestat", help="edgestat executable to compare (omit: Python reader only)")
    ap.add_argument("--sends", type=int, default=40000)
    ap.add_argument("--rate", type=float, default=0.0, help="datagrams/s (0: as fast as it goes)")
    ap.add_argument("--busy", action="store_true")
    ap.add_argument("--client-cpu", type=int, default=None)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--client-sndbuf", type=int, default=0, help="client SO_SNDBUF in bytes (0: the kernel default)")
    ap.add_argument("--env", action="append", default=[], help="KEY=VALUE for edgestat (repeatable)")
    args = ap.parse_args()
    if args.reader:
        blocking_reader(args.reader)
        return
    tmp = tempfile.mkdtemp(prefix="uds-compare-")
    qlen = open("/proc/sys/net/unix/max_dgram_qlen").read().strip()
    wmem = open("/proc/sys/net/core/wmem_max").read().strip()
    print("# max_dgram_qlen=%s wmem_max=%s sends=%d rate=%s busy=%s client_cpu=%s" % (qlen, wmem, args.sends, args.rate or "max", args.busy, args.client_cpu))
    try:
        kinds = ["python"] + (["edgestat"] if args.edgestat else [])
        for r in range(args.runs):
            for kind in kinds:
                sent, refused, wall = run_one(kind, args, tmp)
                print("run=%d receiver=%s sent=%d refused=%d (%.2f %%) wall=%.2fs" % (r, kind, sent, refused, 100.0 * refused / args.sends, wall), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
