#!/usr/bin/env bash
# A real moat-service and real moatd processes on loopback: first contact with the
# self-certified identity, attestation, a 24 h client certificate that third-party tools
# accept, identity across restarts, a device whose OS is not known-good (update certificate
# only, security event), and moatd staying up while the service is down.
# As root, apps under real moatd (offline) too: moatctl app list/show/start/stop/logs, a crashing
# app's events in the failure queue with their stacks, and two moatd instances side by side, one
# killed with SIGKILL and restarted, cleaning up after itself without touching the other.
#   moatd_test.sh MOAT MOAT_SERVICE MOATD MOATCTL INSTALL_APP TEST_APP BOARD
set -uo pipefail
moat=$1 service=$2 moatd=$3 moatctl=$4 install_app=$5 test_app=$6 board=$7
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

# --- apps under real moatd instances (root only: sandboxes). Offline: the service URL is a
# closed port, so failure events stay in the queue for the test to read.
instance_network() {  # instance_network INSTANCE: its nftables tables and interfaces, one a line
  nft list tables 2>/dev/null | grep -F "table inet moat/$1/"
  for i in /sys/class/net/*; do
    [[ $(cat "$i/ifalias" 2>/dev/null) == moat/$1/* ]] && echo "interface $(basename "$i")"
  done
  return 0
}
alive() { local st; st=$(ps -o stat= -p "$1" 2>/dev/null) && [[ $st != Z* ]]; }  # zombies are dead
instance_cgroups() { find /sys/fs/cgroup -maxdepth 3 -type d -name "moat-$1" 2>/dev/null; }
app_json() {  # app_json SOCKET COMPONENT JQ: the expression over that app's app-show answer
  local out
  out=$("$moatctl" --socket "$1" --json app show "$2" 2>/dev/null) || return 1
  [[ -n $out ]] && jq -e "$3" <<<"$out" >/dev/null
}
if [[ $(id -u) -ne 0 ]]; then
  echo "SKIP: the app checks need root (sandboxes)"
else
  root_pem="$data/pki/root-ca.crt"
  make_app_device() {  # make_app_device NAME
    mkdir -p "$work/$1"
    cat > "$work/$1/moatd.json" <<EOF
{"service_url": "https://127.0.0.1:1", "service_root_certificate": "$root_pem",
 "state_dir": "$work/$1/state", "update": {"enabled": false},
 "attestation": {"retry_initial_seconds": 60, "retry_max_seconds": 120},
 "supervisor": {"board": "$board", "run_dir": "$work/run"}}
EOF
  }
  served=11111111-2222-4333-8444-555555555555
  crasher=11111111-2222-4333-8444-666666666666
  other=11111111-2222-4333-8444-777777777777
  make_app_device apps1
  make_app_device apps2
  expect 0 "install a server app" -- "$install_app" "$work/apps1/state" "$test_app" server "$served" 1.0 \
    '{"AllowedTcpServerPorts":[8080]}' sleep
  expect 0 "install a crashing app" -- "$install_app" "$work/apps1/state" "$test_app" crasher "$crasher" 1.0 '{}' crash
  expect 0 "install the other instance's app" -- "$install_app" "$work/apps2/state" "$test_app" other "$other" 1.0 \
    '{"AllowedTcpServerPorts":[8081]}' sleep
  "$moatd" --config "$work/apps1/moatd.json" >"$work/apps1/moatd.log" 2>&1 &
  apps1_pid=$!; pids+=("$apps1_pid")
  "$moatd" --config "$work/apps2/moatd.json" >"$work/apps2/moatd.log" 2>&1 &
  apps2_pid=$!; pids+=("$apps2_pid")
  s1="$work/apps1/state/moatctl.sock" s2="$work/apps2/state/moatctl.sock"
  wait_for 15 "instance 1's server app runs" -- app_json "$s1" server '.state == "running"'
  wait_for 15 "instance 2's app runs" -- app_json "$s2" other '.state == "running"'
  i1=$(jq -r .instance_id "$work/apps1/state/instance.json") i2=$(jq -r .instance_id "$work/apps2/state/instance.json")
  [[ $i1 =~ ^m[0-9a-f]{10}$ && $i2 =~ ^m[0-9a-f]{10}$ && $i1 != "$i2" ]] && pass || fail "instance IDs '$i1' '$i2'"
  [[ $(jq .slot "$work/apps1/state/instance.json") != $(jq .slot "$work/apps2/state/instance.json") ]] && pass || fail "both instances in one slot"
  # A second moatd on the same control socket, or the same instance (state directory), is
  # refused: it would take the first one's socket, or kill its apps "cleaning up".
  expect 1 "a second moatd on instance 1's socket" -- timeout 20 "$moatd" --config "$work/apps1/moatd.json"
  contains "another moatd is listening on $s1" "the refusal names the socket"
  make_app_device apps3
  jq --arg i "$i1" '.supervisor.instance_id = $i' "$work/apps3/moatd.json" > "$work/apps3/same-instance.json"
  "$install_app" "$work/apps3/state" "$test_app" third "$other" 1.0 '{}' sleep >/dev/null
  expect 1 "a second moatd with instance 1's ID" -- timeout 20 "$moatd" --config "$work/apps3/same-instance.json"
  contains "another moatd runs as instance '$i1'" "the refusal names the instance"
  app_json "$s1" server '.state == "running" and .launches == 1' && pass || fail "the refused moatd disturbed the first"

  # moatctl app ...
  expect 0 "moatctl app list" -- "$moatctl" --socket "$s1" app list
  contains "$served  server" "the list names the server app"
  contains "$crasher  crasher" "the list names the crashing app"
  expect 0 "moatctl --json app list" -- "$moatctl" --socket "$s1" --json app list
  [[ $(jq '.apps | length' "$work/out") == 2 ]] && pass || fail "app list --json: $(cat "$work/out")"
  expect 0 "moatctl app show" -- "$moatctl" --socket "$s1" app show server
  contains "state:             running" "show gives the state"
  expect 0 "moatctl app show --spec" -- "$moatctl" --socket "$s1" app show "$served" --spec
  contains "(moatd instance '$i1')" "the spec names the instance"
  contains "uid/gid:" "the spec shows the app's ids"
  expect 0 "moatctl --json app show --spec" -- "$moatctl" --socket "$s1" --json app show server --spec
  jq -e '.spec.instance_id != null and .spec.app_name == "'"$served"'"' "$work/out" >/dev/null && pass || fail "spec JSON: $(head -c 300 "$work/out")"
  wait_for 10 "moatctl app logs shows the app's stdout" -- bash -c "'$moatctl' --socket '$s1' app logs server | grep -qx sleeping"
  expect 0 "moatctl app logs --stderr --lines 1" -- "$moatctl" --socket "$s1" app logs server --stderr --lines 1
  expect 0 "moatctl --json app logs" -- "$moatctl" --socket "$s1" --json app logs server --lines 5
  contains '"stream": "stdout"' "logs JSON names the stream"
  for cmd in "show" "start" "stop" "logs"; do
    expect 1 "moatctl app $cmd of an unknown app" -- "$moatctl" --socket "$s1" app "$cmd" no-such-app
    contains "no app 'no-such-app' on this device" "app $cmd names the unknown app"
  done
  server_pid=$("$moatctl" --socket "$s1" --json app show server | jq .pid)
  expect 0 "moatctl app stop" -- "$moatctl" --socket "$s1" app stop server
  contains "stopped server" "stop answers"
  ! alive "$server_pid" && pass || fail "the app's process survived app stop"
  app_json "$s1" server '.state == "stopped" and .pid == null' && pass || fail "app not stopped"
  expect 1 "moatctl app start of a running app" -- "$moatctl" --socket "$s2" app start other
  expect 0 "moatctl app start" -- "$moatctl" --socket "$s1" app start server
  wait_for 10 "the app runs again" -- app_json "$s1" server '.state == "running" and .launches == 2'

  # Crash capture into the failure queue: events with the signal and a stack whose frames name
  # the binary's build ID.
  wait_for 15 "the crashing app's events reach the failure queue" -- \
    bash -c "grep -l '\"kind\":\"app_crash\"' '$work/apps1/state/failures/'*.json"
  ev=$(grep -l "\"component_id\":\"$crasher\"" "$work/apps1/state/failures/"*.json | head -1)
  jq -e '.kind == "app_crash" and .signal == 11 and .code == 1 and (.stack | length) >= 2
         and .stack[0].module == "test_app" and (.stack[0].build_id | test("^[0-9a-f]{40}$"))' \
    "$ev" >/dev/null && pass || fail "crash event: $(cat "$ev")"
  app_json "$s1" crasher '.failures >= 1' && pass || fail "the crasher's failures are not counted"

  # Two instances: kill -9 the first; its app and network are left behind...
  other_pid=$("$moatctl" --socket "$s2" --json app show other | jq .pid)
  server_pid=$("$moatctl" --socket "$s1" --json app show server | jq .pid)
  kill -9 "$apps1_pid"; wait "$apps1_pid" 2>/dev/null
  [[ -n $(instance_network "$i1") ]] && pass || fail "kill -9 left no network to clean up (test is vacuous)"
  [[ -n $(instance_cgroups "$i1") ]] && pass || fail "kill -9 left no cgroup to clean up (test is vacuous)"
  # ... and removed at the next start even for an app that is no longer installed.
  rm -rf "$work/apps1/state/apps/$served"
  "$moatd" --config "$work/apps1/moatd.json" >"$work/apps1/moatd2.log" 2>&1 &
  apps1_pid=$!; pids+=("$apps1_pid")
  wait_for 15 "instance 1 restarted" -- app_json "$s1" crasher '.launches >= 1'
  ! alive "$server_pid" && pass || fail "the dead run's app process survived the restart"
  [[ -z $(instance_network "$i1") ]] && pass || fail "leftover network of the dead run: $(instance_network "$i1")"
  [[ -z $(find /sys/fs/cgroup -maxdepth 4 -type d -path "*moat-$i1/$served") ]] && pass || fail "leftover cgroup of the dead run"
  grep -q "left by an earlier run" "$work/apps1/moatd2.log" && pass || fail "the cleanup is not logged"
  # The other instance's app was not touched.
  app_json "$s2" other ".state == \"running\" and .pid == $other_pid and .launches == 1" && pass || fail "instance 2's app was disturbed"
  [[ $(instance_network "$i2" | wc -l) -eq 2 ]] && pass || fail "instance 2's network: $(instance_network "$i2")"
  # A moatd that stops removes what it created.
  kill -TERM "$apps1_pid" "$apps2_pid"; wait "$apps1_pid" "$apps2_pid"
  [[ -z $(instance_network "$i1")$(instance_network "$i2") ]] && pass || fail "network left after SIGTERM"
  [[ -z $(instance_cgroups "$i1")$(instance_cgroups "$i2") ]] && pass || fail "cgroups left after SIGTERM"
  ! alive "$other_pid" && pass || fail "an app outlived its moatd"

  # End to end with the service: an attested device's crashing app, its events uploaded.
  kill -TERM "$good_pid"; wait "$good_pid"
  jq --arg b "$board" --arg r "$work/run" '.supervisor = {board: $b, run_dir: $r}' \
    "$work/good/moatd.json" > "$work/good/apps.json"
  "$install_app" "$work/good/state" "$test_app" crasher "$crasher" 1.0 '{}' crash >/dev/null
  "$moatd" --config "$work/good/apps.json" >"$work/good/moatd-apps.log" 2>&1 &
  good_pid=$!; pids+=("$good_pid")
  wait_for 30 "the crash events are uploaded" -- \
    status_is "$sock" '.failure_queue.events == 0 and ([.apps[] | select(.failures >= 2)] | length) == 1'
  expect 0 "report buckets" -- "$moat" --config "$cfg" report buckets --tenant acme
  grep -E "^[0-9]+ +[^ ]+ +$crasher .*AppCrash \(.*signal_status=11" "$work/out" >/dev/null && pass || fail "the app's crashes are not in a bucket: $(cat "$work/out")"
  kill -TERM "$good_pid"; wait "$good_pid"
fi

echo "$passes passed, $failures failed"
[[ $failures -eq 0 ]]
