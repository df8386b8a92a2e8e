#!/usr/bin/env bash
# Instructions (callgrind Ir, deterministic: no timing) per datagram and per
# wake-up of the whole `edgestat run` process at a sparse fixed rate, where
# every datagram is its own wake-up, split into the glommio executor, the
# read loop, core parsing/aggregation and the rest. See perf/wakeup-ir.md.
#
# Usage: perf/wakeup-ir.sh BINARY [OUT_DIR]
#        perf/wakeup-ir.sh --build-valgrind DIR
#   N=200         datagrams in the short run (the long run sends 2N)
#   RATE=20       datagrams per second (sparse: one wake-up each)
#   SHAPES="packed single"
#   VALGRIND=valgrind
#
# valgrind 3.19 (Debian 12's) does not treat io_uring_enter as a blocking
# system call: a glommio thread asleep in it keeps valgrind's global lock,
# every other thread stops, and `edgestat run` never finishes starting (the
# main thread waits for the shard's ready message). `--build-valgrind DIR`
# builds that valgrind from the Debian source package (needs a deb-src line
# for the release in the apt sources) with `*flags |= SfMayBlock;` added to
# PRE(sys_io_uring_enter) in coregrind/m_syswrap/syswrap-linux.c, and prints
# the VALGRIND to use (its vg-in-place, nothing installed):
#   apt-get source valgrind; patch; ./configure --enable-only64bit;
#   make -C include; make include/vgversion.h default.supp;
#   make -C VEX; make -C coregrind; make -C callgrind
#
# What it does:
#   1. Records the workload: `BINARY bench --target 127.0.0.1:<port>` into a
#      small UDP listener (presets small-packed: ~8 KB datagrams of ~54 lines
#      of ~150 B; small-single: one ~150 B line per datagram; seed 1).
#   2. Starts, under callgrind (--separate-threads=yes),
#        EDGESTAT_SHARDS=1 DD_DOGSTATSD_PORT=<port> DD_DOGSTATSD_SO_RCVBUF=4194304
#        EDGESTAT_API_ADDR=off EDGESTAT_FLUSH_INTERVAL=3600s
#        DD_ENABLE_METADATA_COLLECTION=false BINARY run
#      (embedded intake; no flush happens during the measurement; the
#      buffer is the bench presets' and absorbs valgrind's pauses, the
#      kernel caps it at net.core.rmem_max).
#   3. Per shape: sends every recorded datagram once at 100/s (the contexts
#      measured then exist), then
#        vgdb zero; send N at RATE/s; wait 2 s; vgdb dump   -> SHAPE-n
#        vgdb zero; send 2N at RATE/s; wait 2 s; vgdb dump  -> SHAPE-2n
#      and an idle window (vgdb zero; 10 s; vgdb dump -> idle).
#   4. perf/wakeup_ir.py OUT_DIR/SHAPE: (Ir(2N) - Ir(N)) / (datagrams handled
#      in the 2N run - in the N run), in total, per thread, per component,
#      calls per datagram, top inclusive functions.
set -euo pipefail
if [ "${1:-}" = "--build-valgrind" ]; then
  DIR=$(realpath -m "${2:?usage: perf/wakeup-ir.sh --build-valgrind DIR}")
  mkdir -p "$DIR"
  cd "$DIR"
  apt-get source valgrind >"$DIR/build.log" 2>&1
  SRC=$(find . -maxdepth 1 -type d -name 'valgrind-*' | head -1)
  cd "$SRC"
  grep -q 'SfMayBlock; /\* io_uring_enter \*/' coregrind/m_syswrap/syswrap-linux.c ||
    sed -i '/PRE_MEM_READ("io_uring_enter(sig)", ARG5, ARG6);/a\   *flags |= SfMayBlock; /* io_uring_enter */' \
      coregrind/m_syswrap/syswrap-linux.c
  grep -q 'SfMayBlock; /\* io_uring_enter \*/' coregrind/m_syswrap/syswrap-linux.c
  ./configure --enable-only64bit >>"$DIR/build.log" 2>&1
  make -C include >>"$DIR/build.log" 2>&1
  make include/vgversion.h default.supp >>"$DIR/build.log" 2>&1
  for d in VEX coregrind callgrind; do make -j2 -C $d >>"$DIR/build.log" 2>&1; done
  echo "VALGRIND=$(pwd)/vg-in-place"
  exit 0
fi
BIN=$(realpath "${1:?usage: perf/wakeup-ir.sh BINARY [OUT_DIR]}")
OUT=${2:-$(mktemp -d)}
mkdir -p "$OUT"
OUT=$(realpath "$OUT")
N=${N:-200}
RATE=${RATE:-20}
SHAPES=${SHAPES:-packed single}
VALGRIND=${VALGRIND:-valgrind}
HERE=$(cd "$(dirname "$0")" && pwd)
export PYTHONDONTWRITEBYTECODE=1 # imports perf/wakeup_ir.py: no __pycache__ in the tree

free_port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Records datagrams sent to 127.0.0.1:$1 into file $2 (4-byte length, bytes)
# until none has come for 3 s.
cat >"$OUT/record.py" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.settimeout(3)
n = 0
with open(sys.argv[2], "wb") as out:
    try:
        while True:
            d = s.recv(65536)
            out.write(len(d).to_bytes(4, "little") + d)
            n += 1
    except socket.timeout:
        pass
