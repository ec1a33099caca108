#!/usr/bin/env bash
# Starts a real moat-service on a free loopback port and drives it with our CLI and with
# third-party clients (curl, openssl s_client), checking exit codes, statuses and messages.
#   service_test.sh MOAT MOAT_SERVICE MOAT_TEST_DEVICE
set -uo pipefail
moat=$1 service=$2 test_device=$3
work=$(mktemp -d /tmp/moat-service-test-XXXXXX)
pid=""
cleanup() {
  if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then kill -9 "$pid"; fi
  rm -rf "$work"
}
trap cleanup EXIT
source "$(dirname "${BASH_SOURCE[0]}")/checks.sh"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
data="$work/data"
expect 0 "init" -- "$service" init --data-dir "$data" --name "Test Fleet" --ip 127.0.0.1 --port "$port"
contains "admin.moat.json" "init names the administrator's config"
[[ $(stat -c %a "$data/admin.moat.json") == 600 ]] && pass || fail "admin config mode is $(stat -c %a "$data/admin.moat.json")"
[[ $(stat -c %a "$data/pki/root-ca.key") == 600 ]] && pass || fail "root key mode"
expect 1 "init refuses an existing data dir" -- "$service" init --data-dir "$data"
contains "refusing to overwrite" "init refusal message"
expect 2 "run without --data-dir is a usage error" -- "$service" run

"$service" run --data-dir "$data" >"$work/service.log" 2>&1 &
pid=$!
cfg="$data/admin.moat.json"
python3 - "$cfg" "$work" <<'PY'
import json, sys
c = json.load(open(sys.argv[1])); w = sys.argv[2]
open(f"{w}/root.pem", "w").write(c["root_certificate"])
open(f"{w}/admin.crt", "w").write(c["certificate"])
open(f"{w}/admin.key", "w").write(c["private_key"])
PY
chmod 600 "$work/admin.key"
url="https://127.0.0.1:$port"
for _ in $(seq 1 100); do
  curl -sf --cacert "$work/root.pem" "$url/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done

# --- third-party clients
expect 0 "curl /healthz without a client certificate" -- curl -sf --cacert "$work/root.pem" "$url/healthz"
contains '"status":"ok"' "healthz body"
curl -s --cacert "$work/root.pem" -o "$work/out" -w '%{http_code} %{content_type}' "$url/api/v1/whoami" > "$work/status"
[[ $(cat "$work/status") == "401 application/problem+json" ]] && pass || fail "no client certificate: got $(cat "$work/status")"
contains '"type":"urn:moat:problem:unauthenticated"' "401 problem type"
expect 0 "curl with the administrator's certificate" -- curl -sf --cacert "$work/root.pem" \
  --cert "$work/admin.crt" --key "$work/admin.key" "$url/api/v1/whoami"
contains '"name":"admin"' "whoami over curl"

# Body limits are per route: 1 MiB anywhere but an image upload (64 MiB).
head -c $((2 * 1024 * 1024)) /dev/zero > "$work/big.bin"
curl -s --cacert "$work/root.pem" --cert "$work/admin.crt" --key "$work/admin.key" \
  -H 'Content-Type: application/json' --data-binary @"$work/big.bin" -o "$work/out" \
  -w '%{http_code}' "$url/api/v1/tenants" > "$work/status"
[[ $(cat "$work/status") == 413 ]] && pass || fail "2 MiB JSON body: got $(cat "$work/status")"
contains "over 1048576 bytes" "the 1 MiB limit is named"
curl -s --cacert "$work/root.pem" --cert "$work/admin.crt" --key "$work/admin.key" \
  -H 'Content-Type: application/json' -H 'Transfer-Encoding: chunked' \
  --data-binary @"$work/big.bin" -o "$work/out" -w '%{http_code}' "$url/api/v1/tenants" > "$work/status"
[[ $(cat "$work/status") == 413 ]] && pass || fail "2 MiB chunked body: got $(cat "$work/status")"
contains "over 1048576 bytes" "the 1 MiB limit holds for a chunked body"

# A client certificate from a CA the service does not know fails the TLS handshake itself.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/foreign.key" \
  -out "$work/foreign.crt" -days 1 -subj "/CN=intruder" \
  -addext "extendedKeyUsage=clientAuth" >/dev/null 2>&1
curl -s --cacert "$work/root.pem" --cert "$work/foreign.crt" --key "$work/foreign.key" \
  -o /dev/null -w '%{http_code}' "$url/api/v1/whoami" > "$work/status" 2>/dev/null
rc=$?
[[ $rc -ne 0 && $(cat "$work/status") == "000" ]] && pass || fail "foreign CA: curl exit $rc, status $(cat "$work/status")"

