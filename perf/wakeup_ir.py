#!/usr/bin/env python3
"""Instructions per datagram and per wake-up of a whole `edgestat run` process
from callgrind dumps taken at two traffic lengths (N and 2N datagrams, same
process, same rate): every figure is (dump(2N) - dump(N)) / N, which cancels
what does not grow with the traffic. Used by perf/wakeup-ir.sh.

Usage: wakeup_ir.py DIR/SHAPE [TOP]
  reads DIR/SHAPE-n.<dump>-<thread> and DIR/SHAPE-2n.<dump>-<thread>
  (callgrind --separate-threads=yes, one dump each); N is the difference in
  datagrams handled (calls of handle_datagram_from), so a datagram the kernel
  dropped does not count. TOP: rows of the inclusive list (default 25).

Components (shard thread unless said):
  (c) core      inclusive cost of core::shard::ShardState::handle_datagram_from
                (parse, enrich, aggregate every line of the datagram)
  (b) read loop the ReadLoop task's code (recvmmsg batches, rate bookkeeping,
                or_stop), found by its source file since glommio's task runner
                inlines the task future, with the calls it makes, minus (c),
                the live-stats publisher and its calls into glommio
  (a) glommio   the rest of the shard thread: executor loop, park/unpark,
                io_uring submission and completion, timers, and the glommio
                calls made for the read loop (the peek that waits, its Source)
  (d) other     the shard's live-stats publisher and every other thread
"""
import glob
import re
import sys
from collections import defaultdict

from callgrind_names import Names

class Dump:
    """One callgrind file: self cost per function, call edges with their
    call count and inclusive cost, both also by the source file of the line
    (inlined code keeps its own file)."""

    def __init__(self, path):
        self.selfc = defaultdict(int)
        self.edges = defaultdict(lambda: [0, 0])  # (caller, callee) -> [calls, incl]
        # The same, by the source file the cost line is in (differs from the
        # function's own file for inlined code): (fn, file) and (fn, file, callee).
        self.self_at = defaultdict(int)
        self.edges_at = defaultdict(int)
        self.total = 0
        name = Names().resolve

        fn = None
        fl = fi = None
        pending = None
        for line in open(path, errors="replace"):
            line = line.rstrip("\n")
            if not line:
                continue
            c = line[0]
            if c.isdigit() or c in "+-*":
                parts = line.split()
                if len(parts) < 2:
                    continue
                cost = int(parts[1])
                src = fi if fi is not None else fl
                if pending is not None:
                    callee, calls = pending
                    e = self.edges[(fn, callee)]
                    e[0] += calls
                    e[1] += cost
                    self.edges_at[(fn, src, callee)] += cost
                    pending = None
                else:
                    self.selfc[fn] += cost
                    self.self_at[(fn, src)] += cost
                continue
            key, _, rest = line.partition("=")
            if key == "fn":
                fn = name("fn", rest)
                fi = None
            elif key == "cfn":
                pending = (name("fn", rest), None)
            elif key == "calls":
                pending = (pending[0], int(rest.split()[0]))
            elif key == "fl":
                fl = name("fl", rest)
                fi = None
            elif key in ("fi", "fe"):
                fi = name("fl", rest)
                if fi == fl:
                    fi = None
            elif key in ("cfi", "cfl"):
                name("fl", rest)
            elif line.startswith("summary:"):
                self.total = int(line.split()[1])
        if not self.total:
            self.total = sum(self.selfc.values())

    def incl(self, fn):
        return self.selfc.get(fn, 0) + sum(c for (a, b), (_, c) in self.edges.items() if a == fn and b != fn)

    def incl_all(self):
        out = defaultdict(int)
        for f, s in self.selfc.items():
            out[f] += s
        for (a, b), (_, c) in self.edges.items():
            if a != b:
                out[a] += c
        return out

    def calls_to(self, pat):
        rx = re.compile(pat)
        return sum(n for (a, b), (n, _) in self.edges.items() if rx.search(b) and not rx.search(a))

    def find(self, pat):
        rx = re.compile(pat)
        return [f for f in set(self.selfc) | {b for (_, b) in self.edges} if rx.search(f)]


