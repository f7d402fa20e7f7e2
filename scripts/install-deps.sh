#!/bin/sh
# Installs the Debian packages nsa needs, only those missing; silent when none are.
#   scripts/install-deps.sh            build + test packages
#   scripts/install-deps.sh --train    also the KJV corpus and matplotlib for the loss plot
#   scripts/install-deps.sh --python   also the PyTorch reference (fixture regeneration)
set -e
# clang, its runtime (libFuzzer, sanitizers) and libomp build the fuzz targets (make test).
pkgs="build-essential pkg-config libopenblas-dev libhdf5-dev libcriterion-dev libopenmpi-dev openmpi-bin time clang libclang-rt-14-dev libomp-dev"
case "${1:-}" in
  --train) pkgs="$pkgs bible-kjv python3-matplotlib python3-numpy" ;;
  --python) pkgs="$pkgs python3-torch python3-h5py python3-numpy python3-matplotlib" ;;
  "") ;;
  *) echo "usage: scripts/install-deps.sh [--train|--python]" >&2; exit 2 ;;
esac
missing=""
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "nsa: missing Debian packages:$missing; run as root or: sudo apt-get install$missing" >&2
  exit 1
fi
echo "installing:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq $missing >/dev/null
