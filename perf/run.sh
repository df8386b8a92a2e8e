#!/usr/bin/env bash
# Reproduces every number in perf/RESULTS.md with one command:
#   perf/run.sh            # all runs (~3 minutes plus build)
#   perf/run.sh packed     # one run by name
# Each run writes perf/results/<name>.json (+ .svg) and one summary line.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
B=target/release/edgestat
mkdir -p perf/results
only="${1:-}"

bench() { # name args...
  local name=$1; shift
  if [ -n "$only" ] && [ "$only" != "$name" ]; then return; fi
  "$B" bench --no-progress --json "perf/results/$name.json" --plot "perf/results/$name.svg" "$@" > "perf/results/$name.txt"
  python3 - "$name" <<'PY'
import json, sys
n = sys.argv[1]; r = json.load(open(f"perf/results/{n}.json"))
f = r.get("flush_latency") or {}
def m(v): return "n/a" if v is None else f"{v/1e6:.2f}M"
print(f"{n:14s} sent {m(r['lines_per_s_sent'])} lines/s  processed {m(r['lines_per_s_processed'])} lines/s"
      f"  per-core {m(r['lines_per_cpu_s'])} lines/s {m(r['packets_per_cpu_s'])} dgram/s"
      f"  loss {100*(r['loss_ratio'] or 0):.3f}%  drops {r['kernel_drops']}"
      f"  rss {r['rss_peak_bytes']/1048576:.1f} MiB  flush p99 {f.get('p99_us',0)/1000:.1f} ms"
      f"  cpu {r['cpu_ns_per_line'] or 0:.0f} ns/line  ratio {r['compression_ratio'] or 0:.2f}")
PY
}

# Maximum sustained rate, ~8 KB packets, 3k contexts, one shard.
bench packed --duration 10 --contexts 3000 --so-rcvbuf 4194304
# Maximum rate, ~150 B single-metric datagrams.
bench single --profile single --duration 10 --contexts 3000 --so-rcvbuf 4194304
# Saturated receiver, ~150 B datagrams: 10 rounds of stop / fill the socket
# with 100k datagrams / resume / time the drain (the sender on the other core
# cannot saturate it). 100k datagrams need ~84 MB of socket buffer (842 B of
# skb truesize each): net.core.rmem_max is raised for these runs (root) and
# restored on exit. Side by side: the plain recvmmsg floor on this machine.
if [ -z "$only" ] || [ "$only" = burst ]; then
  old_rmem=$(sysctl -n net.core.rmem_max)
  trap 'sysctl -qw net.core.rmem_max='"$old_rmem" EXIT
  sysctl -qw net.core.rmem_max=134217728
  bench burst --profile single --contexts 3000 --so-rcvbuf 67108864 --burst 100000 --rounds 10 --flush-interval 60s
  python3 - <<'PY'
import json
b = json.load(open("perf/results/burst.json"))["burst"]
print(f"burst          {b['cpu_ns_per_datagram']:.0f} ns CPU/datagram ({b['shard_cpu_ns_per_datagram']:.0f} ns shard threads),"
      f" {b['datagrams_per_cpu_s']/1e6:.2f} M datagrams/s per core, drops {b['kernel_drops']}")
PY
  cargo build --release --quiet --example recv_floor
  target/release/examples/recv_floor 100000 5 32 | tee perf/results/recv_floor.txt
  sysctl -qw net.core.rmem_max="$old_rmem"
  trap - EXIT
fi
# Zero loss at 80% of the maximum processed rate measured above. At ~4.5 M
# lines/s (~1 GB/s of datagrams) a flush (up to ~100 ms while the shard hands
# over its buckets) must fit in the socket: SO_RCVBUF 128 MiB, which needs
# net.core.rmem_max raised (root); restored on exit. tuning/README.md has
# the loss measured with 4, 64 and 128 MiB.
if [ -z "$only" ] || [ "$only" = packed80 ]; then
  rate=$(python3 -c 'import json; print(int(0.8*json.load(open("perf/results/packed.json"))["lines_per_s_processed"]))')
  old_rmem=$(sysctl -n net.core.rmem_max)
  trap 'sysctl -qw net.core.rmem_max='"$old_rmem" EXIT
  sysctl -qw net.core.rmem_max=268435456
  bench packed80 --duration 10 --contexts 3000 --so-rcvbuf 134217728 --rate "$rate"
  sysctl -qw net.core.rmem_max="$old_rmem"
  trap - EXIT
fi
# Memory at 3k and 100k contexts, no loss.
bench rss3k --duration 10 --contexts 3000 --rate 300000 --so-rcvbuf 4194304
bench rss100k --duration 15 --contexts 100000 --rate 300000 --so-rcvbuf 4194304 --flush-interval 15s
# Flush of 100k contexts in isolation (merge + encode + compress).
if [ -z "$only" ] || [ "$only" = flush ]; then
  cargo bench --quiet --bench hotpath -- flush_100k 2>&1 | grep -E "flush_100k|time:" | tee perf/results/flush_100k.txt
fi
# Hot-path instruction counts.
if [ -z "$only" ] || [ "$only" = instructions ]; then
  perf/instructions.sh | tee perf/results/instructions.txt
fi
