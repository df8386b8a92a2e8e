#!/usr/bin/env bash
# Every row of the issue-13 efficiency table and the issue-12 default-buffer
# rows, once each, against one build: one summary line per row, JSON
# reports in perf/results/<tag>-<row>.json. Run it on a quiet machine
# (`uptime` first); the numbers are whole-process figures of `edgestat run`.
#   perf/table.sh EXE TAG [row ...]
# TABLE_EXTRA adds `edgestat bench` options to every row, e.g.
#   TABLE_EXTRA="--env EDGESTAT_RECV_COALESCE_US=200" perf/table.sh ...
# Rows: idle idle2 small-packed large-packed small-single large-single
#       small-packed-defbuf large-packed-defbuf small-packed-defbuf-100k
#       large-packed-defbuf-100k mem100k-small mem100k-large uds-small-max
#       uds-large-max
set -euo pipefail
cd "$(dirname "$0")/.."
exe=$1 tag=$2
shift 2
rows=("$@")
[ ${#rows[@]} -gt 0 ] || rows=(idle idle2 small-packed large-packed small-packed-defbuf large-packed-defbuf
  small-packed-defbuf-100k large-packed-defbuf-100k mem100k-small mem100k-large uds-small-max uds-large-max)
mkdir -p perf/results
for row in "${rows[@]}"; do
  case $row in
    idle) args=(--preset idle) ;;
    idle2) args=(--preset idle --shards 2 --idle 30) ;;
    small-packed|large-packed|small-single|large-single|mem100k-small|mem100k-large|uds-small-max|uds-large-max)
      args=(--preset "$row") ;;
    small-packed-defbuf) args=(--preset small-packed --so-rcvbuf 0) ;;
    large-packed-defbuf) args=(--preset large-packed --so-rcvbuf 0) ;;
    small-packed-defbuf-100k) args=(--preset small-packed --so-rcvbuf 0 --contexts 100000) ;;
    large-packed-defbuf-100k) args=(--preset large-packed --so-rcvbuf 0 --contexts 100000) ;;
    *) echo "unknown row $row" >&2; exit 2 ;;
  esac
  out="perf/results/$tag-$row.json"
  # shellcheck disable=SC2206 # word splitting of TABLE_EXTRA is the point
  extra=(${TABLE_EXTRA:-})
  "$exe" bench --no-progress --edgestat "$exe" --json "$out" "${args[@]}" "${extra[@]}" > /dev/null
  python3 - "$out" "$row" "$(cut -d' ' -f1 /proc/loadavg)" <<'PY'
import json, sys
path, row, load = sys.argv[1:]
r = json.load(open(path))
f = r.get("flush_latency") or {}
def n(v, fmt):
    return "n/a" if v is None else fmt.format(v)
print(f"{row:26} load {load:5}  sent {r['lines_per_s_sent']/1e3:7.1f}k lines/s {r['packets_sent']/max(r['duration_s'],1e-9):6.0f} dgram/s"
      f"  drops {r['kernel_drops']}  loss {n(r.get('loss_ratio'), '{:.4%}')}"
      f"  cpu {n(r.get('cpu_ns_per_line'), '{:.0f}')} ns/line {n(r.get('cpu_ns_per_datagram'), '{:.0f}')} ns/dgram"
      f"  idle {n(r.get('idle_cpu_pct'), '{:.3f}')} %  rss {n(r.get('rss_bytes') and r['rss_bytes']/1048576, '{:.1f}')}/{n(r.get('rss_peak_bytes') and r['rss_peak_bytes']/1048576, '{:.1f}')} MiB"
      f"  flush p99 {f.get('p99_us', 0)/1000:.1f} ms", flush=True)
PY
done
