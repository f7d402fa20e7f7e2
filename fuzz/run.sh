#!/bin/sh
# Runs one libFuzzer target (build-fuzz/fuzz_TARGET).
#   fuzz/run.sh TARGET SECONDS test   (make test) replays each regression input of
#       fuzz/corpus/TARGET-regress once (inputs that once crashed nsa), then fuzzes from
#       fuzz/corpus/TARGET (files as nsa writes them) for SECONDS with seed 1, new inputs
#       in a temporary directory. Any crash, sanitizer report, leak, hang (> 30 s) or
#       allocation above 2 GiB fails the run: nsa's loaders must turn every mutation of its
#       own files into an error or a correct load. The one exception is a report blamed on
#       libhdf5 (below), one of its known parser defects (docs/formats.md): such a run stops
#       there and passes, saying so.
#   fuzz/run.sh TARGET SECONDS keep   (make fuzz) also seeds from fuzz/corpus/TARGET-foreign
#       (other writers' unchecksummed layout, which reaches libhdf5's parser of unchecked
#       metadata) and TARGET-regress, keeps what it finds in build-fuzz/corpus/TARGET, and
#       goes on after a crash (-fork=1 -ignore_*); at the end every reproducer (build-fuzz/crash-*,
#       timeout-*, oom-*) is replayed and blamed on the first frame of its stack that is
#       not the fuzzer's or libc's: libhdf5 (its bug: listed) or nsa (fails the run).
# nsa's own error lines (most inputs are bad files) go nowhere (-close_fd_mask=2); libFuzzer
# and the sanitizers still report. Prints a summary line per target.
set -u
t=$1 secs=$2 mode=$3
cd "$(dirname "$0")/.." || exit 2
bin=build-fuzz/fuzz_$t
log=build-fuzz/fuzz_$t.log
# A request beyond what can be allocated returns NULL, as in a release build: libhdf5
# answers its own failed malloc with an error (corrupt sizes in foreign files make it ask
# for terabytes), nsa_malloc still aborts, and -malloc_limit_mb flags anything over 2 GiB.
export ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1
export LSAN_OPTIONS=suppressions=fuzz/lsan.supp UBSAN_OPTIONS=print_stacktrace=1
export OMP_NUM_THREADS=1  # one core per fuzzer; results do not depend on it
shm=/dev/shm
[ -w $shm ] || shm=/tmp
NSA_FUZZ_TMPDIR=$(mktemp -d $shm/nsa_fuzz.XXXXXX) || exit 2
export NSA_FUZZ_TMPDIR
trap 'rm -rf "$NSA_FUZZ_TMPDIR"' EXIT
opts="-close_fd_mask=2 -rss_limit_mb=2560 -malloc_limit_mb=2048 -timeout=30 -print_final_stats=1"

# The culprit of a sanitizer or libFuzzer report (on stdin): the innermost frame in libhdf5
# or in this tree's sources (fuzzer, sanitizer and libc frames in between are skipped); a
# report without a stack (a UBSan line, a leak, an allocation over the limit) names its
# first error line, and is nsa's.
culprit() {
  report=$(cat)
  frame=$(printf '%s\n' "$report" | grep -E '^ +#[0-9]+ ' | grep -E "libhdf5|$PWD/[a-z]+/[^ :]+\.[ch]:" | head -1 |
    sed 's/^ *#[0-9]* 0x[0-9a-f]* in //')
  [ -n "$frame" ] || frame=$(printf '%s\n' "$report" | grep -m1 -E 'runtime error|ERROR:|SUMMARY:')
  printf '%s\n' "$frame"
}

if [ "$mode" = test ]; then
  # Regression inputs are replayed once each, never mutated: one of them is in other
  # writers' layout, from which mutations reached libhdf5's parser defects within seconds.
  if [ -d "fuzz/corpus/$t-regress" ]; then
    for f in fuzz/corpus/"$t"-regress/*; do
      [ -f "$f" ] || continue
      if ! "$bin" $opts "$f" >"$log" 2>&1; then
        echo "fuzz $t: FAILED replaying the regression input $f (log $log): $(culprit <"$log")"
        exit 1
      fi
    done
  fi
  work=$(mktemp -d /tmp/nsa_fuzz_$t.XXXXXX)
  "$bin" -max_total_time="$secs" -seed=1 $opts -artifact_prefix="build-fuzz/crash-$t-" \
    "$work" "fuzz/corpus/$t" >"$log" 2>&1
  rc=$?
  rm -rf "$work"
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  if [ $rc -ne 0 ]; then
    frame=$(culprit <"$log")
    case "$frame" in
      *libhdf5*)
        echo "fuzz $t: stopped after ${runs:-?} executions at a defect of libhdf5's parser, not nsa's (log $log): $frame"
        exit 0 ;;
    esac
    echo "fuzz $t: FAILED after ${runs:-?} executions (log $log):"
    grep -A40 -E 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error|deadly signal|internal error' \
      "$log" | head -60
    exit 1
  fi
  echo "fuzz $t: ${runs:-?} executions in $secs s, $(grep -o 'cov: [0-9]*' "$log" | tail -1) edges, no crash"
  exit 0
fi

mkdir -p "build-fuzz/corpus/$t" "build-fuzz/found-$t"
foreign=""
[ -d "fuzz/corpus/$t-foreign" ] && foreign="fuzz/corpus/$t-foreign"
[ -d "fuzz/corpus/$t-regress" ] && foreign="$foreign fuzz/corpus/$t-regress"
stamp=$(mktemp)
"$bin" -max_total_time="$secs" $opts -fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 \
  -artifact_prefix="build-fuzz/found-$t/" "build-fuzz/corpus/$t" "fuzz/corpus/$t" $foreign >"$log" 2>&1
runs=$(grep -o 'exec/s: [0-9]*\|#[0-9]*' "$log" | sed -n 's/^#//p' | tail -1)
echo "fuzz $t: ~${runs:-?} executions in $secs s, $(grep -o 'cov: [0-9]*' "$log" | tail -1) edges"
ours=0 theirs=0
slow=0
for f in $(find "build-fuzz/found-$t" -type f -newer "$stamp" | sort); do
  case "$(basename "$f")" in
    slow-unit-*) slow=$((slow + 1)); continue ;;  # over 10 s but no failure: not a defect
  esac
  frame=$("$bin" -timeout=30 -rss_limit_mb=2560 -malloc_limit_mb=2048 "$f" 2>&1 | culprit)
  case "$frame" in
    *libhdf5*) theirs=$((theirs + 1)); echo "  libhdf5: $(basename "$f"): $frame" ;;
    *) ours=$((ours + 1)); echo "  NSA:     $(basename "$f"): ${frame:-no report}" ;;
  esac
done
rm -f "$stamp"
echo "fuzz $t: $ours reproducers in nsa's code, $theirs in libhdf5's, $slow slow inputs (build-fuzz/found-$t/)"
[ $ours -eq 0 ]