printf 'GET /api/v1/whoami HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' |
  timeout 10 openssl s_client -quiet -connect "127.0.0.1:$port" -CAfile "$work/root.pem" \
    -cert "$work/admin.crt" -key "$work/admin.key" -verify_return_error > "$work/out" 2>&1
contains "HTTP/1.1 200" "openssl s_client with the administrator's certificate"

# --- our CLI
expect 0 "moat whoami" -- "$moat" --config "$cfg" whoami
contains "Administrator" "whoami shows the service-wide role"
MOAT_CONFIG="$cfg" expect 0 "moat whoami through MOAT_CONFIG" -- "$moat" whoami
expect 1 "online command without a config" -- env -u MOAT_CONFIG "$moat" tenant list
contains "no operator config" "missing config message"
expect 0 "tenant create" -- "$moat" --config "$cfg" tenant create acme
contains "Created tenant acme" "tenant create output"
expect 1 "tenant create twice" -- "$moat" --config "$cfg" tenant create acme
contains "already exists" "duplicate tenant message"
expect 1 "tenant with a bad name" -- "$moat" --config "$cfg" tenant create "../etc"
contains "tenant name '../etc' must be" "bad tenant name message"
expect 0 "tenant list" -- "$moat" tenant list --config "$cfg" --output json
contains '"name": "acme"' "tenant list json"
expect 1 "an unknown tenant's CAs" -- "$moat" --config "$cfg" ca-certificate list --tenant nobody
contains "no tenant 'nobody'" "unknown tenant message"

expect 0 "ca-certificate download --chain" -- "$moat" --config "$cfg" ca-certificate download \
  --tenant acme --chain --destination "$work/acme-chain.pem"
[[ $(grep -c "BEGIN CERTIFICATE" "$work/acme-chain.pem") -eq 2 ]] && pass || fail "chain has $(grep -c "BEGIN CERTIFICATE" "$work/acme-chain.pem") certificates"
csplit -s -z -f "$work/cert-" "$work/acme-chain.pem" '/-----BEGIN CERTIFICATE-----/' '{*}'
expect 0 "the tenant CA verifies against the service root (openssl)" -- openssl verify -x509_strict \
  -CAfile "$work/root.pem" "$work/cert-00"
expect 0 "ca-certificate download pkcs7" -- "$moat" --config "$cfg" ca-certificate download \
  --tenant acme --format pkcs7 --destination "$work/acme.p7b"
openssl pkcs7 -inform DER -in "$work/acme.p7b" -print_certs > "$work/out" 2>&1
contains "acme Tenant CA" "pkcs7 holds the tenant CA"

expect 0 "audit list" -- "$moat" --config "$cfg" audit list
contains "tenant.create" "audit records the tenant creation"
contains "operator.create" "audit records the first administrator"

# --- operators: request a key offline, get a role, act with it, be revoked
expect 0 "user request" -- "$moat" user request --name alice --destination "$work/alice"
[[ $(stat -c %a "$work/alice.key") == 600 ]] && pass || fail "operator key mode"
expect 0 "user add" -- "$moat" --config "$cfg" user add --name alice --tenant acme --role Reader \
  --csr "$work/alice.csr" --destination "$work/alice.crt"
contains "as Reader in acme" "user add output"
expect 0 "config create" -- "$moat" config create --service-url "$url" --root-certificate "$work/root.pem" \
  --certificate "$work/alice.crt" --key "$work/alice.key" --destination "$work/alice.moat.json"
alice="$work/alice.moat.json"
expect 0 "alice sees acme" -- "$moat" --config "$alice" tenant list
contains "acme" "alice's tenant list"
expect 1 "a Reader cannot create tenants" -- "$moat" --config "$alice" tenant create evil
contains "needs the service-wide Administrator role" "forbidden message"
expect 1 "a Reader cannot add operators" -- "$moat" --config "$alice" user add --name mallory \
  --tenant acme --role Administrator --csr "$work/alice.csr" --destination "$work/m.crt"
contains "needs its Administrator role" "user add forbidden message"
expect 0 "tenant two" -- "$moat" --config "$cfg" tenant create globex
expect 1 "alice cannot see another tenant's CAs" -- "$moat" --config "$alice" ca-certificate list --tenant globex
contains "no tenant 'globex'" "another tenant answers not found"
alice_id=$("$moat" --config "$cfg" user list --output json | python3 -c 'import json,sys; print([u["id"] for u in json.load(sys.stdin)["users"] if u["name"]=="alice"][0])')
expect 0 "user revoke" -- "$moat" --config "$cfg" user revoke "$alice_id"
expect 1 "a revoked operator is refused" -- "$moat" --config "$alice" tenant list
contains "was revoked" "revoked message"
expect 1 "revoking twice" -- "$moat" --config "$cfg" user revoke "$alice_id"
contains "already revoked" "double revoke message"
curl -s --cacert "$work/root.pem" -o "$work/out" -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
  --cert "$work/admin.crt" --key "$work/admin.key" --data '{"name":"x","tenant":"acme","role":"Reader","csr":"junk"}' \
  "$url/api/v1/users" > "$work/status"
