#!/usr/bin/env bash
# The demo's story as a test, with an assertion at every step: a real moat-service (SQLite, mTLS
# on loopback), three real moatd devices (root: sandboxes), each with its own software TPM
# (swtpm, scripts/lib/swtpm.sh) and the tpm2 key store, and a Mosquitto broker as the relying
# party.
#   fleet_e2e_test.sh MOAT MOAT_SERVICE MOATD MOATCTL SAMPLES_BUILD_DIR SOURCE_DIR
#   MOAT_E2E_KEY_STORE=software: the same on the development software store (no swtpm).
# TPM steps: a manufacturer CA registered, each device registered by the EK certificate read from
# its TPM (device ID = SHA-256 of the EK's TPMT_PUBLIC, computed here with tpm2-tools), a
# tenant-wide PCR policy pinning boot PCR 0 (only a TPM quote can satisfy it), no private key in
# the clear in any state directory, PCR 13 read back from the TPM equal to the replay of moatd's
# measurement log (the OS image and every app image as installed), a moatd restart without a TPM
# reset resuming its log, and a reboot (moatd and its TPM) keeping the device's identity.
# Steps: enrolment (register, claim, attest: 24 h client certificates chained to the tenant CA);
# a deployment of the crash sample 1.0.0 and hello to the device group; apps sandboxed (not
# root, own namespaces); the crash in the failure report (component, image, signal 11); the
# fix 1.0.1 deployed and the crash bucket no longer growing; the telemetry app, sandboxed on every
# device, publishing over mutual TLS with its device's certificate (signed through moatd's
# device-authentication channel) to the broker in its own network namespace; a device whose OS
# measurement changed gets no new client certificate (security event), and once the old ones
# have expired (the broker 25 h ahead under faketime) the broker refuses the apps.
set -uo pipefail
moat=$1 service=$2 moatd=$3 moatctl=$4 samples=$5 src=$6
if [[ $(id -u) -ne 0 ]]; then echo "fleet_e2e_test: needs root (sandboxes); skipped"; exit 77; fi
for tool in mosquitto mosquitto_pub mosquitto_sub faketime openssl jq curl; do
  command -v "$tool" >/dev/null || { echo "fleet_e2e_test: $tool is missing (scripts/install-deps.sh)"; exit 1; }
done
faketime_lib=$(dpkg -L libfaketime 2>/dev/null | grep -m1 '/libfaketime\.so\.1$')
[[ -f $faketime_lib ]] || { echo "fleet_e2e_test: libfaketime.so.1 not found (package libfaketime)"; exit 1; }
key_store=${MOAT_E2E_KEY_STORE:-tpm2}
case $key_store in
  tpm2)
    for tool in swtpm swtpm_setup swtpm_localca tpm2_nvread tpm2_readpublic tpm2_pcrread python3; do
      command -v "$tool" >/dev/null || { echo "fleet_e2e_test: $tool is missing (scripts/install-deps.sh)"; exit 1; }
    done
    source "$src/scripts/lib/swtpm.sh" ;;
  software) ;;
  *) echo "fleet_e2e_test: MOAT_E2E_KEY_STORE must be tpm2 or software, not '$key_store'"; exit 1 ;;
