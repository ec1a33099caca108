#!/usr/bin/env bash
# Drives the offline `moat` commands end to end and checks exit codes and messages.
#   cli_offline_test.sh MOAT_BINARY TEST_PKI_DIR SOURCE_DIR HELLO_PACKAGE_DIR
set -uo pipefail
moat=$1 pki=$2 src=$3 hello=$4
compat="$src/../shared/compat/azure-sphere-manifests"
work=$(mktemp -d /tmp/moat-cli-test-XXXXXX)
trap 'rm -rf "$work"' EXIT
failures=0 passes=0

# expect EXIT_CODE "description" -- command...   (stdout+stderr captured in $work/out)
expect() {
  local want=$1 what=$2; shift 3
  "$@" >"$work/out" 2>&1
  local got=$?
  if [[ $got -ne $want ]]; then
    echo "FAIL: $what: exit $got, expected $want"; sed 's/^/    /' "$work/out" | head -20
    failures=$((failures + 1))
  else
    passes=$((passes + 1))
  fi
}
# contains "text" "description": the last command's output contains text
contains() {
  if ! grep -qF -- "$1" "$work/out"; then
    echo "FAIL: $2: output lacks '$1'"; sed 's/^/    /' "$work/out" | head -20
    failures=$((failures + 1))
  else
    passes=$((passes + 1))
  fi
}

# --- usage and help
expect 2 "no command is a usage error" -- "$moat"
expect 0 "--help" -- "$moat" --help
contains "image-package" "--help lists image-package"
expect 0 "subcommand --help" -- "$moat" image-package pack-application --help
contains "--signing-key" "pack-application --help lists --signing-key"
expect 2 "unknown command" -- "$moat" frobnicate
expect 2 "missing required option" -- "$moat" image-package verify "$pki/root-ca.crt"
contains "--trust" "the usage error names the missing option"

# --- keygen
expect 0 "keygen ecdsa" -- "$moat" keygen --destination "$work/signer"
[[ $(stat -c %a "$work/signer.key") == 600 ]] && passes=$((passes+1)) || { echo "FAIL: private key mode is $(stat -c %a "$work/signer.key")"; failures=$((failures+1)); }
expect 1 "keygen refuses to overwrite" -- "$moat" keygen --destination "$work/signer"
contains "already exists" "keygen overwrite message"
expect 0 "keygen ed25519" -- "$moat" keygen --type ed25519 --destination "$work/other"
expect 2 "keygen unknown type" -- "$moat" keygen --type rsa --destination "$work/rsa"

# --- pack, show, verify
expect 0 "pack" -- "$moat" image-package pack-application --package-directory "$hello" \
  --destination "$work/hello.pkg" --signing-key "$work/signer.key" --version 1.2.3
contains "image ID:" "pack prints the image ID"
expect 0 "verify with the right key" -- "$moat" image-package verify "$work/hello.pkg" --trust "$work/signer.pub"
contains "OK" "verify says OK"
expect 0 "show without trust" -- "$moat" image-package show "$work/hello.pkg"
contains "NOT verified" "unverified show says so"
contains "1.2.3" "show prints the version"
expect 0 "show with trust lists files" -- "$moat" image-package show "$work/hello.pkg" --trust "$work/signer.pub" --files
contains "bin/hello" "files list the entry point"
expect 1 "verify with a foreign key" -- "$moat" image-package verify "$work/hello.pkg" --trust "$work/other.pub"
contains "unknown key" "foreign key message"
expect 1 "verify with a private key as trust" -- "$moat" image-package verify "$work/hello.pkg" --trust "$work/signer.key"
contains "private key" "private-key-as-trust message"

# Flip one payload byte in the middle, and separately the last byte (inside the footer).
cp "$work/hello.pkg" "$work/flipped.pkg"
size=$(stat -c %s "$work/flipped.pkg")
python3 - "$work/flipped.pkg" $((size / 2)) <<'PY'
import sys
p, off = sys.argv[1], int(sys.argv[2])
b = bytearray(open(p, 'rb').read()); b[off] ^= 0x01; open(p, 'wb').write(b)
PY
expect 1 "verify a package with one payload byte flipped" -- "$moat" image-package verify "$work/flipped.pkg" --trust "$work/signer.pub"
contains "signature does not match" "flipped byte message"
head -c $((size - 1)) "$work/hello.pkg" > "$work/truncated.pkg"
expect 1 "verify a truncated package" -- "$moat" image-package verify "$work/truncated.pkg" --trust "$work/signer.pub"