[[ $(cat "$work/status") == 400 ]] && pass || fail "a junk CSR: HTTP $(cat "$work/status")"
contains "body.csr" "the junk CSR error names the field"
curl -s --cacert "$work/root.pem" -o "$work/out" -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
  --cert "$work/admin.crt" --key "$work/admin.key" --data '{"name":"x","tenant":"acme","role":"Root","csr":"x","extra":1}' \
  "$url/api/v1/users" > "$work/status"
[[ $(cat "$work/status") == 400 ]] && pass || fail "unknown field: HTTP $(cat "$work/status")"
curl -s --cacert "$work/root.pem" -o "$work/out" -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
  --cert "$work/admin.crt" --key "$work/admin.key" --data '{"name":' "$url/api/v1/tenants" > "$work/status"
[[ $(cat "$work/status") == 400 ]] && pass || fail "malformed JSON: HTTP $(cat "$work/status")"
contains "invalid JSON" "malformed JSON message"

# --- devices: a manufacturer registers, a tenant claims, ownership moves only with both sides
expect 0 "manufacturer request" -- "$moat" user request --name factory --destination "$work/factory"
expect 0 "manufacturer add" -- "$moat" --config "$cfg" user add --name factory --tenant '*' \
  --role Manufacturer --csr "$work/factory.csr" --destination "$work/factory.crt"
expect 1 "Manufacturer is service-wide only" -- "$moat" --config "$cfg" user add --name f2 --tenant acme \
  --role Manufacturer --csr "$work/factory.csr" --destination "$work/f2.crt"
contains "service-wide role" "manufacturer scope message"
expect 0 "manufacturer config" -- "$moat" config create --service-url "$url" --root-certificate "$work/root.pem" \
  --certificate "$work/factory.crt" --key "$work/factory.key" --destination "$work/factory.moat.json"
factory="$work/factory.moat.json"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/device.key" 2>/dev/null
openssl pkey -in "$work/device.key" -pubout -out "$work/device.pub"
device_id=$(openssl pkey -pubin -in "$work/device.pub" -outform DER | sha256sum | cut -d' ' -f1)
expect 0 "device register" -- "$moat" --config "$factory" device register --public-key "$work/device.pub"
contains "$device_id" "the device ID is the SHA-256 of the identity key's SPKI"
expect 1 "device register twice" -- "$moat" --config "$factory" device register --public-key "$work/device.pub"
contains "already registered" "duplicate registration message"
expect 1 "a manufacturer cannot see tenants' devices" -- "$moat" --config "$factory" device list --tenant acme
contains "no tenant 'acme'" "manufacturer tenant access"
openssl genpkey -algorithm ED25519 -out "$work/ed.key" 2>/dev/null; openssl pkey -in "$work/ed.key" -pubout -out "$work/ed.pub"
expect 1 "identity keys are P-256" -- "$moat" --config "$factory" device register --public-key "$work/ed.pub"
contains "ECDSA P-256" "key type message"
expect 1 "claim an unregistered device" -- "$moat" --config "$cfg" device claim "$(printf 'a%.0s' {1..64})" --tenant acme
contains "is not registered" "unregistered claim message"
expect 1 "claim with a malformed ID" -- "$moat" --config "$cfg" device claim XYZ --tenant acme
contains "is not 64 lowercase hexadecimal" "malformed device ID message"
expect 0 "device claim" -- "$moat" --config "$cfg" device claim "$device_id" --tenant acme
expect 1 "device claim twice" -- "$moat" --config "$cfg" device claim "$device_id" --tenant acme
contains "already claimed" "double claim message"
expect 1 "another tenant cannot claim it" -- "$moat" --config "$cfg" device claim "$device_id" --tenant globex
contains "belongs to another tenant" "foreign claim message"
expect 0 "device list" -- "$moat" --config "$cfg" device list --tenant acme
contains "$device_id" "device list shows the device"
expect 1 "the device is not in globex" -- "$moat" --config "$cfg" device show "$device_id" --tenant globex
contains "no device $device_id in tenant 'globex'" "not-found message"
expect 0 "transfer request" -- "$moat" --config "$cfg" device transfer "$device_id" --tenant acme --to globex
expect 0 "device show while pending" -- "$moat" --config "$cfg" device show "$device_id" --tenant acme
contains "pending_transfer_to:           globex" "the pending transfer is shown"
expect 0 "accept transfer" -- "$moat" --config "$cfg" device accept-transfer "$device_id" --tenant globex
expect 0 "device list globex" -- "$moat" --config "$cfg" device list --tenant globex
contains "$device_id" "the device moved"
expect 1 "accept twice" -- "$moat" --config "$cfg" device accept-transfer "$device_id" --tenant globex
contains "no transfer of device" "nothing pending message"
expect 0 "audit of the transfer" -- "$moat" --config "$cfg" audit list --tenant acme
contains "device.transfer.complete" "the old tenant's audit log records the transfer"

