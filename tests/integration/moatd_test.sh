#!/usr/bin/env bash
# A real moat-service and real moatd processes on loopback: first contact with the
# self-certified identity, attestation, a 24 h client certificate that third-party tools
# accept, identity across restarts, a device whose OS is not known-good (update certificate
# only, security event), and moatd staying up while the service is down.
#   moatd_test.sh MOAT MOAT_SERVICE MOATD MOATCTL
set -uo pipefail
moat=$1 service=$2 moatd=$3 moatctl=$4
work=$(mktemp -d /tmp/moatd-test-XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT
source "$(dirname "${BASH_SOURCE[0]}")/checks.sh"
# wait_for SECONDS "what" -- cmd...: retries cmd until it succeeds.
wait_for() {
  local seconds=$1 what=$2; shift 3
  for _ in $(seq 1 $((seconds * 5))); do
    if "$@" >/dev/null 2>&1; then pass; return 0; fi
    sleep 0.2
  done
  fail "$what: not true after $seconds s"
  return 1
}

# status_is SOCKET JQ-EXPRESSION: moatd answers and the expression holds (jq 1.6 -e exits 0 on
# empty input, so the answer is checked first).
status_is() {
  local out
  out=$("$moatctl" --socket "$1" --json status 2>/dev/null) || return 1
  [[ -n $out ]] && jq -e "$2" <<<"$out" >/dev/null
}

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
data="$work/service"
url="https://127.0.0.1:$port"
"$service" init --data-dir "$data" --ip 127.0.0.1 --port "$port" >/dev/null || { echo "init failed"; exit 1; }
cfg="$data/admin.moat.json"
start_service() {
  "$service" run --data-dir "$data" >>"$work/service.log" 2>&1 &
  service_pid=$!
  pids+=("$service_pid")
  for _ in $(seq 1 100); do
    curl -sf --cacert "$data/pki/root-ca.crt" "$url/healthz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "moat-service did not start"; cat "$work/service.log"; exit 1
}
start_service
"$moat" --config "$cfg" tenant create acme >/dev/null

# Two devices: "good" runs the known-good OS image, "odd" one nobody vouched for.
printf 'moat-linux 1.0 image' > "$work/os-good.img"
printf 'moat-linux 1.0 image, modified' > "$work/os-odd.img"
expect 0 "reference value for the good OS" -- "$moat" --config "$cfg" reference-value add \
  --tenant acme --kind os --name moat-linux --file "$work/os-good.img"
make_device() {  # make_device NAME IMAGE
  mkdir -p "$work/$1"
  cat > "$work/$1/moatd.json" <<EOF
{"service_url": "$url", "service_root_certificate": "$data/pki/root-ca.crt",
 "state_dir": "$work/$1/state",
 "os": {"name": "moat-linux", "version": "1.0", "image": "$2"},
 "attestation": {"retry_initial_seconds": 1, "retry_max_seconds": 2}}
EOF
}
make_device good "$work/os-good.img"
make_device odd "$work/os-odd.img"

# --- identity and registration
expect 0 "moatd identity" -- "$moatd" --config "$work/good/moatd.json" identity --public-key-out "$work/good/key.pem"
contains "DEVELOPMENT" "the software key store warns loudly"
good_id=$("$moatd" --config "$work/good/moatd.json" identity 2>/dev/null)
[[ $good_id =~ ^[0-9a-f]{64}$ ]] && pass || fail "device ID '$good_id' is not 64 hex digits"
[[ $(stat -c %a "$work/good/state/keys") == 700 ]] && pass || fail "key store mode $(stat -c %a "$work/good/state/keys")"
[[ $("$moatd" --config "$work/good/moatd.json" identity 2>/dev/null) == "$good_id" ]] && pass || fail "identity changed between runs"
expect 0 "register" -- "$moat" --config "$cfg" device register --public-key "$work/good/key.pem"
contains "$good_id" "registration names the device ID"

# --- an unclaimed device is told so, and keeps running
"$moatd" --config "$work/good/moatd.json" >"$work/good/moatd.log" 2>&1 &
good_pid=$!
pids+=("$good_pid")
sock="$work/good/state/moatctl.sock"
wait_for 10 "moatd reports the refusal" -- grep -q "not claimed" "$work/good/moatd.log"
kill -0 "$good_pid" 2>/dev/null && pass || fail "moatd exited after a refusal"
expect 0 "moatctl status (unclaimed)" -- "$moatctl" --socket "$sock" status
contains "moat device claim" "status says how to claim"

# --- claimed: the next attempt gets the certificates
expect 0 "claim" -- "$moat" --config "$cfg" device claim "$good_id" --tenant acme
expect 0 "moatctl attest now" -- "$moatctl" --socket "$sock" attest now
wait_for 15 "attestation passes" -- status_is "$sock" '.last_attestation.result == "passed"'
expect 0 "moatctl status" -- "$moatctl" --socket "$sock" status
contains "credential in use:     client" "the client certificate is in use"
contains "last attestation:      passed" "status shows the result"
expect 0 "moatctl cert show" -- "$moatctl" --config "$work/good/moatd.json" cert show
contains "client certificate:" "cert show"
expect 0 "moatctl identity" -- "$moatctl" --socket "$sock" identity
contains "$good_id" "moatctl identity"

# The certificate as third-party tools see it.
cert="$work/good/state/certificates/client.pem"
[[ -f $cert ]] && pass || fail "no client certificate file"
expect 0 "tenant CA chain" -- "$moat" --config "$cfg" ca-certificate download --tenant acme --chain \
  --destination "$work/acme-chain.pem"
expect 0 "openssl verify (sslclient) against the downloaded chain" -- \
  openssl verify -purpose sslclient -CAfile "$work/acme-chain.pem" "$cert"
start=$(date -d "$(openssl x509 -noout -startdate -in "$cert" | cut -d= -f2)" +%s)
end=$(date -d "$(openssl x509 -noout -enddate -in "$cert" | cut -d= -f2)" +%s)
issued=$(date -d "$("$moatctl" --socket "$sock" --json status | jq -r .last_attestation.at)" +%s)
# 24 h from issue, plus the 5 minutes it is backdated for devices with lagging clocks.
(( end - start == 86400 + 300 )) && pass || fail "client certificate lifetime $((end - start)) s"
(( end - issued >= 86398 && end - issued <= 86402 )) && pass || fail "client certificate ends $((end - issued)) s after issue, not 24 h"
openssl x509 -noout -ext subjectAltName -in "$cert" > "$work/out" 2>&1
contains "URI:urn:moat:device:$good_id" "the certificate names the device"
# curl with the device's certificate and its key-store key (the development store keeps PEM).
curl -s --cacert "$data/pki/root-ca.crt" --cert "$cert" --key "$work/good/state/keys/tls-client.key" \
  "$url/device/v1/whoami" > "$work/out"
contains '"credential":"client"' "curl authenticates as the device"
expect 0 "device show" -- "$moat" --config "$cfg" device show "$good_id" --tenant acme
contains "last_attestation_result:       passed" "the service records the attestation"
contains "os_version:                    1.0" "the service records the OS version"

# --- identity survives a restart
kill -TERM "$good_pid"
wait "$good_pid"; rc=$?
[[ $rc -eq 0 ]] && pass || fail "moatd exit status $rc after SIGTERM"
[[ ! -e $sock ]] && pass || fail "the control socket is left behind"
"$moatd" --config "$work/good/moatd.json" >"$work/good/moatd2.log" 2>&1 &
good_pid=$!
pids+=("$good_pid")
wait_for 10 "moatd restarted" -- "$moatctl" --socket "$sock" status
"$moatctl" --socket "$sock" --json status > "$work/out"
contains "\"device_id\": \"$good_id\"" "same device ID after a restart"

# --- a failure event queued before a restart (as the supervisor queues crashes) is uploaded
kill -TERM "$good_pid"; wait "$good_pid"
mkdir -p "$work/good/state/failures"
now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
cat > "$work/good/state/failures/00000000000000000001.json" <<EOF
{"event_id":"5b0c1a9e-8f7d-4e3c-9b2a-1d0e9f8a7b6c","kind":"app_crash","type":"unplanned",
 "class":"app","component_id":"6f1d5c3e-0b7a-4c1e-9a52-3d8e2f4b7c10",
 "image_id":"0c8d1b3a-5e6f-4a7b-8c9d-0e1f2a3b4c5d","signal":11,"pc":"0x213ecc62",
 "lr":"0x2136e6f7","sp":"0xbe96dc28",
 "first_time":"$now","last_time":"$now","count":1}
EOF
chmod 600 "$work/good/state/failures/00000000000000000001.json"
"$moatd" --config "$work/good/moatd.json" >"$work/good/moatd3.log" 2>&1 &
good_pid=$!
pids+=("$good_pid")
wait_for 15 "the queued event is uploaded" -- status_is "$sock" '.failure_queue.events == 0'
expect 0 "report buckets" -- "$moat" --config "$cfg" report buckets --tenant acme
contains "AppCrash (pc=213ECC62" "the crash is in a bucket"
expect 0 "download-error-report" -- "$moat" --config "$cfg" tenant download-error-report \
  --tenant acme --destination "$work/errors.csv"
contains "Wrote 1 event(s)" "one event in the report"
cp "$work/errors.csv" "$work/out"
contains "Device ID,Event Type,Event Class,Event Count,Description,Start Time,End Time" "CSV header"
contains "$good_id,unplanned,app,1,AppCrash (pc=213ECC62" "CSV row for the device"

# --- the service goes away; moatd keeps running and backs off
kill -TERM "$service_pid"; wait "$service_pid" 2>/dev/null
expect 0 "attest now while offline" -- "$moatctl" --socket "$sock" attest now
wait_for 10 "the failure is reported" -- status_is "$sock" '.consecutive_failures >= 1'
kill -0 "$good_pid" 2>/dev/null && pass || fail "moatd died while the service was down"
start_service
expect 0 "attest now once back" -- "$moatctl" --socket "$sock" attest now
wait_for 15 "recovers" -- status_is "$sock" '.consecutive_failures == 0 and .last_attestation.result == "passed"'

# --- updates through moatctl: a device in no device group has nothing to install (the service's
# repositories and groups come with the deploy work), and a bundle is checked by moatd
expect 0 "moatctl update now" -- "$moatctl" --socket "$sock" update now
contains "in no device group" "update now says why nothing was installed"
expect 0 "update state in status" -- "$moatctl" --socket "$sock" --json status
contains '"last_update"' "status carries the last update"
printf 'not a bundle' > "$work/junk.bundle"
expect 1 "moatctl update apply refuses junk" -- "$moatctl" --socket "$sock" update apply "$work/junk.bundle"
contains "not a Moat update bundle" "apply names the problem"

# --- a device whose OS nobody vouched for
odd_id=$("$moatd" --config "$work/odd/moatd.json" identity --public-key-out "$work/odd/key.pem" 2>/dev/null)
"$moat" --config "$cfg" device register --public-key "$work/odd/key.pem" >/dev/null
"$moat" --config "$cfg" device claim "$odd_id" --tenant acme >/dev/null
"$moatd" --config "$work/odd/moatd.json" >"$work/odd/moatd.log" 2>&1 &
pids+=($!)
odd_sock="$work/odd/state/moatctl.sock"
wait_for 15 "the odd device's attestation fails" -- status_is "$odd_sock" '.last_attestation.result == "failed"'
[[ ! -e $work/odd/state/certificates/client.pem ]] && pass || fail "the odd device got a client certificate"
[[ -f $work/odd/state/certificates/update.pem ]] && pass || fail "the odd device has no update certificate"
expect 2 "openssl refuses the update certificate as a TLS client certificate" -- \
  openssl verify -purpose sslclient -CAfile "$work/acme-chain.pem" "$work/odd/state/certificates/update.pem"
expect 0 "moatctl status (odd)" -- "$moatctl" --socket "$odd_sock" status
contains "credential in use:     update" "the odd device falls back to its update certificate"
contains "not one of its 1 known-good value" "the reason is shown on the device"
expect 0 "security events" -- "$moat" --config "$cfg" security-event list --tenant acme
contains "$odd_id" "the failure is a security event"
contains "attestation.measurement-mismatch" "security event kind"

echo "$passes passed, $failures failed"
[[ $failures -eq 0 ]]