# A certificate (made by openssl) as the trust anchor, with its key as the signer.
expect 0 "pack with the openssl-made key" -- "$moat" image-package pack-application --package-directory "$hello" \
  --destination "$work/cert-signed.pkg" --signing-key "$pki/signer-p256.key"
expect 0 "verify trusting a certificate" -- "$moat" image-package verify "$work/cert-signed.pkg" --trust "$pki/signer-p256.crt"
expect 0 "verify with several trusted keys" -- "$moat" image-package verify "$work/cert-signed.pkg" --trust "$work/other.pub" --trust "$pki/signer-p256.pub"

# --- packing refuses bad directories
mkdir -p "$work/bad/bin"
cp "$hello/app_manifest.json" "$work/bad/"
expect 1 "pack without the entry point" -- "$moat" image-package pack-application --package-directory "$work/bad" \
  --destination "$work/bad.pkg" --signing-key "$work/signer.key"
contains "EntryPoint '/bin/hello'" "missing entry point message"
cp "$hello/bin/hello" "$work/bad/bin/hello"; chmod 4755 "$work/bad/bin/hello"
expect 1 "pack a setuid file" -- "$moat" image-package pack-application --package-directory "$work/bad" \
  --destination "$work/bad.pkg" --signing-key "$work/signer.key"
contains "setuid" "setuid message"
chmod 0755 "$work/bad/bin/hello"; mkfifo "$work/bad/fifo"
expect 1 "pack a FIFO" -- "$moat" image-package pack-application --package-directory "$work/bad" \
  --destination "$work/bad.pkg" --signing-key "$work/signer.key"
contains "only regular files, directories and symlinks" "FIFO message"
[[ ! -e "$work/bad.pkg" ]] && passes=$((passes+1)) || { echo "FAIL: a refused pack left a file"; failures=$((failures+1)); }

# --- manifests: all 73 compat manifests accepted, the 10 fragments rejected
if [[ ! -d "$compat" ]]; then echo "FAIL: compat manifests not found at $compat"; failures=$((failures+1)); fi
n=0
for m in "$compat"/*.json; do
  n=$((n + 1))
  expect 0 "manifest check $(basename "$m")" -- "$moat" manifest check "$m"
done
[[ $n -eq 73 ]] && passes=$((passes+1)) || { echo "FAIL: expected 73 compat manifests, found $n"; failures=$((failures+1)); }
f=0
for m in "$compat"/fragments/*.json; do
  f=$((f + 1))
  expect 1 "fragment $(basename "$m") rejected" -- "$moat" manifest check "$m"
  contains "missing required field" "fragment $(basename "$m") names the missing field"
done
[[ $f -eq 10 ]] && passes=$((passes+1)) || { echo "FAIL: expected 10 fragments, found $f"; failures=$((failures+1)); }

# --- hardware definitions: $NAME constants resolve through imports, unknown ones are errors
hw="$src/tests/data/hardware"
expect 0 "manifest check with a hardware definition" -- "$moat" manifest check \
  "$compat/samples__Samples_HelloWorld_HelloWorld_HighLevelApp_app_manifest.json" --hardware-definition "$hw/sample_board.json"
contains "resolved" "constants are reported resolved"
contains "Gpio: [8]" "SAMPLE_LED resolves to GPIO 8 through the board's imports"
expect 1 "a constant the board does not define" -- "$moat" manifest check \
  "$compat/gallery__HeapTracker_app_manifest.json" --hardware-definition "$hw/generic_linux_board.json"
contains "unknown peripheral '\$MT3620" "the unknown constant is named"

echo "$passes passed, $failures failed"
[[ $failures -eq 0 ]]
