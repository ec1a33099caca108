# Part 2 of the demo (sourced by scripts/demo.sh, which defines build, root, key_store, moat,
# step, say, run): a security service and three devices on this machine, each device with its
# own software TPM (scripts/lib/swtpm.sh) unless key_store is "software".
# tests/e2e/fleet_e2e_test.sh tells the same story with an assertion at every step.
if [[ $(id -u) -ne 0 ]]; then
  echo; echo "Part 2 (the fleet) needs root: moatd runs every app in its own sandbox (namespaces,"
  echo "cgroups). Run 'sudo make demo' to see it."; exit 0
fi
for tool in mosquitto mosquitto_pub mosquitto_sub faketime openssl jq curl; do
  command -v "$tool" >/dev/null || { echo "demo: $tool is missing: run scripts/install-deps.sh"; exit 1; }
done
faketime_lib=$(dpkg -L libfaketime 2>/dev/null | grep -m1 '/libfaketime\.so\.1$')
[[ -f $faketime_lib ]] || { echo "demo: libfaketime.so.1 not found: run scripts/install-deps.sh"; exit 1; }
if [[ $key_store == tpm2 ]]; then
  for tool in swtpm swtpm_setup swtpm_localca tpm2_nvread tpm2_readpublic python3; do
    command -v "$tool" >/dev/null ||
      { echo "demo: $tool is missing: run scripts/install-deps.sh (or: scripts/demo.sh --key-store software)"; exit 1; }
  done
  source "$root/scripts/lib/swtpm.sh"
fi
service="$build/apps/moat-service" moatd="$build/apps/moatd" moatctl="$build/apps/moatctl"
samples="$build/samples"
fleet="demo-data/fleet"
rm -rf "$fleet"
mkdir -p "$fleet"
fleet=$(cd "$fleet" && pwd)  # absolute: moatd configs and sockets name it
rel() { echo "${1//$root\//}"; }  # for display: relative to the checkout
log="$fleet/logs"
mkdir -p "$log"
service_pid="" moatd_pids=()
declare -A id moatd_pid
source "$root/scripts/lib/broker.sh"  # the broker's network namespace (step 15)

# Ctrl-C or any exit: subscriber and broker (and their network namespace and veth), then each
# moatd (SIGTERM: it stops its apps and removes its cgroups), then the devices' TPMs, then the
# service. Nothing is left running.
stop_all() {
  trap - EXIT INT TERM
  local p
  broker_net_down
  for p in "${moatd_pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${moatd_pids[@]}"; do
    for _ in $(seq 1 150); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  [[ $key_store == tpm2 ]] && swtpm_stop_all
  [[ -n $service_pid ]] && kill -TERM "$service_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  echo "demo: everything stopped (service, devices and their apps$([[ $key_store == tpm2 ]] && echo ", their TPMs"), broker and its network namespace)."
}
trap 'stop_all' EXIT
trap 'echo; echo "demo: Ctrl-C, stopping..."; exit 130' INT TERM

