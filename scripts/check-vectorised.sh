#!/bin/sh
# Fails when gcc leaves a loop of the elementwise kernels that call nsa_expf (kernels/act.c:
# SiLU, SwiGLU; kernels/gate.c: the branch gates) scalar for an AVX2 or an AVX-512 target.
#   scripts/check-vectorised.sh [CC]    (default: cc; silent and 0 unless CC is gcc)
# Why: on AVX2 gcc vectorises nsa_expf's selects only under -fno-trapping-math; without it
# those loops ran scalar and SwiGLU and SiLU took ~11 % of a `small` training step's
# samples on Zen 3 (session 10; ~2 % vectorised),
# while nothing else failed. `make test` passes the Makefile's own flags through
# CHECK_VEC_FLAGS, so dropping -fno-trapping-math from the Makefile fails this check; the
# default below is for running it by hand.
cc=${1:-cc}
flags=${CHECK_VEC_FLAGS:--O3 -fno-trapping-math}
cd "$(dirname "$0")/.." || exit 2
"$cc" -v 2>&1 | grep -q '^gcc version' || exit 0
status=0
for m in x86-64-v3 skylake-avx512; do
  for f in kernels/act.c kernels/gate.c; do
    # shellcheck disable=SC2086
    out=$("$cc" -std=c11 $flags -march=$m -fopenmp -D_GNU_SOURCE -I. -fopt-info-vec-missed -c "$f" -o /dev/null 2>&1) || {
      echo "$out"; exit 2; }
    bad=$(printf '%s\n' "$out" | grep "^$f:[0-9]*:[0-9]*: missed: not vectorized: control flow in loop")
    if [ -n "$bad" ]; then
      printf 'check-vectorised: %s (-march=%s) has loops gcc left scalar:\n%s\n' "$f" "$m" "$bad"
      status=1
    fi
  done
done
exit $status
