#!/usr/bin/env bash
# Compares hot-path instruction counts with perf/baseline/instructions.txt;
# exits 1 when any profile costs more than 5% over its baseline.
# `perf/check-regression.sh --record` replaces the baseline.
set -euo pipefail
cd "$(dirname "$0")/.."
base=perf/baseline/instructions.txt
now=$(perf/instructions.sh)
if [ "${1:-}" = "--record" ]; then
  { echo "# profile Ir lines Ir_per_line  (recorded $(date -u +%F) on $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"; echo "$now"; } > "$base"
  cat "$base"
  exit 0
fi
status=0
while read -r p ir lines per; do
  b=$(awk -v p="$p" '$1==p {print $4}' "$base")
  if [ -z "$b" ]; then echo "$p: no baseline"; status=1; continue; fi
  pct=$(awk -v a="$per" -v b="$b" 'BEGIN { printf "%.2f", (a-b)*100/b }')
  verdict=ok
  if awk -v a="$per" -v b="$b" 'BEGIN { exit !(a > b*1.05) }'; then verdict=REGRESSION; status=1; fi
  echo "$p: $per Ir/line (baseline $b, ${pct}%) $verdict"
done <<< "$now"
exit $status
