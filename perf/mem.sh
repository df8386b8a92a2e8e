#!/usr/bin/env bash
# Runs one `edgestat bench` and samples the started target's memory every
# 100 ms: prints the bench's RSS line and, at the sample with the highest
# RSS, the smaps_rollup split (anon / file) and the largest mappings.
# Usage: perf/mem.sh OUTDIR [bench args...]
#   perf/mem.sh /tmp/m3k  --contexts 3000 --rate 300000 --so-rcvbuf 4194304
#   perf/mem.sh /tmp/m100k --contexts 100000 --rate 300000 --flush-interval 15s --so-rcvbuf 4194304
set -u
out=$1; shift
bin=${EDGESTAT_BIN:-target/release/edgestat}
mkdir -p "$out"
"$bin" bench --no-progress --json "$out/report.json" "$@" >"$out/bench.txt" 2>&1 &
bpid=$!
tpid=""
best=0
hwm=0
while kill -0 $bpid 2>/dev/null; do
  if [ -z "$tpid" ]; then
    tpid=$(pgrep -P $bpid | head -1)
  fi
  if [ -n "$tpid" ] && [ -r /proc/$tpid/smaps_rollup ]; then
    rss=$(awk '/^Rss:/{print $2}' /proc/$tpid/smaps_rollup 2>/dev/null)
    h=$(awk '/^VmHWM:/{print $2}' /proc/$tpid/status 2>/dev/null)
    [ -n "$h" ] && hwm=$h
    if [ -n "$rss" ] && [ "$rss" -gt "$best" ]; then
      best=$rss
      cp /proc/$tpid/smaps_rollup "$out/peak_rollup.txt" 2>/dev/null
      cp /proc/$tpid/smaps "$out/peak_smaps.txt" 2>/dev/null
      grep -E 'VmHWM|VmRSS|RssAnon|RssFile|Threads' /proc/$tpid/status > "$out/peak_status.txt" 2>/dev/null
    fi
  fi
  sleep 0.1
done
wait $bpid
grep -iE 'rss|loss|processed|flush' "$out/bench.txt" | head -20
echo "--- whole-run peak (VmHWM, last read before exit, incl. the final flush): $((hwm/1024)) MiB ($hwm kB)"
echo "--- highest sample (target pid $tpid): Rss ${best} kB"
cat "$out/peak_status.txt" 2>/dev/null
grep -E '^(Rss|Anonymous|Pss_File|Pss_Anon)' "$out/peak_rollup.txt" 2>/dev/null
echo "--- largest mappings at the peak (Rss kB, Anon kB, mapping)"
awk '/^[0-9a-f]+-[0-9a-f]+ /{name=$6; if(name=="") name="[anon]"; range=$1} /^Rss:/{rss=$2} /^Anonymous:/{print rss, $2, name, range}' "$out/peak_smaps.txt" 2>/dev/null | sort -rn | head -25
