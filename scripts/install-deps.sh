#!/usr/bin/env bash
# Installs the Debian 12 packages Moat needs to build, test, fuzz and benchmark.
# Idempotent: packages already present are not touched, and apt is only consulted
# when something is missing. Run as root (or through sudo).
set -euo pipefail

PACKAGES=(
  # toolchain
  build-essential cmake ninja-build pkg-config git
  # libraries
  libssl-dev openssl nlohmann-json3-dev libspdlog-dev libfmt-dev libcli11-dev libzstd-dev
  libboost-dev libsqlite3-dev libcurl4-openssl-dev libseccomp-dev libcap-dev
  # third-party peers used by integration tests (curl and openssl as independent TLS clients)
  curl jq iproute2 nftables util-linux e2fsprogs
  # tests and benchmarks
  libgtest-dev libgmock-dev libbenchmark-dev
  # fuzzing and sanitizers (GCC 12's clang-14 sibling cannot compile std::expected)
  clang-19 libclang-rt-19-dev
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "install-deps: done"
