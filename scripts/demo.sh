#!/usr/bin/env bash
# The Moat demo, in two parts, told step by step:
#   1. offline: sign an app, check it, and watch tampering being caught;
#   2. a fleet on this machine (root): a security service, three devices, signed deployments,
#      sandboxed apps, crash reports, a fix, a relying party that trusts device certificates,
#      and a device whose software nobody vouched for.
#   scripts/demo.sh [BUILD_DIR] [--key-store tpm2|software]     (run through `make demo`)
# Each device keeps its keys in a TPM of its own (swtpm, a software TPM 2.0) unless
# `--key-store software` (or MOAT_DEMO_KEY_STORE=software) picks the development store: quicker
# to read, nothing to set up, and no hardware protection at all (docs/rot.md).
# Everything it makes goes to ./demo-data; nothing leaves this machine (loopback only).
# Ctrl-C stops everything it started. At the end it keeps the fleet running until Ctrl-C when
# run on a terminal (MOAT_DEMO_KEEP_RUNNING=0: stop at once; =1: wait even without one).
set -euo pipefail
build=build
key_store=${MOAT_DEMO_KEY_STORE:-tpm2}
while (($#)); do
  case $1 in
    --key-store) key_store=${2:-}; shift 2 || { echo "demo: --key-store needs tpm2 or software"; exit 2; } ;;
    --key-store=*) key_store=${1#*=}; shift ;;
    -h | --help) sed -n 2,13p "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "demo: unknown option $1 (try --help)"; exit 2 ;;
    *) build=$1; shift ;;
  esac
done
[[ $key_store == tpm2 || $key_store == software ]] ||
  { echo "demo: --key-store must be tpm2 or software, not '$key_store'"; exit 2; }
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
moat="$build/apps/moat"
data="demo-data/offline"
rm -rf "$data"
mkdir -p "$data"
t0=$SECONDS

bold="" plain=""
if [[ -t 1 ]]; then bold=$(tput bold 2>/dev/null || true); plain=$(tput sgr0 2>/dev/null || true); fi
step() { echo; echo "${bold}==> $1${plain}  [$((SECONDS - t0)) s]"; }
say() { echo "    $*"; }
run() { echo "\$ moat ${*}"; "$moat" "$@"; }

echo "${bold}Part 1: offline — signed app packages${plain}"
step "1. Create an image-signing key"
say "A device runs only software signed by a key its tenant trusts. The private key stays"
say "with the publisher (mode 0600); the public key goes to whoever verifies."
run keygen --type ecdsa-p256 --destination "$data/release-signing"

step "2. Check the sample app's manifest"
say "app_manifest.json uses the Azure Sphere schema: the app may do only what it lists."
run manifest check "$build/samples/hello/package/app_manifest.json"

step "3. Pack and sign the app into an image package"
say "Header, manifest and a compressed file tree, all covered by one signature."
run image-package pack-application --package-directory "$build/samples/hello/package" \
  --destination "$data/hello.imagepackage" --signing-key "$data/release-signing.key" --version 1.0.0

step "4. Show and verify the package"
run image-package show "$data/hello.imagepackage" --trust "$data/release-signing.pub" --files
run image-package verify "$data/hello.imagepackage" --trust "$data/release-signing.pub"

step "5. Flip one byte of the payload and verify again"
say "An attacker (or a bad flash sector) changes a single byte in the middle of the file."
cp "$data/hello.imagepackage" "$data/tampered.imagepackage"
size=$(stat -c %s "$data/tampered.imagepackage")
offset=$((size / 2))
byte=$(od -An -tu1 -j "$offset" -N1 "$data/tampered.imagepackage" | tr -d ' ')
printf "$(printf '\\%03o' $(((byte ^ 1) & 255)))" |
  dd of="$data/tampered.imagepackage" bs=1 seek="$offset" conv=notrunc status=none
say "changed byte $offset of $size"
if "$moat" image-package verify "$data/tampered.imagepackage" --trust "$data/release-signing.pub"; then
  echo "DEMO FAILED: the tampered package was accepted"; exit 1
else
  say "-> rejected (exit status $?): nothing from the package is unpacked or run."
fi

step "6. A package signed by someone else"
run keygen --type ed25519 --destination "$data/attacker"
run image-package pack-application --package-directory "$build/samples/hello/package" \
  --destination "$data/foreign.imagepackage" --signing-key "$data/attacker.key"
if "$moat" image-package verify "$data/foreign.imagepackage" --trust "$data/release-signing.pub"; then
  echo "DEMO FAILED: a foreign-signed package was accepted"; exit 1
else
  say "-> rejected: only keys the verifier trusts count."
fi

say "Offline part done; its files are in $data/."
source "$root/scripts/demo-fleet.sh"