esac
echo "fleet_e2e_test: key store $key_store"
work=$(mktemp -d /tmp/moat-e2e-XXXXXX)
pids=() moatd_pids=()
t0=$SECONDS
cleanup() {
  # moatd stops its apps on SIGTERM; anything left after 15 s is killed.
  for p in "${moatd_pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${moatd_pids[@]}"; do
    for _ in $(seq 1 150); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null
  done
  [[ $key_store == tpm2 ]] && swtpm_stop_all
  declare -F broker_net_down >/dev/null && broker_net_down
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
  wait 2>/dev/null
  if [[ ${KEEP_WORK:-0} == 1 ]]; then echo "work dir kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
source "$src/tests/integration/checks.sh"
step() { echo "--- [$((SECONDS - t0)) s] $*"; }

# wait_for SECONDS "what" -- cmd...: retries cmd every 0.2 s until it succeeds (a deadline, not a
# fixed sleep).
wait_for() {
  local seconds=$1 what=$2; shift 3
  local deadline=$((SECONDS + seconds))
  while ((SECONDS < deadline)); do
    if "$@" >/dev/null 2>&1; then pass; return 0; fi
    sleep 0.2
  done
  fail "$what: not true after $seconds s"
  return 1
}
# refused "what" -- cmd...: the command fails (mosquitto_pub's exit status for a refused TLS
# handshake is not documented, so any failure counts; its message is shown).
refused() {
  local what=$1; shift 2
  if "$@" >"$work/out" 2>&1; then fail "$what: it was accepted"; else pass; sed 's/^/    /' "$work/out" | head -2; fi
}
status_is() {  # status_is DEVICE JQ-EXPRESSION
  local out
  out=$("$moatctl" --socket "$work/$1/state/moatctl.sock" --json status 2>/dev/null) || return 1
  [[ -n $out ]] && jq -e "$2" <<<"$out" >/dev/null
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# --- the service, a tenant, an operator and a manufacturer
step "service"
port=$(free_port)
data="$work/service"
url="https://127.0.0.1:$port"
"$service" init --data-dir "$data" --ip 127.0.0.1 --port "$port" >/dev/null || { echo "init failed"; exit 1; }
admin="$data/admin.moat.json"
"$service" run --data-dir "$data" >>"$work/service.log" 2>&1 &
pids+=($!)
wait_for 10 "moat-service answers /healthz" -- curl -sf --cacert "$data/pki/root-ca.crt" "$url/healthz"
expect 0 "tenant create" -- "$moat" --config "$admin" tenant create acme
operator_config() {  # operator_config NAME TENANT ROLE
  "$moat" user request --name "$1" --destination "$work/$1" >/dev/null &&
    "$moat" --config "$admin" user add --name "$1" --tenant "$2" --role "$3" --csr "$work/$1.csr" \
      --destination "$work/$1.crt" >/dev/null &&
    "$moat" config create --service-url "$url" --root-certificate "$data/pki/root-ca.crt" \
      --certificate "$work/$1.crt" --key "$work/$1.key" --destination "$work/$1.moat.json" >/dev/null
}
expect 0 "the tenant's operator" -- operator_config ops acme Administrator
expect 0 "the manufacturer" -- operator_config factory '*' Manufacturer
ops="$work/ops.moat.json" factory="$work/factory.moat.json"
expect 0 "the operator is acme's Administrator" -- "$moat" --config "$ops" whoami
contains "acme" "whoami names the tenant"
expect 0 "tenant CA chain" -- "$moat" --config "$ops" ca-certificate download --tenant acme --chain \
  --destination "$work/acme-chain.pem"

# --- three devices: the OS image they measure, and one nobody vouched for
step "devices"
printf 'moat-linux 1.0 demo image' > "$work/os-good.img"
printf 'moat-linux 1.0 demo image, modified' > "$work/os-odd.img"
expect 0 "reference value for the good OS" -- "$moat" --config "$ops" reference-value add \
  --tenant acme --kind os --name moat-linux --file "$work/os-good.img"
expect 0 "product" -- "$moat" --config "$ops" product create Sensor --tenant acme
expect 0 "device group" -- "$moat" --config "$ops" device-group create Pilot --product Sensor --tenant acme \
  --description "the e2e fleet"
devices=(dev1 dev2 dev3)
declare -A id
write_config() {  # write_config DEVICE OS_IMAGE
  local key_store_json='"key_store": {"backend": "software"},'
  [[ $key_store == tpm2 ]] &&
    key_store_json="\"key_store\": {\"backend\": \"tpm2\", \"tcti\": \"$(swtpm_tcti "$work/$1/tpm")\"},"
  cat > "$work/$1/moatd.json" <<JSON
{"service_url": "$url", "service_root_certificate": "$data/pki/root-ca.crt",
 "state_dir": "$work/$1/state", $key_store_json
 "os": {"name": "moat-linux", "version": "1.0", "image": "$2"},
 "attestation": {"retry_initial_seconds": 1, "retry_max_seconds": 2},
 "update": {"retry_initial_seconds": 1, "retry_max_seconds": 5},
 "supervisor": {"board": "$src/samples/boards/generic_linux_board.json", "instance_id": "e2e-$1"}}
JSON
}
start_moatd() {
  "$moatd" --config "$work/$1/moatd.json" >>"$work/$1/moatd.log" 2>&1 &
  moatd_pids+=($!)
  eval "pid_$1=$!"
}
# replay_log DEVICE: the Moat PCR (13) that moatd's measurement log (moatctl status) replays to,
# starting from the reset value (32 zero bytes): v = SHA-256(v || digest) for each entry.
replay_log() { "$moatctl" --socket "$work/$1/state/moatctl.sock" --json status |
  python3 -c 'import hashlib, json, sys
v = bytes(32)
for m in json.load(sys.stdin)["measurement_log"]["log"]:
    if m["pcr"] == 13: v = hashlib.sha256(v + bytes.fromhex(m["sha256"])).digest()
print(v.hex())'; }
# pcr13_of DEVICE: PCR 13 as its TPM reports it (moatd stopped: swtpm serves one client).
pcr13_of() { TPM2TOOLS_TCTI=$(swtpm_tcti "$work/$1/tpm") tpm2_pcrread sha256:13 -o "$work/$1/pcr13.bin" >/dev/null 2>&1 &&
  od -An -tx1 -v "$work/$1/pcr13.bin" | tr -d ' \n'; }
if [[ $key_store == tpm2 ]]; then
  step "TPM manufacturer"
  expect 0 "a TPM maker's CA (openssl; swtpm_localca signs EK certificates with it)" -- swtpm_ca_create "$work/tpm-vendor"
  expect 0 "manufacturer-ca add (manufacturer)" -- "$moat" --config "$factory" manufacturer-ca add "$work/tpm-vendor/ca.crt"
  contains "Demo TPM Vendor EK CA" "the CA is named"
  # Only a TPM quote can show a PCR's value: with this policy a device passes only if its TPM
  # quoted boot PCR 0 = all zeros (swtpm: no firmware measured anything). On real hardware this
  # pins the firmware; the Moat PCR (13) is judged by replaying the log against reference values.
  expect 0 "pcr-policy add: PCR 0 = swtpm's unmeasured boot, tenant-wide" -- "$moat" --config "$ops" \
    pcr-policy add --tenant acme --pcr 0 --sha256 "$(printf '%064d' 0)" --comment "swtpm: no firmware"
  # A TPM from a maker nobody registered.
  mkdir -p "$work/rogue"
  swtpm_ca_create "$work/other-vendor" && swtpm_manufacture "$work/other-vendor" "$work/rogue/tpm" &&
    swtpm_start "$work/rogue/tpm" && swtpm_read_ek_certificate "$work/rogue/tpm" "$work/rogue/ek.pem" &&
    swtpm_stop "$work/rogue/tpm" && pass || fail "the rogue TPM"
  expect 1 "an EK certificate from an unregistered maker is refused" -- "$moat" --config "$factory" \
    device register --ek-certificate "$work/rogue/ek.pem"
  sed 's/^/    /' "$work/out"
fi
for d in "${devices[@]}"; do
  mkdir -p "$work/$d"
  if [[ $key_store == tpm2 ]]; then
    expect 0 "$d: TPM manufactured (swtpm_setup: EK and its certificate)" -- swtpm_manufacture "$work/tpm-vendor" "$work/$d/tpm"
    expect 0 "$d: TPM powered on" -- swtpm_start "$work/$d/tpm"
    expect 0 "$d: EK certificate read from the TPM (tpm2_nvread)" -- \
      swtpm_read_ek_certificate "$work/$d/tpm" "$work/$d/ek.pem"
    expect 0 "$d: the EK certificate chains to the maker's CA (openssl)" -- \
      openssl verify -CAfile "$work/tpm-vendor/ca.crt" "$work/$d/ek.pem"
    ek_id=$(swtpm_ek_device_id "$work/$d/tpm")
    [[ $ek_id =~ ^[0-9a-f]{64}$ ]] && pass || fail "$d: EK-derived ID '$ek_id'"
    write_config "$d" "$work/os-good.img"
    expect 0 "$d register by EK certificate (manufacturer)" -- "$moat" --config "$factory" -o json \
      device register --ek-certificate "$work/$d/ek.pem"
    jq -e --arg id "$ek_id" '.tpm == true and .id == $id' "$work/out" >/dev/null && pass ||
      fail "$d: registered as $(cat "$work/out"), expected the TPM device $ek_id (SHA-256 of the EK's TPMT_PUBLIC)"
    id[$d]=$ek_id
  else
    write_config "$d" "$work/os-good.img"
    expect 0 "$d identity" -- "$moatd" --config "$work/$d/moatd.json" identity --public-key-out "$work/$d/identity.pem"
    id[$d]=$("$moatd" --config "$work/$d/moatd.json" identity 2>/dev/null)
    expect 0 "$d register (manufacturer)" -- "$moat" --config "$factory" device register --public-key "$work/$d/identity.pem"
  fi
  expect 0 "$d claim (operator)" -- "$moat" --config "$ops" device claim "${id[$d]}" --tenant acme
  expect 0 "$d into Sensor/Pilot" -- "$moat" --config "$ops" device update "${id[$d]}" --tenant acme \
    --device-group "Sensor/Pilot"
  start_moatd "$d"
done
for d in "${devices[@]}"; do
  wait_for 30 "$d attests" -- status_is "$d" '.last_attestation.result == "passed" and .credential == "client"'
done
step "certificates"
for d in "${devices[@]}"; do
  cert="$work/$d/state/certificates/client.pem"
  expect 0 "$d: client certificate chains to the tenant CA (openssl, sslclient)" -- \
    openssl verify -purpose sslclient -CAfile "$work/acme-chain.pem" "$cert"
  start=$(date -d "$(openssl x509 -noout -startdate -in "$cert" | cut -d= -f2)" +%s)
  end=$(date -d "$(openssl x509 -noout -enddate -in "$cert" | cut -d= -f2)" +%s)
  issued=$(date -d "$("$moatctl" --socket "$work/$d/state/moatctl.sock" --json status | jq -r .last_attestation.at)" +%s)
  # 24 h from issue; notBefore is backdated 5 minutes for devices with lagging clocks.
  (( end - start == 86400 + 300 )) && pass || fail "$d: certificate validity $((end - start)) s"
  (( end - issued >= 86398 && end - issued <= 86402 )) && pass || fail "$d: certificate ends $((end - issued)) s after issue"
  openssl x509 -noout -ext subjectAltName -in "$cert" > "$work/out" 2>&1
  contains "URI:urn:moat:device:${id[$d]}" "$d: the certificate names the device"
  expect 0 "$d: device show" -- "$moat" --config "$ops" -o json device show "${id[$d]}" --tenant acme
  jq -e --arg id "${id[$d]}" '.id == $id and .last_attestation_result == "passed"' "$work/out" >/dev/null &&
    pass || fail "$d: the service records no passed attestation: $(cat "$work/out")"
  if [[ $key_store == tpm2 ]]; then
    # The keys are TPM-wrapped blobs: no private key in the clear anywhere in the state dir.
    leaked=$(grep -rlE 'BEGIN (EC |ENCRYPTED )?PRIVATE KEY' "$work/$d/state")
    [[ -z $leaked ]] && pass || fail "$d: private keys in the clear: $leaked"
    tls_pem=$(ls "$work/$d/state/keys"/srk-*/tls-client.pem 2>/dev/null)
    [[ -n $tls_pem ]] && grep -q 'BEGIN TSS2 PRIVATE KEY' "$tls_pem" && pass ||
      fail "$d: no TSS2 PRIVATE KEY for the TLS key under state/keys/srk-*/"
    # moatd names itself by the EK-derived ID it attests with, as the service does.
    moatctl_id=$("$moatctl" --socket "$work/$d/state/moatctl.sock" --json status | jq -r .device_id)
    [[ $moatctl_id == "${id[$d]}" ]] && pass ||
      fail "$d: moatctl status names device $moatctl_id, the service ${id[$d]}"
  fi
done

# --- sign and deploy the apps
step "deploy 1.0.0"
crash_component=3c9a7e2b-5d41-4f8a-9b6e-1a2c3d4e5f60
hello_component=6f1d5c3e-0b7a-4c1e-9a52-3d8e2f4b7c10
expect 0 "image-signing key" -- "$moat" keygen --destination "$work/release"
expect 0 "image-signing-key add" -- "$moat" --config "$ops" image-signing-key add --tenant acme \
  --public-key "$work/release.pub" --name release
pack() {  # pack PACKAGE_DIR VERSION DEST
  "$moat" image-package pack-application --package-directory "$1" --destination "$3" \
    --signing-key "$work/release.key" --version "$2"
}
expect 0 "pack crash 1.0.0" -- pack "$samples/crash/package" 1.0.0 "$work/crash-1.0.0.imagepackage"
crash_image=$(sed -n 's/^ *image ID: *//p' "$work/out")
expect 0 "pack crash 1.0.1 (the fix)" -- pack "$samples/crash-fixed/package" 1.0.1 "$work/crash-1.0.1.imagepackage"
fixed_image=$(sed -n 's/^ *image ID: *//p' "$work/out")
expect 0 "pack hello 1.0.0" -- pack "$samples/hello/package" 1.0.0 "$work/hello-1.0.0.imagepackage"
[[ $crash_image =~ ^[0-9a-f-]{36}$ && $fixed_image =~ ^[0-9a-f-]{36}$ && $crash_image != "$fixed_image" ]] &&
  pass || fail "image IDs '$crash_image' '$fixed_image'"
for p in crash-1.0.0 crash-1.0.1 hello-1.0.0; do
  expect 0 "image add $p" -- "$moat" --config "$ops" image add "$work/$p.imagepackage" --tenant acme
done
sha() { sha256sum "$1" | cut -d' ' -f1; }
expect 0 "deployment create (crash 1.0.0, hello)" -- "$moat" --config "$ops" deployment create --tenant acme \
  --device-group "Sensor/Pilot" --images "$(sha "$work/crash-1.0.0.imagepackage")" "$(sha "$work/hello-1.0.0.imagepackage")"
contains "2 image(s)" "the deployment holds both images"
# Devices check every 20 h; `update now` is the operator's nudge. Both devices run it at once.
update_all() {
  local d ups=()
  for d in "${devices[@]}"; do
    "$moatctl" --socket "$work/$d/state/moatctl.sock" update now --ignore-window >"$work/$d/update.out" 2>&1 &
    ups+=($!)
  done
  local rc=0
  for p in "${ups[@]}"; do wait "$p" || rc=1; done
  return $rc
}
expect 0 "update now on every device" -- update_all
for d in "${devices[@]}"; do
  wait_for 30 "$d runs hello and crash 1.0.0" -- status_is "$d" \
    "([.apps[] | select(.component_id == \"$hello_component\" and .state == \"running\")] | length == 1)
     and ([.apps[] | select(.component_id == \"$crash_component\" and .version == \"1.0.0\")] | length == 1)"
done

# --- sandboxed: the app's uid and namespaces against moatd's
step "sandbox"
app_pid() {  # app_pid DEVICE COMPONENT: the app process (the sandbox's init is its parent)
  local p
  for p in $(pgrep -x "$3"); do
    grep -q "moat-e2e-$1/$2" "/proc/$p/cgroup" 2>/dev/null && { echo "$p"; return 0; }
  done
  return 1
}
for d in "${devices[@]}"; do
  wait_for 10 "$d: the hello process is found by its cgroup" -- app_pid "$d" "$hello_component" hello
  p=$(app_pid "$d" "$hello_component" hello)
  mp=$(eval echo "\$pid_$d")
  uid=$(awk '/^Uid:/ {print $2}' "/proc/$p/status" 2>/dev/null)
  [[ -n $uid && $uid -ne 0 ]] && pass || fail "$d: hello runs as uid '$uid'"
  for ns in pid mnt net ipc uts cgroup; do
    [[ $(readlink "/proc/$p/ns/$ns") != "$(readlink "/proc/$mp/ns/$ns")" ]] && pass ||
      fail "$d: hello shares moatd's $ns namespace"
  done
  # The app's root is its own image: the device's key store is not even in its file system.
  [[ -e /proc/$p/root/bin/hello && ! -e /proc/$p/root$work/$d/state/keys ]] && pass ||
    fail "$d: the app's file system shows the key store"
  echo "    $d: hello pid $p uid $uid, namespaces $(readlink /proc/$p/ns/pid) vs moatd $(readlink /proc/$mp/ns/pid)"
done

# --- the crash, in the failure report
step "crash report"
bucket_count() {  # bucket_count IMAGE_ID: events in the crash buckets of that image (all devices)
  "$moat" --config "$ops" -o json report buckets --tenant acme --limit 100 |
    jq "[.buckets[] | select(.image_id == \"$1\") | .event_count] | add // 0"
}
crashes_from_all() {
  local d n
  "$moat" --config "$ops" tenant download-error-report --tenant acme --destination "$work/errors.csv" >/dev/null 2>&1 || return 1
  for d in "${devices[@]}"; do
    grep "^${id[$d]}," "$work/errors.csv" | grep -q "component_id=$crash_component" || return 1
  done
}
wait_for 60 "every device's crash reaches the service" -- crashes_from_all
grep "component_id=$crash_component" "$work/errors.csv" | head -1 > "$work/out"
contains "AppCrash (" "the CSV has an AppCrash row"
contains "image_id=$crash_image" "the crash names image 1.0.0"
grep -qE "signal_status=11|signo=11" "$work/out" && pass || fail "the crash is not signal 11: $(cat "$work/out")"
head -1 "$work/errors.csv" > "$work/out"
contains "Device ID,Event Type,Event Class,Event Count,Description,Start Time,End Time" "CSV header"
n=$(bucket_count "$crash_image")
(( n >= 3 )) && pass || fail "crash bucket of 1.0.0 counts $n events"
"$moat" --config "$ops" -o json report buckets --tenant acme > "$work/buckets.json"
jq -e ".buckets[] | select(.image_id == \"$crash_image\") | .component_id == \"$crash_component\"" \
  "$work/buckets.json" >/dev/null && pass || fail "bucket component"

# --- the fix: installed everywhere, the bucket stops growing
step "deploy the fix 1.0.1"
expect 0 "deployment create (crash 1.0.1, hello)" -- "$moat" --config "$ops" deployment create --tenant acme \
  --device-group "Sensor/Pilot" --images "$(sha "$work/crash-1.0.1.imagepackage")" "$(sha "$work/hello-1.0.0.imagepackage")"
expect 0 "update now on every device" -- update_all
for d in "${devices[@]}"; do
  wait_for 30 "$d runs crash 1.0.1" -- status_is "$d" \
    "[.apps[] | select(.component_id == \"$crash_component\" and .version == \"1.0.1\")] | length == 1"
  jq -r .version "$work/$d/state/apps/$crash_component/current/image.json" > "$work/out"
  contains "1.0.1" "$d: current is 1.0.1"
done
temperature_lines() {  # temperature_lines DEVICE N: the fixed app printed N readings
  (( $(grep -c "^temperature" "$work/$1/state/logs/$crash_component/stdout.log" 2>/dev/null) >= $2 ))
}
queues_empty() {
  local d
  for d in "${devices[@]}"; do status_is "$d" '.failure_queue.events == 0' || return 1; done
}
# Past the point where 1.0.0 crashed (its first reading) on every device, nothing queued: count.
for d in "${devices[@]}"; do wait_for 20 "$d: 1.0.1 reads the temperature" -- temperature_lines "$d" 1; done
wait_for 20 "failure queues drained" -- queues_empty
before=$(bucket_count "$crash_image")
# One more reading each (5 s of the app running), queues drained again: count again.
for d in "${devices[@]}"; do wait_for 20 "$d: 1.0.1 keeps running" -- temperature_lines "$d" 2; done
wait_for 20 "failure queues drained" -- queues_empty
after=$(bucket_count "$crash_image")
[[ $before == "$after" ]] && pass || fail "the crash bucket grew from $before to $after after the fix"
[[ $(bucket_count "$fixed_image") == 0 ]] && pass || fail "1.0.1 crashed"
echo "    crash bucket of 1.0.0: $before events before, $after after the fix"

# --- the relying party: Mosquitto in its own network namespace, requiring client certificates
# chained to the tenant CA; the telemetry app, sandboxed on every device, publishes to it with its
# device's certificate, signing through moatd's device-authentication channel
step "broker and telemetry"
source "$src/scripts/lib/broker.sh"
# 10.214.0.4/30 (the demo uses 10.214.0.0/30), and names of this run's own.
broker_addr=10.214.0.6 broker_netns="moat-e2e-broker-$$" broker_if="mte2e$$"
expect 0 "the broker's network namespace and veth" -- broker_net_up "$broker_netns" "$broker_if" 10.214.0.5 "$broker_addr"
expect 0 "the broker's certificates" -- broker_pki "$work/broker" "$broker_addr"
broker_conf "$work/mosquitto.conf" "$broker_addr" 8883 "$work/acme-chain.pem" "$work/broker"
expect 0 "the broker starts in its namespace" -- broker_start "$work/mosquitto.conf" "$work/mosquitto.log"
broker_subscribe "$work/received.txt" "$work/sub.err"
tenant_id=$("$moat" --config "$ops" -o json tenant list | jq -r '.tenants[] | select(.name == "acme") | .id')
[[ $tenant_id =~ ^[0-9a-f-]{36}$ ]] && pass || fail "acme's tenant ID '$tenant_id'"
telemetry_component=8e4b2d1a-7c3f-4a5e-b6d9-0f1e2a3b4c5d
pkg="$work/telemetry-package"
cp -r "$samples/telemetry/package" "$pkg" && mkdir -p "$pkg/etc" && cp "$work/broker/ca.crt" "$pkg/etc/broker-ca.pem"
jq --arg tenant "$tenant_id" --arg broker "$broker_addr" \
  '.Capabilities.DeviceAuthentication = $tenant | .Capabilities.AllowedConnections = [$broker]
   | .CmdArgs = [$broker, "8883", "1"]' "$samples/telemetry/package/app_manifest.json" > "$pkg/app_manifest.json"
expect 0 "pack telemetry 1.0.0" -- pack "$pkg" 1.0.0 "$work/telemetry-1.0.0.imagepackage"
expect 0 "image add telemetry" -- "$moat" --config "$ops" image add "$work/telemetry-1.0.0.imagepackage" --tenant acme
expect 0 "deployment create (crash 1.0.1, hello, telemetry)" -- "$moat" --config "$ops" deployment create \
  --tenant acme --device-group "Sensor/Pilot" --images "$(sha "$work/crash-1.0.1.imagepackage")" \
  "$(sha "$work/hello-1.0.0.imagepackage")" "$(sha "$work/telemetry-1.0.0.imagepackage")"
expect 0 "update now on every device" -- update_all
readings_from() {  # readings_from DEVICE N: the broker passed on N readings of DEVICE's app
  (( $(grep -c "^moat/devices/${id[$1]}/telemetry {\"device\":\"${id[$1]}\"" "$work/received.txt") >= $2 ))
}
for d in "${devices[@]}"; do
  wait_for 60 "$d: its sandboxed telemetry app's readings arrive at the broker" -- readings_from "$d" 3
done
grep -m1 "${id[dev1]}" "$work/received.txt" | sed 's/^/    received: /'
for d in "${devices[@]}"; do
  p=$(app_pid "$d" "$telemetry_component" telemetry)
  mp=$(eval echo "\$pid_$d")
  uid=$(awk '/^Uid:/ {print $2}' "/proc/$p/status" 2>/dev/null)
  [[ -n $p && -n $uid && $uid -ne 0 ]] && pass || fail "$d: telemetry runs as uid '$uid' (pid '$p')"
  for ns in pid mnt net ipc uts cgroup; do
    [[ -n $p && $(readlink "/proc/$p/ns/$ns") != "$(readlink "/proc/$mp/ns/$ns")" ]] && pass ||
      fail "$d: telemetry shares moatd's $ns namespace"
  done
  [[ -e /proc/$p/root/bin/telemetry && ! -e /proc/$p/root$work/$d/state/keys ]] && pass ||
    fail "$d: the telemetry app's file system shows the key store"
  grep -q "connected to $broker_addr:8883 as device ${id[$d]}" "$work/$d/state/logs/$telemetry_component/stderr.log" &&
    pass || fail "$d: the app's log does not show its connection"
done
# The broker saw each device's certificate (use_identity_as_username: the certificate's CN).
grep -q "New client connected from 10.214.0.5" "$work/mosquitto.log" && pass ||
  fail "the broker log shows no client through moatd's masquerade"

# --- a device whose measurement is wrong: no new client certificate, a security event
step "wrong measurement"
if [[ $key_store == tpm2 ]]; then
  dev3_replay=$(replay_log dev3)
  "$moatctl" --socket "$work/dev3/state/moatctl.sock" --json status > "$work/out"
  jq -e --arg c "$crash_component" '[.measurement_log.log[] | select(.kind == "app") | .name] |
    index($c) != null' "$work/out" >/dev/null && pass || fail "dev3: no app measurement for $crash_component"
fi
serial_before=$(openssl x509 -noout -serial -in "$work/dev3/state/certificates/client.pem")
update_serial_before=$(openssl x509 -noout -serial -in "$work/dev3/state/certificates/update.pem")
kill -TERM "$pid_dev3"; wait "$pid_dev3"; rc=$?
[[ $rc -eq 0 ]] && pass || fail "dev3 moatd exit $rc after SIGTERM"
[[ -z $(for p in $(pgrep -x hello; pgrep -x crash_sample; pgrep -x telemetry); do grep -l "moat-e2e-dev3" /proc/$p/cgroup 2>/dev/null; done) ]] &&
  pass || fail "dev3's apps outlived moatd"
if [[ $key_store == tpm2 ]]; then
  # The PCR holds what moatd measured (the OS at start, each app image as installed): read from
  # the TPM itself, it equals the replay of the log moatd reported before it stopped.
  [[ $(pcr13_of dev3) == "$dev3_replay" ]] && pass ||
    fail "dev3: PCR 13 is '$(pcr13_of dev3)', its log replays to '$dev3_replay'"
  # A reboot: the TPM's PCRs start from zero again (Startup CLEAR).
  swtpm_stop "$work/dev3/tpm"
  expect 0 "dev3: TPM powered on again" -- swtpm_start "$work/dev3/tpm"
fi
write_config dev3 "$work/os-odd.img"
start_moatd dev3
wait_for 30 "dev3's attestation fails" -- status_is dev3 '.last_attestation.result == "failed"'
expect 0 "moatctl status dev3" -- "$moatctl" --socket "$work/dev3/state/moatctl.sock" status
contains "not one of its 1 known-good value" "the device says why"
[[ $(openssl x509 -noout -serial -in "$work/dev3/state/certificates/client.pem") == "$serial_before" ]] && pass ||
  fail "dev3 got a new client certificate with a wrong measurement"
[[ $(openssl x509 -noout -serial -in "$work/dev3/state/certificates/update.pem") != "$update_serial_before" ]] &&
  pass || fail "dev3 got no new update certificate"
expect 0 "device show dev3" -- "$moat" --config "$ops" device show "${id[dev3]}" --tenant acme
contains "last_attestation_result:       failed" "the service records the failed attestation"
expect 2 "the update certificate is no TLS client certificate" -- \
  openssl verify -purpose sslclient -CAfile "$work/acme-chain.pem" "$work/dev3/state/certificates/update.pem"
expect 0 "security events" -- "$moat" --config "$ops" security-event list --tenant acme
contains "${id[dev3]}" "the security event names dev3"
contains "attestation.measurement-mismatch" "security event kind"
n=$(grep -c "^moat/devices/${id[dev3]}/telemetry " "$work/received.txt")
wait_for 60 "dev3's app still publishes with its old certificate" -- readings_from dev3 $((n + 1))
# The update certificate is for the service only: the broker refuses it (tried with the key file,
# which only the software key store has).
if [[ -f $work/dev3/state/keys/tls-client.key ]]; then
  refused "the broker refuses dev3's update certificate" -- mosquitto_pub -h "$broker_addr" -p 8883 \
    --cafile "$work/broker/ca.crt" --cert "$work/dev3/state/certificates/update.pem" \
    --key "$work/dev3/state/keys/tls-client.key" -t "moat/devices/${id[dev3]}/telemetry" -m hello
else
  echo "    (no key file in dev3's key store: the update-certificate check needs the software store)"
fi

# --- 25 h later (the broker's clock moved by faketime): every device's certificate has expired,
# dev3's too, which attestation no longer renews
step "25 h later"
broker_stop
expect 0 "the broker restarts 25 h ahead" -- broker_start "$work/mosquitto.conf" "$work/mosquitto-25h.log" "+25h"
refusals() { (( $(grep -c "certificate verify failed" "$work/mosquitto-25h.log") >= $1 )); }
wait_for 60 "the broker (25 h ahead) refuses the apps' certificates" -- refusals 3
dev3_log="$work/dev3/state/logs/$telemetry_component/stderr.log"
wait_for 30 "dev3's app reports the refusal" -- grep -q "certificate expired" "$dev3_log"
grep -m1 "certificate expired" "$dev3_log" | cut -c1-200 | sed 's/^/    dev3 app: /'
grep -q "New client connected from 10.214.0.5" "$work/mosquitto-25h.log" && fail "the broker 25 h ahead let a device in" || pass
# Why: the certificate has expired by then (openssl at the same moment).
openssl verify -attime $(($(date +%s) + 25 * 3600)) -CAfile "$work/acme-chain.pem" \
  "$work/dev3/state/certificates/client.pem" > "$work/out" 2>&1
contains "certificate has expired" "25 h on, openssl calls dev3's certificate expired"
broker_stop
[[ -z $(pgrep -f "$work/mosquitto.conf") ]] && pass || fail "a broker outlived its stop"

# --- a moatd restart without a reboot: the TPM keeps its PCRs, moatd resumes this boot's log
# (kept under its run dir) instead of measuring everything again, and still attests.
if [[ $key_store == tpm2 ]]; then
  step "moatd restart, TPM running"
  kill -TERM "$pid_dev2"; wait "$pid_dev2"; rc=$?
  [[ $rc -eq 0 ]] && pass || fail "dev2 moatd exit $rc after SIGTERM"
  stopped_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  : > "$work/dev2/moatd.log"
  start_moatd dev2
  wait_for 60 "dev2 attests again after a moatd restart, resuming its log" -- status_is dev2 \
    ".measurement_log.start == \"resumed\" and .last_attestation.result == \"passed\" and .last_attestation.at >= \"$stopped_at\""
  dev2_replay=$(replay_log dev2)
  kill -TERM "$pid_dev2"; wait "$pid_dev2"
  [[ $(pcr13_of dev2) == "$dev2_replay" ]] && pass ||
    fail "dev2: PCR 13 after the restart is '$(pcr13_of dev2)', its log replays to '$dev2_replay'"
  start_moatd dev2
  wait_for 60 "dev2 running again" -- status_is dev2 '.credential == "client"'
fi

# --- a reboot keeps the device's identity: same device ID, a fresh attestation and certificate.
# On tpm2 a reboot is moatd and its TPM restarted: the PCRs start from zero and moatd starts a
# fresh log.
step "reboot"
serial_before=$(openssl x509 -noout -serial -in "$work/dev1/state/certificates/client.pem")
kill -TERM "$pid_dev1"; wait "$pid_dev1"; rc=$?
[[ $rc -eq 0 ]] && pass || fail "dev1 moatd exit $rc after SIGTERM"
if [[ $key_store == tpm2 ]]; then
  swtpm_stop "$work/dev1/tpm"
  expect 0 "dev1: TPM powered on again" -- swtpm_start "$work/dev1/tpm"
  [[ $(swtpm_ek_device_id "$work/dev1/tpm") == "${id[dev1]}" ]] && pass || fail "dev1: the EK changed"
  write_config dev1 "$work/os-good.img"  # the TCTI's port is new
fi
: > "$work/dev1/moatd.log"
start_moatd dev1
# A new round: the old certificate does not count (the serial must change).
wait_for 60 "dev1 attests again after the reboot" -- bash -c "[[ \$(openssl x509 -noout -serial -in '$work/dev1/state/certificates/client.pem') != '$serial_before' ]]"
status_is dev1 '.last_attestation.result == "passed" and .credential == "client"' && pass ||
  fail "dev1 after the reboot: $("$moatctl" --socket "$work/dev1/state/moatctl.sock" status 2>&1 | head -12)"
openssl x509 -noout -ext subjectAltName -in "$work/dev1/state/certificates/client.pem" > "$work/out" 2>&1
contains "URI:urn:moat:device:${id[dev1]}" "dev1's new certificate names the same device"
expect 0 "device list" -- "$moat" --config "$ops" -o json device list --tenant acme
jq -e '.devices | length == 3' "$work/out" >/dev/null && pass || fail "the tenant has other than 3 devices after the reboot"

# --- shutdown: every moatd stops its apps
step "shutdown"
for d in "${devices[@]}"; do
  p=$(eval echo "\$pid_$d")
  kill -TERM "$p"; wait "$p"; rc=$?
  [[ $rc -eq 0 ]] && pass || fail "$d moatd exit $rc after SIGTERM"
done
moatd_pids=()
left=$(for p in $(pgrep -x hello; pgrep -x crash_sample; pgrep -x telemetry); do grep -l "moat-e2e-" /proc/$p/cgroup 2>/dev/null; done)
[[ -z $left ]] && pass || fail "app processes left after moatd stopped: $left"
if [[ $key_store == tpm2 ]]; then
  swtpm_stop_all
  [[ -z $(pgrep -f "swtpm socket --tpm2 --tpmstate dir=$work/") ]] && pass || fail "a swtpm outlived its stop"
fi
broker_net_down
ip netns list | grep -q "^$broker_netns\b" && fail "the broker's namespace is left" || pass
ip link show "$broker_if" >/dev/null 2>&1 && fail "the broker's veth is left" || pass

echo "$passes passed, $failures failed in $((SECONDS - t0)) s"
[[ $failures -eq 0 ]]
