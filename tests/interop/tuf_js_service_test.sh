#!/usr/bin/env bash
# Cross-implementation check against a live service: tuf-js (the TUF client used by npm and
# sigstore-js) refreshes a device group's repository published by a real moat-service (a
# deployment, then a root rotation) and downloads the deployed image package and
# image-signing-keys.json. tuf-js reaches the service's device API through a local plain-HTTP
# proxy that adds the device's client certificate (tuf_js_service_client.js).
#   tuf_js_service_test.sh MOAT MOAT_SERVICE MOAT_TEST_DEVICE SOURCE_DIR
# Without node or tuf-js the test is skipped (exit 77), as tuf_js_test.sh is.
set -uo pipefail
moat=$1 service=$2 test_device=$3 src=$4
modules=${MOAT_TUF_JS_DIR:-$src/third_party/node/node_modules}
if ! command -v node >/dev/null; then echo "SKIP: node is not installed"; exit 77; fi
if [[ ! -f $modules/tuf-js/package.json ]]; then
  echo "SKIP: tuf-js not found in $modules (run scripts/install-deps.sh, or set MOAT_TUF_JS_DIR)"
  exit 77
fi
echo "tuf-js $(node -p "require('$modules/tuf-js/package.json').version"), node $(node --version)"

work=$(mktemp -d /tmp/moat-tuf-js-service-XXXXXX)
pid=""
cleanup() {
  if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then kill -9 "$pid"; fi
  rm -rf "$work"
}
trap cleanup EXIT
source "$src/tests/integration/checks.sh"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
data="$work/data"
expect 0 "init" -- "$service" init --data-dir "$data" --ip 127.0.0.1 --port "$port"
"$service" run --data-dir "$data" >"$work/service.log" 2>&1 &
pid=$!
cfg="$data/admin.moat.json"
python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["root_certificate"], end="")' "$cfg" > "$work/root.pem"
url="https://127.0.0.1:$port"
for _ in $(seq 1 100); do
  curl -sf --cacert "$work/root.pem" "$url/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
m() { "$moat" --config "$cfg" "$@"; }
expect 0 "tenant" -- m tenant create acme
expect 0 "product" -- m product create Thermostat --tenant acme
expect 0 "keygen" -- "$moat" keygen --destination "$work/signer"
expect 0 "image-signing-key" -- m image-signing-key add --tenant acme --public-key "$work/signer.pub" --name release
mkdir -p "$work/hello/bin"
cat > "$work/hello/app_manifest.json" <<'JSON'
{"SchemaVersion": 1, "Name": "HelloMoat", "ComponentId": "6f1d5c3e-0b7a-4c1e-9a52-3d8e2f4b7c10",
 "EntryPoint": "/bin/hello", "CmdArgs": [], "Capabilities": {}, "ApplicationType": "Default"}
JSON
printf '#!/bin/sh\necho hello\n' > "$work/hello/bin/hello"; chmod 755 "$work/hello/bin/hello"
expect 0 "pack" -- "$moat" image-package pack-application --package-directory "$work/hello" \
  --destination "$work/hello.pkg" --signing-key "$work/signer.key" --version 2.0.0
img=$(sha256sum "$work/hello.pkg" | cut -d' ' -f1)
expect 0 "image add" -- m image add "$work/hello.pkg" --tenant acme
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/device.key" 2>/dev/null
openssl pkey -in "$work/device.key" -pubout -out "$work/device.pub"
device=$(openssl pkey -pubin -in "$work/device.pub" -outform DER | sha256sum | cut -d' ' -f1)
expect 0 "device register" -- m device register --public-key "$work/device.pub"
expect 0 "device claim" -- m device claim "$device" --tenant acme
expect 0 "device to Field Test" -- m device update "$device" --tenant acme --device-group "Thermostat/Field Test"
expect 0 "os reference value" -- m reference-value add --tenant acme --kind os --name moat-linux \
  --sha256 "$(printf 'moat-test-device os 1.0' | sha256sum | cut -d' ' -f1)"
expect 0 "device attests" -- "$test_device" enroll "$url" "$work/root.pem" "$work/device.key" "$work/dev"
repo=$(curl -sf --cacert "$work/root.pem" --cert "$work/dev.crt" --key "$work/dev.key" "$url/device/v1/whoami" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["repository"])')
# Trust on enrolment: the device takes 1.root.json over the authenticated channel.
curl -sf --cacert "$work/root.pem" --cert "$work/dev.crt" --key "$work/dev.key" \
  -o "$work/trusted-root.json" "$url${repo}1.root.json" && pass || fail "fetch 1.root.json"
expect 0 "deployment create" -- m deployment create --tenant acme --device-group "Thermostat/Field Test" --images "$img"
expect 0 "rotate-root" -- m device-group rotate-root "Field Test" --product Thermostat --tenant acme
node "$src/tests/interop/tuf_js_service_client.js" "$modules" "$work" "$url" "$repo" \
  "$work/dev.crt" "$work/dev.key" "$work/root.pem" "$img" "$work/hello.pkg" && pass || fail "tuf-js against moat-service"
kill -TERM "$pid"; wait "$pid" 2>/dev/null; pid=""
echo "$passes passed, $failures failed"
[[ $failures -eq 0 ]]