print(n)
EOF

# Sends the first $3 datagrams of file $2 (all when 0) to 127.0.0.1:$1 at
# $4 per second, on a fixed schedule.
cat >"$OUT/send.py" <<'EOF'
import socket, sys, time
port, path, count, rate = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
b = open(path, "rb").read()
ds, i = [], 0
while i < len(b):
    n = int.from_bytes(b[i:i + 4], "little")
    ds.append(b[i + 4:i + 4 + n])
    i += 4 + n
if count:
    if count > len(ds):
        sys.exit(f"{path} holds {len(ds)} datagrams, {count} asked")
    ds = ds[:count]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
t0 = time.monotonic()
for k, d in enumerate(ds):
    delay = t0 + k / rate - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    s.sendto(d, ("127.0.0.1", port))
print(len(ds), sum(len(d) for d in ds), sum(d.count(b"\n") + (not d.endswith(b"\n")) for d in ds))
EOF

record() { # shape preset datagram-rate
  local port
  port=$(free_port)
  python3 "$OUT/record.py" "$port" "$OUT/$1.bin" >"$OUT/$1.recorded" &
  local rec=$!
  sleep 0.5
  "$BIN" bench --target "127.0.0.1:$port" --preset "$2" --datagram-rate "$3" --duration 2 --sockets 1 \
    --drain 0 --no-progress --json "$OUT/$1.bench.json" >/dev/null 2>&1
  wait "$rec"
  echo "recorded $1: $(cat "$OUT/$1.recorded") datagrams"
}
for shape in $SHAPES; do
  case $shape in
    packed) record packed small-packed 500 ;;
    single) record single small-single 1000 ;;
    *) echo "unknown shape $shape" >&2; exit 2 ;;
  esac
done

PORT=$(free_port)
rm -rf "$OUT/data" "$OUT"/cg.*
EDGESTAT_SHARDS=1 DD_DOGSTATSD_PORT=$PORT DD_DOGSTATSD_SO_RCVBUF=4194304 EDGESTAT_API_ADDR=off \
  EDGESTAT_DATA_DIR="$OUT/data" EDGESTAT_FLUSH_INTERVAL=3600s DD_ENABLE_METADATA_COLLECTION=false \
  "$VALGRIND" --tool=callgrind --separate-threads=yes --callgrind-out-file="$OUT/cg.out" \
  "$BIN" run >"$OUT/run.log" 2>&1 &
VG=$!
VGPID=$VG
trap 'kill $VGPID $VG 2>/dev/null || true' EXIT
for _ in $(seq 300); do
  grep -q "edgestat running" "$OUT/run.log" && break
  kill -0 $VG 2>/dev/null || { cat "$OUT/run.log" >&2; exit 1; }
  sleep 1
done
grep -q "edgestat running" "$OUT/run.log" || {
  echo "edgestat did not start under valgrind (see $OUT/run.log; a valgrind without the io_uring_enter fix hangs here)" >&2
  exit 1
}
# The callgrind process: $VG itself, or its child when VALGRIND is a
# wrapper script (vg-in-place).
for p in $VG $(pgrep -P $VG); do
  case $(cat /proc/$p/comm) in callgrind-*) VGPID=$p ;; esac
done

dump=0
measure() { # name datagram-file count rate
  vgdb --pid="$VGPID" zero >/dev/null
  local sent
  sent=$(python3 "$OUT/send.py" "$PORT" "$2" "$3" "$4")
  sleep 2
  vgdb --pid="$VGPID" dump >/dev/null
  dump=$((dump + 1))
  for f in "$OUT"/cg.out."$dump"-*; do mv "$f" "$OUT/$1.${f##*/cg.out.}"; done
  echo "$1: sent (datagrams bytes lines) $sent"
}

for shape in $SHAPES; do
  python3 "$OUT/send.py" "$PORT" "$OUT/$shape.bin" 0 100 >/dev/null # warm-up: every context
  sleep 3
  measure "$shape-n" "$OUT/$shape.bin" "$N" "$RATE"
  measure "$shape-2n" "$OUT/$shape.bin" $((2 * N)) "$RATE"
done
vgdb --pid="$VGPID" zero >/dev/null
sleep 10
vgdb --pid="$VGPID" dump >/dev/null
dump=$((dump + 1))
for f in "$OUT"/cg.out."$dump"-*; do mv "$f" "$OUT/idle.${f##*/cg.out.}"; done
grep -E "WARN|ERROR|drop" "$OUT/run.log" || true

for shape in $SHAPES; do
  python3 "$HERE/wakeup_ir.py" "$OUT/$shape" 15 | tee "$OUT/$shape.md"
done
echo "idle 10 s: $(python3 -c '
import glob, sys
sys.path.insert(0, sys.argv[1])
from wakeup_ir import Dump
print(sum(Dump(f).total for f in glob.glob(sys.argv[2] + "/idle.*-*")))' "$HERE" "$OUT") Ir"
echo "dumps and tables in $OUT"
