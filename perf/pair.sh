#!/usr/bin/env bash
# Paired runs of one bench preset against two edgestat builds, alternating
# A B A B ... so that a drift in the machine's speed hits both alike.
#   perf/pair.sh BENCH_EXE A_EXE B_EXE RUNS name -- bench-args...
# The load generator is BENCH_EXE (`edgestat bench`); A and B are the
# servers it starts (--edgestat). One summary line per run; JSON reports in
# perf/results/<name>-<A|B>-<i>.json.
set -euo pipefail
cd "$(dirname "$0")/.."
bench=$1 a=$2 b=$3 runs=$4 name=$5
shift 5
[ "${1:-}" = "--" ] && shift
mkdir -p perf/results
for i in $(seq 1 "$runs"); do
  for side in A B; do
    exe=$a; [ "$side" = B ] && exe=$b
    out="perf/results/$name-$side-$i.json"
    "$bench" bench --no-progress --edgestat "$exe" --json "$out" "$@" > /dev/null
    python3 - "$out" "$side" "$i" "$(cut -d' ' -f1 /proc/loadavg)" <<'PY'
import json, sys
path, side, i, load = sys.argv[1:]
r = json.load(open(path))
f = r.get("flush_latency") or {}
def n(v, fmt):
    return "n/a" if v is None else fmt.format(v)
print(f"{side}{i} load {load}  sent {r['lines_per_s_sent']/1e3:.1f}k lines/s {r['packets_sent']/max(r['duration_s'],1e-9):.0f} dgram/s"
      f"  processed {n(r.get('lines_per_s_processed'), '{:.0f}')} lines/s  drops {r['kernel_drops']}  loss {n(r.get('loss_ratio'), '{:.4%}')}"
      f"  cpu {n(r.get('cpu_ns_per_line'), '{:.0f}')} ns/line {n(r.get('cpu_ns_per_datagram'), '{:.0f}')} ns/dgram"
      f"  idle {n(r.get('idle_cpu_pct'), '{:.3f}')} %  rss {n(r.get('rss_bytes') and r['rss_bytes']/1048576, '{:.1f}')}/{n(r.get('rss_peak_bytes') and r['rss_peak_bytes']/1048576, '{:.1f}')} MiB"
      f"  flush p99 {f.get('p99_us', 0)/1000:.1f} ms", flush=True)
PY
  done
done
