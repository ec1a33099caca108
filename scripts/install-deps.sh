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
  libboost-dev libsqlite3-dev libseccomp-dev libcap-dev
  # third-party peers used by integration tests (curl and openssl as independent TLS clients)
  curl jq iproute2 nftables util-linux e2fsprogs
  # the test and demo scripts compute ports, hashes and PCR replays with it
  python3
  # the demo's relying party (an MQTT broker that requires device certificates) and the clock
  # the e2e test moves forward to see a device certificate expire
  mosquitto mosquitto-clients faketime libfaketime
  # node runs tuf-js, the independent TUF client of the interop test
  nodejs
  # tests and benchmarks
  libgtest-dev libgmock-dev libbenchmark-dev
  # benchmark peers (bench/sandbox_coldstart.cc launches the same binary through them)
  bubblewrap crun
  # hardware roots of trust (docs/rot.md): tpm2-tss ESAPI + TCTI loader, the swtpm simulator
  # the tests start, tpm2-tools for inspection, the OpenSSL 3 TPM provider (loads the store's
  # TSS2 key files), SoftHSM2 as the PKCS#11 token in tests, pkcs11-tool, and libp11's PKCS#11
  # engine for operators and the openssl CLI (pkcs11-provider is not packaged for bookworm;
  # Moat itself signs through the store, docs/rot.md), p11-kit for pkcs11.h
  libtss2-dev libp11-kit-dev swtpm swtpm-tools tpm2-tools tpm2-openssl softhsm2 opensc
  libengine-pkcs11-openssl
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
else
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# tuf-js, the TUF client of npm and sigstore-js, for the cross-implementation test
# tests/interop/tuf_js_test.sh (skipped when absent). Vendored under third_party/node
# (git-ignored) with the pinned major version; needs node >= 18 and npm, and the npm registry
# at install time only. Not installed through apt: Debian does not package tuf-js.
TUF_JS_VERSION=3
root=$(cd "$(dirname "$0")/.." && pwd)
# Debian's nodejs ships npm separately (NodeSource's includes it).
if ! command -v npm >/dev/null; then
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
  echo "install-deps: installing npm"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends npm ||
    echo "install-deps: could not install npm"
fi
if [[ -f $root/third_party/node/node_modules/tuf-js/package.json ]]; then
  echo "install-deps: tuf-js present"
elif command -v npm >/dev/null; then
  echo "install-deps: installing tuf-js@$TUF_JS_VERSION into third_party/node"
  mkdir -p "$root/third_party/node"
  npm install --prefix "$root/third_party/node" --no-audit --no-fund --no-save \
    "tuf-js@$TUF_JS_VERSION" >/dev/null
else
  echo "install-deps: npm not found; tests/interop/tuf_js_test.sh will be skipped"
fi
echo "install-deps: done"