# --- reference values and security events (the attestation itself: src/service/device_api_test)
printf 'os image v1' > "$work/os.img"
os_sha=$(sha256sum "$work/os.img" | cut -d' ' -f1)
expect 0 "reference-value add --file" -- "$moat" --config "$cfg" reference-value add --tenant acme \
  --kind os --name moat-linux --file "$work/os.img" --comment "release 1"
contains "$os_sha" "the CLI hashed the file"
expect 1 "reference-value add twice" -- "$moat" --config "$cfg" reference-value add --tenant acme \
  --kind os --name moat-linux --sha256 "$os_sha"
contains "already has the reference value" "duplicate reference value message"
expect 1 "reference-value with a bad digest" -- "$moat" --config "$cfg" reference-value add \
  --tenant acme --kind app --name x --sha256 ABC
contains "64 lowercase hexadecimal" "bad digest message"
expect 2 "reference-value with an unknown kind" -- "$moat" --config "$cfg" reference-value add \
  --tenant acme --kind kernel --name x --sha256 "$os_sha"
expect 0 "reference-value list" -- "$moat" --config "$cfg" --output json reference-value list --tenant acme
rv_id=$(jq -r '.reference_values[0].id' "$work/out")
contains "release 1" "the comment is listed"
expect 1 "globex cannot remove acme's value" -- "$moat" --config "$cfg" reference-value remove "$rv_id" --tenant globex
expect 0 "reference-value remove" -- "$moat" --config "$cfg" reference-value remove "$rv_id" --tenant acme
expect 0 "security-event list (none yet)" -- "$moat" --config "$cfg" security-event list --tenant acme
contains "(none)" "no security events"
expect 0 "audit records reference values" -- "$moat" --config "$cfg" audit list --tenant acme
contains "reference-value.remove" "the removal is audited"

# --- fleet: products, device groups (the device now belongs to globex)
expect 0 "product create" -- "$moat" --config "$cfg" product create Thermostat --tenant acme --description "Wall unit"
contains "with device groups Development, Field Test, Production" "a new product gets the default device groups"
expect 1 "product create twice" -- "$moat" --config "$cfg" product create Thermostat --tenant acme
contains "already has a product named 'Thermostat'" "duplicate product message"
expect 1 "product with a bad name" -- "$moat" --config "$cfg" product create "a/b" --tenant acme
contains "product name 'a/b' must be" "bad product name message"
expect 0 "product list" -- "$moat" --config "$cfg" product list --tenant acme
contains "Thermostat" "product list shows the product"
expect 0 "device-group create with a window" -- "$moat" --config "$cfg" device-group create Beta \
  --product Thermostat --tenant acme --os-feed RetailEval --update-days Sat,Sun --update-hours 02-05
contains "Sat,Sun 02:00-05:00 device-local time" "the update window is shown"
expect 1 "device-group with a bad day" -- "$moat" --config "$cfg" device-group create Gamma \
  --product Thermostat --tenant acme --update-days Fun --update-hours 02-05
contains "'Fun' is not a day" "bad day message"
expect 1 "device-group with backwards hours" -- "$moat" --config "$cfg" device-group create Gamma \
  --product Thermostat --tenant acme --update-days Mon --update-hours 05-02
contains "must be after start_hour" "backwards hours message"
expect 2 "device-group with an unknown OS feed" -- "$moat" --config "$cfg" device-group create Gamma \
  --product Thermostat --tenant acme --os-feed Beta
expect 0 "device-group update" -- "$moat" --config "$cfg" device-group update Beta --product Thermostat \
  --tenant acme --no-update-window --app-update-policy no-third-party-app-updates