# show CMD...: print a command (paths shortened) and run it.
show() {
  local a out="\$"
  for a in "$@"; do
    a=${a//$root\//} a=${a#"$build"/apps/}
    [[ $a =~ [[:space:]\'*] ]] && a="\"$a\""
    out+=" $a"
  done
  echo "$out"
  "$@"
}
# wait_until SECONDS "what" CMD...: poll (0.2 s) until CMD succeeds; the demo fails past the deadline.
wait_until() {
  local seconds=$1 what=$2; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then echo "DEMO FAILED: $what (not after $seconds s)"; exit 1; fi
    sleep 0.2
  done
}
status_is() { local out; out=$("$moatctl" --socket "$fleet/$1/state/moatctl.sock" --json status 2>/dev/null) &&
  [[ -n $out ]] && jq -e "$2" <<<"$out" >/dev/null; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
sha() { sha256sum "$1" | cut -d' ' -f1; }

echo; echo "${bold}Part 2: a fleet on this machine — service, devices, deployments, crashes, a relying party${plain}"

step "7. Start the security service"
say "moat-service: one process, a SQLite database and its PKI under $(rel $fleet)/service, mutual TLS"
say "on loopback. 'init' creates the service root CA and the first administrator's config."
port=$(free_port)
url="https://127.0.0.1:$port"
show "$service" init --data-dir "$fleet/service" --name "Demo Fleet" --ip 127.0.0.1 --port "$port" | sed -n 1,3p
"$service" run --data-dir "$fleet/service" >"$log/moat-service.log" 2>&1 &
service_pid=$!
wait_until 15 "moat-service answers" curl -sf --cacert "$fleet/service/pki/root-ca.crt" "$url/healthz"
admin="$fleet/service/admin.moat.json"
say "-> listening on $url (log: $(rel $log)/moat-service.log)"

step "8. A tenant, its operator, and a manufacturer"
say "A tenant owns devices and has its own CA. Operators are people with a key and a certificate"
say "(no passwords): 'ops' administers tenant contoso; 'factory' may only register new devices."
show "$moat" --config "$admin" tenant create contoso
for who in "ops contoso Administrator" "factory * Manufacturer"; do
  read -r name tenant role <<<"$who"
  "$moat" user request --name "$name" --destination "$fleet/$name" >/dev/null
  show "$moat" --config "$admin" user add --name "$name" --tenant "$tenant" --role "$role" \
    --csr "$fleet/$name.csr" --destination "$fleet/$name.crt"
  "$moat" config create --service-url "$url" --root-certificate "$fleet/service/pki/root-ca.crt" \
    --certificate "$fleet/$name.crt" --key "$fleet/$name.key" --destination "$fleet/$name.moat.json" >/dev/null
done
export MOAT_CONFIG="$fleet/ops.moat.json"
say "-> from here on, 'moat' acts as ops (MOAT_CONFIG=$(rel $fleet)/ops.moat.json)."
"$moat" ca-certificate download --tenant contoso --chain --destination "$fleet/contoso-chain.pem" >/dev/null

step "9. Manufacture three devices, register and claim them"
if [[ $key_store == tpm2 ]]; then
  say "Each device is a moatd with its own state directory, apps and TPM 2.0 (here swtpm, a"
  say "software TPM, one per device). The TPM's maker put an endorsement key (EK) in each chip and"
  say "signed a certificate for it; this demo plays that maker with a CA of its own. The factory"
  say "registers the maker's CA once, then reads each TPM's EK certificate and registers it: the"
  say "service checks it against the manufacturer CA and derives the device ID from the EK."
else
  say "Each device is a moatd with its own state directory, key store and apps. Its ID is the hash"
  say "of an identity key created inside its key store (here the development software store: key"
  say "files on disk). The factory registers the public key."
fi
say "The owner claims the device and puts it in a device group. The tenant also says which OS"
say "image is known-good: a device measures its OS at start, and only that value passes."
printf 'moat-linux 1.0 demo image' > "$fleet/os-good.img"
printf 'moat-linux 1.0 demo image, modified' > "$fleet/os-odd.img"
show "$moat" reference-value add --tenant contoso --kind os --name moat-linux --file "$fleet/os-good.img"
show "$moat" product create Thermostat --tenant contoso --description "Demo thermostat"
show "$moat" device-group create Pilot --product Thermostat --tenant contoso --description "The demo's three devices"
devices=(dev1 dev2 dev3)
write_config() {  # write_config DEVICE OS_IMAGE
  local key_store_json='"key_store": {"backend": "software"},'
  [[ $key_store == tpm2 ]] &&
    key_store_json="\"key_store\": {\"backend\": \"tpm2\", \"tcti\": \"$(swtpm_tcti "$fleet/$1/tpm")\"},"
  cat > "$fleet/$1/moatd.json" <<JSON
{"service_url": "$url", "service_root_certificate": "$fleet/service/pki/root-ca.crt",
 "state_dir": "$fleet/$1/state", $key_store_json
 "os": {"name": "moat-linux", "version": "1.0", "image": "$2"},
 "attestation": {"retry_initial_seconds": 1, "retry_max_seconds": 2},
 "update": {"retry_initial_seconds": 1, "retry_max_seconds": 5},
 "supervisor": {"board": "$root/samples/boards/generic_linux_board.json", "instance_id": "demo-$1"}}
JSON
}
start_moatd() {
  "$moatd" --config "$fleet/$1/moatd.json" >>"$log/moatd-$1.log" 2>&1 &
  moatd_pid[$1]=$!
  moatd_pids+=($!)
}
if [[ $key_store == tpm2 ]]; then
  swtpm_ca_create "$fleet/tpm-vendor"
  show "$moat" --config "$fleet/factory.moat.json" manufacturer-ca add "$fleet/tpm-vendor/ca.crt"
  echo "\$ moat --config $(rel $fleet)/factory.moat.json device register --ek-certificate $(rel $fleet)/DEVICE/ek.pem  # each"
fi
for d in "${devices[@]}"; do
  mkdir -p "$fleet/$d"
  if [[ $key_store == tpm2 ]]; then
    # The factory: make the TPM (EK and its certificate), power it on, read the certificate.
    swtpm_manufacture "$fleet/tpm-vendor" "$fleet/$d/tpm"
    swtpm_start "$fleet/$d/tpm"
    swtpm_read_ek_certificate "$fleet/$d/tpm" "$fleet/$d/ek.pem"
    write_config "$d" "$fleet/os-good.img"
    id[$d]=$("$moat" --config "$fleet/factory.moat.json" -o json device register --ek-certificate "$fleet/$d/ek.pem" | jq -r .id)
    echo "  $d: TPM at $(swtpm_tcti "$fleet/$d/tpm"), EK certificate from $(openssl x509 -noout -issuer -in "$fleet/$d/ek.pem" | sed 's/.*CN *= *//') -> device ID ${id[$d]}"
  else
    write_config "$d" "$fleet/os-good.img"
    id[$d]=$("$moatd" --config "$fleet/$d/moatd.json" identity --public-key-out "$fleet/$d/identity.pem" 2>/dev/null)
    echo "  $d: device ID ${id[$d]}"
    "$moat" --config "$fleet/factory.moat.json" device register --public-key "$fleet/$d/identity.pem" >/dev/null
  fi
  "$moat" device claim "${id[$d]}" --tenant contoso >/dev/null
  "$moat" device update "${id[$d]}" --tenant contoso --device-group "Thermostat/Pilot" >/dev/null
done
show "$moat" device list --tenant contoso

step "10. Start the devices: attestation and 24 h certificates"
if [[ $key_store == tpm2 ]]; then
  say "Each moatd creates its keys inside its TPM: a private key never leaves it (on disk there"
  say "are only blobs that this one TPM can load). At start moatd measures its OS image into the"
  say "TPM's Moat PCR (13), which software can extend but not reset before the next boot, and"
  say "writes the measurement to its event log. To attest, the service sends a nonce and a secret"
  say "encrypted to the EK of the registered certificate; only that TPM can recover it. The TPM"
  say "then signs a quote over its PCRs (0-7 and 13) and the nonce. The service checks the quote,"
  say "replays the log to the quoted PCR 13 and checks the log against the known-good values."
else
  say "Each moatd signs evidence of what it runs with its identity key; the service checks it"
  say "against the known-good values. (Only a TPM's quote proves the log true: a software store"
  say "signs whatever its process says.)"
fi
say "A device that passes gets a client certificate valid 24 hours, chained to the tenant CA."
say "Devices renew it at about 80 % of its life — a device that stops passing attestation is"
say "locked out within a day."
for d in "${devices[@]}"; do start_moatd "$d"; done
for d in "${devices[@]}"; do
  wait_until 60 "$d attests" status_is "$d" '.last_attestation.result == "passed"'
done
show "$moatctl" --socket "$fleet/dev1/state/moatctl.sock" status | sed -n 1,8p
show "$moat" device show "${id[dev1]}" --tenant contoso |
  sed -n -E '/^(\$|id|device_group|certificate_not_after|last_attestation)/p'
if [[ $key_store == tpm2 ]]; then
  keydir=$(dirname "$(ls "$fleet"/dev1/state/keys/srk-*/tls-client.pem)")
  echo "\$ ls $(rel "$keydir"); head -1 tls-client.pem"
  (cd "$keydir" && ls | sed 's/^/  /' | paste -sd' ' && head -1 tls-client.pem | sed 's/^/  /')
  say "-> the TLS key as a TPM-wrapped blob (TSS2 PRIVATE KEY): no private key in the clear."
fi
cert="$fleet/dev1/state/certificates/client.pem"
show openssl verify -purpose sslclient -CAfile "$fleet/contoso-chain.pem" "$cert" | sed "s|$root/||"
openssl x509 -noout -subject -startdate -enddate -in "$cert" | sed 's/^/  /'
say "-> any TLS peer that trusts the tenant CA can now authenticate these devices (notBefore is"
say "   backdated 5 minutes for devices with lagging clocks)."

step "11. Sign the apps and deploy them to the device group"
say "The publisher signs image packages with a key the tenant registered. A deployment makes"
say "the device group's TUF repository list those images; devices verify every signature"
say "(TUF metadata, then the package) before installing atomically. Devices check every 20 h;"
say "here the operator asks them to check now. Deployed: hello, and CrashSample 1.0.0 (buggy)."
"$moat" keygen --destination "$fleet/release" >/dev/null
show "$moat" image-signing-key add --tenant contoso --public-key "$fleet/release.pub" --name release
pack() { "$moat" image-package pack-application --package-directory "$samples/$1/package" \
  --destination "$fleet/$2.imagepackage" --signing-key "$fleet/release.key" --version "$3"; }
pack crash crash-1.0.0 1.0.0 | sed -n 1,3p | sed "s|$root/||"
crash_image=$("$moat" image-package show "$fleet/crash-1.0.0.imagepackage" | sed -n 's/^ *image ID: *//p')
pack crash-fixed crash-1.0.1 1.0.1 >/dev/null
fixed_image=$("$moat" image-package show "$fleet/crash-1.0.1.imagepackage" | sed -n 's/^ *image ID: *//p')
pack hello hello-1.0.0 1.0.0 >/dev/null
for p in crash-1.0.0 crash-1.0.1 hello-1.0.0; do show "$moat" image add "$fleet/$p.imagepackage" --tenant contoso; done
show "$moat" deployment create --tenant contoso --device-group "Thermostat/Pilot" \
  --images "$(sha "$fleet/crash-1.0.0.imagepackage")" "$(sha "$fleet/hello-1.0.0.imagepackage")"
crash_component=3c9a7e2b-5d41-4f8a-9b6e-1a2c3d4e5f60 hello_component=6f1d5c3e-0b7a-4c1e-9a52-3d8e2f4b7c10
update_all() {
  local d ups=()
  for d in "${devices[@]}"; do
    "$moatctl" --socket "$fleet/$d/state/moatctl.sock" update now --ignore-window >"$fleet/$d/update.out" 2>&1 &
    ups+=($!)
  done
  for p in "${ups[@]}"; do wait "$p"; done
}
echo "\$ moatctl update now --ignore-window    # on each device"
update_all
sed 's/^/  /' "$fleet/dev1/update.out"
for d in "${devices[@]}"; do
  wait_until 30 "$d runs the apps" status_is "$d" \
    "([.apps[] | select(.component_id == \"$crash_component\" and .version == \"1.0.0\")] | length == 1)"
done
"$moatctl" --socket "$fleet/dev1/state/moatctl.sock" --json status |
  jq -r '.apps[] | "  dev1 app \(.component_id) \(.version): \(.state), \(.launches) launch(es), \(.failures) failure(s)"'

step "12. Each app runs in its own sandbox"
say "Not as root, and in namespaces of its own (pid, mount, network, ipc, uts, cgroup): compare"
say "the hello app's process with its moatd's."
app_pid() { local p; for p in $(pgrep -x "$2"); do grep -q "moat-demo-$1/" "/proc/$p/cgroup" 2>/dev/null && { echo "$p"; return 0; }; done; return 1; }
wait_until 10 "hello's process" app_pid dev1 hello
p=$(app_pid dev1 hello) mp=${moatd_pid[dev1]}
printf '  %-10s %-8s %-6s %s\n' process pid uid "pid / mnt / net namespaces"
for x in "moatd $mp" "hello $p"; do
  read -r n q <<<"$x"
  printf '  %-10s %-8s %-6s %s\n' "$n" "$q" "$(awk '/^Uid:/ {print $2}' /proc/$q/status)" \
    "$(readlink /proc/$q/ns/pid) $(readlink /proc/$q/ns/mnt) $(readlink /proc/$q/ns/net)"
done

say "-> its root file system is its own image: $(ls /proc/$p/root | tr '\n' ' ')— moatd's key store"
say "   ($(rel "$fleet")/dev1/state/keys) is not in it."

step "13. The buggy app crashes; the crash reaches the failure report"
say "CrashSample 1.0.0 dereferences a null pointer in ReadCalibratedTemperature() 3 s after"
say "start. The supervisor restarts it with a growing delay and records each crash (signal,"
say "registers, stack); moatd uploads the events; the service buckets them by stack signature."
crashes_from_all() {
  "$moat" tenant download-error-report --tenant contoso --destination "$fleet/errors.csv" >/dev/null 2>&1 || return 1
  local d; for d in "${devices[@]}"; do grep "^${id[$d]}," "$fleet/errors.csv" | grep -q "$crash_component" || return 1; done
}
wait_until 60 "crash reports from every device" crashes_from_all
show "$moat" report buckets --tenant contoso
echo "\$ moat tenant download-error-report --tenant contoso --destination $(rel $fleet)/errors.csv"
head -1 "$fleet/errors.csv"; grep "$crash_component" "$fleet/errors.csv" | head -2
say "-> component ID, image ID ($crash_image = 1.0.0) and signal 11 (SIGSEGV), per device."

step "14. Deploy the fix (1.0.1): the crashes stop"
say "Same component, new version. The update replaces 1.0.0 atomically on every device."
show "$moat" deployment create --tenant contoso --device-group "Thermostat/Pilot" \
  --images "$(sha "$fleet/crash-1.0.1.imagepackage")" "$(sha "$fleet/hello-1.0.0.imagepackage")"
echo "\$ moatctl update now --ignore-window    # on each device"
update_all
sed 's/^/  /' "$fleet/dev1/update.out"
bucket_count() { "$moat" -o json report buckets --tenant contoso --limit 100 |
  jq "[.buckets[] | select(.image_id == \"$1\") | .event_count] | add // 0"; }
readings() { (( $(grep -c '^temperature' "$fleet/$1/state/logs/$crash_component/stdout.log" 2>/dev/null) >= $2 )); }
queues_empty() { local d; for d in "${devices[@]}"; do status_is "$d" '.failure_queue.events == 0' || return 1; done; }
for d in "${devices[@]}"; do wait_until 30 "$d reads the temperature with 1.0.1" readings "$d" 1; done
wait_until 20 "failure queues drained" queues_empty
before=$(bucket_count "$crash_image")
for d in "${devices[@]}"; do wait_until 30 "$d keeps running 1.0.1" readings "$d" 2; done
wait_until 20 "failure queues drained" queues_empty
after=$(bucket_count "$crash_image")
"$moatctl" --socket "$fleet/dev1/state/moatctl.sock" --json status |
  jq -r '.apps[] | "  dev1 app \(.component_id) \(.version): \(.state)"'
echo "  dev1 CrashSample log: $(grep '^temperature' "$fleet/dev1/state/logs/$crash_component/stdout.log" | tail -1)"
say "-> crash events for 1.0.0: $before, and $after after 1.0.1 has run past the bug on every device;"
say "   1.0.1 has $(bucket_count "$fixed_image") crash(es)."
[[ $before == "$after" ]] || { echo "DEMO FAILED: crashes went on after the fix"; exit 1; }

step "15. A relying party: an MQTT broker that accepts only the tenant's devices"
say "Mosquitto runs in a network namespace of its own (10.214.0.2, a veth pair away from the host)"
say "and requires a client certificate chained to the tenant CA (cafile = the chain from 'moat"
say "ca-certificate download --chain'). The telemetry app is deployed to the device group like the"
say "others and runs sandboxed on every device. Its manifest names the tenant in DeviceAuthentication,"
say "so moatd lends it the device's client certificate and signs its TLS handshake in the device's"
say "key store: the app never holds the key. Its image ships the broker's CA (/etc/broker-ca.pem)."
broker="$fleet/broker"
broker_net_up moat-demo-broker mtdemobroker 10.214.0.1 10.214.0.2 ||
  { echo "DEMO FAILED: the broker's network namespace"; exit 1; }
broker_pki "$broker" 10.214.0.2 || { echo "DEMO FAILED: the broker's certificates"; exit 1; }
broker_conf "$broker/mosquitto.conf" 10.214.0.2 8883 "$fleet/contoso-chain.pem" "$broker"
sed -n 3,9p "$broker/mosquitto.conf" | sed "s|$root/||; s/^/  mosquitto.conf: /"
broker_start "$broker/mosquitto.conf" "$log/mosquitto.log" || exit 1
broker_subscribe "$fleet/received.log" "$log/mosquitto_sub.log"
tenant_id=$("$moat" -o json tenant list | jq -r '.tenants[] | select(.name == "contoso") | .id')
telemetry_component=8e4b2d1a-7c3f-4a5e-b6d9-0f1e2a3b4c5d
pkg="$fleet/telemetry-package"
rm -rf "$pkg"; cp -r "$samples/telemetry/package" "$pkg"; mkdir -p "$pkg/etc"
cp "$broker/ca.crt" "$pkg/etc/broker-ca.pem"
jq --arg tenant "$tenant_id" '.Capabilities.DeviceAuthentication = $tenant' \
  "$samples/telemetry/package/app_manifest.json" > "$pkg/app_manifest.json"
echo "  app_manifest.json: $(jq -c '{CmdArgs, Capabilities}' "$pkg/app_manifest.json")"
"$moat" image-package pack-application --package-directory "$pkg" \
  --destination "$fleet/telemetry-1.0.0.imagepackage" --signing-key "$fleet/release.key" --version 1.0.0 >/dev/null
show "$moat" image add "$fleet/telemetry-1.0.0.imagepackage" --tenant contoso
show "$moat" deployment create --tenant contoso --device-group "Thermostat/Pilot" \
  --images "$(sha "$fleet/crash-1.0.1.imagepackage")" "$(sha "$fleet/hello-1.0.0.imagepackage")" \
  "$(sha "$fleet/telemetry-1.0.0.imagepackage")"
echo "\$ moatctl update now --ignore-window    # on each device"
update_all
readings_from() { (( $(grep -c "^moat/devices/${id[$1]}/telemetry " "$fleet/received.log") >= $2 )); }
for d in "${devices[@]}"; do wait_until 60 "$d's telemetry app publishes" readings_from "$d" 2; done
say "-> received by a subscriber inside the broker's namespace, from every device's app:"
for d in "${devices[@]}"; do
  grep -m1 "^moat/devices/${id[$d]}/telemetry " "$fleet/received.log" | cut -d' ' -f2- | sed "s/^/  $d: /"
done
wait_until 10 "the telemetry process" app_pid dev1 telemetry
p=$(app_pid dev1 telemetry)
say "-> dev1's telemetry app: pid $p, uid $(awk '/^Uid:/ {print $2}' /proc/$p/status), net namespace"
say "   $(readlink /proc/$p/ns/net) (moatd: $(readlink /proc/${moatd_pid[dev1]}/ns/net)); its log:"
grep -m1 "connected to" "$fleet/dev1/state/logs/$telemetry_component/stderr.log" | sed 's/^/    /'

step "16. A device whose software nobody vouched for"
if [[ $key_store == tpm2 ]]; then
  say "dev3 reboots (its TPM too: PCRs start again from zero) with a modified OS image. moatd"
  say "measures it into PCR 13 and its log; the quote proves that PCR 13 holds exactly what the"
  say "log says, and the log's OS value is not a known-good one: attestation fails, the service"
  say "issues no new client certificate (only an update certificate, good for fetching a fix)"
  say "and records a security event."
else
  say "dev3 restarts with a modified OS image. Its measurement no longer matches a known-good"
  say "value: attestation fails, the service issues no new client certificate (only an update"
  say "certificate, good for fetching a fix) and records a security event."
fi
kill -TERM "${moatd_pid[dev3]}"; wait "${moatd_pid[dev3]}" || true
serial=$(openssl x509 -noout -serial -in "$fleet/dev3/state/certificates/client.pem")
if [[ $key_store == tpm2 ]]; then swtpm_stop "$fleet/dev3/tpm"; swtpm_start "$fleet/dev3/tpm"; fi
write_config dev3 "$fleet/os-odd.img"
start_moatd dev3
wait_until 60 "dev3's attestation fails" status_is dev3 '.last_attestation.result == "failed"'
echo "\$ moatctl --socket demo-data/fleet/dev3/state/moatctl.sock status"
"$moatctl" --socket "$fleet/dev3/state/moatctl.sock" status | grep -E "attestation|credential|known-good" | head -4
show "$moat" security-event list --tenant contoso | cut -c1-160
[[ $(openssl x509 -noout -serial -in "$fleet/dev3/state/certificates/client.pem") == "$serial" ]] ||
  { echo "DEMO FAILED: dev3 got a new client certificate"; exit 1; }
n=$(grep -c "^moat/devices/${id[dev3]}/telemetry " "$fleet/received.log")
wait_until 60 "dev3's app publishes after the restart" readings_from dev3 $((n + 1))
say "-> dev3 still holds the certificate it got before (at most 24 h left), so its app still"
say "   publishes. What happens when it expires? The broker restarted with its clock 25 h ahead"
say "   (libfaketime), the same configuration:"
broker_stop
broker_start "$broker/mosquitto.conf" "$log/mosquitto-25h-later.log" "+25h" || exit 1
refusals() { (( $(grep -c "certificate verify failed" "$log/mosquitto-25h-later.log") >= $1 )); }
wait_until 60 "the broker (25 h ahead) refuses the apps' certificates" refusals 3
say "   in 25 hours:  every device's app is refused — broker log:"
grep -m1 -B1 'verify failed' "$log/mosquitto-25h-later.log" | cut -d' ' -f2- | sed 's/^/     /'
dev3_log="$fleet/dev3/state/logs/$telemetry_component/stderr.log"
wait_until 30 "dev3's app reports the refusal" grep -q "certificate expired\|alert" "$dev3_log"
say "   dev3's app: $(grep -m1 'certificate expired\|alert' "$dev3_log" | cut -c1-150)"
broker_stop
broker_start "$broker/mosquitto.conf" "$log/mosquitto.log" || exit 1
say "   (the broker is back on today's clock; the apps reconnect with their backoff)"

echo
echo "${bold}Done in $((SECONDS - t0)) s.${plain} What ran, and where it is:"
cat <<INFO
  service      $url   data: $(rel $fleet)/service   log: $(rel $log)/moat-service.log
  devices      $(rel $fleet)/dev{1,2,3}/   (moatd.json, state/: keys, certificates, apps, logs/<app>/)
               moatd logs: $(rel $log)/moatd-dev{1,2,3}.log
$(if [[ $key_store == tpm2 ]]; then echo "  TPMs         swtpm per device: $(rel $fleet)/dev{1,2,3}/tpm/ (state, swtpm.log); maker CA $(rel $fleet)/tpm-vendor/"; fi)
  broker       10.214.0.2:8883 (netns moat-demo-broker)   received telemetry: $(rel $fleet)/received.log
               telemetry app logs: $(rel $fleet)/dev{1,2,3}/state/logs/$telemetry_component/
  offline      demo-data/offline/

  Try, while it runs:
    export MOAT_CONFIG=$(rel $fleet)/ops.moat.json
    $moat device list --tenant contoso
    $moat report buckets --tenant contoso
    $moat security-event list --tenant contoso
    $moatctl --socket $(rel $fleet)/dev1/state/moatctl.sock status
    tail -f $(rel $fleet)/received.log
    $moat device show ${id[dev1]} --tenant contoso
INFO
keep=${MOAT_DEMO_KEEP_RUNNING:-auto}
if [[ $keep == 1 || ($keep == auto && -t 0) ]]; then
  echo; echo "${bold}The fleet keeps running. Ctrl-C stops everything.${plain}"
  while true; do sleep 1; done
fi
