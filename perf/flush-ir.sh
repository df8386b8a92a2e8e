#!/bin/sh
# Instructions per flush phase of examples/flush_phases.rs (callgrind; set-up
# excluded), and the compressor's share (inclusive cost of zstd's
# ZSTD_compressStream2) next to merging and encoding.
# Usage: [SHAPE=standard|small|large] [MODE=stream|collect] perf/flush-ir.sh [contexts] [binary]
# Deterministic (unlike wall clock on the shared 2-core machine).
set -e
N=${1:-20000}
BIN=${2:-target/release/examples/flush_phases}
[ -n "$2" ] || cargo build --release --example flush_phases >/dev/null 2>&1
OUT=$(mktemp)
valgrind --tool=callgrind --collect-atstart=no --toggle-collect=flush_phases::phase_take --toggle-collect=flush_phases::phase_merge_encode \
  --toggle-collect=flush_phases::phase_collect --toggle-collect=flush_phases::phase_drop \
  --callgrind-out-file="$OUT" "$BIN" "$N" 1 "${SHAPE:-standard}" "${MODE:-stream}" 2>/dev/null
python3 "$(dirname "$0")/callgrind_fns.py" "$OUT" '^flush_phases::[a-z_]+$' 'ZSTD_compressStream2$' 'ZSTD_compressBlock' \
  'merge::FlushMerger::(flush|flush_series|render)$' 'merge::render_sketches$' 'to_dogsketch$' \
  'proto::encode_(series|sketch)$' 'PayloadBuilder::(add_item|close)$' '^(malloc|free|realloc|_int_malloc|_int_free)$' \
  'memcpy' 'drop_in_place<alloc::vec::Vec<edgestat::core::model::Series'
rm -f "$OUT"