contains "none (any time)" "the window was removed"
expect 0 "product show" -- "$moat" --config "$cfg" product show Thermostat --tenant acme
contains "Field Test" "product show lists the default groups"
contains "RetailEval" "product show lists the new group's feed"
expect 1 "another tenant's product" -- "$moat" --config "$cfg" product show Thermostat --tenant globex
contains "no product 'Thermostat' in tenant 'globex'" "product not found message"
expect 0 "product in globex" -- "$moat" --config "$cfg" product create Lamp --tenant globex
expect 0 "device update" -- "$moat" --config "$cfg" device update "$device_id" --tenant globex --device-group "Lamp/Field Test"
contains "is in Lamp/Field Test now" "device update output"
expect 0 "device show has the group" -- "$moat" --config "$cfg" --output json device show "$device_id" --tenant globex
contains '"device_group": "Field Test"' "device show json names the group"
expect 0 "device show table" -- "$moat" --config "$cfg" device show "$device_id" --tenant globex
contains "Lamp" "device show table names the product"
expect 1 "device update to a missing group" -- "$moat" --config "$cfg" device update "$device_id" --tenant globex --device-group "Lamp/Nope"
contains "no device group 'Nope' in product 'Lamp'" "missing group message"
expect 1 "deleting a group with devices" -- "$moat" --config "$cfg" device-group delete "Field Test" --product Lamp --tenant globex
contains "still has 1 device(s)" "group delete refusal"
expect 1 "deleting a product with devices" -- "$moat" --config "$cfg" product delete Lamp --tenant globex
contains "still has 1 device(s)" "product delete refusal"
expect 0 "device update --no-device-group" -- "$moat" --config "$cfg" device update "$device_id" --tenant globex --no-device-group
expect 0 "product delete" -- "$moat" --config "$cfg" product delete Lamp --tenant globex

# --- fleet: image-signing keys and images
expect 0 "keygen signer" -- "$moat" keygen --destination "$work/signer"
expect 0 "keygen for a stranger" -- "$moat" keygen --type ed25519 --destination "$work/stranger"
mkdir -p "$work/hello/bin"
cat > "$work/hello/app_manifest.json" <<'JSON'
{"SchemaVersion": 1, "Name": "HelloMoat", "ComponentId": "6f1d5c3e-0b7a-4c1e-9a52-3d8e2f4b7c10",
 "EntryPoint": "/bin/hello", "CmdArgs": [], "Capabilities": {}, "ApplicationType": "Default"}
JSON
printf '#!/bin/sh\necho hello\n' > "$work/hello/bin/hello"; chmod 755 "$work/hello/bin/hello"
pack() {  # pack KEY VERSION DEST
  "$moat" image-package pack-application --package-directory "$work/hello" --destination "$3" \
    --signing-key "$1" --version "$2" >"$work/out" 2>&1 || { fail "pack $3"; sed 's/^/    /' "$work/out"; }
}
pack "$work/signer.key" 1.0.0 "$work/hello.pkg"
pack "$work/stranger.key" 1.0.0 "$work/foreign.pkg"
img_id=$(sha256sum "$work/hello.pkg" | cut -d' ' -f1)
expect 1 "image add before any key" -- "$moat" --config "$cfg" image add "$work/hello.pkg" --tenant acme
contains "has no image-signing keys yet" "no keys message"
expect 0 "image-signing-key add" -- "$moat" --config "$cfg" image-signing-key add --tenant acme \
  --public-key "$work/signer.pub" --name release
contains "Added image-signing key release (ecdsa-p256" "key add output"
expect 1 "image-signing-key add twice" -- "$moat" --config "$cfg" image-signing-key add --tenant acme \
  --public-key "$work/signer.pub"
