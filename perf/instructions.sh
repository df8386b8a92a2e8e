#!/usr/bin/env bash
# Instruction counts (valgrind/callgrind, no hardware counters needed) of the
# per-line hot path: parse + enrich + aggregate of a fixed corpus
# (examples/hotpath.rs, `edgestat bench` workload, seed 1, 3000 contexts,
# steady state). Prints "profile Ir lines Ir_per_line" per profile.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --example hotpath
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for p in packed single; do
  lines=$(valgrind --tool=callgrind --callgrind-out-file="$out/$p.cg" --toggle-collect='*hot_loop*' \
            target/release/examples/hotpath "$p" 2>"$out/$p.log" | sed -n 's/.* lines=\([0-9]*\).*/\1/p')
  ir=$(sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$out/$p.log")
  echo "$p $ir $lines $((ir / lines))"
  if [ "${KEEP_PROFILE:-}" != "" ]; then cp "$out/$p.cg" "perf/callgrind.$p.out"; fi
done
