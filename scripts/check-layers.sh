#!/bin/sh
# Fails when a source file includes a header from a folder above its own layer.
# Layers (DESIGN.md "Layout"): kernels <- autograd <- model <- train, eval; data beside
# model (below train and eval); cmd on top; tests may include anything.
#   scripts/check-layers.sh [ROOT]    (default: the repository this script is in)
# Prints one line per offending include (file:line: ...) and exits 1; silent and 0 when
# every include points the right way. A .c/.h file outside the known folders is an
# error too, so a new folder must be given its place here first. fuzz/ (libFuzzer targets)
# sits on top with cmd/ and tests/.
root=${1:-$(dirname "$0")/..}
cd "$root" || exit 2

allowed() {  # the folders a file in folder $1 may include from
  case "$1" in
    kernels) echo "kernels" ;;
    autograd) echo "kernels autograd" ;;
    model) echo "kernels autograd model" ;;
    data) echo "kernels autograd model data" ;;
    train) echo "kernels autograd model data train" ;;
    eval) echo "kernels autograd model data eval" ;;
    cmd | tests | fuzz) echo "*" ;;
    *) echo "" ;;
  esac
}

bad=0
files=$(find . -path ./build -prune -o -path './build-*' -prune -o -path ./.git -prune -o \
  \( -name '*.c' -o -name '*.h' \) -type f -print | sed 's|^\./||' | sort)
for f in $files; do
  case "$f" in
    */*) folder=${f%%/*} ;;
    *) folder=. ;;
  esac
  ok=$(allowed "$folder")
  if [ -z "$ok" ]; then
    echo "$f: not in a known layer folder (kernels autograd model data train eval cmd tests fuzz)"
    bad=1
    continue
  fi
  [ "$ok" = "*" ] && continue
  # Quoted includes with a folder: #include "X/name.h"
  out=$(grep -n '^[[:space:]]*#[[:space:]]*include[[:space:]]*"[^"/]*/' "$f" | while IFS= read -r line; do
    n=${line%%:*}
    inc=$(printf '%s\n' "$line" | sed 's/^[^"]*"\([^"]*\)".*/\1/')
    dep=${inc%%/*}
    case " $ok " in
      *" $dep "*) ;;
      *) echo "$f:$n: includes \"$inc\", but $folder/ may include only from: $ok" ;;
    esac
  done)
  if [ -n "$out" ]; then
    printf '%s\n' "$out"
    bad=1
  fi
done
exit $bad