CORE = r"ShardState::handle_datagram_from$"
# The read loop's source file: its task future is inlined into glommio's
# generic task runner, so its code is found by file, not by function name.
READ_FILE = "/src/agent/runtime.rs"
GLOMMIO = re.compile(r"glommio|io_uring")
PUBLISH = r"LiveShardStats::publish$"
SHARD_MARK = r"glommio::parking::Parker::park$"
# Thread entry wrappers: as inclusive as the whole thread, left out of the top list.
ROOTS = {
    "(below main)",
    "start_thread",
    "clone",
    "std::sys::backtrace::__rust_begin_short_backtrace",
    "core::ops::function::FnOnce::call_once{{vtable.shim}}",
    "<std::sys::thread::unix::Thread>::new::thread_start",
}


def load(prefix):
    files = sorted(glob.glob(prefix + ".*-*"))
    if not files:
        sys.exit(f"no dump files {prefix}.*-*")
    return [Dump(f) for f in files]


def sum_pat(d, pat):
    return sum(d.incl(f) for f in d.find(pat))


def shard_parts(d):
    """(total, a, b, c, d) of the shard thread of one dump (see the module doc)."""
    total = d.total
    core = sum_pat(d, CORE)
    publish = sum_pat(d, PUBLISH)
    # The read loop's code inlined into generic functions (glommio's task
    # runner, `poll_fn`): those "hosts" have cost lines in runtime.rs. Their
    # runtime.rs lines are ours, and so are the calls made from those lines,
    # except calls into glommio or into another host (counted by its lines).
    ours = lambda fn: fn.startswith("edgestat::")  # noqa: E731
    at_read = lambda src: bool(src) and src.endswith(READ_FILE)  # noqa: E731
    hosts = {fn for (fn, src) in d.self_at if at_read(src) and not ours(fn)}
    read = sum(c for (fn, src), c in d.self_at.items() if fn in hosts and at_read(src))
    for (fn, src, callee), c in d.edges_at.items():
        if fn in hosts and at_read(src) and callee != fn and callee not in hosts and not GLOMMIO.search(callee):
            read += c
    # glommio calls made from the read loop's own (not inlined) functions
    g_nested = sum(
        c for (a, b), (_, c) in d.edges.items() if "edgestat::agent::runtime" in a and GLOMMIO.search(b) and a != b
    )
    b = read - core - g_nested - publish
    return total, total - b - core - publish, b, core, publish


def thread_label(path, d):
    num = path.rsplit("-", 1)[-1]
    if d.find(SHARD_MARK):
        return f"{num} shard (glommio executor)"
    inc = d.incl_all()
    if any("tokio::runtime" in f for f in inc):
        return f"{num} tokio runtime (intake or forwarder)"
    ours = sorted((v, f) for f, v in inc.items() if f.startswith("edgestat::") and "main" not in f)
    return f"{num} {ours[-1][1][:60]}" if ours else f"{num} other"


def per_caller(d1, d2, callee, n):
    """{caller: calls per datagram} of calls to `callee`."""
    out = defaultdict(float)
    for d, sign in ((d1, -1), (d2, 1)):
        for (a, b), (c, _) in d.edges.items():
            if b == callee and a != b:
                out[a] += sign * c / n
    return out


