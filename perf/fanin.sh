#!/usr/bin/env bash
# Fan-in of `edgestat intake` (docs/deployment.md "One intake for many nodes"):
# records one node's flush from a real `edgestat run` under the bench
# workload, then replays it from N simulated nodes against one
# `edgestat intake` for DURATION seconds each, on 127.0.0.1 only.
#
#   perf/fanin.sh [OUT_DIR] [CONTEXTS] [NODES...]
#   perf/fanin.sh /tmp/fanin 3000 100 200 400 800
#
# One JSON line per N: requests_ok/failed, latency, lag behind schedule,
# the intake's CPU time per node-flush and peak RSS, absorbed=true|false.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-/tmp/edgestat-fanin}
contexts=${2:-3000}
shift 2 2>/dev/null || shift $#
nodes=("$@")
[ ${#nodes[@]} -gt 0 ] || nodes=(100 200 400 800)
duration=${FANIN_DURATION:-60}
bin=${EDGESTAT_BIN:-target/release/edgestat}
[ -n "${EDGESTAT_BIN:-}" ] || cargo build --release --locked
mkdir -p "$out"
echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(nproc) cpus, load $(cut -d' ' -f1-3 /proc/loadavg)"
python3 perf/fanin.py record --bin "$bin" --out "$out/node-$contexts" --contexts "$contexts"
for n in "${nodes[@]}"; do
  python3 perf/fanin.py replay --bin "$bin" --payloads "$out/node-$contexts" --nodes "$n" --duration "$duration"
done
echo "# done $(date -u +%H:%MZ), load $(cut -d' ' -f1-3 /proc/loadavg)"
