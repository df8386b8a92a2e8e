#!/bin/sh
# Instructions per flush phase of examples/flush_phases.rs (callgrind; set-up
# excluded), and the compressor's share (inclusive cost of zstd's
# ZSTD_compressStream2) next to encoding and merging.
# Usage: [SHAPE=standard|small|large] [MODE=stream|collect] perf/flush-ir.sh [contexts] [binary]
# Deterministic (unlike wall clock on the shared 2-core machine).
set -e
N=${1:-20000}
BIN=${2:-target/release/examples/flush_phases}
[ -n "$2" ] || cargo build --release --example flush_phases >/dev/null 2>&1
OUT=$(mktemp)
valgrind --tool=callgrind --collect-atstart=no --toggle-collect='flush_phases::phase_*' \
  --callgrind-out-file="$OUT" "$BIN" "$N" 1 "${SHAPE:-standard}" "${MODE:-stream}" >/dev/null 2>&1
callgrind_annotate --inclusive=yes --threshold=100 "$OUT" 2>/dev/null \
  | grep -E 'PROGRAM TOTALS|flush_phases::phase_|ZSTD_compressStream2 |encode_series|encode_sketch|PayloadBuilder::add_item|PayloadBuilder::close|flush_series|render_sketches|FlushMerger::render|to_dogsketch| free$| malloc$|realloc$' \
  | sed 's/\[.*//;s/(.*)//' | awk '!seen[$0]++'
rm -f "$OUT"