contains "already has the image-signing key" "duplicate key message"
expect 0 "image-signing-key list" -- "$moat" --config "$cfg" image-signing-key list --tenant acme
contains "active" "key list shows the status"
expect 0 "image add" -- "$moat" --config "$cfg" image add "$work/hello.pkg" --tenant acme
contains "Added image $img_id" "the image ID is the package's SHA-256"
expect 0 "image add again" -- "$moat" --config "$cfg" image add "$work/hello.pkg" --tenant acme
contains "Already present: image $img_id" "adding twice returns the same ID"
expect 1 "a foreign-signed image" -- "$moat" --config "$cfg" image add "$work/foreign.pkg" --tenant acme
contains "signed by unknown key" "foreign signer message"
python3 - "$work/hello.pkg" "$work/tampered.pkg" <<'PY2'
import sys
b = bytearray(open(sys.argv[1], "rb").read()); b[len(b) // 2] ^= 1
open(sys.argv[2], "wb").write(b)
PY2
expect 1 "a tampered image" -- "$moat" --config "$cfg" image add "$work/tampered.pkg" --tenant acme
contains "signature does not match" "tampered message"
expect 0 "image list" -- "$moat" --config "$cfg" image list --tenant acme
contains "$img_id" "image list shows the image"
expect 0 "image show" -- "$moat" --config "$cfg" image show "$img_id" --tenant acme
contains "HelloMoat" "image show names the image"
expect 1 "image show in another tenant" -- "$moat" --config "$cfg" image show "$img_id" --tenant globex
contains "no image $img_id in tenant 'globex'" "image not found message"
expect 0 "image download" -- "$moat" --config "$cfg" image download "$img_id" --tenant acme --destination "$work/copy.pkg"
cmp -s "$work/hello.pkg" "$work/copy.pkg" && pass || fail "the downloaded image differs"
expect 1 "image download refuses to overwrite" -- "$moat" --config "$cfg" image download "$img_id" --tenant acme --destination "$work/copy.pkg"
[[ $(stat -c %a "$data/images/$img_id") == 600 ]] && pass || fail "image blob mode $(stat -c %a "$data/images/$img_id")"
expect 0 "the image is a reference value" -- "$moat" --config "$cfg" reference-value list --tenant acme
contains "$img_id" "reference value for the image"
# curl: the upload is the package itself
upload() {  # upload FILE [CONTENT_TYPE] -> status in $work/status, body in $work/out
  curl -s --cacert "$work/root.pem" --cert "$work/admin.crt" --key "$work/admin.key" -X POST \
    -H "Content-Type: ${2:-application/octet-stream}" --data-binary @"$1" -o "$work/out" -w '%{http_code}' \
    "$url/api/v1/tenants/acme/images" > "$work/status"
}
pack "$work/signer.key" 1.0.1 "$work/hello-101.pkg"
upload "$work/hello-101.pkg"
[[ $(cat "$work/status") == 201 ]] && pass || fail "curl upload: HTTP $(cat "$work/status")"
contains "$(sha256sum "$work/hello-101.pkg" | cut -d' ' -f1)" "curl upload answers the image ID"
upload "$work/hello.pkg"
[[ $(cat "$work/status") == 200 ]] && pass || fail "curl upload of a known image: HTTP $(cat "$work/status")"
upload "$work/tampered.pkg"
[[ $(cat "$work/status") == 400 ]] && pass || fail "curl upload of a tampered image: HTTP $(cat "$work/status")"
contains "urn:moat:problem:verification-failed" "tampered problem type"
upload "$work/hello.pkg" application/json
[[ $(cat "$work/status") == 415 ]] && pass || fail "curl upload as JSON: HTTP $(cat "$work/status")"
head -c 2000000 /dev/urandom > "$work/random.bin"; upload "$work/random.bin"
[[ $(cat "$work/status") == 400 ]] && pass || fail "curl upload of random bytes: HTTP $(cat "$work/status")"
expect 0 "image-signing-key revoke" -- "$moat" --config "$cfg" image-signing-key revoke release --tenant acme
pack "$work/signer.key" 1.0.2 "$work/hello-102.pkg"
expect 1 "an image signed by a revoked key" -- "$moat" --config "$cfg" image add "$work/hello-102.pkg" --tenant acme
contains "which was revoked" "revoked key message"
expect 0 "audit records images" -- "$moat" --config "$cfg" audit list --tenant acme
contains "image.add" "image additions are audited"

# --- deployments: every device group is a TUF repository (formats: src/service/deployment_test)
img101=$(sha256sum "$work/hello-101.pkg" | cut -d' ' -f1)
expect 0 "keygen signer2" -- "$moat" keygen --destination "$work/signer2"
expect 0 "image-signing-key add release2" -- "$moat" --config "$cfg" image-signing-key add --tenant acme \
  --public-key "$work/signer2.pub" --name release2
pack "$work/signer2.key" 2.0.0 "$work/hello-200.pkg"
img2=$(sha256sum "$work/hello-200.pkg" | cut -d' ' -f1)
expect 0 "image add 2.0.0" -- "$moat" --config "$cfg" image add "$work/hello-200.pkg" --tenant acme
expect 1 "deployment of an image signed by a revoked key" -- "$moat" --config "$cfg" deployment create \
  --tenant acme --device-group "Thermostat/Production" --images "$img_id"
contains "which is revoked" "revoked signer message"
expect 1 "deployment of an unknown image" -- "$moat" --config "$cfg" deployment create \
  --tenant acme --device-group "Thermostat/Production" --images "$(printf 'a%.0s' {1..64})"
contains "no image aaaa" "unknown image message"
expect 1 "deployment of two images of one component" -- "$moat" --config "$cfg" deployment create \
  --tenant acme --device-group "Thermostat/Production" --images "$img2" "$img101"
contains "a deployment holds one image per component" "one image per component message"
expect 1 "an app deployment to Development" -- "$moat" --config "$cfg" deployment create \
  --tenant acme --device-group "Thermostat/Development" --images "$img2"
contains "no-third-party-app-updates" "app update policy message"
expect 1 "deployment to a missing group" -- "$moat" --config "$cfg" deployment create \
  --tenant acme --device-group "Thermostat/Nope" --images "$img2"
contains "no device group 'Nope'" "missing group message"
expect 0 "deployment create" -- "$moat" --config "$cfg" deployment create \
  --tenant acme --device-group "Thermostat/Field Test" --images "$img2"
contains "targets version 2, 1 image(s)" "deployment create output"
dep_id=$(sed -n 's/^Created deployment \([0-9a-f-]*\) .*/\1/p' "$work/out")
expect 0 "deployment list" -- "$moat" --config "$cfg" deployment list --tenant acme --device-group "Thermostat/Field Test"
contains "$dep_id" "deployment list shows it"
expect 0 "deployment show" -- "$moat" --config "$cfg" deployment show "$dep_id" --tenant acme
contains "$img2" "deployment show lists the image"
expect 0 "device-group rotate-root" -- "$moat" --config "$cfg" device-group rotate-root "Field Test" \
  --product Thermostat --tenant acme
contains "root version 2 is signed by the retired key" "rotate-root output"
expect 0 "audit records deployments and root rotations" -- "$moat" --config "$cfg" audit list --tenant acme
contains "deployment.create" "deployment audited"
contains "device-group.rotate-root" "rotation audited"

# --- PCR policy per device group, named PRODUCT/GROUP as deployments name it (or by its ID)
golden=$(printf '0%.0s' {1..64})
expect 0 "pcr-policy add --device-group PRODUCT/GROUP" -- "$moat" --config "$cfg" pcr-policy add \
  --tenant acme --pcr 0 --sha256 "$golden" --device-group "Thermostat/Field Test" --comment "golden fw"
contains "for device group Thermostat/Field Test" "pcr-policy add names the group"
expect 1 "pcr-policy add for a missing group" -- "$moat" --config "$cfg" pcr-policy add \
  --tenant acme --pcr 0 --sha256 "$golden" --device-group "Thermostat/Nope"
contains "no device group 'Thermostat/Nope' in tenant 'acme'" "missing group message"
expect 1 "pcr-policy add for another tenant's group" -- "$moat" --config "$cfg" pcr-policy add \
  --tenant globex --pcr 0 --sha256 "$golden" --device-group "Thermostat/Field Test"
contains "no device group" "another tenant's group is not found"
expect 0 "pcr-policy add --output json" -- "$moat" --config "$cfg" --output json pcr-policy add \
  --tenant acme --pcr 7 --sha256 "$golden" --device-group "Thermostat/Production"
group_id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["device_group_id"])' "$work/out")
expect 0 "pcr-policy add --device-group ID" -- "$moat" --config "$cfg" pcr-policy add \
  --tenant acme --pcr 8 --sha256 "$golden" --device-group "$group_id"
