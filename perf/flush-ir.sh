#!/bin/sh
# Instructions per flush phase of examples/flush_phases.rs (callgrind; set-up
# excluded). Usage: perf/flush-ir.sh [contexts] [binary]
# Deterministic (unlike wall clock on the shared 2-core machine).
set -e
N=${1:-20000}
BIN=${2:-target/release/examples/flush_phases}
[ -n "$2" ] || cargo build --release --example flush_phases >/dev/null 2>&1
OUT=$(mktemp)
valgrind --tool=callgrind --collect-atstart=no --toggle-collect='flush_phases::phase_*' \
  --callgrind-out-file="$OUT" "$BIN" "$N" >/dev/null 2>&1
callgrind_annotate --inclusive=yes "$OUT" 2>/dev/null | grep -E 'PROGRAM TOTALS|flush_phases::phase_' | sed 's/\[.*//'
rm -f "$OUT"