def main():
    prefix = sys.argv[1]
    top_n = int(sys.argv[2]) if len(sys.argv) > 2 else 25
    one, two = load(prefix + "-n"), load(prefix + "-2n")
    handled = [sum(d.calls_to(CORE) for d in ds) for ds in (one, two)]
    n = handled[1] - handled[0]
    files1 = sorted(glob.glob(prefix + "-n.*-*"))
    files2 = sorted(glob.glob(prefix + "-2n.*-*"))
    label1 = {thread_label(f, d).split()[0]: d for f, d in zip(files1, one)}
    label2 = {thread_label(f, d): d for f, d in zip(files2, two)}
    per = lambda x: x / n  # noqa: E731

    tot1 = sum(d.total for d in one)
    tot2 = sum(d.total for d in two)
    print(f"## {prefix.rsplit('/', 1)[-1]}: datagrams handled {handled[0]} (N run), {handled[1]} (2N run)")
    print()
    print(f"whole process: Ir(N) = {tot1:,}, Ir(2N) = {tot2:,}, per datagram = {per(tot2 - tot1):,.0f}")
    print()
    print("| thread | Ir per datagram |")
    print("|---|---:|")
    for lab, d in sorted(label2.items()):
        a = label1[lab.split()[0]].total if lab.split()[0] in label1 else 0
        print(f"| {lab} | {per(d.total - a):,.0f} |")
    print()

    s1 = [d for d in one if d.find(SHARD_MARK)]
    s2 = [d for d in two if d.find(SHARD_MARK)]
    if len(s1) != 1 or len(s2) != 1:
        sys.exit("expected exactly one shard thread (EDGESTAT_SHARDS=1)")
    p1, p2 = shard_parts(s1[0]), shard_parts(s2[0])
    d_ = [per(y - x) for x, y in zip(p1, p2)]
    rest = per((tot2 - s2[0].total) - (tot1 - s1[0].total))
    whole = per(tot2 - tot1)
    rows = [
        ("(a) glommio executor: park/unpark, io_uring submit/complete, timers", d_[1]),
        ("(b) read loop (ReadLoop task without core and glommio calls)", d_[2]),
        ("(c) core: parse + aggregate (handle_datagram_from)", d_[3]),
        ("(d) shard's other tasks (live stats publisher)", d_[4]),
        ("(d) other threads (flusher, forwarder, intake, main)", rest),
    ]
    print("| component | Ir per datagram | share |")
    print("|---|---:|---:|")
    for name, v in rows:
        print(f"| {name} | {v:,.0f} | {100 * v / whole:.1f}% |")
    print(f"| whole process | {whole:,.0f} | 100% |")
    print()

    x1, x2 = s1[0], s2[0]
    # What the executor's loop (inlined into the thread's entry) calls.
    root = "std::sys::backtrace::__rust_begin_short_backtrace"
    kids = defaultdict(float)
    for d, sign in ((x1, -1), (x2, 1)):
        for (a, b), (_, c) in d.edges.items():
            if a == root and b != root:
                kids[b] += sign * c / n
    print("| shard thread: what the executor loop calls | inclusive Ir per datagram | calls per datagram |")
    print("|---|---:|---:|")
    for f, v in sorted(kids.items(), key=lambda kv: -kv[1]):
        if v >= 50:
            calls = per_caller(x1, x2, f, n).get(root, 0.0)
            print(f"| `{f[:90]}` | {v:,.0f} | {calls:.2f} |")
    print(f"| (the loop's own code) | {(x2.selfc.get(root, 0) - x1.selfc.get(root, 0)) / n:,.0f} | |")
    print()
    print("| event (shard thread; callgrind sees no kernel work: these are its count) | per datagram |")
    print("|---|---:|")

    def row(label, callee, caller=None):
        pc = per_caller(x1, x2, callee, n)
        v = pc.get(caller, 0.0) if caller else sum(pc.values())
        print(f"| {label} | {v:.2f} |")

    row("executor parks (`glommio::parking::Parker::park`)", "glommio::parking::Parker::park")
    row("`io_uring_enter` system calls", "syscall", "__sys_io_uring_enter2")
    outside = sum(v for k, v in per_caller(x1, x2, "syscall", n).items() if k != "__sys_io_uring_enter2")
    print(f"| other `syscall()` calls (glommio's membarrier before a sleep) | {outside:.2f} |")
    row("`recvmmsg` system calls", "recvmmsg")
    row("`clock_gettime` calls (vDSO natively)", "clock_gettime@@GLIBC_2.17")
    row("`malloc` calls", "malloc")
    row("datagrams handled (`handle_datagram_from`)", "edgestat::core::shard::ShardState::handle_datagram_from")
    print()
    for callee in ("syscall", "clock_gettime@@GLIBC_2.17", "malloc"):
        pc = per_caller(x1, x2, callee, n)
        top = sorted(((v, k) for k, v in pc.items() if v >= 0.05), reverse=True)[:8]
        print(f"callers of `{callee}` per datagram: " + "; ".join(f"`{k[:80]}` {v:.2f}" for v, k in top))
        print()

    inc1 = defaultdict(int)
    inc2 = defaultdict(int)
    for d in one:
        for f, v in d.incl_all().items():
            inc1[f] += v
    for d in two:
        for f, v in d.incl_all().items():
            inc2[f] += v
    diff = sorted(((per(inc2[f] - inc1.get(f, 0)), f) for f in inc2), reverse=True)
    print("| inclusive Ir per datagram | function (all threads) |")
    print("|---:|---|")
    shown = 0
    for v, f in diff:
        if not f or f.startswith("0x") or f in ROOTS:
            continue
        print(f"| {v:,.0f} | `{f[:110]}` |")
        shown += 1
        if shown == top_n:
            break
    print()


if __name__ == "__main__":
    main()
