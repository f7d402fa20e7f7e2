#!/bin/sh
# Makes the default training corpus: the King James Bible from Debian's bible-kjv package
# (Genesis 1:1 to Revelation 22:21, as `bible` prints it at 80 columns, ~4.3 MB)
# → data/kjv.txt → `nsa prepare` → data/kjv.h5 (byte tokens, last 5% as /val).
#   scripts/get-corpus.sh [NSA_BIN]     (default build/nsa); does nothing if data/kjv.h5 exists
set -e
nsa=${1:-build/nsa}
out=data/kjv.h5
txt=data/kjv.txt
[ -f "$out" ] && exit 0
if ! command -v bible >/dev/null 2>&1; then
  echo "nsa: error: the 'bible' program is missing: apt-get install bible-kjv (or run scripts/install-deps.sh)" >&2
  exit 1
fi
if [ ! -x "$nsa" ]; then
  echo "nsa: error: $nsa not found: run make first" >&2
  exit 1
fi
mkdir -p data
# -l80 fixes the line width (the default follows $COLUMNS), so the corpus is the same everywhere.
bible -l80 "gen1:1-rev22:21" >"$txt.tmp"
n=$(wc -c <"$txt.tmp")
if [ "$n" -lt 4000000 ]; then
  echo "nsa: error: bible printed only $n bytes (expected ~4.3 MB): is bible-kjv-text installed?" >&2
  rm -f "$txt.tmp"
  exit 1
fi
mv "$txt.tmp" "$txt"
"$nsa" prepare --text "$txt" --out "$out" --val-fraction 0.05
echo "$out: $n bytes of KJV text"
