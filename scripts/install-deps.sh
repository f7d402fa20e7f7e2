#!/bin/sh
# Installs the Debian packages nsa needs, only those missing; silent when none are.
#   scripts/install-deps.sh            build + test + training packages
#   scripts/install-deps.sh --python   also the PyTorch reference (fixture regeneration, plots)
set -e
pkgs="build-essential pkg-config libopenblas-dev libhdf5-dev libcriterion-dev bible-kjv"
if [ "${1:-}" = "--python" ]; then
  pkgs="$pkgs python3-torch python3-h5py python3-numpy python3-matplotlib"
fi
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