contains "for device group Thermostat/Production" "a group given by ID is named"
expect 0 "pcr-policy add tenant-wide" -- "$moat" --config "$cfg" pcr-policy add \
  --tenant acme --pcr 1 --sha256 "$golden"
contains "(whole tenant)" "a tenant-wide entry"
pcr_id=$(sed -n 's/^Added PCR policy \([0-9a-f-]*\):.*/\1/p' "$work/out")
expect 0 "pcr-policy list" -- "$moat" --config "$cfg" pcr-policy list --tenant acme
contains "Thermostat/Field Test" "pcr-policy list shows the group by name"
contains "Thermostat/Production" "pcr-policy list shows the other group"
contains "(tenant)" "pcr-policy list shows the tenant-wide entry"
contains "golden fw" "pcr-policy list shows the comment"
expect 0 "pcr-policy remove" -- "$moat" --config "$cfg" pcr-policy remove "$pcr_id" --tenant acme
expect 1 "pcr-policy remove twice" -- "$moat" --config "$cfg" pcr-policy remove "$pcr_id" --tenant acme

# A device of that group, attested by moat-test-device, reads the repository with curl.
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/device2.key" 2>/dev/null
openssl pkey -in "$work/device2.key" -pubout -out "$work/device2.pub"
device2=$(openssl pkey -pubin -in "$work/device2.pub" -outform DER | sha256sum | cut -d' ' -f1)
expect 0 "device2 register" -- "$moat" --config "$factory" device register --public-key "$work/device2.pub"
expect 0 "device2 claim" -- "$moat" --config "$cfg" device claim "$device2" --tenant acme
expect 0 "device2 to Field Test" -- "$moat" --config "$cfg" device update "$device2" --tenant acme \
  --device-group "Thermostat/Field Test"
expect 0 "reference value of moat-test-device's OS" -- "$moat" --config "$cfg" reference-value add \
  --tenant acme --kind os --name moat-linux --sha256 "$(printf 'moat-test-device os 1.0' | sha256sum | cut -d' ' -f1)"
