#!/bin/sh
# Gradient checkpointing's price and payoff: peak RSS (/usr/bin/time -v) and step time of
# `nsa train` with checkpoint=none vs checkpoint=layer, seed12 (12 NSA layers) at S = 2048.
#   scripts/bench-ckpt.sh [NSA_BIN]
#   env: STEPS (4; the first step, which sizes the arenas, is left out of the step time),
#        BATCH (1), SEQ (2048), CONFIG (seed12), OMP_NUM_THREADS (all cores)
# Prints one line per mode and the ratios; target: layer's step time <= 1.3x none's (issue 11).
set -e
nsa=${1:-build/nsa}
steps=${STEPS:-4}
batch=${BATCH:-1}
seq=${SEQ:-2048}
config=${CONFIG:-seed12}
[ -x "$nsa" ] || { echo "nsa: error: $nsa not found: run make first" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "nsa: error: /usr/bin/time is missing: apt-get install time" >&2; exit 1; }
[ -f data/kjv.h5 ] || scripts/get-corpus.sh "$nsa"
tmp=$(mktemp -d /tmp/nsa-bench-ckpt.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
echo "bench-ckpt: $config, seq_len $seq, batch $batch, $steps steps, threads ${OMP_NUM_THREADS:-all}"
for mode in none layer; do
  /usr/bin/time -v "$nsa" train --config "$config" --set seq_len="$seq" --set batch_size="$batch" \
    --set steps="$steps" --set warmup=1 --set eval_every=0 --set ckpt_every=0 --set checkpoint="$mode" \
    --set run_dir="$tmp/$mode" >"$tmp/$mode.out" 2>"$tmp/$mode.time" || {
    cat "$tmp/$mode.out" "$tmp/$mode.time" >&2
    exit 1
  }
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$tmp/$mode.time")
  # median step time over steps 2..N
  st=$(grep '"type":"step"' "$tmp/$mode/log.jsonl" | tail -n +2 | sed 's/.*"step_s":\([0-9.]*\).*/\1/' |
    sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}')
  echo "$mode $rss $st" >>"$tmp/results"
  printf '  checkpoint=%-5s  peak RSS %7.1f MiB   step %7.3f s   (%d tokens/step)\n' "$mode" \
    "$(echo "$rss" | awk '{print $1/1024}')" "$st" $((batch * seq))
done
awk '/^none/ {r0=$2; t0=$3} /^layer/ {r1=$2; t1=$3}
     END {printf "  layer/none: peak RSS %.2fx, step time %.2fx (target <= 1.3x)\n", r1/r0, t1/t0}' "$tmp/results"