expect 0 "device2 attests" -- "$test_device" enroll "$url" "$work/root.pem" "$work/device2.key" "$work/dev2"
contains "attestation passed" "device2 gets a client certificate"
dcurl() {  # dcurl PATH [curl args...] -> status in $work/status, body in $work/out
  local path=$1; shift
  curl -s --cacert "$work/root.pem" --cert "$work/dev2.crt" --key "$work/dev2.key" -o "$work/out" \
    -w '%{http_code}' "$@" "$url$path" > "$work/status"
}
dcurl /device/v1/whoami
repo=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["repository"])' "$work/out")
contains '"product":"Thermostat"' "whoami names the device group"
[[ $repo == /device/v1/repo/*/ ]] && pass || fail "whoami repository is '$repo'"
for f in 1.root.json 2.root.json timestamp.json; do
  dcurl "$repo$f"; [[ $(cat "$work/status") == 200 ]] && pass || fail "GET $f: HTTP $(cat "$work/status")"
  cp "$work/out" "$work/repo-$f"
done
python3 - "$work" "$img2" <<'PY3'
import json, sys
w, img = sys.argv[1], sys.argv[2]
r1 = json.load(open(f"{w}/repo-1.root.json")); r2 = json.load(open(f"{w}/repo-2.root.json"))
old = set(r1["signed"]["roles"]["root"]["keyids"]); new = set(r2["signed"]["roles"]["root"]["keyids"])
signers = {s["keyid"] for s in r2["signatures"]}
assert old != new and old <= signers and new <= signers, ("2.root.json signers", signers, old, new)
ts = json.load(open(f"{w}/repo-timestamp.json"))
assert ts["signed"]["_type"] == "timestamp"
print("ok")
PY3
[[ $? -eq 0 ]] && pass || fail "2.root.json is signed by the old and the new root key"
production=$("$moat" --config "$cfg" -o json device-group show Production --product Thermostat --tenant acme |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
dcurl "/device/v1/repo/$production/timestamp.json"
[[ $(cat "$work/status") == 403 ]] && pass || fail "another group's repository: HTTP $(cat "$work/status")"
contains "is not its own" "another group's repository message"
dcurl "${repo}secret.txt"
[[ $(cat "$work/status") == 404 ]] && pass || fail "unknown repository path: HTTP $(cat "$work/status")"
dcurl "${repo}targets/$img2.$img2.imagepackage"
cmp -s "$work/out" "$work/hello-200.pkg" && pass || fail "the deployed package downloads from the repository"
expect 0 "device show before a status report" -- "$moat" --config "$cfg" device show "$device2" --tenant acme
contains "pending" "targeted image not installed yet"
printf '{"os":{"name":"moat-linux","version":"1.0"},"installed":[{"component_id":"6f1d5c3e-0b7a-4c1e-9a52-3d8e2f4b7c10","image_id":"%s","version":"2.0.0"}],"running":["6f1d5c3e-0b7a-4c1e-9a52-3d8e2f4b7c10"],"last_update":{"result":"ok","at":"2026-12-06T12:00:00Z","detail":"","targets_version":2}}' \
  "$img2" > "$work/status.json"
dcurl /device/v1/status -X POST -H 'Content-Type: application/json' --data-binary @"$work/status.json"
[[ $(cat "$work/status") == 204 ]] && pass || fail "status report: HTTP $(cat "$work/status")"
sed 's/"image_id":"[0-9a-f]*"/"image_id":"XYZ"/' "$work/status.json" > "$work/bad-status.json"
dcurl /device/v1/status -X POST -H 'Content-Type: application/json' --data-binary @"$work/bad-status.json"
[[ $(cat "$work/status") == 400 ]] && pass || fail "bad status report: HTTP $(cat "$work/status")"
contains "body.installed[0].image_id" "bad status names the field"
expect 0 "device show after the report" -- "$moat" --config "$cfg" device show "$device2" --tenant acme
contains "up_to_date:                    true" "device show: installed matches targeted"
contains "installed" "device show lists the installed image"
expect 0 "device show-deployment-status" -- "$moat" --config "$cfg" device show-deployment-status "$device2" --tenant acme
contains "last_update:                   ok" "deployment status shows the last update"
contains "$img2" "deployment status names the image"

# --- a tenant name with a space travels percent-encoded in paths ("Big%20Corp") on every route
expect 0 "tenant create with a space" -- "$moat" --config "$cfg" tenant create "Big Corp"
expect 0 "CAs of a tenant named with a space" -- "$moat" --config "$cfg" ca-certificate list --tenant "Big Corp"
contains "NOT AFTER" "the CA list shows the tenant's CA"
expect 0 "devices of a tenant named with a space" -- "$moat" --config "$cfg" device list --tenant "Big Corp"
expect 0 "reference values of a tenant named with a space" -- "$moat" --config "$cfg" reference-value list --tenant "Big Corp"
expect 0 "products of a tenant named with a space" -- "$moat" --config "$cfg" product list --tenant "Big Corp"

# --- graceful stop
kill -TERM "$pid"
for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$pid" 2>/dev/null; then fail "moat-service still running 10 s after SIGTERM"; else
  wait "$pid"; rc=$?; [[ $rc -eq 0 ]] && pass || fail "moat-service exit status $rc after SIGTERM"
fi
pid=""
grep -q "stopped" "$work/service.log" && pass || fail "service log lacks 'stopped'"

echo "$passes passed, $failures failed"
[[ $failures -eq 0 ]]
